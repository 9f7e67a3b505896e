// A port found free and released: another process can take it before the supernode binds
// it. Kept only for scenarios/scheduler-scale.ts (whose owner is rewriting it): testkit binds
// port 0 in the process that uses a port and reads it back from the ready line, which
// carries the supernode's HTTP address (`ready.http`); that scenario should do the same.

import { createServer, type AddressInfo } from 'node:net'

export async function freePort(): Promise<number> {
  const srv = createServer()
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const port = (srv.address() as AddressInfo).port
  await new Promise<void>((r) => srv.close(() => r()))
  return port
}
