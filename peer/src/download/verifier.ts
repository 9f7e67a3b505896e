// The whole content's SHA-256 at the end of a download, found the cheapest sound way:
//
// 1. Read from the origin: every byte went through the hash on its way in.
// 2. Every stored piece has the digest the task's source published, and the source
//    published the whole content's digest: the content is the source's, byte for byte. This
//    holds for any source when the user named no digest; when the user did, only for the
//    supernode's seed, which verified the whole content against that digest itself (a
//    daemon acting as source without a seed is trusted for piece digests, not for that).
// 3. Otherwise the stored content is read back and hashed.
//
// The digest found must then match the source's (unless this node is the source) and the
// one the user named: checkContent.

import { createHash } from 'node:crypto'

import { NaiadError } from '@naiad/proto'

import type { PieceStore } from '../storage/piece-store.ts'

export interface WholeDigestInput {
  store: PieceStore
  taskId: string
  contentLength: number
  pieceCount: number
  originSha256: Buffer | undefined
  source: { sha256: Uint8Array; digest(num: number): Uint8Array | undefined; isSeed: boolean } | undefined
  userDigest: string | undefined
}

/** How the digest was found, for the log: `origin-stream`, `source-digests` or `read-back`. */
export type DigestMethod = 'origin-stream' | 'source-digests' | 'read-back'

export async function wholeDigest(input: WholeDigestInput): Promise<{ sha256: Buffer; by: DigestMethod }> {
  if (input.originSha256 !== undefined) return { sha256: input.originSha256, by: 'origin-stream' }
  const { store, taskId, source } = input
  const userDigest = input.userDigest !== undefined && input.userDigest !== ''
  if (source !== undefined && source.sha256.length === 32 && (!userDigest || source.isSeed) && input.pieceCount >= 0) {
    let all = true
    for (let num = 0; num < input.pieceCount && all; num++) {
      const want = source.digest(num)
      const have = store.getPiece(taskId, num)
      all = want !== undefined && have !== undefined && have.sha256.equals(want)
    }
    if (all) return { sha256: Buffer.from(source.sha256), by: 'source-digests' }
  }
  const whole = createHash('sha256')
  const step = 8 * 1024 * 1024
  const buf = Buffer.allocUnsafe(Math.min(step, Math.max(1, input.contentLength)))
  for (let pos = 0; pos < input.contentLength; pos += step) {
    const chunk = buf.subarray(0, Math.min(step, input.contentLength - pos))
    await store.readInto(taskId, pos, chunk)
    whole.update(chunk)
  }
  return { sha256: whole.digest(), by: 'read-back' }
}

/** What the whole content must match: the source's digest (unless this node is the source), then the user's. */
export interface ContentExpectations {
  /** The whole content's digest as the task's source published it; undefined when this node is the source, or none was published. */
  source: Uint8Array | undefined
  /** `sha256:<hex>` the user asked for; undefined or empty: none. */
  user: string | undefined
}

/** Throws DFD_ERR_DIGEST_MISMATCH when the content's digest differs from one it must match. */
export function checkContent(sha256: Buffer, expected: ContentExpectations): void {
  if (expected.source !== undefined && !sha256.equals(expected.source)) {
    throw new NaiadError('DFD_ERR_DIGEST_MISMATCH', `content SHA-256 ${sha256.toString('hex')} differs from the source's ${Buffer.from(expected.source).toString('hex')}`)
  }
  checkUserDigest(sha256, expected.user)
}

/** Throws DFD_ERR_DIGEST_MISMATCH unless the content has the digest the user named (if any). */
export function checkUserDigest(sha256: Buffer, digest: string | undefined): void {
  if (digest === undefined || digest === '') return
  if (`sha256:${sha256.toString('hex')}` !== digest) {
    throw new NaiadError('DFD_ERR_DIGEST_MISMATCH', `content has sha256:${sha256.toString('hex')}, expected ${digest}`)
  }
}
