// The Kubernetes manifests (docker/k8s/) and the Helm chart (docker/helm/naiad), checked the
// way a cluster would take them: every object against the Kubernetes API schemas and field
// names, every Naiad argument and config file against the binaries' option tables, the init
// container's script run for real, and references between objects resolved. The chart is
// rendered with `helm template` (the helm binary: NAIAD_HELM, else PATH; .ci/run provides
// one) with its defaults and with every common choice changed, and must give the same
// objects as the plain manifests.

import { execFile } from 'node:child_process'
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadOptions } from '@naiad/proto/contracts'

import { DFDAEMON_COMMAND } from '@naiad/dfdaemon'
import { INIT_CONFIG_COMMAND } from '@naiad/node-tools'
import { SUPERNODE_COMMAND } from '@naiad/supernode'
import { exec } from '../../scripts/test/fixtures/installed-package.ts'
import { parseManifests, podSpec, schemaErrors, strictFieldErrors, withTempFile, type ContainerLike, type K8sObject } from './fixtures/kubernetes.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const K8S = join(ROOT, 'docker', 'k8s')
const CHART = join(ROOT, 'docker', 'helm', 'naiad')

let manifests: K8sObject[]
let scratch: string

beforeAll(async () => {
  manifests = []
  for (const f of (await readdir(K8S)).filter((n) => n.endsWith('.yaml')).sort()) {
    manifests.push(...parseManifests(await readFile(join(K8S, f), 'utf8'), f))
  }
  scratch = await mkdtemp(join(tmpdir(), 'naiad-k8s-test-'))
})

afterAll(async () => {
  if (scratch !== undefined) await rm(scratch, { recursive: true, force: true })
})

const find = (objs: K8sObject[], kind: string, component?: string): K8sObject[] =>
  objs.filter((o) => o.kind === kind && (component === undefined || o.metadata.labels?.['app.kubernetes.io/component'] === component))

/** The container's command line after the binary name, as the binary would parse it. */
function naiadArgs(c: ContainerLike): { bin: string; argv: string[] } {
  const [bin, ...argv] = [...(c.command ?? []), ...(c.args ?? [])]
  return { bin, argv }
}

/** Everything a cluster operator's `kubectl apply` would trip over, for one set of objects. */
async function checkObjects(objs: K8sObject[], label: string): Promise<void> {
  expect(await schemaErrors(objs), `${label}: schema`).toEqual([])
  expect(strictFieldErrors(objs), `${label}: unknown or mistyped fields`).toEqual([])

  const names = (kind: string): Set<string> => new Set(find(objs, kind).map((o) => o.metadata.name))
  const configMaps = names('ConfigMap')
  const secrets = names('Secret')
  for (const o of objs) expect(o.metadata.namespace ?? (o.kind === 'Namespace' ? undefined : 'missing'), `${o.kind} ${o.metadata.name} namespace`).not.toBe('missing')

  const [sts] = find(objs, 'StatefulSet', 'supernode')
  const [ds] = find(objs, 'DaemonSet', 'dfdaemon')
  expect(sts, `${label}: supernode StatefulSet`).toBeDefined()
  expect(ds, `${label}: dfdaemon DaemonSet`).toBeDefined()
  expect((sts.spec as { volumeClaimTemplates?: unknown[] }).volumeClaimTemplates?.length).toBe(1)
  for (const w of [sts, ds]) {
    const spec = podSpec(w)
    for (const v of spec.volumes ?? []) {
      if (v.configMap !== undefined) expect(configMaps.has(v.configMap.name), `ConfigMap ${v.configMap.name}`).toBe(true)
      if (v.secret !== undefined) expect(secrets.has(v.secret.secretName), `Secret ${v.secret.secretName}`).toBe(true)
    }
    for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
      expect(c.resources?.requests?.cpu, `${w.kind} ${c.name} cpu request`).toBeDefined()
      expect(c.resources?.requests?.memory, `${w.kind} ${c.name} memory request`).toBeDefined()
      const claims = ((w.spec as { volumeClaimTemplates?: Array<{ metadata: { name: string } }> }).volumeClaimTemplates ?? []).map((t) => t.metadata.name)
      const mounted = new Set([...(spec.volumes ?? []).map((v) => v.name), ...claims])
      for (const m of c.volumeMounts ?? []) expect(mounted.has(m.name), `${w.kind} ${c.name} mounts ${m.name}`).toBe(true)
    }
  }

  // The supernode: its flags and config file parse, probes on /readyz and /healthz of its HTTP port.
  const sn = podSpec(sts).containers[0]
  const { bin: snBin, argv: snArgv } = naiadArgs(sn)
  expect(snBin).toBe('supernode')
  const snCm = find(objs, 'ConfigMap', 'supernode')[0].data as Record<string, string>
  const snValues = await withTempFile('supernode.yaml', snCm['supernode.yaml'], (file) =>
    loadOptions(SUPERNODE_COMMAND, snArgv.map((a) => a.startsWith('--config=') ? `--config=${file}` : a), {}).values)
  expect(snValues.plugins).toEqual(expect.arrayContaining(['metrics', 'preheat', 'health', 'slo', 'doctor']))
  const snPort = Number(String(snValues.listen).split(':').pop())
  expect(sn.ports?.find((p) => p.name === 'http')?.containerPort).toBe(snPort)
  expect(sn.readinessProbe?.httpGet?.path).toBe('/readyz')
  expect(sn.livenessProbe?.httpGet?.path).toBe('/healthz')

  // The daemons: host network, probes on /healthz at the local API's loopback address.
  const spec = podSpec(ds)
  expect(spec.hostNetwork).toBe(true)
  expect(spec.dnsPolicy).toBe('ClusterFirstWithHostNet')
  const d = spec.containers[0]
  const { bin: dBin, argv: dArgv } = naiadArgs(d)
  expect(dBin).toBe('dfdaemon')
  const dCm = find(objs, 'ConfigMap', 'dfdaemon')[0].data as Record<string, string>
  const env = Object.fromEntries((d.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!.replace('$(NODE_NAME)', 'node-1')]))
  const dValues = await withTempFile('dfdaemon.yaml', dCm['dfdaemon.yaml'], (file) =>
    loadOptions(DFDAEMON_COMMAND, dArgv.map((a) => a.startsWith('--config=') ? `--config=${file}` : a), env).values)
  expect(dValues.plugins).toEqual(expect.arrayContaining(['metrics', 'health', 'slo', 'doctor']))
  expect(String(dValues.supernode)).toMatch(new RegExp(`^http://${find(objs, 'Service', 'supernode')[0].metadata.name}\\.`))
  const api = String(dValues['api.listen'])
  for (const probe of [d.readinessProbe, d.livenessProbe]) {
    expect(probe?.httpGet?.path).toBe('/healthz')
    expect(`${probe?.httpGet?.host}:${probe?.httpGet?.port}`).toBe(api)
  }
  const fabric = Number(/\/tcp\/(\d+)/.exec(String(dValues['p2p.listen']))?.[1])
  expect(d.ports?.find((p) => p.name === 'fabric')).toMatchObject({ containerPort: fabric, hostPort: fabric })

  // The init container's script, run for real: it writes containerd's hosts.toml per registry.
  const init = (spec.initContainers ?? []).find((c) => c.name === 'init-config')
  expect(init, 'init-config container').toBeDefined()
  const script = naiadArgs(init!).argv.at(-1)!
  const certs = join(scratch, `certs-${label.replace(/\W+/g, '-')}`)
  const bin = join(scratch, 'bin')
  await mkdir(bin, { recursive: true })
  await writeFile(join(bin, 'dfdaemon'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(join(ROOT, 'dfdaemon', 'bin', 'dfdaemon.ts'))} "$@"\n`)
  await chmod(join(bin, 'dfdaemon'), 0o755)
  for (const m of /dfdaemon init-config (.*)$/m.exec(script)![1].matchAll(/--([a-z-]+)/g)) {
    expect(INIT_CONFIG_COMMAND.options.some((o) => o.flag === m[1]), `init-config --${m[1]}`).toBe(true)
  }
  const initEnv = Object.fromEntries((init!.env ?? []).map((e) => [e.name, e.value ?? '']))
  const run = await exec('/bin/sh', ['-c', script.replaceAll('/host/etc/containerd/certs.d', certs)], { env: { ...process.env, ...initEnv, PATH: `${bin}:${process.env.PATH}` } })
  expect(run.code, run.stderr).toBe(0)
  for (const registry of initEnv.NAIAD_MIRROR_REGISTRIES.split(/\s+/).filter((r) => r !== '')) {
    const toml = await readFile(join(certs, registry, 'hosts.toml'), 'utf8')
    expect(toml).toContain(`[host."http://${String(dValues['proxy.listen'])}"]`)
  }

  // Only the nodes reach the supernode's ports.
  const [np] = find(objs, 'NetworkPolicy')
  const npSpec = np.spec as { podSelector: { matchLabels: Record<string, string> }; ingress: Array<{ from: Array<{ ipBlock?: { cidr: string } }>; ports: Array<{ port: number }> }> }
  expect(npSpec.podSelector.matchLabels['app.kubernetes.io/component']).toBe('supernode')
  expect(npSpec.ingress.flatMap((r) => r.ports.map((p) => p.port)).sort()).toEqual([8002, 8003])
  expect(npSpec.ingress.every((r) => r.from.every((f) => f.ipBlock !== undefined))).toBe(true)
}

describe('Kubernetes manifests (docker/k8s)', () => {
  it('are valid Kubernetes objects that a cluster would run as Naiad expects', async () => {
    expect(manifests.map((o) => o.kind).sort()).toEqual(['ConfigMap', 'ConfigMap', 'DaemonSet', 'Namespace', 'NetworkPolicy', 'Secret', 'Secret', 'Service', 'Service', 'StatefulSet'])
    await checkObjects(manifests, 'manifests')
  })

  it('catches what the API server would reject: a misspelt field, a wrong type, a flag Naiad does not have', async () => {
    const broken = structuredClone(manifests)
    const ds = broken.find((o) => o.kind === 'DaemonSet')!
    ;(podSpec(ds) as unknown as Record<string, unknown>).hostNetwrok = true
    expect(strictFieldErrors(broken).join('\n')).toMatch(/hostNetwrok/)
    const sts = broken.find((o) => o.kind === 'StatefulSet')!
    podSpec(sts).containers[0].ports![0].containerPort = 'http' as unknown as number
    expect((await schemaErrors(broken)).join('\n')).toMatch(/containerPort/)
    expect(() => loadOptions(DFDAEMON_COMMAND, ['--join-tokn', 'x'], {})).toThrow(/unknown flag --join-tokn/)
  })
})

function helmBinary(): string {
  return process.env.NAIAD_HELM ?? 'helm'
}

function helmTemplate(values: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(helmBinary(), ['template', 'naiad', CHART, '--namespace', 'naiad', ...values], { maxBuffer: 16 << 20, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 127, stdout, stderr: stderr || (err?.message ?? '') })
    })
  })
}

describe('Helm chart (docker/helm/naiad)', () => {
  it('renders, with its defaults, the same objects as the manifests', async () => {
    const r = await helmTemplate([])
    expect(r.code, `helm template (set NAIAD_HELM to a helm binary): ${r.stderr}`).toBe(0)
    const objs = parseManifests(r.stdout, 'helm template')
    const key = (o: K8sObject): string => `${o.kind}/${o.metadata.name}`
    // The chart installs into a namespace Helm is given; it does not create it.
    expect(objs.map(key).sort()).toEqual(manifests.filter((o) => o.kind !== 'Namespace').map(key).sort())
    await checkObjects(objs, 'chart defaults')
  })

  it('renders valid objects with the common choices changed', async () => {
    const values = join(scratch, 'values.yaml')
    await writeFile(values, [
      'image: { repository: registry.example.internal/naiad, tag: "0.1.0-test", pullPolicy: Always }',
      'supernode:',
      '  storage: { size: 50Gi, storageClassName: fast }',
      '  seedCacheQuota: 40GiB',
      '  resources: { requests: { cpu: "1", memory: 1Gi }, limits: { memory: 4Gi } }',
      'dfdaemon:',
      '  cacheQuota: 80GiB',
      '  mirrorRegistries: [docker.io, registry.example.internal:5000]',
      '  insecureRegistries: [registry.example.internal:5000]',
      '  labels: { zone: a }',
      '  nodeSelector: { kubernetes.io/os: linux }',
      '  dataDir: /var/lib/naiad-cache',
      'networkPolicy: { enabled: true, nodeCIDRs: [10.1.0.0/16, 10.2.0.0/16] }',
      'registryAuth: { existingSecret: my-registry-creds }',
      ''
    ].join('\n'))
    const r = await helmTemplate(['-f', values])
    expect(r.code, r.stderr).toBe(0)
    const objs = parseManifests(r.stdout, 'helm template -f values.yaml')
    // The existing Secret the values name is the cluster's; it is not rendered.
    expect(objs.some((o) => o.kind === 'Secret' && o.metadata.name === 'my-registry-creds')).toBe(false)
    const withSecret = [...objs, { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'my-registry-creds', namespace: 'naiad' }, type: 'kubernetes.io/dockerconfigjson', stringData: { '.dockerconfigjson': '{"auths":{}}' } }]
    await checkObjects(withSecret, 'chart values')
    const ds = find(objs, 'DaemonSet')[0]
    expect(podSpec(ds).containers[0].image).toBe('registry.example.internal/naiad:0.1.0-test')
    expect(podSpec(ds).containers[0].args).toContain('--insecure-registry=registry.example.internal:5000')
    const np = find(objs, 'NetworkPolicy')[0].spec as { ingress: Array<{ from: Array<{ ipBlock: { cidr: string } }> }> }
    expect(np.ingress[0].from.map((f) => f.ipBlock.cidr)).toEqual(['10.1.0.0/16', '10.2.0.0/16'])
    const sts = find(objs, 'StatefulSet')[0].spec as { volumeClaimTemplates: Array<{ spec: { storageClassName: string; resources: { requests: { storage: string } } } }> }
    expect(sts.volumeClaimTemplates[0].spec).toMatchObject({ storageClassName: 'fast', resources: { requests: { storage: '50Gi' } } })
  })
})
