// The doctor's settings (`plugin-config.doctor`), shared by `dfdaemon doctor` and the doctor
// plugin: one schema with every default, validated by the option loader.

import { defaultValues, defineOptions, loadSettings, type OptionValues } from '@naiad/proto/contracts'

import type { DoctorSettings } from './facts.ts'

export const DOCTOR_SETTINGS = defineOptions([
  { key: 'registries', type: 'list', default: ['docker.io'], help: 'registries whose runtime mirror configuration is checked' },
  { key: 'containerd-certs-dir', type: 'string', default: '/etc/containerd/certs.d', help: "containerd's hosts directory" },
  { key: 'docker-daemon-json', type: 'string', default: '/etc/docker/daemon.json', help: "Docker's daemon.json" },
  { key: 'podman-registries-conf', type: 'list', default: ['/etc/containers/registries.conf', '/etc/containers/registries.conf.d'], help: 'containers-registries.conf files and drop-in directories' },
  { key: 'fuse-device', type: 'string', default: '/dev/fuse', help: 'the FUSE device' },
  { key: 'fusermount', type: 'string', default: '', help: 'the fusermount binary (empty: fusermount3 or fusermount on PATH)' },
  { key: 'supernode-timeout', type: 'duration', min: 1, default: '3s', help: 'how long the supernode may take to answer' },
  { key: 'port-timeout', type: 'duration', min: 1, default: '1s', help: 'how long a port may take to accept a connection' },
  { key: 'rules-file', type: 'list', default: [], help: 'user rule files, after the built-in rules' },
  { key: 'interval', type: 'duration', min: 1, default: '60s', help: 'how often the doctor plugin runs the checks' }
])

export type DoctorSettingValues = OptionValues<typeof DOCTOR_SETTINGS>

export function doctorSettings(v: DoctorSettingValues): DoctorSettings {
  return {
    registries: v.registries,
    containerdCertsDir: v['containerd-certs-dir'],
    dockerDaemonJson: v['docker-daemon-json'],
    podmanRegistriesConf: v['podman-registries-conf'],
    fuseDevice: v['fuse-device'],
    fusermount: v.fusermount,
    supernodeTimeoutMs: v['supernode-timeout'],
    portTimeoutMs: v['port-timeout'],
    rulesFiles: v['rules-file'],
    intervalMs: v.interval
  }
}

/** `plugin-config.doctor` validated, as DoctorSettings; messages name the key. */
export function readDoctorSettings(raw: unknown): DoctorSettings {
  return doctorSettings(loadSettings(DOCTOR_SETTINGS, raw, 'plugin-config.doctor'))
}

export const DOCTOR_DEFAULTS: DoctorSettings = doctorSettings(defaultValues(DOCTOR_SETTINGS))
