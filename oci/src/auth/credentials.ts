// Registry credentials an operator configures: Docker's `config.json` (`auths`), and a
// Basic `user:pass` from the environment for the command-line tools.

import { readFileSync } from 'node:fs'

import { NaiadError } from '@naiad/proto/contracts'

import { registryHost } from '../reference/reference.ts'

/**
 * Reads credentials in Docker's `config.json` format: `{"auths": {"host": {"auth": base64(user:pass)}}}`
 * (or `username`/`password`). Returns an Authorization header value per registry host
 * (`docker.io` and `index.docker.io` entries count for Docker Hub's API host too).
 */
export function loadDockerCredentials(file: string): Map<string, string> {
  let doc: { auths?: Record<string, { auth?: string; username?: string; password?: string }> }
  try {
    doc = JSON.parse(readFileSync(file, 'utf8')) as typeof doc
  } catch (err) {
    throw new NaiadError('PROTO_ERR_BAD_CONFIG', `registry credentials file ${file}: ${(err as Error).message}`, { cause: err })
  }
  const out = new Map<string, string>()
  for (const [key, entry] of Object.entries(doc.auths ?? {})) {
    const host = key.replace(/^https?:\/\//, '').replace(/\/.*$/, '')
    const basic = entry.auth ?? (entry.username !== undefined ? Buffer.from(`${entry.username}:${entry.password ?? ''}`).toString('base64') : undefined)
    if (basic === undefined) continue
    out.set(host, `Basic ${basic}`)
    const api = registryHost(host)
    if (api !== host && !out.has(api)) out.set(api, `Basic ${basic}`)
  }
  return out
}

/** NAIAD_REGISTRY_AUTH (`user:pass`, or a whole `Basic …`/`Bearer …` value) as an Authorization value. */
export function authFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const v = env.NAIAD_REGISTRY_AUTH
  if (v === undefined || v === '') return undefined
  if (/^(Basic|Bearer) /i.test(v)) return v
  return `Basic ${Buffer.from(v).toString('base64')}`
}
