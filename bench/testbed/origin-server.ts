// The origin of a testbed, run inside its namespace: testkit's TestOrigin (which counts the
// body bytes it serves per path) behind a plain TCP relay on the namespace's address, since
// TestOrigin listens on loopback only. The relay adds a copy but no protocol, and the count
// is TestOrigin's own.
//
//   ip netns exec NS node origin-server.ts --listen 10.x.y.z:8080 --file BLOB --path /blob-a --path /blob-b
//   node origin-server.ts --listen 127.0.0.1:0 --path /a=FILE_A --path /b=FILE_B
//
// A path is served from --file, or from its own FILE when given as /path=FILE.
// Prints `{"ready":true,"url":"http://10.x.y.z:8080"}`, then answers each line `served` on
// stdin with `{"served":{"/blob-a":N,…}}`. Exits when stdin closes.

import { createServer, connect } from 'node:net'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'

import { TestOrigin } from '@naiad/testkit'

const { values } = parseArgs({ options: { listen: { type: 'string' }, file: { type: 'string' }, path: { type: 'string', multiple: true, default: [] } } })
if (values.listen === undefined || (values.file === undefined && values.path.some((p) => !p.includes('=')))) {
  process.stderr.write('usage: origin-server.ts --listen HOST:PORT [--file FILE] --path /p[=FILE] [--path /q[=FILE] …]\n')
  process.exit(2)
}
const [host, port] = [values.listen.slice(0, values.listen.lastIndexOf(':')), Number(values.listen.slice(values.listen.lastIndexOf(':') + 1))]

const origin = await new TestOrigin().start()
for (const p of values.path) {
  const eq = p.indexOf('=')
  origin.files.set(eq < 0 ? p : p.slice(0, eq), { path: eq < 0 ? values.file! : p.slice(eq + 1) })
}
const inner = Number(new URL(origin.url).port)

const relay = createServer((c) => {
  const u = connect(inner, '127.0.0.1')
  c.pipe(u)
  u.pipe(c)
  c.on('error', () => u.destroy())
  u.on('error', () => c.destroy())
})
await new Promise<void>((resolve) => relay.listen(port, host, resolve))
// Port 0: the port the relay got.
const bound = (relay.address() as { port: number }).port
process.stdout.write(`${JSON.stringify({ ready: true, url: `http://${host}:${bound}` })}\n`)

const rl = createInterface({ input: process.stdin })
rl.on('line', (line) => {
  if (line.trim() === 'served') process.stdout.write(`${JSON.stringify({ served: Object.fromEntries(origin.served) })}\n`)
})
rl.on('close', () => {
  relay.close()
  origin.stop().finally(() => process.exit(0))
})
