// Chunks of file content: hashed, deduplicated (within the image and against a chunk
// dictionary), compressed one by one and appended to a temporary blob file per source
// layer. Memory holds one chunk at a time plus a 32-byte digest per unique chunk.
// finish() keeps only the chunks the merged tree still uses: a blob whose chunks all
// survived is pushed as written, others are compacted into a new file.

import { createHash } from 'node:crypto'
import { open, rm, type FileHandle } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join } from 'node:path'

import type * as ZstdBinding from 'zstd-napi/binding.js'
import type { BlobRef, Chunk } from '@naiad/proto/contracts'

// The native binding, for compressing into one reused buffer (zstd-napi's Compressor
// returns a fresh buffer per call). It is a CommonJS addon, so it is loaded with require.
const zstd = createRequire(import.meta.url)('zstd-napi/binding.js') as typeof ZstdBinding

export type CompressorName = 'zstd' | 'none'

/** A chunk already stored in the chunk dictionary's data blobs. */
export interface DictChunk {
  blob: BlobRef
  offset: number
  storedSize: number
  size: number
}

interface StoredChunk {
  digest: Buffer
  size: number
  /** Temp blob index (>= 0) or dict (-1). */
  file: number
  offset: number
  storedSize: number
  dict: DictChunk | undefined
}

interface TempBlob {
  path: string
  fh: FileHandle
  size: number
  hash: ReturnType<typeof createHash>
}

export interface ChunkStats {
  /** Content bytes cut into chunks. */
  bytes: number
  chunks: number
  /** Chunks written to a data blob of this image. */
  newChunks: number
  newBytes: number
  storedBytes: number
  /** Chunks found earlier in this image. */
  dupChunks: number
  /** Chunks found in the chunk dictionary. */
  dictChunks: number
  dictBytes: number
}

/** A data blob of the converted image, ready to push. */
export interface OutputBlob {
  digest: string
  size: number
  /** Local file holding it; undefined for blobs that stay in the dictionary image. */
  path: string | undefined
  /** For dictionary blobs: where they come from. */
  fromDict: boolean
}

export interface FinishedChunks {
  chunks: Chunk[]
  blobs: OutputBlob[]
  /** Old chunk index → new index in `chunks` (-1 when unused). */
  remap: Int32Array
}

export class ChunkStore {
  readonly chunkSize: number
  readonly compressor: CompressorName
  readonly stats: ChunkStats = { bytes: 0, chunks: 0, newChunks: 0, newBytes: 0, storedBytes: 0, dupChunks: 0, dictChunks: 0, dictBytes: 0 }
  private readonly dir: string
  private readonly dict: Map<string, DictChunk>
  private readonly zstd: InstanceType<typeof zstd.CCtx> | undefined
  /** Compressed output, reused for every chunk: per-chunk buffers would pile up until a GC. */
  private readonly out: Buffer
  private readonly chunks: StoredChunk[] = []
  private readonly byDigest = new Map<string, number>()
  private readonly files: TempBlob[] = []
  private current: TempBlob | undefined
  private currentLayer = -1

  constructor(dir: string, chunkSize: number, compressor: CompressorName, dict: Map<string, DictChunk> = new Map(), level = 3) {
    this.dir = dir
    this.chunkSize = chunkSize
    this.compressor = compressor
    this.dict = dict
    this.out = Buffer.allocUnsafe(compressor === 'zstd' ? zstd.compressBound(chunkSize) : 0)
    if (compressor === 'zstd') {
      this.zstd = new zstd.CCtx()
      this.zstd.setParameter(zstd.CParameter.compressionLevel, level)
      this.zstd.setParameter(zstd.CParameter.checksumFlag, 0)
      this.zstd.setParameter(zstd.CParameter.contentSizeFlag, 1)
    }
  }

  /** New chunks from here on go to the blob of `layer`. */
  startLayer(layer: number): void {
    this.currentLayer = layer
    this.current = undefined
  }

  /** Stores one chunk (at most chunkSize bytes) and returns its index in the chunk table. */
  async add(data: Buffer): Promise<number> {
    const digest = createHash('sha256').update(data).digest()
    const key = digest.toString('hex')
    this.stats.bytes += data.length
    this.stats.chunks++
    const known = this.byDigest.get(key)
    if (known !== undefined) {
      if (this.chunks[known].dict === undefined) this.stats.dupChunks++
      else { this.stats.dictChunks++; this.stats.dictBytes += data.length }
      return known
    }
    const index = this.chunks.length
    const inDict = this.dict.get(key)
    if (inDict !== undefined && inDict.size === data.length) {
      this.chunks.push({ digest, size: data.length, file: -1, offset: inDict.offset, storedSize: inDict.storedSize, dict: inDict })
      this.byDigest.set(key, index)
      this.stats.dictChunks++
      this.stats.dictBytes += data.length
      return index
    }
    const stored = this.zstd === undefined ? data : this.out.subarray(0, this.zstd.compress2(this.out, data))
    const blob = await this.blob()
    const offset = blob.size
    await writeAll(blob.fh, stored, offset)
    blob.hash.update(stored)
    blob.size += stored.length
    this.chunks.push({ digest, size: data.length, file: this.files.indexOf(blob), offset, storedSize: stored.length, dict: undefined })
    this.byDigest.set(key, index)
    this.stats.newChunks++
    this.stats.newBytes += data.length
    this.stats.storedBytes += stored.length
    return index
  }

  private async blob(): Promise<TempBlob> {
    if (this.current !== undefined) return this.current
    const path = join(this.dir, `layer-${this.currentLayer}-${this.files.length}.blob`)
    const blob: TempBlob = { path, fh: await open(path, 'w+'), size: 0, hash: createHash('sha256') }
    this.files.push(blob)
    this.current = blob
    return blob
  }

  /**
   * Builds the final chunk and blob tables from the chunks in `used`: chunks ordered by
   * blob then offset, blobs in layer order followed by the dictionary blobs in use.
   */
  async finish(used: Set<number>): Promise<FinishedChunks> {
    const blobs: OutputBlob[] = []
    const placed = new Map<number, { blob: number; offset: number; storedSize: number }>()
    const byFile: number[][] = this.files.map(() => [])
    const dictUsed: number[] = []
    for (let i = 0; i < this.chunks.length; i++) {
      if (!used.has(i)) continue
      const c = this.chunks[i]
      if (c.file >= 0) byFile[c.file].push(i)
      else dictUsed.push(i)
    }
    const totals = new Array<number>(this.files.length).fill(0)
    for (const c of this.chunks) if (c.file >= 0) totals[c.file]++
    for (const [f, file] of this.files.entries()) {
      const members = byFile[f].sort((a, b) => this.chunks[a].offset - this.chunks[b].offset)
      const total = totals[f]
      if (members.length === 0) {
        await file.fh.close()
        await rm(file.path, { force: true })
        continue
      }
      const blobIndex = blobs.length
      if (members.length === total) {
        await file.fh.close()
        blobs.push({ digest: `sha256:${file.hash.digest('hex')}`, size: file.size, path: file.path, fromDict: false })
        for (const i of members) placed.set(i, { blob: blobIndex, offset: this.chunks[i].offset, storedSize: this.chunks[i].storedSize })
        continue
      }
      // Some chunks belong only to files an upper layer deleted or replaced: copy the rest.
      const path = `${file.path}.compact`
      const out = await open(path, 'w')
      const hash = createHash('sha256')
      let size = 0
      for (const i of members) {
        const c = this.chunks[i]
        const buf = Buffer.allocUnsafe(c.storedSize)
        await readAll(file.fh, buf, c.offset)
        await writeAll(out, buf, size)
        hash.update(buf)
        placed.set(i, { blob: blobIndex, offset: size, storedSize: c.storedSize })
        size += c.storedSize
      }
      await out.close()
      await file.fh.close()
      await rm(file.path, { force: true })
      blobs.push({ digest: `sha256:${hash.digest('hex')}`, size, path, fromDict: false })
    }
    const dictBlobIndex = new Map<string, number>()
    for (const i of dictUsed) {
      const d = this.chunks[i].dict!
      let b = dictBlobIndex.get(d.blob.digest)
      if (b === undefined) {
        b = blobs.length
        dictBlobIndex.set(d.blob.digest, b)
        blobs.push({ digest: d.blob.digest, size: d.blob.size, path: undefined, fromDict: true })
      }
      placed.set(i, { blob: b, offset: d.offset, storedSize: d.storedSize })
    }
    const order = [...placed.keys()].sort((a, b) => {
      const pa = placed.get(a)!
      const pb = placed.get(b)!
      return pa.blob - pb.blob || pa.offset - pb.offset
    })
    const remap = new Int32Array(this.chunks.length).fill(-1)
    const chunks: Chunk[] = order.map((i, n) => {
      remap[i] = n
      const p = placed.get(i)!
      return { digest: this.chunks[i].digest, blob: p.blob, offset: p.offset, storedSize: p.storedSize, size: this.chunks[i].size }
    })
    return { chunks, blobs, remap }
  }

  /** Closes the temp files after a failure. */
  async abort(): Promise<void> {
    for (const f of this.files) await f.fh.close().catch(() => {})
  }
}

async function writeAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done)
    done += bytesWritten
  }
}

async function readAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done)
    if (bytesRead === 0) throw new Error(`temporary blob ended early at ${position + done}`)
    done += bytesRead
  }
}
