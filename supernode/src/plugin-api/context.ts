// What a supernode plugin may reach: the base every host offers (routes, events, timers,
// fabric protocols, the metrics registry) and the supernode's own extension points, each
// typed. A plugin for the supernode is made with `supernodePlugin`, which types its settings
// from its schema; it is a type error in the daemon's catalog and refused by a daemon at load.

import type { HostContext } from '@naiad/host'
import type { DestinationPolicy } from '@naiad/peer'
import { definePlugin, type Disposer, type NaiadPlugin, type OptionSpec, type PluginDefinition } from '@naiad/proto'

import type { ClusterSeeds, SeedDownloader } from '../cluster/cluster-seeds.ts'
import type { ControlClient } from '../control/control-client.ts'
import type { Sql } from '../database/sql.ts'
import type { HostState } from '../scheduler/scheduler.ts'
import type { ParentFilter, ParentScorer } from '../scheduler/scoring.ts'

/** The scheduler as plugins see it: its hosts, read-only, and its parent-selection extension points. */
export interface SchedulerView {
  readonly hosts: ReadonlyMap<string, HostState>
  /** A candidate parent the filter rejects is never offered. */
  addFilter(filter: ParentFilter): Disposer
  /** Added to a candidate parent's score (scores are about 0..1). */
  addScorer(scorer: ParentScorer): Disposer
}

/** The seed as plugins see it: downloads into its cache (which every daemon then fetches from). */

export type { SeedDownloader }

export interface SupernodePluginContext extends HostContext<'supernode'> {
  readonly scheduler: SchedulerView
  /** Undefined when the supernode runs without its seed (`--no-seed`). */
  readonly seed: SeedDownloader | undefined
  /**
   * The seed of a task is its owner's: which live supernode owns a task, and having that
   * one's seed fetch it (`/naiad/seed-fetch/1.0.0`). Undefined without a seed.
   */
  readonly clusterSeeds: Pick<ClusterSeeds, 'selfId' | 'ownerOf' | 'download'> | undefined
  /**
   * The shared database (the supernode's SQLite file, or PostgreSQL with --database), whose
   * schema database/migrations.ts keeps: a plugin's tables are added there as a new step.
   */
  readonly database: Sql
  /** Typed commands to daemons (proto's ControlCommands) and the daemons they can go to. */
  readonly control: Pick<ControlClient, 'send' | 'hosts'>
  /** Where the supernode may fetch (`source.allow`). */
  readonly sourcePolicy: DestinationPolicy
}

export type SupernodePlugin = NaiadPlugin<SupernodePluginContext>

/** A supernode plugin; its settings are typed by the schema it declares. */
export function supernodePlugin<const O extends readonly OptionSpec[] = readonly []>(def: Omit<PluginDefinition<SupernodePluginContext, O>, 'host'>): SupernodePlugin {
  return definePlugin<SupernodePluginContext, O>({ ...def, host: 'supernode' })
}
