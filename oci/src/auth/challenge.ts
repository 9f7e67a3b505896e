// Registry authentication (the distribution spec's token flow): a 401 names a scheme and, for
// Bearer, the realm, service and scope of a token service; the client fetches a token there
// (anonymously, or with Basic credentials) and keeps it for its lifetime.

export interface Challenge {
  scheme: string
  params: Record<string, string>
}

/** Parses `WWW-Authenticate` (`Bearer realm="…",service="…",scope="…"`); of several, the Bearer one. */
export function parseChallenge(header: string | string[] | undefined): Challenge | undefined {
  const value = Array.isArray(header) ? header.find((h) => /^bearer /i.test(h)) ?? header[0] : header
  if (value === undefined) return undefined
  const m = /^(\w+)\s*(.*)$/s.exec(value.trim())
  if (m === null) return undefined
  const params: Record<string, string> = {}
  for (const p of m[2].matchAll(/(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g)) params[p[1].toLowerCase()] = (p[2] ?? p[3]).replace(/\\(.)/g, '$1')
  return { scheme: m[1].toLowerCase(), params }
}

/** Bearer tokens by sorted scope list, until shortly before they expire. */
export class TokenCache {
  private readonly tokens = new Map<string, { token: string; expiresAt: number }>()

  static key(scopes: readonly string[]): string {
    return [...new Set(scopes)].filter((s) => s !== '').sort().join(' ')
  }

  get(scopes: readonly string[], now = Date.now()): string | undefined {
    const t = this.tokens.get(TokenCache.key(scopes))
    return t !== undefined && t.expiresAt > now ? t.token : undefined
  }

  /** `expiresInSec` as the token service said (the spec's default is 60 s); renewed 10 s early. */
  set(scopes: readonly string[], token: string, expiresInSec = 60, now = Date.now()): void {
    this.tokens.set(TokenCache.key(scopes), { token, expiresAt: now + Math.max(5, expiresInSec - 10) * 1000 })
  }

  clear(): void {
    this.tokens.clear()
  }
}
