// The baselines of the benchmarks, each in its own process as the daemons are:
//   receive [--sink count|file --out PATH] [--tls] [--host IP]  listen (loopback by default), take one connection, print {"port"} then {"bytes","ms"}
//   send --port N --file PATH [--tls] [--host IP]              stream a file to IP:N (127.0.0.1 by default)
// With --tls both ends speak TLS 1.3 (the cipher OpenSSL picks first: AES-256-GCM), the
// receiver with a self-signed Ed25519 certificate as a Naiad node has.
//   http-get --url URL                     GET a URL, count the body bytes, print {"bytes","ms"}
// Times are taken on the receiving side, from connection (or request) to the last byte.

import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { once } from 'node:events'
import { get, type IncomingMessage } from 'node:http'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'

/** Read size of the sender; the upload server also reads 1 MiB at a time. */
const CHUNK = 1024 * 1024

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    port: { type: 'string' },
    file: { type: 'string' },
    url: { type: 'string' },
    sink: { type: 'string', default: 'count' },
    out: { type: 'string' },
    tls: { type: 'boolean', default: false },
    host: { type: 'string', default: '127.0.0.1' }
  }
})

function print(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`)
}

/** CPU seconds (user + system) since `since`. */
function cpuS(since: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(since)
  return Math.round((u.user + u.system) / 1e4) / 100
}

async function receive(): Promise<void> {
  const sink = values.sink
  if (sink !== 'count' && sink !== 'file') throw new Error(`--sink must be count or file, not ${sink}`)
  if (sink === 'file' && values.out === undefined) throw new Error('--sink file needs --out PATH')
  let server
  if (values.tls) {
    const { generateKeyPair } = await import('@libp2p/crypto/keys')
    const { nodeIdentity } = await import('@naiad/peer')
    const id = nodeIdentity(await generateKeyPair('Ed25519'))
    server = createTlsServer({ key: id.keyPem, cert: id.cert, minVersion: 'TLSv1.3' })
  } else {
    server = createServer()
  }
  server.listen(0, values.host)
  await once(server, 'listening')
  print({ port: (server.address() as AddressInfo).port })
  const [socket] = await once(server, values.tls ? 'secureConnection' : 'connection') as [Socket]
  server.close()
  const t0 = performance.now()
  const cpu0 = process.cpuUsage()
  let bytes = 0
  if (sink === 'count') {
    for await (const chunk of socket) bytes += (chunk as Buffer).length
  } else {
    // What a careful user does with a plain transfer: keep the bytes and check their digest.
    const hash = createHash('sha256')
    await pipeline(socket, async function* (source: AsyncIterable<Buffer>) {
      for await (const chunk of source) {
        bytes += chunk.length
        hash.update(chunk)
        yield chunk
      }
    }, createWriteStream(values.out!))
    print({ sha256: hash.digest('hex') })
  }
  print({ bytes, ms: performance.now() - t0, cpuS: cpuS(cpu0) })
}

async function send(): Promise<void> {
  const socket = values.tls
    ? tlsConnect({ port: Number(values.port), host: values.host, rejectUnauthorized: false, minVersion: 'TLSv1.3' })
    : connect(Number(values.port), values.host)
  await once(socket, values.tls ? 'secureConnect' : 'connect')
  const cpu0 = process.cpuUsage()
  await pipeline(createReadStream(values.file!, { highWaterMark: CHUNK }), socket)
  print({ cpuS: cpuS(cpu0) })
}

async function httpGet(): Promise<void> {
  const t0 = performance.now()
  const cpu0 = process.cpuUsage()
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    get(values.url!, resolve).once('error', reject)
  })
  if (res.statusCode !== 200) throw new Error(`GET ${values.url} answered ${res.statusCode}`)
  let bytes = 0
  for await (const chunk of res) bytes += (chunk as Buffer).length
  print({ bytes, ms: performance.now() - t0, cpuS: cpuS(cpu0) })
}

const roles: Record<string, () => Promise<void>> = { receive, send, 'http-get': httpGet }
const role = roles[positionals[0] ?? '']
if (role === undefined) {
  process.stderr.write('usage: tcp-pipe.ts receive|send|http-get [options]\n')
  process.exit(2)
}
await role()
