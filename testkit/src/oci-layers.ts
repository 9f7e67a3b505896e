// OCI layers built entry by entry (whiteouts, hardlinks, symlinks, devices, xattrs in PAX
// headers, long names), compressed with gzip, zstd or not at all, and pushed as images;
// plus a large layer written to a file without ever being held in memory.

import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { createReadStream, createWriteStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { gzipSync, zstdCompressSync } from 'node:zlib'

import { pack } from 'tar-stream'

import { blobChunks } from './blobs.ts'

export type LayerEntryType = 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo'
export type LayerCompression = 'gzip' | 'zstd' | 'none'

export interface LayerEntry {
  name: string
  type?: LayerEntryType
  content?: Buffer | string
  mode?: number
  uid?: number
  gid?: number
  /** Seconds since the epoch. */
  mtime?: number
  /** Symlink target or hardlink target path. */
  linkname?: string
  devmajor?: number
  devminor?: number
  /** Written as PAX `SCHILY.xattr.NAME` records, byte for byte. */
  xattrs?: Record<string, Buffer | string>
}

export const LAYER_MEDIA_TYPES: Record<LayerCompression, string> = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  none: 'application/vnd.oci.image.layer.v1.tar'
}

/** One PAX record: "LEN key=value\n" where LEN counts itself. */
function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')])
  let len = body.length + 1
  while (String(len).length + body.length !== len) len++
  return Buffer.concat([Buffer.from(String(len)), body])
}

/** An uncompressed tar archive of `entries`, in order. */
export async function makeTar(entries: LayerEntry[]): Promise<Buffer> {
  const p = pack()
  const chunks: Buffer[] = []
  p.on('data', (c: unknown) => { chunks.push(c as Buffer) })
  const done = once(p, 'end')
  const add = (header: Parameters<typeof p.entry>[0], content?: Buffer): Promise<void> => new Promise((resolve, reject) => {
    p.entry(header, content ?? Buffer.alloc(0), (err) => err ? reject(err) : resolve())
  })
  for (const e of entries) {
    if (e.xattrs !== undefined) {
      // tar-stream encodes PAX values as UTF-8 text; binary xattrs need the raw record.
      const raw = Buffer.concat(Object.entries(e.xattrs).map(([k, v]) => paxRecord(`SCHILY.xattr.${k}`, Buffer.from(v))))
      await add({ name: RAW_PAX, type: 'file', size: raw.length }, raw)
    }
    const type = e.type ?? 'file'
    const content = e.content === undefined ? undefined : Buffer.from(e.content)
    await add({
      name: e.name,
      type,
      size: type === 'file' ? content?.length ?? 0 : 0,
      mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      mtime: new Date((e.mtime ?? 1_700_000_000) * 1000),
      ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
      ...(e.devmajor !== undefined ? { devmajor: e.devmajor, devminor: e.devminor ?? 0 } : {})
    }, type === 'file' ? content : undefined)
  }
  p.finalize()
  await done
  return retypeRawPax(Buffer.concat(chunks))
}

const RAW_PAX = '@naiad-raw-pax'

/** Turns the placeholder files written for raw PAX records into PAX headers (typeflag x). */
function retypeRawPax(tar: Buffer): Buffer {
  let off = 0
  while (off + 512 <= tar.length) {
    const header = tar.subarray(off, off + 512)
    if (header.every((b) => b === 0)) break
    const size = parseInt(header.subarray(124, 136).toString('latin1').replace(/\0.*$/, '').trim() || '0', 8)
    if (header.subarray(0, RAW_PAX.length).toString('latin1') === RAW_PAX && header[RAW_PAX.length] === 0) {
      header[156] = 'x'.charCodeAt(0)
      header.fill(0x20, 148, 156)
      let sum = 0
      for (const b of header) sum += b
      header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1')
    }
    off += 512 + Math.ceil(size / 512) * 512
  }
  return tar
}

export function compressLayer(tar: Buffer, compression: LayerCompression): Buffer {
  if (compression === 'gzip') return gzipSync(tar, { level: 1 })
  if (compression === 'zstd') return zstdCompressSync(tar)
  return tar
}

export interface OciLayer {
  data: Buffer
  mediaType: string
  /** Digest of the uncompressed tar, for the config's rootfs.diff_ids. */
  diffId?: string
}

export async function makeOciLayer(entries: LayerEntry[], compression: LayerCompression = 'gzip'): Promise<OciLayer> {
  const tar = await makeTar(entries)
  return { data: compressLayer(tar, compression), mediaType: LAYER_MEDIA_TYPES[compression], diffId: digestOf(tar) }
}

export function digestOf(data: Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`
}

async function startUpload(registryUrl: string, repo: string, headers: Record<string, string>): Promise<URL> {
  const start = await fetch(`${registryUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers })
  if (start.status !== 202) throw new Error(`upload start: HTTP ${start.status}`)
  return new URL(start.headers.get('location')!, registryUrl)
}

export async function pushBlobBytes(registryUrl: string, repo: string, data: Buffer, headers: Record<string, string> = {}): Promise<string> {
  const digest = digestOf(data)
  const loc = await startUpload(registryUrl, repo, headers)
  loc.searchParams.set('digest', digest)
  const put = await fetch(loc, { method: 'PUT', headers: { ...headers, 'content-type': 'application/octet-stream' }, body: data })
  if (put.status !== 201) throw new Error(`upload ${digest}: HTTP ${put.status} ${await put.text()}`)
  return digest
}

/** Uploads a file as a blob, streaming it. */
export async function pushBlobFile(registryUrl: string, repo: string, path: string, digest: string, headers: Record<string, string> = {}): Promise<void> {
  const size = (await stat(path)).size
  const loc = await startUpload(registryUrl, repo, headers)
  loc.searchParams.set('digest', digest)
  const put = await fetch(loc, {
    method: 'PUT',
    headers: { ...headers, 'content-type': 'application/octet-stream', 'content-length': String(size) },
    body: createReadStream(path) as unknown as ReadableStream,
    duplex: 'half'
  } as RequestInit)
  if (put.status !== 201) throw new Error(`upload ${digest}: HTTP ${put.status} ${await put.text()}`)
}

export interface PushedOciImage {
  repo: string
  tag: string
  manifestDigest: string
  manifest: Buffer
  config: { digest: string; size: number }
  layers: Array<{ digest: string; size: number; mediaType: string }>
}

/**
 * Pushes an OCI image of the given layers (already in the registry when `data` is omitted
 * and `digest`/`size` are given) with a minimal linux/amd64 config.
 */
export async function pushOciImage(
  registryUrl: string, repo: string, tag: string,
  layers: Array<OciLayer | { digest: string; size: number; mediaType: string; diffId?: string }>,
  options: { config?: Record<string, unknown>; auth?: string } = {}
): Promise<PushedOciImage> {
  const headers: Record<string, string> = options.auth === undefined ? {} : { authorization: options.auth }
  const pushed: PushedOciImage['layers'] = []
  for (const l of layers) {
    if ('data' in l) pushed.push({ digest: await pushBlobBytes(registryUrl, repo, l.data, headers), size: l.data.length, mediaType: l.mediaType })
    else pushed.push({ digest: l.digest, size: l.size, mediaType: l.mediaType })
  }
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', created: '2024-01-01T00:00:00Z',
    config: { Cmd: ['/bin/sh'] },
    ...options.config,
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId ?? digestOf(Buffer.alloc(0))) }
  }))
  const configDigest = await pushBlobBytes(registryUrl, repo, config, headers)
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: pushed
  }))
  const put = await fetch(`${registryUrl}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT', headers: { ...headers, 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, body: manifest
  })
  if (put.status !== 201) throw new Error(`manifest push: HTTP ${put.status} ${await put.text()}`)
  return { repo, tag, manifestDigest: digestOf(manifest), manifest, config: { digest: configDigest, size: config.length }, layers: pushed }
}

/**
 * Writes an uncompressed tar layer holding one file of `size` pseudo-random bytes (seeded)
 * to `path`, streaming, and returns its digest and size.
 */
export async function writeLargeTarLayer(path: string, name: string, size: number, seed: string): Promise<{ digest: string; size: number; contentSha256: string }> {
  const p = pack()
  const out = createWriteStream(path)
  const hash = createHash('sha256')
  let total = 0
  p.on('data', (c: unknown) => { hash.update(c as Buffer); total += (c as Buffer).length })
  const piped = once(out, 'close')
  p.pipe(out)
  const content = createHash('sha256')
  const entry = p.entry({ name, size, mode: 0o644, mtime: new Date(1_700_000_000_000) })
  for (const c of blobChunks(size, seed)) {
    content.update(c)
    if (!entry.write(c)) await once(entry, 'drain')
  }
  entry.end(() => {})
  p.finalize()
  await piped
  return { digest: `sha256:${hash.digest('hex')}`, size: total, contentSha256: content.digest('hex') }
}
