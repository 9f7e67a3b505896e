// `nydus-fs convert`: source image → lazy image in the registry. Everything that can fail
// on bad input (resolving, streaming and merging every layer, building and validating the
// bootstrap) happens before the first push, so a refused image leaves the target untouched.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import type { Header } from 'tar-stream'
import {
  ANNOTATIONS, CHUNK_SIZE, LAZY_FORMAT_VERSION, MEDIA_TYPES, NaiadError,
  type BlobRef
} from '@naiad/proto/contracts'

import { encodeBootstrap, isValidChunkSize } from '../image/bootstrap.ts'
import { loadLazyImage } from '../image/load.ts'
import { RegistryClient, sha256Digest } from '@naiad/oci'
import type { OciManifest } from '@naiad/oci'
import { formatRef, parseRef, type ImageRef } from '@naiad/oci'
import { buildBootstrap, numberNodes, usedChunks } from './build.ts'
import { ChunkStore, type ChunkStats, type DictChunk, type OutputBlob } from './chunk-store.ts'
import { isTarLayer, readLayer } from './layer-reader.ts'
import { MergeTree, newDir, safeComponents, type MergeNode, type NodeMeta } from './merge-tree.ts'
import { prefetchTable } from './prefetch.ts'
import { pushLazyImage, pushRuntimeIndex } from './push.ts'
import { buildRuntimeImage } from './runtime-image.ts'

export interface ConvertOptions {
  source: string
  target: string
  plainHttp: boolean
  chunkSize?: number
  compressor?: 'zstd' | 'none'
  /** Another lazy image whose chunks are reused rather than stored again. */
  chunkDict?: string
  /** OS/ARCH[/VARIANT] picked from an index; default linux/amd64. */
  platform?: string
  /** Authorization header value for all registries (default NAIAD_REGISTRY_AUTH). */
  auth?: string
  timeoutMs?: number
  caFile?: string
  /** Where temporary data blobs go; default the OS temp dir. */
  workDir?: string
  /** zstd level for chunks (1-19), default 3. */
  level?: number
  /** Progress lines for a human. */
  log?: (line: string) => void
  signal?: AbortSignal
}

export interface ConvertResult {
  target: ImageRef
  /** The lazy manifest (what mount and check read; `TARGET@manifestDigest` names it). */
  manifestDigest: string
  /** The index tagged TARGET_REF, and the runtime manifest in it that containerd pulls. */
  indexDigest: string
  runtimeDigest: string
  rootDigest: string
  bootstrapDigest: string
  sourceManifest: string
  inodes: number
  stats: ChunkStats
  blobs: Array<{ digest: string; size: number; fromDict: boolean }>
  /** Bytes uploaded for data blobs (blobs already in the target are not counted). */
  pushedBytes: number
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let u = 0
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++ }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`
}

function makedev(major: number, minor: number): number {
  // glibc's encoding, as stat(2) reports st_rdev.
  const ma = BigInt(major)
  const mi = BigInt(minor)
  return Number(((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn))
}

function metaOf(header: Header): NodeMeta {
  const pax = (header.pax ?? {}) as Record<string, string>
  const num = (key: string, fallback: number): number => {
    const v = pax[key]
    if (v === undefined) return fallback
    const n = Math.floor(Number(v))
    return Number.isFinite(n) ? n : fallback
  }
  const xattrs = new Map<string, Buffer>()
  for (const [key, value] of Object.entries(pax)) {
    if (key.startsWith('SCHILY.xattr.')) xattrs.set(key.slice('SCHILY.xattr.'.length), Buffer.from(value, 'latin1'))
    else if (key.startsWith('LIBARCHIVE.xattr.')) xattrs.set(decodeURIComponent(key.slice('LIBARCHIVE.xattr.'.length)), Buffer.from(value, 'base64'))
  }
  return {
    mode: (header.mode ?? 0) & 0o7777,
    uid: num('uid', header.uid ?? 0),
    gid: num('gid', header.gid ?? 0),
    mtime: num('mtime', header.mtime === undefined ? 0 : Math.floor(header.mtime.getTime() / 1000)),
    xattrs
  }
}

function leaf(type: MergeNode['type'], meta: NodeMeta): MergeNode {
  return { ...meta, type, rdev: 0, symlink: '', size: 0, chunks: [], children: undefined, seen: 0 }
}

/** Cuts a file's content into chunks, one buffer reused for all (the store copies or writes it before returning). */
async function chunkFile(content: AsyncIterable<Buffer>, store: ChunkStore, buf: Buffer): Promise<{ chunks: number[]; size: number }> {
  const chunks: number[] = []
  let fill = 0
  let size = 0
  for await (const data of content) {
    let pos = 0
    while (pos < data.length) {
      const n = Math.min(buf.length - fill, data.length - pos)
      data.copy(buf, fill, pos, pos + n)
      fill += n
      pos += n
      if (fill === buf.length) {
        chunks.push(await store.add(buf))
        fill = 0
      }
    }
    size += data.length
  }
  if (fill > 0) chunks.push(await store.add(buf.subarray(0, fill)))
  return { chunks, size }
}

class Clients {
  private readonly map = new Map<string, RegistryClient>()
  private readonly options: ConvertOptions

  constructor(options: ConvertOptions) {
    this.options = options
  }

  for(registry: string): RegistryClient {
    let c = this.map.get(registry)
    if (c === undefined) {
      c = new RegistryClient(registry, { plainHttp: this.options.plainHttp, auth: this.options.auth, timeoutMs: this.options.timeoutMs, caFile: this.options.caFile })
      this.map.set(registry, c)
    }
    return c
  }

  async close(): Promise<void> {
    for (const c of this.map.values()) await c.close().catch(() => {})
  }
}

export async function convertImage(options: ConvertOptions): Promise<ConvertResult> {
  const log = options.log ?? ((): void => {})
  const chunkSize = options.chunkSize ?? CHUNK_SIZE.default
  const compressor = options.compressor ?? 'zstd'
  const platform = options.platform ?? 'linux/amd64'
  if (!isValidChunkSize(chunkSize)) throw new NaiadError('PROTO_ERR_USAGE', `chunk size ${chunkSize} must be a power of two between 64KiB and 16MiB`)
  const sourceRef = parseRef(options.source)
  const targetRef = parseRef(options.target)
  if (targetRef.digest !== undefined) throw new NaiadError('OCI_ERR_BAD_REF', `target "${options.target}" must name a tag, not a digest`)
  if (targetRef.registry === sourceRef.registry && targetRef.repository === sourceRef.repository && targetRef.tag === sourceRef.tag && sourceRef.digest === undefined) {
    throw new NaiadError('OCI_ERR_BAD_REF', `target "${options.target}" would replace the source image; give the lazy image its own tag`)
  }
  const clients = new Clients(options)
  const work = await mkdtemp(join(options.workDir ?? tmpdir(), 'nydus-convert-'))
  let store: ChunkStore | undefined
  try {
    const source = clients.for(sourceRef.registry)
    const { digest: sourceDigest, manifest } = await source.resolveImage(sourceRef, platform, options.signal)
    checkSource(manifest)
    const configBody = await source.getBlob(sourceRef.repository, manifest.config.digest, { signal: options.signal })
    let config: unknown
    try {
      config = JSON.parse(configBody.toString('utf8'))
    } catch (err) {
      throw new NaiadError('NFS_ERR_BAD_IMAGE', 'source image config is not valid JSON', { cause: err })
    }
    log(`source ${formatRef(sourceRef)} (${sourceDigest}): ${manifest.layers.length} layers, ${formatBytes(manifest.layers.reduce((s, l) => s + l.size, 0))}`)

    const dict = new Map<string, DictChunk>()
    let dictRef: ImageRef | undefined
    if (options.chunkDict !== undefined && options.chunkDict !== '') {
      dictRef = parseRef(options.chunkDict)
      const image = await loadLazyImage(clients.for(dictRef.registry), dictRef, { platform, signal: options.signal })
      if (image.compressor !== compressor) {
        throw new NaiadError('NFS_ERR_BAD_IMAGE', `chunk dictionary ${options.chunkDict} stores ${image.compressor} chunks, this conversion ${compressor}`)
      }
      for (const c of image.bootstrap.chunks) {
        const key = Buffer.from(c.digest).toString('hex')
        if (!dict.has(key)) dict.set(key, { blob: image.blobs[c.blob], offset: c.offset, storedSize: c.storedSize, size: c.size })
      }
      log(`chunk dictionary ${formatRef(dictRef)}: ${dict.size} chunks in ${image.blobs.length} blobs`)
    }

    store = new ChunkStore(work, chunkSize, compressor, dict, options.level)
    const tree = new MergeTree()
    const buf = Buffer.allocUnsafe(chunkSize)
    const n = manifest.layers.length
    for (const [i, layer] of manifest.layers.entries()) {
      const what = `layer ${i + 1}/${n} ${layer.digest}`
      tree.layer = i + 1
      store.startLayer(i)
      const before = { ...store.stats }
      let entries = 0
      let read = 0
      let lastReport = Date.now()
      const { body } = await source.openBlob(sourceRef.repository, layer.digest, options.signal)
      const counted = (async function* (): AsyncGenerator<Buffer> {
        for await (const c of body) {
          read += c.length
          if (Date.now() - lastReport > 5000) {
            lastReport = Date.now()
            log(`layer ${i + 1}/${n}: ${formatBytes(read)} of ${formatBytes(layer.size)} read, ${entries} entries`)
          }
          yield c
        }
      })()
      const { compression } = await readLayer(counted, layer.mediaType, what, async ({ header, content }) => {
        entries++
        await applyEntry(tree, store!, buf, header, content)
      })
      if (read !== layer.size) throw new NaiadError('NFS_ERR_DIGEST', `${what}: the registry sent ${read} bytes, the manifest says ${layer.size}`)
      const s = store.stats
      log(`layer ${i + 1}/${n} ${layer.digest.slice(7, 19)} (${compression}, ${formatBytes(layer.size)}): ${entries} entries, ` +
        `${formatBytes(s.bytes - before.bytes)} in ${s.chunks - before.chunks} chunks, ${s.newChunks - before.newChunks} new, ` +
        `${s.dupChunks - before.dupChunks} duplicate, ${s.dictChunks - before.dictChunks} in the dictionary`)
    }

    const numbered = numberNodes(tree)
    const finished = await store.finish(usedChunks(numbered.nodes))
    const blobs: BlobRef[] = finished.blobs.map((b) => ({ digest: b.digest, size: b.size }))
    const created = Date.parse(String((config as { created?: unknown } | null)?.created ?? ''))
    const { bootstrap, rootDigest } = buildBootstrap({
      tree, numbered, chunks: finished.chunks, blobs, remap: finished.remap, chunkSize, compressor,
      createdAt: Number.isFinite(created) ? Math.floor(created / 1000) : 0
    })
    bootstrap.prefetch = prefetchTable(bootstrap, config)
    const bootstrapBlob = encodeBootstrap(bootstrap)
    const bootstrapDigest = sha256Digest(bootstrapBlob)
    const s = store.stats
    const content = finished.chunks.reduce((sum, c) => sum + c.size, 0)
    log(`merged tree: ${bootstrap.inodes.length} inodes, ${finished.chunks.length} unique chunks (${formatBytes(content)}); ` +
      `${s.chunks} chunks read, ${s.newChunks} stored (${formatBytes(s.storedBytes)} compressed), ${s.dupChunks} duplicates, ${s.dictChunks} from the dictionary; ` +
      `dedup ratio ${s.bytes === 0 ? '1.00' : (s.bytes / Math.max(1, s.newBytes)).toFixed(2)}`)
    log(`bootstrap ${bootstrapDigest} (${formatBytes(bootstrapBlob.length)}), root ${rootDigest}, ${bootstrap.prefetch.length} files to prefetch`)

    const lazyManifest: OciManifest = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.manifest,
      config: { mediaType: MEDIA_TYPES.config, digest: manifest.config.digest, size: configBody.length },
      layers: [
        ...finished.blobs.map((b) => ({ mediaType: MEDIA_TYPES.blob, digest: b.digest, size: b.size })),
        { mediaType: MEDIA_TYPES.bootstrap, digest: bootstrapDigest, size: bootstrapBlob.length }
      ],
      annotations: {
        [ANNOTATIONS.version]: String(LAZY_FORMAT_VERSION),
        [ANNOTATIONS.rootDigest]: rootDigest,
        [ANNOTATIONS.bootstrapDigest]: bootstrapDigest,
        [ANNOTATIONS.chunkSize]: String(chunkSize),
        [ANNOTATIONS.compressor]: compressor,
        [ANNOTATIONS.sourceManifest]: sourceDigest
      }
    }
    const lazyManifestBody = Buffer.from(JSON.stringify(lazyManifest))
    const runtime = buildRuntimeImage({ sourceManifest: manifest, sourceConfig: configBody, lazyManifestBody, lazyManifestDigest: sha256Digest(lazyManifestBody) })
    const pushed = await pushLazyImage({
      clients: (registry) => clients.for(registry), target: targetRef, dictRef, blobs: finished.blobs as OutputBlob[],
      configBody, bootstrapBlob, manifest: lazyManifest, workDir: work, log, signal: options.signal
    })
    await pushRuntimeIndex({
      clients: (registry) => clients.for(registry), source: sourceRef, target: targetRef, sourceLayers: manifest.layers,
      runtime, workDir: work, log, signal: options.signal
    })
    log(`pushed ${formatRef(targetRef)}: lazy manifest ${pushed.manifestDigest}, index ${runtime.indexDigest}`)
    return {
      target: targetRef, manifestDigest: pushed.manifestDigest, indexDigest: runtime.indexDigest, runtimeDigest: runtime.manifestDigest, rootDigest, bootstrapDigest, sourceManifest: sourceDigest,
      inodes: bootstrap.inodes.length, stats: { ...s },
      blobs: finished.blobs.map((b) => ({ digest: b.digest, size: b.size, fromDict: b.fromDict })),
      pushedBytes: pushed.pushedBytes
    }
  } finally {
    await store?.abort()
    await rm(work, { recursive: true, force: true })
    await clients.close()
  }
}

function checkSource(manifest: OciManifest): void {
  if (manifest.annotations?.[ANNOTATIONS.version] !== undefined || manifest.layers.some((l) => l.mediaType === MEDIA_TYPES.bootstrap)) {
    throw new NaiadError('NFS_ERR_BAD_IMAGE', 'the source is already a lazy image')
  }
  for (const [i, l] of manifest.layers.entries()) {
    if (!isTarLayer(l.mediaType)) throw new NaiadError('NFS_ERR_BAD_IMAGE', `layer ${i + 1} has media type ${l.mediaType}, not a tar layer`)
  }
}

async function applyEntry(tree: MergeTree, store: ChunkStore, buf: Buffer, header: Header, content: AsyncIterable<Buffer>): Promise<void> {
  const name = header.name
  const parts = safeComponents(name)
  if (tree.applyWhiteout(parts, name)) return
  const meta = metaOf(header)
  switch (header.type) {
    case 'file':
    case 'contiguous-file': {
      const node = leaf('file', meta)
      const { chunks, size } = await chunkFile(content, store, buf)
      node.chunks = chunks
      node.size = size
      tree.put(parts, node, name)
      return
    }
    case 'directory':
      tree.put(parts, newDir(meta, tree.layer), name)
      return
    case 'symlink': {
      const target = header.linkname ?? ''
      if (target === '' || target.includes('\0')) throw new NaiadError('NFS_ERR_BAD_LAYER', `symlink "${name}" has no target`)
      const node = leaf('symlink', meta)
      node.symlink = target
      node.size = Buffer.byteLength(target)
      tree.put(parts, node, name)
      return
    }
    case 'link': {
      const target = header.linkname ?? ''
      const targetParts = safeComponents(target, `hardlink "${name}" → target`)
      tree.link(parts, targetParts, name, target)
      return
    }
    case 'character-device':
    case 'block-device': {
      const node = leaf(header.type === 'character-device' ? 'char' : 'block', meta)
      node.rdev = makedev(header.devmajor ?? 0, header.devminor ?? 0)
      tree.put(parts, node, name)
      return
    }
    case 'fifo':
      tree.put(parts, leaf('fifo', meta), name)
      return
    default:
      throw new NaiadError('NFS_ERR_BAD_LAYER', `entry "${name}" has an unsupported tar type (${String(header.type)})`)
  }
}
