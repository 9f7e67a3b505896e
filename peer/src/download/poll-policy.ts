// When a download in a swarm asks the scheduler again, and when it stops waiting for the
// swarm and goes to the origin. Decisions only: the loop in peer-task.ts acts on them. Each
// call takes the time, so tests drive the policy with a fake clock.

/** Polls of a starving download (free slots, nothing to fill them) start this fast — a cold task's layout appears within milliseconds — and back off to refreshMs while they bring nothing. */
export const IDLE_POLL_MIN_MS = 20
/** The fastest polls while pieces are still in flight: the scheduler carries every peer's polls. */
export const BUSY_POLL_MIN_MS = 100

export interface PollPolicyOptions {
  /** How often to ask the scheduler for fresh parents while fetching. */
  refreshMs: number
  /** With nothing to fetch and no progress for this long, go to the origin. */
  stallTimeoutMs: number
}

/** What one turn's planning found. */
export interface Turn {
  /** Fetches started. */
  started: number
  /** Slots were left that nothing could fill. */
  room: boolean
  /** Parents other than the source hold pieces. */
  peersServe: boolean
}

/**
 * How long after its last progress a download still waits out a supernode that puts its
 * polls off (SN_ERR_BUSY); a registration waits out busy answers as long (REGISTER_BUSY_MAX_MS).
 */
export const PUT_OFF_MAX_MS = 60_000

export class PollPolicy {
  private readonly options: PollPolicyOptions
  private lastProgress: number
  /** When the supernode last put a poll of this download off. */
  private putOffAt = Number.NEGATIVE_INFINITY
  private lastRefresh = 0
  private idlePoll = IDLE_POLL_MIN_MS
  private done: number
  private published: number
  /** The last turn left slots free with nothing to fill them: what to fetch next is the scheduler's to say. */
  private starving = true
  /** Other peers than the source could serve at the last turn: the download is in a swarm. */
  private swarming = false

  /** `done`: bytes stored so far; `published`: piece digests the source published so far. */
  constructor(options: PollPolicyOptions, now: number, done: number, published: number) {
    this.options = options
    this.lastProgress = now
    this.done = done
    this.published = published
  }

  /**
   * The time between polls, with `inflight` fetches in flight. Starving (a lone child
   * streaming from the seed runs out of granted pieces every few pieces): ask again soon.
   * Starving with pieces in flight: a lone child streaming from the source polls fast (its
   * next grants come with the next answer); in a swarm new pieces appear at the peers as fast
   * as they arrive anywhere, and a poll each refreshMs finds them — 16 peers polling every
   * 100 ms put the scheduler's codec, the fabric and the planner among the daemons' largest
   * CPU costs per GiB.
   */
  pollMs(inflight: number): number {
    const { refreshMs } = this.options
    if (!this.starving) return refreshMs
    return Math.max(this.idlePoll, inflight === 0 ? IDLE_POLL_MIN_MS : this.swarming ? refreshMs : BUSY_POLL_MIN_MS)
  }

  /** Whether to ask the scheduler at this turn: it was asked for (`now`), or a poll is due. Counts as asked. */
  refreshDue(now: number, inflight: number, asked: boolean): boolean {
    if (!asked && now - this.lastRefresh < this.pollMs(inflight)) return false
    this.lastRefresh = now
    return true
  }

  /** The download's progress: bytes stored, digests published. Either is progress: a slow origin is not a stalled swarm. */
  progress(now: number, done: number, published: number): void {
    if (done === this.done && published === this.published) return
    this.done = done
    this.published = published
    this.lastProgress = now
  }

  /** What this turn's planning found; `refreshed`: the turn asked the scheduler. */
  planned(turn: Turn, refreshed: boolean): void {
    this.starving = turn.room
    this.swarming = turn.peersServe
    // Polls while starving come fast when a poll brings work, and back off to refreshMs
    // while polls bring nothing (the scheduler carries every idle peer's polls).
    if (refreshed) this.idlePoll = turn.started > 0 ? IDLE_POLL_MIN_MS : Math.min(this.options.refreshMs, this.idlePoll * 2)
  }

  /**
   * The supernode answered a poll with SN_ERR_BUSY: it is alive and asks for time, so the
   * silence since is its, not the swarm's. A simulated start of 10,000 daemons sent every
   * download whose polls a saturated supernode put off to the origin by the stall timeout,
   * and the registry's link, shared with the seeds' reads, then slowed every swarm.
   */
  putOff(now: number): void {
    this.putOffAt = now
  }

  /**
   * No progress for longer than the stall timeout (stretched by the supernode's pace, see
   * stallAfterMs), counted from the last progress or the last poll the supernode put off,
   * whichever is later, but from no later than PUT_OFF_MAX_MS after the last progress.
   */
  stalled(now: number, paceMs = 0): boolean {
    return now - stallCountsFrom(this.lastProgress, this.putOffAt) > stallAfterMs(this.options.stallTimeoutMs, paceMs)
  }
}

/**
 * When the stall count of a download began: at its last progress or the last poll the
 * supernode put off, whichever is later, but no later than PUT_OFF_MAX_MS after the progress.
 */
export function stallCountsFrom(lastProgress: number, putOffAt: number): number {
  return Math.max(lastProgress, Math.min(putOffAt, lastProgress + PUT_OFF_MAX_MS))
}

/** A paced download asks for new parents once a pace: its stall timeout covers this many polls. */
export const STALL_PACES = 2

/**
 * How long a download waits with no progress before it goes to the origin. While the
 * supernode asks for a pace, an idle download polls once a pace (up to 7.5 s with the
 * spread), so a fixed stall timeout would send it to the origin after one or two polls
 * however many parents its swarm is about to have: a simulated start of 10,000 daemons over
 * three supernodes sent most of them to the registry that way (bench/README.md, sim/).
 */
export function stallAfterMs(stallTimeoutMs: number, paceMs: number): number {
  return Math.max(stallTimeoutMs, STALL_PACES * paceMs)
}

/** What the download knows when nothing is in flight and nothing could be started. */
export interface IdleSwarm {
  /** The task's state as the scheduler last told it, and its error when failed. */
  taskState: string
  taskError: { code: string; message: string } | undefined
  /** The scheduler is unavailable and not expected back (see schedulerMayReturn). */
  schedulerLost: boolean
  /** Parents neither blocked nor cooling down. */
  usableParents: number
  /** Every parent the scheduler names, asked again since, could not be reached (ParentSet.unreachableSinceAsked). */
  unreachable: boolean
  stalled: boolean
  /** How long it waited with no progress before it counts as stalled (stallAfterMs). */
  stallTimeoutMs: number
}

/** Why an idle download gives up on the swarm and goes to the origin; undefined: it waits on. */
export function giveUpReason(s: IdleSwarm): string | undefined {
  if (s.taskState === 'failed') return `source failed: ${s.taskError?.code ?? 'unknown'} ${s.taskError?.message ?? ''}`.trim()
  if (s.schedulerLost && s.usableParents === 0) return 'scheduler lost and no parent can serve'
  if (s.unreachable && s.usableParents === 0) return 'no parent is reachable'
  if (s.stalled) return `no parent could serve for ${s.stallTimeoutMs} ms`
  return undefined
}

/**
 * Whether an unavailable scheduler is worth waiting for: it went down for a reason that may
 * pass (see SchedulerClient.unavailableSince) less than stallTimeoutMs ago — as long as a
 * download waits for a silent swarm before it goes to the origin.
 */
export function schedulerMayReturn(unavailableSince: number | undefined, now: number, stallTimeoutMs: number): boolean {
  const since = unavailableSince ?? 0
  return since > 0 && now - since < stallTimeoutMs
}
