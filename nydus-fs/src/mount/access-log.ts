// The access order of an image: the files a container read, in the order it first read
// them, recorded on the first mount of an image and replayed as prefetch on later mounts.
// Stored at `<cache-dir>/access/<image digest hex>.json` as
//   { "image": "sha256:…", "recordedAt": "…", "files": ["/bin/sh", "/lib/x86_64-linux-gnu/libc.so.6", …] }
// Only the first mount of an image records; its order is what a cold start reads.

import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'

/** Longest recorded list: a start-up touches far fewer files. */
const MAX_FILES = 20_000
const FLUSH_DELAY_MS = 2_000

export function accessLogPath(cacheDir: string, imageDigest: string): string {
  return join(cacheDir, 'access', `${imageDigest.replace(/^sha256:/, '')}.json`)
}

/** The recorded file list, or undefined when this image was never recorded (or the record is unreadable). */
export async function loadAccessLog(file: string): Promise<string[] | undefined> {
  try {
    const doc = JSON.parse(await readFile(file, 'utf8')) as { files?: unknown }
    if (!Array.isArray(doc.files)) return undefined
    return doc.files.filter((f): f is string => typeof f === 'string').slice(0, MAX_FILES)
  } catch {
    return undefined
  }
}

export class AccessRecorder {
  private readonly file: string
  private readonly image: string
  private readonly seen = new Set<number>()
  private readonly files: string[] = []
  private timer: NodeJS.Timeout | undefined
  private dirty = false
  private writing: Promise<void> = Promise.resolve()

  constructor(file: string, image: string) {
    this.file = file
    this.image = image
  }

  /** Notes the first read of an inode. */
  record(ino: number, path: string): void {
    if (this.seen.has(ino) || this.files.length >= MAX_FILES) return
    this.seen.add(ino)
    this.files.push(path)
    this.dirty = true
    this.timer ??= setTimeout(() => { this.timer = undefined; void this.flush() }, FLUSH_DELAY_MS)
  }

  get count(): number {
    return this.files.length
  }

  /** Writes the list (atomically) if it changed; failures only lose the record. */
  flush(): Promise<void> {
    if (this.timer !== undefined) { clearTimeout(this.timer); this.timer = undefined }
    if (!this.dirty) return this.writing
    this.dirty = false
    const body = JSON.stringify({ image: this.image, recordedAt: new Date().toISOString(), files: this.files })
    this.writing = this.writing.then(async () => {
      await mkdir(dirname(this.file), { recursive: true })
      const tmp = `${this.file}.tmp-${process.pid}`
      await writeFile(tmp, body)
      await rename(tmp, this.file)
    }).catch(() => {})
    return this.writing
  }
}
