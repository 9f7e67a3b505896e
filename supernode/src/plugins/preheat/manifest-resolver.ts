// Resolves an image to the blobs a pull will fetch, with the OCI client: the manifest
// (through an index to the wanted platform), then its config and layers. The Authorization
// the client ended with (Basic, or the Bearer token of a challenge) goes with every blob
// download, so the seed reads a private image's blobs as the job's credentials allow.

import type { buildConnector } from 'undici'
import { parsePlatform, RegistryClient } from '@naiad/oci'
import { NaiadError } from '@naiad/proto'

import type { PreheatImage } from './image-ref.ts'

export interface ResolvedBlob {
  kind: 'config' | 'layer'
  digest: string
  size: number
}

export interface Resolution {
  blobs: ResolvedBlob[]
  /** The Authorization header blob downloads need (Basic or Bearer), if any. */
  authorization: string | undefined
}

export interface ResolveOptions {
  /** The job's headers (an `authorization` among them is its credentials). */
  headers: Record<string, string>
  platform: string
  signal?: AbortSignal
  /** How connections are made (the supernode's source policy); any destination without one. */
  connect?: buildConnector.connector
}

const TIMEOUT_MS = 30_000

/** A job's platform: SN_ERR_BAD_REQUEST unless it is OS/ARCH[/VARIANT]. */
export function checkPlatform(p: string): void {
  try {
    parsePlatform(p)
  } catch (err) {
    throw new NaiadError('SN_ERR_BAD_REQUEST', (err as Error).message, { cause: err })
  }
}

export async function resolveImage(image: PreheatImage, options: ResolveOptions): Promise<Resolution> {
  const headers: Record<string, string> = {}
  for (const [k, v] of Object.entries(options.headers)) headers[k.toLowerCase()] = v
  const { authorization, ...rest } = headers
  const client = new RegistryClient(image.ref.registry, {
    plainHttp: image.plainHttp, auth: authorization ?? null, headers: rest, timeoutMs: TIMEOUT_MS, connect: options.connect
  })
  try {
    const { manifest } = await client.resolveImage(image.ref, options.platform, options.signal)
    const blobs: ResolvedBlob[] = [{ kind: 'config', digest: manifest.config.digest, size: manifest.config.size }]
    for (const l of manifest.layers) {
      if (blobs.some((b) => b.digest === l.digest)) continue
      blobs.push({ kind: 'layer', digest: l.digest, size: l.size })
    }
    return { blobs, authorization: await client.authorizationFor(image.repo, options.signal) }
  } finally {
    await client.close()
  }
}
