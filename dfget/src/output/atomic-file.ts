// The output file is written under a temporary name next to it, hashed while it is
// written, fsynced, and renamed into place only once verified. A reader (or a crash)
// therefore sees either no FILE, the old FILE, or the complete new one — never a part.
// On the daemon's host the temporary name is instead a hard link to the daemon's verified
// file (or a kernel copy of it), and the same fsync and rename make it FILE.

import { createHash, randomBytes } from 'node:crypto'
import { constants, type BigIntStats } from 'node:fs'
import { copyFile, link, open, rename, stat, unlink, type FileHandle } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'

import { fileIdentity, NaiadError } from '@naiad/proto/contracts'

/** Bytes gathered before one writev. */
const WRITE_BATCH = 1024 * 1024

export interface WriteResult {
  bytes: number
  sha256: string
}

/** Prefix and marker of temporary files, so operators can recognise (and clean) leftovers of a killed dfget. */
export function tempNameFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.dfget-${randomBytes(6).toString('hex')}`)
}

function outputError(message: string, err: unknown): NaiadError {
  const e = err as { code?: string; message?: string }
  return new NaiadError('DFGET_ERR_OUTPUT', `${message}: ${e.code ?? e.message ?? String(err)}`, { cause: err })
}

export class AtomicFile {
  /** Absolute path of the final file. */
  readonly path: string
  /** The temporary name: the file created at first, or the hard link that replaced it. */
  tempPath: string
  private handle: FileHandle | undefined
  private settled = false

  private constructor(path: string, tempPath: string, handle: FileHandle) {
    this.path = path
    this.tempPath = tempPath
    this.handle = handle
  }

  /**
   * Creates the temporary file at once, so an unwritable destination fails before any
   * byte is downloaded.
   */
  static async create(path: string): Promise<AtomicFile> {
    const abs = resolve(path)
    const existing = await stat(abs).catch(() => undefined)
    if (existing?.isDirectory() === true) throw new NaiadError('DFGET_ERR_OUTPUT', `output ${path} is a directory`)
    const tempPath = tempNameFor(abs)
    let handle: FileHandle
    try {
      handle = await open(tempPath, 'wx', 0o666)
    } catch (err) {
      throw outputError(`cannot create a file in ${dirname(abs)}`, err)
    }
    return new AtomicFile(abs, tempPath, handle)
  }

  /**
   * Writes the chunks in order and hashes them. Chunks are gathered into batches written
   * with one writev while the next batch is read, at most one write in flight: the network
   * waits for the disk (back-pressure) but the two overlap.
   */
  async write(chunks: AsyncIterable<Uint8Array>, onChunk?: (written: number) => void): Promise<WriteResult> {
    const handle = this.handle
    if (handle === undefined) throw new Error('AtomicFile.write after commit or discard')
    const hash = createHash('sha256')
    let bytes = 0
    let batch: Uint8Array[] = []
    let batchBytes = 0
    let inflight: Promise<void> = Promise.resolve()
    let failed: unknown
    const flush = async (): Promise<void> => {
      await inflight
      if (failed !== undefined) throw outputError(`cannot write ${this.tempPath}`, failed)
      if (batchBytes === 0) return
      const buffers = batch
      const total = batchBytes
      batch = []
      batchBytes = 0
      inflight = writeAll(handle, buffers, total).catch((err: unknown) => { failed = err })
    }
    for await (const chunk of chunks) {
      hash.update(chunk)
      batch.push(chunk)
      batchBytes += chunk.length
      bytes += chunk.length
      if (batchBytes >= WRITE_BATCH) await flush()
      onChunk?.(bytes)
    }
    await flush()
    await inflight
    if (failed !== undefined) throw outputError(`cannot write ${this.tempPath}`, failed)
    return { bytes, sha256: hash.digest('hex') }
  }

  /**
   * Makes the temporary file the content of `source`, the daemon's data file of a complete
   * task: a hard link to it when it is this user's file on this file system, else a copy made
   * by the kernel (copy_file_range, or a reflink where the file system has them). Returns how,
   * or undefined when `source` cannot be opened here (missing, or not readable by this user)
   * — nothing is written then. A source that is not the file the daemon verified (its size,
   * or the identity `expected.file` the daemon recorded, differs) is refused with
   * DFD_ERR_TASK_NOT_FOUND: it is no longer the task's file, and the caller asks again.
   */
  async takeFrom(source: string, expected: { length: number; file?: string }): Promise<'link' | 'copy' | undefined> {
    if (this.handle === undefined) throw new Error('AtomicFile.takeFrom after commit or discard')
    let src: FileHandle
    try {
      src = await open(source, 'r')
    } catch {
      return undefined
    }
    try {
      // The open descriptor keeps the file alive if the daemon evicts it meanwhile.
      const st = await src.stat({ bigint: true })
      checkSource(st, expected)
      if (await this.linkTo(source, st)) return 'link'
      // The copy takes the source's mode and, where it may (root), its owner: keep the ones
      // this file was created with, or a root dfget's FILE would be the daemon user's.
      const created = await this.handle.stat()
      await copyFile(`/proc/self/fd/${src.fd}`, this.tempPath, constants.COPYFILE_FICLONE)
      const copied = await this.handle.stat()
      if (copied.uid !== created.uid || copied.gid !== created.gid) await this.handle.chown(created.uid, created.gid)
      await this.handle.chmod(created.mode & 0o7777)
      // Written while we copied (a linked output of an earlier dfget): not the verified bytes.
      checkSource(await src.stat({ bigint: true }), expected)
      return 'copy'
    } catch (err) {
      if (err instanceof NaiadError) throw err
      throw outputError(`cannot copy ${source} to ${this.tempPath}`, err)
    } finally {
      await src.close().catch(() => {})
    }
  }

  /**
   * Hard-links `source` (whose status is `st`) beside FILE in place of the empty temporary
   * file. False, with nothing changed, when it cannot: another file system (EXDEV), no right
   * to link (EPERM, EACCES), or a file the daemon replaced meanwhile. Only a file this user
   * owns is linked: FILE must not belong to (and be writable by) the daemon's user when that
   * is someone else, e.g. a root dfget beside a daemon running as its own user.
   */
  private async linkTo(source: string, st: BigIntStats): Promise<boolean> {
    const handle = this.handle
    if (handle === undefined || process.geteuid === undefined || BigInt(process.geteuid()) !== st.uid) return false
    const linkPath = tempNameFor(this.path)
    try {
      await link(source, linkPath)
    } catch {
      return false
    }
    let linked: FileHandle | undefined
    try {
      linked = await open(linkPath, 'r')
      const got = await linked.stat({ bigint: true })
      if (fileIdentity(got) !== fileIdentity(st)) throw new Error('the file changed while it was linked')
      // FILE gets the mode a new file gets here, however it was made. The cache's own name
      // stays reachable only through the daemon's 0700 directory.
      const { mode } = await handle.stat()
      await linked.chmod(mode & 0o7777)
    } catch {
      await linked?.close().catch(() => {})
      await unlink(linkPath).catch(() => {})
      return false
    }
    const empty = this.tempPath
    this.handle = linked
    this.tempPath = linkPath
    await handle.close().catch(() => {})
    await unlink(empty).catch(() => {})
    return true
  }

  /** Flushes to disk and renames onto the final path; the caller has verified the content. */
  async commit(): Promise<void> {
    const handle = this.handle
    if (handle === undefined) throw new Error('AtomicFile.commit after commit or discard')
    try {
      await handle.sync()
      this.handle = undefined
      const ours = await handle.stat()
      await handle.close()
      // FILE already is this inode (linked from the cache by an earlier dfget): rename would
      // succeed doing nothing and leave the temporary name behind.
      const existing = await stat(this.path).catch(() => undefined)
      if (existing?.dev === ours.dev && existing.ino === ours.ino) await unlink(this.tempPath)
      else await rename(this.tempPath, this.path)
    } catch (err) {
      await this.discard()
      throw outputError(`cannot save ${this.path}`, err)
    }
    this.settled = true
    // The rename is durable only once the directory is synced; not every file system allows it.
    const dir = await open(dirname(this.path), 'r').catch(() => undefined)
    await dir?.sync().catch(() => {})
    await dir?.close().catch(() => {})
  }

  /** Closes and removes the temporary file; safe to call more than once, and after commit. */
  async discard(): Promise<void> {
    if (this.settled) return
    this.settled = true
    const handle = this.handle
    this.handle = undefined
    await handle?.close().catch(() => {})
    await unlink(this.tempPath).catch(() => {})
  }
}

/** Refuses a source that is not the file the daemon verified (see takeFrom). */
function checkSource(st: BigIntStats, expected: { length: number; file?: string }): void {
  if (st.size !== BigInt(expected.length)) throw new NaiadError('DFD_ERR_TASK_NOT_FOUND', `the task's file has ${st.size} bytes, the daemon announced ${expected.length}`)
  if (expected.file !== undefined && fileIdentity(st) !== expected.file) {
    throw new NaiadError('DFD_ERR_TASK_NOT_FOUND', "the task's file changed since the daemon verified it")
  }
}

/** writev until every byte is on its way to disk; a short write resumes where it stopped. */
async function writeAll(handle: FileHandle, buffers: Uint8Array[], total: number): Promise<void> {
  let { bytesWritten } = await handle.writev(buffers)
  if (bytesWritten === total) return
  const rest = Buffer.concat(buffers)
  while (bytesWritten < total) {
    const r = await handle.write(rest, bytesWritten, total - bytesWritten)
    bytesWritten += r.bytesWritten
  }
}
