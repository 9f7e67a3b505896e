// Uploading a converted image: data blobs (streamed from their temp files), dictionary
// blobs the image reuses (cross-repository mount, else copied, so that the target
// repository alone holds every byte the image needs), the config, the bootstrap, the lazy
// manifest (by digest); then the runtime manifest's blobs (stub layer, config, the source
// layers mounted from the source repository) and manifest, and the index that tags both
// last, so that a reader never sees a manifest whose blobs are missing.

import { createWriteStream } from 'node:fs'
import { once } from 'node:events'
import { join } from 'node:path'

import { MEDIA_TYPES, NaiadError, OCI_INDEX_MEDIA_TYPE } from '@naiad/proto/contracts'

import { sha256Digest, type RegistryClient } from '@naiad/oci'
import type { OciManifest } from '@naiad/oci'
import type { ImageRef } from '@naiad/oci'
import type { OutputBlob } from './chunk-store.ts'
import type { RuntimeImage } from './runtime-image.ts'

export interface PushInput {
  clients: (registry: string) => RegistryClient
  target: ImageRef
  dictRef: ImageRef | undefined
  blobs: OutputBlob[]
  configBody: Buffer
  bootstrapBlob: Buffer
  manifest: OciManifest
  workDir: string
  log: (line: string) => void
  signal?: AbortSignal
}

function mib(n: number): string {
  return `${(n / 1024 / 1024).toFixed(1)} MiB`
}

/** Copies a blob between repositories or registries through a temp file, verified on the way. */
async function copyBlob(from: RegistryClient, fromRepo: string, to: RegistryClient, toRepo: string, blob: { digest: string; size: number }, workDir: string, signal?: AbortSignal): Promise<void> {
  const path = join(workDir, `copy-${blob.digest.slice(7)}`)
  const { body } = await from.openBlob(fromRepo, blob.digest, signal)
  const out = createWriteStream(path)
  try {
    for await (const c of body) if (!out.write(c)) await once(out, 'drain')
  } finally {
    out.end()
    await once(out, 'close')
  }
  await to.pushBlobFromFile(toRepo, path, blob.digest, blob.size, undefined, signal)
}

export async function pushLazyImage(input: PushInput): Promise<{ manifestDigest: string; pushedBytes: number }> {
  const { target, log, signal } = input
  const client = input.clients(target.registry)
  const repo = target.repository
  let pushedBytes = 0
  for (const [i, blob] of input.blobs.entries()) {
    const what = `blob ${i + 1}/${input.blobs.length} ${blob.digest.slice(0, 19)} (${mib(blob.size)})`
    if (!blob.fromDict) {
      if (await client.blobExists(repo, blob.digest, signal)) {
        log(`${what}: already in ${repo}`)
        continue
      }
      let last = Date.now()
      await client.pushBlobFromFile(repo, blob.path!, blob.digest, blob.size, (sent) => {
        if (Date.now() - last > 5000) {
          last = Date.now()
          log(`${what}: ${mib(sent)} sent`)
        }
      }, signal)
      pushedBytes += blob.size
      log(`${what}: pushed`)
      continue
    }
    const dict = input.dictRef!
    if (await client.blobExists(repo, blob.digest, signal)) {
      log(`${what}: from the chunk dictionary, already in ${repo}`)
      continue
    }
    if (dict.registry === target.registry && await client.mountBlob(repo, blob.digest, dict.repository, signal)) {
      log(`${what}: mounted from ${dict.repository}`)
      continue
    }
    await copyBlob(input.clients(dict.registry), dict.repository, client, repo, blob, input.workDir, signal)
    pushedBytes += blob.size
    log(`${what}: copied from ${dict.registry}/${dict.repository}`)
  }
  const configDigest = await client.pushBlob(repo, input.configBody, signal)
  if (configDigest !== input.manifest.config.digest) throw new NaiadError('NFS_ERR_DIGEST', `config ${configDigest} does not match ${input.manifest.config.digest}`)
  await client.pushBlob(repo, input.bootstrapBlob, signal)
  const body = Buffer.from(JSON.stringify(input.manifest))
  const manifestDigest = await client.pushManifest(repo, sha256Digest(body), MEDIA_TYPES.manifest, body, signal)
  return { manifestDigest, pushedBytes }
}

export interface RuntimePushInput {
  clients: (registry: string) => RegistryClient
  source: ImageRef
  target: ImageRef
  /** The source's layers, which the runtime manifest lists after the stub. */
  sourceLayers: Array<{ digest: string; size: number }>
  runtime: RuntimeImage
  workDir: string
  log: (line: string) => void
  signal?: AbortSignal
}

/** Pushes the runtime manifest and tags the index; returns bytes copied (0 when blobs could be mounted). */
export async function pushRuntimeIndex(input: RuntimePushInput): Promise<number> {
  const { source, target, runtime, signal } = input
  const client = input.clients(target.registry)
  const repo = target.repository
  let copied = 0
  await client.pushBlob(repo, runtime.stub.blob, signal)
  await client.pushBlob(repo, runtime.configBody, signal)
  for (const layer of input.sourceLayers) {
    if (await client.blobExists(repo, layer.digest, signal)) continue
    if (source.registry === target.registry && await client.mountBlob(repo, layer.digest, source.repository, signal)) continue
    await copyBlob(input.clients(source.registry), source.repository, client, repo, layer, input.workDir, signal)
    copied += layer.size
  }
  await client.pushManifest(repo, runtime.manifestDigest, MEDIA_TYPES.manifest, runtime.manifestBody, signal)
  await client.pushManifest(repo, target.tag ?? 'latest', OCI_INDEX_MEDIA_TYPE, runtime.indexBody, signal)
  input.log(`runtime manifest ${runtime.manifestDigest} (source layers ${copied === 0 ? 'mounted' : `copied, ${mib(copied)}`}); index ${runtime.indexDigest}`)
  return copied
}
