// The console's one way to the supernode: every request goes through `request`, which adds
// the API token when there is one. A token arrives in the link (`/#token=…`, so scripts and
// screenshots open the console without a form), is kept for this tab only (sessionStorage)
// and is taken out of the address bar; a 401 asks for one. Supernodes without API tokens
// simply never answer 401.

const TOKEN_KEY = 'naiad.token'

export class ApiError extends Error {
  readonly status: number
  readonly code: string

  constructor(status: number, code: string, message: string) {
    super(message)
    this.status = status
    this.code = code
  }
}

/** Reads `#token=…` once, keeps it and removes it from the URL. */
export function adoptTokenFromLocation(): void {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash)
  if (m === null) return
  setToken(decodeURIComponent(m[1]))
  history.replaceState(null, '', location.pathname + location.search)
}

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY)
}

export function setToken(value: string | null): void {
  if (value === null || value === '') sessionStorage.removeItem(TOKEN_KEY)
  else sessionStorage.setItem(TOKEN_KEY, value)
}

/** Relative to the page, so the console also works behind a path prefix (a proxy, an ingress). */
function url(path: string): string {
  return path.replace(/^\//, '')
}

export async function request<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' }
  const t = token()
  if (t !== null) headers.authorization = `Bearer ${t}`
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(url(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: signal ?? AbortSignal.timeout(10_000) })
  const text = await res.text()
  let json: unknown
  try { json = text === '' ? null : JSON.parse(text) } catch { json = null }
  if (!res.ok) {
    const e = (json ?? {}) as { code?: string; message?: string; error?: string }
    throw new ApiError(res.status, e.code ?? String(res.status), e.message ?? e.error ?? res.statusText)
  }
  return json as T
}

export const get = <T>(path: string, signal?: AbortSignal): Promise<T> => request<T>('GET', path, undefined, signal)
