// The cluster's signing key: an Ed25519 key in the supernode's data directory
// (`cluster.key`, PKCS#8 PEM, mode 0600). It signs membership credentials and grants, and
// the MAC key of join and API tokens is derived from it. Made on first use, by the
// supernode or by `supernode token create`, whichever runs first.

import { generateKeyPairSync } from 'node:crypto'
import { chmodSync, linkSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { ClusterSigner, NaiadError, secureDir } from '@naiad/proto'

export const CLUSTER_KEY_FILE = 'cluster.key'

export async function loadClusterKey(dataDir: string): Promise<ClusterSigner> {
  await secureDir(dataDir)
  const file = join(dataDir, CLUSTER_KEY_FILE)
  try {
    return read(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  const pem = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' })
  const tmp = `${file}.tmp-${process.pid}`
  writeFileSync(tmp, pem, { mode: 0o600 })
  try {
    // link, not rename: if another process made the key meanwhile, keep theirs (tokens it minted stay good).
    linkSync(tmp, file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  } finally {
    rmSync(tmp, { force: true })
  }
  return read(file)
}

function read(file: string): ClusterSigner {
  const pem = readFileSync(file)
  try {
    chmodSync(file, 0o600)
    return ClusterSigner.fromPem(pem)
  } catch (err) {
    throw new NaiadError('PROTO_ERR_BAD_CONFIG', `cannot use the cluster key ${file}: ${(err as Error).message}`, { cause: err })
  }
}
