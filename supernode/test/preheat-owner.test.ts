// With several supernodes the preheat runner warms the seed of each blob's task owner: its
// own seed for the tasks it owns, the owner's (over /naiad/seed-fetch) for the others, and its
// own again, with a warning, when the owner cannot be reached. In-process, with stubs for the
// two seeds: what crosses processes is in cluster.test.ts.

import Database from 'better-sqlite3'
import pino from 'pino'
import { describe, expect, it } from 'vitest'
import type { DownloadRequest, DownloadResult } from '@naiad/peer'
import { NaiadError, taskIdOf } from '@naiad/proto'
import { waitFor } from '@naiad/testkit'

import type { SupernodeMember } from '../src/cluster/membership.ts'
import { migrate } from '../src/database/migrations.ts'
import { SqliteSql } from '../src/database/sql.ts'
import { parseJobRequest } from '../src/plugins/preheat/job-request.ts'
import { JobStore } from '../src/plugins/preheat/job-store.ts'
import { PreheatRunner } from '../src/plugins/preheat/runner.ts'

const SELF = 'self-supernode'
const OWNER: SupernodeMember = { id: 'owner-supernode', apiUrl: 'http://owner.invalid', multiaddrs: [], seenAt: 0 }
const MINE = 'http://origin.invalid/mine'
const THEIRS = 'http://origin.invalid/theirs'

const result = (req: DownloadRequest): DownloadResult => ({ taskId: taskIdOf({ url: req.url }), contentLength: 10, sha256: '', fromPeers: 0, fromOrigin: 10, cached: false })

async function run(remote: (req: DownloadRequest) => Promise<DownloadResult>): Promise<{ local: string[]; remote: string[]; warnings: string[]; blobs: Array<{ url: string; state: string; errorCode: string | null }>; state: string }> {
  const db = new Database(':memory:')
  const sql = new SqliteSql(db)
  await migrate(sql)
  const store = new JobStore(sql)
  const local: string[] = []
  const asked: string[] = []
  const warnings: string[] = []
  const logger = pino({ level: 'warn' }, { write: (line: string) => { warnings.push((JSON.parse(line) as { msg: string }).msg) } })
  const runner = new PreheatRunner({
    store, logger, insecureRegistries: [],
    seed: { download: async (req) => { local.push(req.url); return result(req) } },
    clusterSeeds: {
      selfId: SELF,
      ownerOf: (taskId) => taskId === taskIdOf({ url: THEIRS }) ? OWNER : { ...OWNER, id: SELF },
      download: async (owner, req) => {
        expect(owner.id).toBe(OWNER.id)
        asked.push(req.url)
        return remote(req)
      }
    }
  })
  const args = parseJobRequest({ type: 'preheat', args: { type: 'file', urls: [MINE, THEIRS] } }, { insecureRegistries: [], defaultParallelism: 1, defaultTtlMs: 0 })
  const job = await store.create('preheat', args, Date.now(), { owner: SELF, ms: 15_000 })
  runner.start(job)
  let state = ''
  await waitFor(async () => {
    state = (await store.get(job.id))!.state
    return state === 'SUCCESS' || state === 'FAILURE'
  }, 10_000, 'the job to finish')
  await runner.close()
  const blobs = (await store.blobs(job.id)).map((b) => ({ url: b.url, state: b.state, errorCode: b.errorCode }))
  db.close()
  return { local, remote: asked, warnings, blobs, state }
}

describe('preheat with several supernodes', () => {
  it("fetches a blob through its task owner's seed, and its own tasks through its own", async () => {
    const r = await run(async (req) => result(req))
    expect(r.state).toBe('SUCCESS')
    expect(r.local).toEqual([MINE])
    expect(r.remote).toEqual([THEIRS])
    expect(r.warnings).toEqual([])
  })

  it('falls back to its own seed, with a warning, when the owner cannot be reached', async () => {
    const r = await run(async () => { throw new NaiadError('PROTO_ERR_DIAL', 'no route to the owner') })
    expect(r.state).toBe('SUCCESS')
    expect(r.remote).toEqual([THEIRS])
    expect(r.local.sort()).toEqual([MINE, THEIRS].sort())
    expect(r.warnings).toHaveLength(1)
  })

  it("records the owner seed's own failure as the blob's, without fetching it a second time here", async () => {
    const r = await run(async () => { throw new NaiadError('DFD_ERR_TASK_FAILED', 'the origin answered 404') })
    expect(r.state).toBe('FAILURE')
    expect(r.local).toEqual([MINE])
    expect(r.blobs.find((b) => b.url === THEIRS)).toMatchObject({ state: 'FAILURE', errorCode: 'DFD_ERR_TASK_FAILED' })
  })
})
