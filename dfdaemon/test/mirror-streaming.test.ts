// A cold blob reaches the client while the swarm still downloads it: the mirror sends each
// piece as soon as it is stored and verified, and holds the last one back until the whole
// blob matched its digest, so a corrupted blob is cut off before its end.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  pushImage, sha256Hex, startMirrorCluster,
  type CountingProxy, type DaemonHandle, type MirrorCluster, type PushedImage
} from '@naiad/testkit'

const MiB = 1024 * 1024

interface Received {
  chunks: Uint8Array[]
  bytes: number
}

/** Reads from `reader` until at least `atLeast` bytes came in (or the body ended), within 60 s. */
async function readAtLeast(reader: ReadableStreamDefaultReader<Uint8Array>, got: Received, atLeast: number): Promise<boolean> {
  const deadline = Date.now() + 60_000
  while (got.bytes < atLeast) {
    const timer = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`only ${got.bytes} of ${atLeast} bytes within 60 s`)), Math.max(0, deadline - Date.now())).unref())
    const { done, value } = await Promise.race([reader.read(), timer])
    if (done) return false
    got.chunks.push(value)
    got.bytes += value.length
  }
  return true
}

describe('registry mirror streaming a cold blob', () => {
  let cluster: MirrorCluster
  let proxy: CountingProxy
  let daemon: DaemonHandle
  let image: PushedImage

  beforeAll(async () => {
    cluster = await startMirrorCluster('mirror-stream', { daemons: 1 })
    ;({ proxy } = cluster)
    daemon = cluster.daemons[0]
    // 13 MiB layers: four pieces of at most 4 MiB each.
    image = await pushImage(cluster.registry.url, 'naiad/streamed', 'v1', [13 * MiB, 13 * MiB])
  }, 120_000)

  afterAll(async () => {
    await cluster?.stop()
  })

  const blobUrl = (digest: string): string => `${daemon.proxyUrl}/v2/naiad/streamed/blobs/${digest}?ns=${proxy.host}`

  async function completeTasks(): Promise<Array<{ url: string; complete: boolean }>> {
    const res = await fetch(`${daemon.apiUrl}/api/v1/tasks`)
    return (await res.json() as Array<{ url: string; complete: boolean }>).filter((t) => t.complete)
  }

  it('sends the first pieces before the registry has sent the whole blob, then the rest, verified', async () => {
    const layer = image.layers[0]
    expect(layer.size).toBeGreaterThan(12 * MiB)
    let release = (): void => {}
    const until = new Promise<void>((resolve) => { release = resolve })
    // The registry stops 2 MiB before the end until released: no download of it can complete.
    proxy.faults.set(layer.digest, { holdAt: layer.size - 2 * MiB, until })
    try {
      const res = await fetch(blobUrl(layer.digest))
      expect(res.status).toBe(200)
      expect(res.headers.get('content-length')).toBe(String(layer.size))
      expect(res.headers.get('docker-content-digest')).toBe(layer.digest)
      const reader = res.body!.getReader()
      const got: Received = { chunks: [], bytes: 0 }
      expect(await readAtLeast(reader, got, 4 * MiB)).toBe(true)
      // The first bytes are here while the blob is neither complete in the daemon nor fully sent by the registry.
      expect((await completeTasks()).filter((t) => t.url.endsWith(layer.digest))).toEqual([])
      release()
      expect(await readAtLeast(reader, got, Number.POSITIVE_INFINITY)).toBe(false)
      expect(got.bytes).toBe(layer.size)
      expect(`sha256:${sha256Hex(Buffer.concat(got.chunks))}`).toBe(layer.digest)
    } finally {
      release()
      proxy.faults.delete(layer.digest)
    }
    expect((await completeTasks()).filter((t) => t.url.endsWith(layer.digest))).toHaveLength(1)
    // The whole-blob digest was not read back at the end: every piece matched the seed's
    // digest and the seed had checked the whole blob against its registry digest.
    const completions = daemon.process.logs.filter((l) => l.includes('"download complete"')).map((l) => JSON.parse(l) as { wholeDigest: string })
    expect(completions.map((c) => c.wholeDigest)).toContain('source-digests')
    expect(completions.map((c) => c.wholeDigest)).not.toContain('read-back')
    // Served again, warm, from the cache: same bytes, nothing more from the registry.
    const before = proxy.bytesServed(layer.digest)
    const again = await fetch(blobUrl(layer.digest))
    expect(`sha256:${sha256Hex(Buffer.from(await again.arrayBuffer()))}`).toBe(layer.digest)
    expect(proxy.bytesServed(layer.digest)).toBe(before)
  }, 120_000)

  it('cuts a blob that does not match its digest off before its end, and serves the right bytes afterwards', async () => {
    const layer = image.layers[1]
    let release = (): void => {}
    const until = new Promise<void>((resolve) => { release = resolve })
    // Every piece matches the seed's digests (the seed hashed the corrupt bytes), only the
    // whole-blob digest can tell; the registry holds the last 2 MiB until released.
    proxy.faults.set(layer.digest, { holdAt: layer.size - 2 * MiB, until, corrupt: true })
    let got: Received = { chunks: [], bytes: 0 }
    try {
      const res = await fetch(blobUrl(layer.digest))
      expect(res.status).toBe(200)
      const reader = res.body!.getReader()
      expect(await readAtLeast(reader, got, 4 * MiB)).toBe(true)
      // The corruption is in the first byte, and it was sent: only the end can be withheld.
      expect(Buffer.from(got.chunks[0])[0]).not.toBe(layer.data[0])
      release()
      await expect(readAtLeast(reader, got, Number.POSITIVE_INFINITY)).rejects.toThrow()
      expect(got.bytes).toBeLessThan(layer.size)
    } finally {
      release()
      proxy.faults.delete(layer.digest)
    }
    expect((await completeTasks()).filter((t) => t.url.endsWith(layer.digest))).toEqual([])
    got = { chunks: [], bytes: 0 }
    const res = await fetch(blobUrl(layer.digest))
    expect(res.status).toBe(200)
    expect(await readAtLeast(res.body!.getReader(), got, Number.POSITIVE_INFINITY)).toBe(false)
    expect(`sha256:${sha256Hex(Buffer.concat(got.chunks))}`).toBe(layer.digest)
    // From the seed, which fetched the blob again: the failed attempt left no stale pieces at
    // the scheduler, which had kept the retry waiting for a parent and sent it to the origin.
    const last = daemon.process.logs.filter((l) => l.includes('"download complete"')).map((l) => JSON.parse(l) as { fromOrigin: number }).at(-1)
    expect(last?.fromOrigin).toBe(0)
  }, 120_000)
})
