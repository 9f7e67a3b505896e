// The doctor plugin, daemon half: runs the doctor's checks against the running daemon's
// real addresses every `interval`, serves the latest report at GET /api/v1/doctor on the
// local API, and pushes it to the supernode over /naiad/doctor/1.0.0, where the supernode
// half keeps the latest report of every node (supernode/src/plugins/doctor).
//
// @example
// # dfdaemon.yaml
// plugins: [metrics, doctor]
// plugin-config:
//   doctor: { interval: 60s, registries: [docker.io], rules-file: /etc/naiad/doctor-rules.yaml }

import { DOCTOR_SETTINGS, doctorSettings, runDoctor, type DoctorReport } from '@naiad/node-tools'
import { DoctorReportRequest, DoctorReportResponse, PROTOCOLS } from '@naiad/proto'

import { daemonPlugin } from '../plugin-api/context.ts'

/** `http://127.0.0.1:65001` → `127.0.0.1:65001`. */
function hostPort(url: string | undefined, fallback: string): string {
  if (url === undefined) return fallback
  try {
    return new URL(url).host
  } catch {
    return fallback
  }
}

export const doctorPlugin = daemonPlugin({
  name: 'doctor',
  version: '1.0.0',
  settings: DOCTOR_SETTINGS,
  setup(ctx) {
    const settings = doctorSettings(ctx.settings)
    const info = ctx.daemon
    let latest: DoctorReport | undefined
    let running = false
    let pushFailing = false
    let closed = false

    const push = async (report: DoctorReport): Promise<void> => {
      try {
        await ctx.supernode.call(PROTOCOLS.doctor, DoctorReportRequest, DoctorReportResponse,
          { hostname: report.node.hostname, report: JSON.stringify(report) }, { timeoutMs: settings.supernodeTimeoutMs })
        if (pushFailing) ctx.logger.info('doctor reports reach the supernode again')
        pushFailing = false
      } catch (err) {
        // Once per outage: a supernode without the doctor plugin would otherwise log every interval.
        ctx.logger[pushFailing ? 'debug' : 'warn']({ err: (err as Error).message }, 'cannot send the doctor report to the supernode')
        pushFailing = true
      }
    }

    const run = async (): Promise<void> => {
      const a = info.addresses()
      if (running || closed || a.api === undefined) return
      running = true
      try {
        latest = await runDoctor({
          supernode: info.supernodeUrl,
          dataDir: info.dataDir,
          cacheQuota: info.cacheQuota,
          proxy: hostPort(a.proxy, info.proxyListen),
          api: hostPort(a.api, ''),
          p2p: a.p2p,
          peerId: ctx.fabric.peerId.toString()
        }, settings)
        const s = latest.summary
        ctx.logger[s.fail > 0 ? 'warn' : 'debug']({ ok: s.ok, warn: s.warn, fail: s.fail }, 'doctor checks done')
        if (!closed) await push(latest)
      } finally {
        running = false
      }
    }

    // The first run waits for the daemon to listen (it sets plugins up before it does).
    let first: NodeJS.Timeout | undefined
    const kick = (): void => {
      first = setTimeout(() => {
        if (info.addresses().api === undefined || info.addresses().proxy === undefined) { kick(); return }
        run().catch((err: unknown) => ctx.logger.warn({ err: (err as Error).message }, 'doctor checks failed'))
      }, 200)
      first.unref()
    }
    kick()
    ctx.every(settings.intervalMs, run)
    ctx.onClose(() => { closed = true; clearTimeout(first) })

    ctx.route('GET', '/api/v1/doctor', () => latest === undefined
      ? { status: 503, body: { message: 'the first doctor run has not finished yet' } }
      : { body: latest })
  }
})
