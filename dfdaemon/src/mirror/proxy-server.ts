// The proxy listener (`--proxy-listen`): registry-mirror requests (`/v2/...`), and forward
// proxying of plain-HTTP absolute URLs (through the swarm when a rule matches, after the
// registry's permission check for blob URLs) and CONNECT tunnels (off unless
// `proxy.connect-allow` names the host; port 443 only). Relayed requests go only where the
// source policy allows.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { connect, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

import type { Logger } from 'pino'
import { Agent, type Dispatcher } from 'undici'
import { NaiadError, toNaiadError } from '@naiad/proto'

import { destinationDenied, policyConnect, sendServable, waitServable, type PieceStore, type QosHooks, type TaskManager } from '@naiad/peer'
import type { BlobPermission } from './blob-permission.ts'
import { requestHeaders, responseHeaders } from './headers.ts'
import { RegistryMirror, sendRegistryError, sendTooManyRequests } from './registry-mirror.ts'
import type { UpstreamOptions, UpstreamProblem } from './upstream.ts'

export interface ProxyServerComponents {
  tasks: TaskManager
  store: PieceStore
  logger: Logger
  swarmAvailable: () => boolean
  qos?: QosHooks
  /** The registry's permission check for blob URLs served from the swarm. */
  permission?: BlobPermission
}

export interface ProxyServerOptions extends UpstreamOptions {
  /** Forward-proxied URLs matching one of these go through the swarm. */
  rules: RegExp[]
  /** Hosts CONNECT may tunnel to: `HOST` (port 443) or `HOST:PORT`; empty: CONNECT is refused. */
  connectAllow?: string[]
}

/** Largest request body relayed upstream; a mirror and a download proxy have no use for more. */
export const MAX_RELAY_BODY = 16 * 1024 * 1024

function sendStatus(res: ServerResponse, status: number, e: NaiadError): void {
  const body = JSON.stringify({ code: e.code, message: e.message, errors: [{ code: status === 413 ? 'SIZE_INVALID' : 'DENIED', message: e.message, detail: { naiad: e.code } }] })
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' }).end(body)
}


/** The client's request body, cut off (DFD_ERR_BODY_TOO_LARGE) beyond MAX_RELAY_BODY bytes. */
async function* capped(body: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let n = 0
  for await (const chunk of body) {
    n += chunk.length
    if (n > MAX_RELAY_BODY) throw new NaiadError('DFD_ERR_BODY_TOO_LARGE', `a request body over ${MAX_RELAY_BODY} bytes`)
    yield chunk
  }
}

export class ProxyServer {
  private readonly server: Server
  private readonly mirror: RegistryMirror
  private readonly components: ProxyServerComponents
  private readonly options: ProxyServerOptions
  private readonly agent: Agent
  private readonly tunnels = new Set<Socket>()

  constructor(components: ProxyServerComponents, options: ProxyServerOptions) {
    this.components = components
    this.options = options
    this.agent = new Agent({ connect: policyConnect(options.policy, { timeout: 10_000 }) })
    this.mirror = new RegistryMirror(components, options)
    this.server = createServer((req, res) => { this.route(req, res) })
    this.server.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => this.tunnel(req, socket, head))
  }

  /** Registries the mirror could not talk to since it started (latest error of each). */
  upstreamProblems(): UpstreamProblem[] {
    return this.mirror.problems.list()
  }

  private route(req: IncomingMessage, res: ServerResponse): void {
    const raw = req.url ?? '/'
    const work = /^https?:\/\//i.test(raw) ? this.forward(req, res, raw) : this.mirror.handle(req, res)
    work.catch((err: unknown) => {
      const refused = destinationDenied(err)
      if (refused !== undefined && !res.headersSent) return sendStatus(res, 403, refused)
      if (err instanceof NaiadError && (err.code === 'DFD_ERR_BLOB_DENIED' || err.code === 'DFD_ERR_BODY_TOO_LARGE') && !res.headersSent) return sendStatus(res, err.status, err)
      sendRegistryError(res, err)
    })
  }

  /** A plain-HTTP request through the proxy: the swarm when a rule matches, else relayed as is. */
  private async forward(req: IncomingMessage, res: ServerResponse, url: string): Promise<void> {
    const headers = requestHeaders(req.headers)
    if (req.method === 'GET' && req.headers.range === undefined && this.options.rules.some((r) => r.test(url))) {
      const qos = this.components.qos
      const admission = qos?.active === true ? qos.admit({ tenantKey: url, priority: 'on-demand' }) : undefined
      if (admission?.admitted === false) {
        sendTooManyRequests(res, admission.retryAfterSec, admission.reason)
        return
      }
      try {
        // Before the swarm may answer from cached or peers' bytes: would the registry give them to this client?
        await this.components.permission?.check(url, headers)
        await this.viaSwarm(res, url, headers)
      } finally {
        if (admission?.admitted === true) admission.release()
      }
      return
    }
    const u = this.options.policy?.checkUrl(url) ?? new URL(url)
    const declared = Number(req.headers['content-length'] ?? 0)
    if (declared > MAX_RELAY_BODY) throw new NaiadError('DFD_ERR_BODY_TOO_LARGE', `a request body of ${declared} bytes (the proxy relays at most ${MAX_RELAY_BODY})`)
    let up: Dispatcher.ResponseData
    try {
      up = await this.agent.request({ origin: u.origin, path: u.pathname + u.search, method: req.method as Dispatcher.HttpMethod, headers, body: req.method === 'GET' || req.method === 'HEAD' ? undefined : Readable.from(capped(req)) })
    } catch (err) {
      if (err instanceof NaiadError) throw err
      throw destinationDenied(err) ?? toNaiadError(err, 'DFD_ERR_ORIGIN_UNREACHABLE', `cannot reach ${u.host}`)
    }
    res.writeHead(up.statusCode, responseHeaders(up.headers))
    await pipeline(up.body, res)
  }

  /**
   * A forward-proxied URL through the swarm, streamed to the client as its pieces are
   * verified (the last one once the whole content matched). The content's SHA-256 goes in
   * `x-naiad-sha256` when it is known before the first byte (a cached task).
   */
  private async viaSwarm(res: ServerResponse, url: string, headers: Record<string, string>): Promise<void> {
    const { store, tasks } = this.components
    const handle = tasks.open({ url, headers }, { keepRunning: true })
    const closed = new AbortController()
    const onClose = (): void => closed.abort(new NaiadError('PROTO_ERR_ABORTED', 'the client closed the connection'))
    res.once('close', onClose)
    try {
      await waitServable(handle, 0, closed.signal)
      let size = handle.progress().totalBytes
      // Without a length from the origin, the length is known only at the end.
      if (size < 0) size = (await handle.done).contentLength
      const task = store.getTask(handle.id)
      const sha = task?.complete === true && task.sha256 !== null ? { 'x-naiad-sha256': task.sha256.toString('hex') } : {}
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size, ...sha })
      if (size > 0) await sendServable(store, handle, 0, size - 1, res, closed.signal)
      res.end()
    } catch (err) {
      if (res.headersSent) res.destroy()
      throw err
    } finally {
      res.off('close', onClose)
      handle.release()
    }
  }

  /**
   * CONNECT to a host in `proxy.connect-allow` (port 443, or the port the entry names): a raw
   * TCP tunnel; the proxy never sees inside. Anything else is refused: an open CONNECT relay
   * lets any local process reach (and port-scan) whatever this node can reach.
   */
  private tunnel(req: IncomingMessage, client: Socket, head: Buffer): void {
    const m = /^([^:]+|\[[^\]]+\]):(\d+)$/.exec(req.url ?? '')
    if (m === null) {
      client.end('HTTP/1.1 400 Bad Request\r\n\r\n')
      return
    }
    const host = m[1].replace(/^\[|\]$/g, '').toLowerCase()
    const allow = this.options.connectAllow ?? []
    const target = `${host}:${Number(m[2])}`
    if (!allow.some((h) => (/:\d+$/.test(h) ? h.toLowerCase() : `${h.toLowerCase()}:443`) === target)) {
      const why = allow.length === 0 ? 'CONNECT is off (proxy.connect-allow is empty)' : `CONNECT goes only to ${allow.join(', ')} (port 443 unless one is named)`
      const e = new NaiadError('DFD_ERR_CONNECT_FORBIDDEN', why)
      const body = JSON.stringify({ code: e.code, message: e.message })
      client.end(`HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
      return
    }
    const upstream = connect(Number(m[2]), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      if (head.length > 0) upstream.write(head)
      upstream.pipe(client)
      client.pipe(upstream)
    })
    this.tunnels.add(client)
    const close = (): void => { upstream.destroy(); client.destroy(); this.tunnels.delete(client) }
    upstream.on('error', () => {
      if (client.writable) client.end('HTTP/1.1 502 Bad Gateway\r\n\r\n')
      close()
    })
    client.on('error', close)
    client.on('close', close)
    upstream.setTimeout(10_000, () => { if (!upstream.readyState.startsWith('open')) close() })
  }

  async listen(host: string, port: number): Promise<string> {
    this.server.listen(port, host)
    await new Promise<void>((resolve, reject) => {
      this.server.once('listening', resolve)
      this.server.once('error', reject)
    })
    const a = this.server.address() as AddressInfo
    return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`
  }

  async close(): Promise<void> {
    for (const t of this.tunnels) t.destroy()
    this.server.closeAllConnections()
    await new Promise<void>((r) => this.server.close(() => r()))
    await this.mirror.close()
    await this.agent.close()
  }
}
