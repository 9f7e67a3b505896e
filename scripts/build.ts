// `npm run build` (and `npm pack`, through prepack): the installable form of Naiad in dist/.
//
//   dist/supernode.js, dfdaemon.js, dfget.js, nydus-fs.js   the four binaries, each bundled
//                                   with esbuild into plain JavaScript (no type stripping or
//                                   module resolution of 400 packages at every start); code
//                                   they share, and what they load only on demand (plugins,
//                                   nydus-fs subcommands), sits in chunk-*.js files beside them
//   dist/builtin-rules.yaml         the doctor's rules, read next to the code that loads them
//   dist/console/                   the supernode's web console (Preact), prebuilt
//
// The sources stay the truth: dist/ is not committed, and the developer commands (npm start,
// npm test) run the TypeScript sources directly. Native addons, and tar-stream (whose
// decoder nydus-fs patches in place, so it must be the one module instance everyone loads),
// stay real dependencies: package.json bundles them into the tarball so that an install
// needs no registry.

import { chmod, copyFile, mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { build, type BuildOptions } from 'esbuild'
import { NODE_FLOOR } from '@naiad/proto/node-version'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
export const DIST = join(ROOT, 'dist')

export const BINARIES = {
  supernode: 'supernode/bin/supernode.ts',
  dfdaemon: 'dfdaemon/bin/dfdaemon.ts',
  dfget: 'dfget/bin/dfget.ts',
  'nydus-fs': 'nydus-fs/bin/nydus-fs.ts'
} as const

/** Loaded from node_modules at run time, never bundled. */
export const EXTERNAL = ['better-sqlite3', 'fuse-native', 'zstd-napi', 'tar-stream']

// Bundled CommonJS packages call require() for Node built-ins; an ES module has no require,
// so every output file gets one.
const BANNER = [
  "import { createRequire as __naiadCreateRequire } from 'node:module';",
  'const require = __naiadCreateRequire(import.meta.url);'
].join('\n')

async function buildBinaries(outdir: string): Promise<void> {
  const options: BuildOptions = {
    absWorkingDir: ROOT,
    entryPoints: Object.fromEntries(Object.entries(BINARIES).map(([name, file]) => [name, join(ROOT, file)])),
    outdir,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: `node${NODE_FLOOR}`,
    external: EXTERNAL,
    // Chunks next to the entries: code that finds files through import.meta.url (the doctor's
    // rules, the console) then resolves them in dist/ whichever file it landed in.
    chunkNames: 'chunk-[hash]',
    banner: { js: BANNER },
    minifyWhitespace: true,
    minifySyntax: true,
    legalComments: 'none',
    logLevel: 'warning'
  }
  const result = await build(options)
  if (result.errors.length > 0) throw new Error(`esbuild failed: ${result.errors.map((e) => e.text).join('; ')}`)
  for (const name of Object.keys(BINARIES)) {
    await chmod(join(outdir, `${name}.js`), 0o755)
  }
}

/** The web console: supernode/console/ → OUTDIR/console/ (index.html, app.js, app.css). */
export async function buildConsole(outdir = DIST): Promise<string> {
  const src = join(ROOT, 'supernode', 'console')
  const dir = join(outdir, 'console')
  await mkdir(dir, { recursive: true })
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: { app: join(src, 'src', 'main.tsx') },
    outdir: dir,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome120', 'firefox120', 'safari17'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    minify: true,
    legalComments: 'none',
    logLevel: 'warning'
  })
  if (result.errors.length > 0) throw new Error(`esbuild failed: ${result.errors.map((e) => e.text).join('; ')}`)
  await copyFile(join(src, 'index.html'), join(dir, 'index.html'))
  await copyFile(join(src, 'app.css'), join(dir, 'app.css'))
  return dir
}

export async function buildAll(outdir = DIST): Promise<void> {
  await rm(outdir, { recursive: true, force: true })
  await mkdir(outdir, { recursive: true })
  await buildBinaries(outdir)
  await copyFile(join(ROOT, 'node-tools', 'src', 'doctor', 'builtin-rules.yaml'), join(outdir, 'builtin-rules.yaml'))
  await buildConsole(outdir)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const t0 = Date.now()
  const only = process.argv[2]
  if (only === '--console') await buildConsole()
  else await buildAll()
  process.stdout.write(`built ${only === '--console' ? 'the console' : 'dist/'} in ${Date.now() - t0} ms\n`)
}
