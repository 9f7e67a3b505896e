// The web console at `/`: a prebuilt single-page app (sources in supernode/console/, built by
// scripts/build.ts into dist/console/) that reads the same HTTP API operators script against,
// so it shows nothing the API does not. Its three files are read once, on the first request,
// and served from memory; without a build (a checkout where `npm run build` never ran) `/` says so.

import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

import type { FastifyInstance } from 'fastify'

const TYPES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8'
}

// Only this origin's scripts, styles and API; a token in the URL's fragment never leaves the page.
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer'
}

/**
 * Where the built console is: next to the bundled supernode in an installed package
 * (dist/console/), or in the checkout's dist/ when the supernode runs from its sources.
 */
export function consoleDirs(): string[] {
  return [new URL('./console/', import.meta.url), new URL('../../../dist/console/', import.meta.url)].map((u) => fileURLToPath(u))
}

async function loadFiles(dirs: string[]): Promise<Map<string, Buffer> | undefined> {
  for (const dir of dirs) {
    const files = new Map<string, Buffer>()
    for (const name of Object.keys(TYPES)) {
      const data = await readFile(`${dir}${name}`).catch(() => undefined)
      if (data !== undefined) files.set(name, data)
    }
    if (files.size === Object.keys(TYPES).length) return files
  }
  return undefined
}

export function serveConsole(app: FastifyInstance, dirs = consoleDirs()): void {
  let loading: Promise<Map<string, Buffer> | undefined> | undefined
  const load = (): Promise<Map<string, Buffer> | undefined> => (loading ??= loadFiles(dirs))
  app.get('/', async (_req, reply) => {
    const files = await load()
    reply.headers({ ...SECURITY_HEADERS, 'cache-control': 'no-cache' })
    if (files === undefined) {
      return reply.code(404).type('text/html; charset=utf-8').send('<!doctype html><title>Naiad</title><p>The console is not built. In a checkout, run <code>npm run build</code> (or <code>npm start</code>, which builds it) and restart the supernode.</p>')
    }
    return reply.type(TYPES['index.html']).send(files.get('index.html'))
  })
  app.get<{ Params: { file: string } }>('/console/:file', async (req, reply) => {
    const data = req.params.file === 'index.html' ? undefined : (await load())?.get(req.params.file)
    if (data === undefined) return reply.callNotFound()
    return reply.headers({ ...SECURITY_HEADERS, 'cache-control': 'no-cache' }).type(TYPES[req.params.file]).send(data)
  })
}
