// `dfdaemon init-config`: the mirror configuration of each container runtime, pointing
// at this daemon's registry mirror.

import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'

import { defineCommand, NaiadError, runCli } from '@naiad/proto/contracts'

export const RUNTIMES = ['containerd', 'docker', 'podman'] as const
export type Runtime = (typeof RUNTIMES)[number]

export const INIT_CONFIG_COMMAND = defineCommand({
  name: 'dfdaemon init-config',
  usage: 'dfdaemon init-config --runtime containerd|docker|podman --registry HOST [--plain-http] [--mirror URL] [--certs-dir DIR] [--file FILE] [--dry-run]',
  summary: "Writes (or with --dry-run prints) a container runtime's mirror configuration so that its pulls from HOST go through this node's dfdaemon.",
  options: [
    { key: 'runtime', flag: 'runtime', type: 'enum', values: RUNTIMES, default: undefined, meta: 'NAME', help: 'containerd, docker or podman' },
    { key: 'registry', flag: 'registry', type: 'string', default: '', meta: 'HOST', help: 'registry to mirror, e.g. docker.io or registry.example.internal:5000' },
    { key: 'plain-http', flag: 'plain-http', type: 'bool', default: false, help: 'the registry speaks plain HTTP, not HTTPS (containerd: server = "http://HOST"; podman: insecure = true); start dfdaemon with --insecure-registry HOST too' },
    { key: 'mirror', flag: 'mirror', type: 'url', default: 'http://127.0.0.1:65001', meta: 'URL', help: "this daemon's --proxy-listen address" },
    { key: 'certs-dir', flag: 'certs-dir', type: 'string', default: '/etc/containerd/certs.d', meta: 'DIR', help: "containerd's hosts directory (config_path)" },
    { key: 'file', flag: 'file', type: 'string', default: '', meta: 'FILE', help: 'file to write (docker: /etc/docker/daemon.json; podman: /etc/containers/registries.conf.d/50-naiad-HOST.conf)' },
    { key: 'dry-run', flag: 'dry-run', type: 'bool', default: false, help: 'print the file instead of writing it' }
  ]
})

export interface RuntimeConfig {
  path: string
  content: string
}

/** How the registry itself is reached: over HTTPS unless it speaks plain HTTP. */
export interface RegistryOptions {
  plainHttp?: boolean
}

function registryServer(host: string, plainHttp: boolean): string {
  return `${plainHttp ? 'http' : 'https'}://${host === 'docker.io' ? 'registry-1.docker.io' : host}`
}

/** A comment for a plain-HTTP registry: the daemon must be told too, or its mirror talks HTTPS to it. */
function plainHttpNote(registry: string, plainHttp: boolean): string {
  return plainHttp ? `# ${registry} speaks plain HTTP: start dfdaemon with --insecure-registry ${registry} too.\n` : ''
}

/**
 * containerd's hosts.toml: the mirror first, the registry itself as the fallback `server`
 * (with its own scheme: containerd falls back to it when the mirror fails).
 */
export function containerdHostsToml(registry: string, mirror: string, options: RegistryOptions = {}): string {
  const plainHttp = options.plainHttp === true
  return `# Written by dfdaemon init-config: pulls from ${registry} go through the Naiad mirror first.
${plainHttpNote(registry, plainHttp)}server = "${registryServer(registry, plainHttp)}"

[host."${mirror}"]
  capabilities = ["pull", "resolve"]
`
}

/**
 * containers-registries.conf(5) drop-in. The mirror learns the upstream from the
 * `naiad-ns/HOST[_PORT]` path prefix. A plain-HTTP registry is `insecure` on its own entry
 * too: podman falls back to it when the mirror fails.
 */
export function podmanRegistriesConf(registry: string, mirror: string, options: RegistryOptions = {}): string {
  const m = new URL(mirror)
  const plainHttp = options.plainHttp === true
  return `# Written by dfdaemon init-config: pulls from ${registry} go through the Naiad mirror first.
${plainHttpNote(registry, plainHttp)}[[registry]]
prefix = "${registry}"
location = "${registry}"
${plainHttp ? 'insecure = true\n' : ''}
[[registry.mirror]]
location = "${m.host}/naiad-ns/${registry.toLowerCase().replace(':', '_')}"
insecure = ${m.protocol === 'http:'}
`
}

/** Docker's daemon.json with the mirror added; Docker only mirrors Docker Hub. */
export function dockerDaemonJson(existing: string | undefined, mirror: string): string {
  let doc: Record<string, unknown> = {}
  if (existing !== undefined && existing.trim() !== '') {
    try {
      doc = JSON.parse(existing) as Record<string, unknown>
    } catch (err) {
      throw new NaiadError('PROTO_ERR_BAD_CONFIG', `existing daemon.json is not valid JSON: ${(err as Error).message}`, { cause: err })
    }
  }
  const mirrors = Array.isArray(doc['registry-mirrors']) ? doc['registry-mirrors'] as string[] : []
  if (!mirrors.includes(mirror)) mirrors.unshift(mirror)
  doc['registry-mirrors'] = mirrors
  return `${JSON.stringify(doc, null, 2)}\n`
}

export async function runtimeConfig(runtime: Runtime, registry: string, mirror: string, certsDir: string, file: string, options: RegistryOptions = {}): Promise<RuntimeConfig> {
  if (!/^[a-zA-Z0-9.-]+(:\d{1,5})?$/.test(registry)) throw new NaiadError('PROTO_ERR_USAGE', `bad --registry "${registry}": expected HOST or HOST:PORT`)
  switch (runtime) {
    case 'containerd':
      return { path: join(certsDir, registry, 'hosts.toml'), content: containerdHostsToml(registry, mirror, options) }
    case 'podman':
      return { path: file !== '' ? file : `/etc/containers/registries.conf.d/50-naiad-${registry.replace(/:/g, '_')}.conf`, content: podmanRegistriesConf(registry, mirror, options) }
    case 'docker': {
      if (registry !== 'docker.io') {
        throw new NaiadError('PROTO_ERR_USAGE', `Docker supports registry-mirrors only for docker.io, not ${registry}; use containerd or podman for other registries`)
      }
      if (options.plainHttp === true) throw new NaiadError('PROTO_ERR_USAGE', '--plain-http: Docker mirrors only docker.io, which speaks HTTPS')
      const path = file !== '' ? file : '/etc/docker/daemon.json'
      const existing = await readFile(path, 'utf8').catch(() => undefined)
      return { path, content: dockerDaemonJson(existing, mirror) }
    }
  }
}

export async function writeRuntimeConfig(cfg: RuntimeConfig): Promise<void> {
  await mkdir(dirname(cfg.path), { recursive: true })
  const tmp = `${cfg.path}.naiad-${process.pid}`
  await writeFile(tmp, cfg.content)
  await rename(tmp, cfg.path)
}

/** `dfdaemon init-config`: writes the file, or prints it with --dry-run. */
export async function initConfigMain(argv: string[], out: NodeJS.WritableStream = process.stdout): Promise<void> {
  await runCli(INIT_CONFIG_COMMAND, argv, async ({ values: v }) => {
    if (v.runtime === undefined) throw new NaiadError('PROTO_ERR_USAGE', 'missing --runtime containerd|docker|podman')
    const cfg = await runtimeConfig(v.runtime, v.registry, v.mirror, v['certs-dir'], v.file, { plainHttp: v['plain-http'] })
    if (v['dry-run']) {
      out.write(`# ${cfg.path}\n${cfg.content}`)
      return
    }
    await writeRuntimeConfig(cfg)
    out.write(`wrote ${cfg.path}\n`)
  })
}
