// Streams one source layer as tar entries: gzip, zstd or plain tar, told apart by the
// magic bytes (the media type only has to agree), never unpacked to disk. The layer's
// digest is checked while it streams; when the archive is undecodable the rest of the blob
// is still read so that a digest mismatch, the likelier cause, is what gets reported.

import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { PassThrough, Transform, type Readable, type Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGunzip } from 'node:zlib'

import { extract, type Header } from 'tar-stream'
import { DecompressStream } from 'zstd-napi'
import { NaiadError } from '@naiad/proto/contracts'

export type Compression = 'gzip' | 'zstd' | 'none'

export interface TarEntry {
  header: Header
  /** The entry's content; what the handler leaves unread is skipped. */
  content: AsyncIterable<Buffer>
}

/** The archive failed while a handler read an entry's content: a decode failure, not the handler's. */
class ArchiveError extends Error {}

async function* contentOf(stream: Readable): AsyncGenerator<Buffer> {
  try {
    for await (const c of stream) yield c as Buffer
  } catch (err) {
    throw new ArchiveError((err as Error).message, { cause: err })
  }
}

// tar-stream decodes PAX values as UTF-8, which mangles binary xattr values such as
// security.capability. Its header decoder is a CommonJS module object that extract.js
// calls through, so a byte-preserving decodePax is swapped in: xattr values come back as
// latin1 strings (one char per byte) and the converter turns them back into bytes.
{
  const require = createRequire(import.meta.url)
  const headers = require(join(dirname(require.resolve('tar-stream')), 'headers.js')) as { decodePax(buf: Buffer): Record<string, string> }
  headers.decodePax = (buf: Buffer): Record<string, string> => {
    const result: Record<string, string> = {}
    let rest = buf
    while (rest.length > 0) {
      const sp = rest.indexOf(0x20)
      if (sp <= 0) break
      const len = parseInt(rest.subarray(0, sp).toString('latin1'), 10)
      if (!(len > sp + 1) || len > rest.length) break
      const record = rest.subarray(sp + 1, len - 1)
      const eq = record.indexOf(0x3d)
      if (eq < 0) break
      const key = record.subarray(0, eq).toString('utf8')
      result[key] = record.subarray(eq + 1).toString(key.startsWith('SCHILY.xattr.') ? 'latin1' : 'utf8')
      rest = rest.subarray(len)
    }
    return result
  }
}

export function detectCompression(head: Buffer, mediaType: string): Compression {
  const byMagic: Compression | undefined =
    head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b ? 'gzip'
      : head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528 ? 'zstd'
        : undefined
  const declared: Compression = /gzip/.test(mediaType) ? 'gzip' : /zstd/.test(mediaType) ? 'zstd' : 'none'
  if (byMagic !== undefined) return byMagic
  if (declared !== 'none' && head.length > 0) {
    throw new NaiadError('NFS_ERR_BAD_LAYER', `layer is declared ${declared} (${mediaType}) but does not start with a ${declared} header`)
  }
  return 'none'
}

/** Media types of layers the converter reads: OCI and Docker tar layers, compressed or not. */
export function isTarLayer(mediaType: string): boolean {
  return /^application\/vnd\.oci\.image\.layer\.v1\.tar(\+gzip|\+zstd)?$/.test(mediaType) ||
    /^application\/vnd\.oci\.image\.layer\.nondistributable\.v1\.tar(\+gzip|\+zstd)?$/.test(mediaType) ||
    /^application\/vnd\.docker\.image\.rootfs\.(foreign\.)?diff\.tar(\.gzip)?$/.test(mediaType)
}

/**
 * Counts the decompressed tar bytes. (An archive cut exactly between two entries cannot be
 * told from a complete one: umoci, for one, writes no end-of-archive blocks. Cuts anywhere
 * else fail in the decompressor or in tar-stream, and the layer digest rules out a cut in
 * transit.)
 */
class TarCounter extends Transform {
  total = 0

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void): void {
    this.total += chunk.length
    cb(null, chunk)
  }
}

/** Resolves on 'drain', or when the stream closes or fails (then nothing more is written). */
function drained(stream: Transform): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done)
      stream.off('close', done)
      stream.off('error', done)
      resolve()
    }
    stream.on('drain', done)
    stream.on('close', done)
    stream.on('error', done)
  })
}

function decodeError(err: unknown, what: string): NaiadError {
  if (err instanceof NaiadError) return err
  const msg = (err as Error).message ?? String(err)
  return new NaiadError('NFS_ERR_BAD_LAYER', `${what} is not a valid archive: ${msg}`, { cause: err })
}

/**
 * Reads the tar entries of a layer body (the verifying iterable from RegistryClient.openBlob)
 * and calls `onEntry` for each, in order, with back-pressure. Resolves once the whole blob
 * is read and its digest checked.
 */
export async function readLayer(body: AsyncIterable<Buffer>, mediaType: string, what: string, onEntry: (entry: TarEntry) => Promise<void>): Promise<{ compression: Compression; tarBytes: number }> {
  const it = body[Symbol.asyncIterator]()
  // Peek at the first bytes for the magic number.
  const head: Buffer[] = []
  let headLen = 0
  let ended = false
  while (headLen < 4) {
    const r = await it.next()
    if (r.done === true) { ended = true; break }
    head.push(r.value)
    headLen += r.value.length
  }
  let compression: Compression
  try {
    compression = detectCompression(Buffer.concat(head), mediaType)
  } catch (err) {
    // Read on: bytes that are not what the manifest declared are likelier a bad blob.
    if (!ended) while ((await it.next()).done !== true) { /* the iterator verifies the digest at its end */ }
    throw err
  }
  const decompressor: Transform = compression === 'gzip' ? createGunzip() : compression === 'zstd' ? new DecompressStream() : new PassThrough()
  const tail = new TarCounter()
  const tar = extract()
  const decoded = pipeline(decompressor, tail, tar as unknown as Writable)
  let decodeFailure: unknown
  decoded.catch((err: unknown) => { decodeFailure ??= err })

  // Feed the compressed bytes in; after a decode failure keep reading (without feeding)
  // so the verifying iterator reaches its end and reports a digest mismatch if there is one.
  let stopFeeding = false
  let entryFailure: unknown
  const feed = (async (): Promise<void> => {
    const write = async (chunk: Buffer): Promise<void> => {
      if (stopFeeding || decompressor.destroyed) return
      if (!decompressor.write(chunk)) await drained(decompressor)
    }
    for (const c of head) await write(c)
    if (!ended) {
      while (true) {
        if (entryFailure !== undefined) {
          await it.return?.()
          return
        }
        const r = await it.next()
        if (r.done === true) break
        await write(r.value)
      }
    }
    if (!decompressor.destroyed) decompressor.end()
  })()
  let feedFailure: unknown
  const fed = feed.catch((err: unknown) => {
    feedFailure = err
    tar.destroy(err as Error)
  })

  let handlerFailure: unknown
  try {
    for await (const entryStream of tar) {
      const stream = entryStream as unknown as Readable & { header: Header }
      try {
        await onEntry({ header: stream.header, content: contentOf(stream) })
      } catch (err) {
        if (err instanceof ArchiveError) throw err.cause
        handlerFailure = err
        throw err
      }
      // An entry the handler did not read is drained; the next one comes after it.
      stream.resume()
    }
    await decoded
  } catch (err) {
    if (handlerFailure !== undefined && err === handlerFailure) {
      // The handler refused the layer (unsafe path, bad link) or could not store it: stop reading.
      entryFailure = err
      stopFeeding = true
      decompressor.destroy()
      await fed
      throw err
    }
    decodeFailure ??= err
  }
  stopFeeding = true
  await fed
  if (feedFailure !== undefined) throw feedFailure instanceof NaiadError ? feedFailure : new NaiadError('OCI_ERR_REGISTRY', `${what}: ${(feedFailure as Error).message}`, { cause: feedFailure })
  if (decodeFailure !== undefined) throw decodeError(decodeFailure, what)
  return { compression, tarBytes: tail.total }
}
