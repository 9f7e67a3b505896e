import { defineConfig } from 'vitest/config'

// Two tiers, run in this order by `npm test` (and so by CI):
//  - unit: in-process tests of logic (scheduler, planner, plugin host, option tables, codecs,
//    the data channel on loopback, the mirror against an in-process registry, …): no child
//    process, no external tool; files run in parallel and the tier takes seconds. A new test
//    file that starts nothing belongs here.
//  - integration: real binaries as child processes, real registries, containerd, FUSE
//    mounts, browsers. They move hundreds of MiB; running their files in parallel on a
//    2-core machine only makes every one of them flaky, so they run one at a time.
export const UNIT = [
  'proto/test/**/*.test.ts',
  'oci/test/**/*.test.ts',
  'host/test/**/*.test.ts',
  'peer/test/**/*.test.ts',
  'node-tools/test/**/*.test.ts',
  'bench/test/cpu-cap.test.ts',
  'bench/test/long-stretches.test.ts',
  'bench/test/sim-network.test.ts',
  'bench/test/sim-start-burst.test.ts',
  'dfdaemon/test/qos-limiters.test.ts',
  'dfdaemon/test/slo-daemon.test.ts',
  'dfdaemon/test/mirror-unit.test.ts',
  'dfget/test/atomic-file.test.ts',
  'dfget/test/progress.test.ts',
  'dfget/test/verify.test.ts',
  'nydus-fs/test/convert-format.test.ts',
  'nydus-fs/test/disk-cache.test.ts',
  'nydus-fs/test/mount-fetcher.test.ts',
  'nydus-fs/test/snapshotter-unit.test.ts',
  'scripts/test/start-args.test.ts',
  'supernode/test/admission.test.ts',
  'supernode/test/backpressure.test.ts',
  'supernode/test/cluster-membership.test.ts',
  'supernode/test/health-engine.test.ts',
  'supernode/test/health-expression.test.ts',
  'supernode/test/preheat-request.test.ts',
  'supernode/test/preheat-resolver.test.ts',
  'supernode/test/scheduler.test.ts',
  'supernode/test/state-store.test.ts',
  'supernode/test/swarm.test.ts'
]

export default defineConfig({
  test: {
    pool: 'forks',
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: UNIT,
          // Several files wait on real timers of in-process libp2p sessions: overlap them
          // even on 2 cores (vitest's default is one worker fewer than the cores).
          maxWorkers: 4,
          testTimeout: 30_000,
          hookTimeout: 30_000,
          sequence: { groupOrder: 0 }
        }
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['*/test/**/*.test.ts'],
          exclude: ['**/node_modules/**', ...UNIT],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
          sequence: { groupOrder: 1 }
        }
      }
    ]
  }
})
