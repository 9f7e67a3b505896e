// containerd's snapshotter model over directories and overlayfs, with lazy layers.
//
// Ordinary snapshots are what containerd's overlayfs snapshotter makes: a directory per
// snapshot (`<root>/snapshots/<id>/fs`, plus `work` for overlay), a bind mount when there is
// no parent, an overlay of the parents' directories otherwise; containerd unpacks layers into
// them itself (the diff service), so a plain OCI image works as with `overlayfs`.
//
// Layers of a converted image's runtime manifest (labels.ts) are claimed instead: the first
// one mounts the lazy image (lazy-mounts.ts), every one is committed at once under the name
// containerd asked for, and Prepare answers ALREADY_EXISTS, which tells containerd the layer
// is there: nothing is downloaded or unpacked. The top claimed layer stands for the image's
// whole tree: a container on it gets an overlay whose lower layer is the lazy mount. The
// inner claimed layers hold no tree of their own; nothing but the next claim may stand on
// them (their chain IDs are unique to the image, see convert/runtime-image.ts).

import { lstat, mkdir, readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'

import { NaiadError, SNAPSHOT_KIND, type InfoMessage, type Logger, type MountMessage, type SnapshotKind } from '@naiad/proto/contracts'

import { lazyRef, readLazyLabels, REMOTE_LABEL, type LazyLayer } from './labels.ts'
import type { LazyMounts } from './lazy-mounts.ts'
import type { SnapshotRow, SnapshotStore } from './store.ts'

export interface SnapshotterComponents {
  store: SnapshotStore
  lazy: LazyMounts
  logger: Logger
}

export interface Usage { size: number; inodes: number }

function notFound(key: string): NaiadError {
  return new NaiadError('NFS_ERR_SNAPSHOT_NOT_FOUND', `snapshot ${key} does not exist`)
}

function precondition(message: string): NaiadError {
  return new NaiadError('NFS_ERR_SNAPSHOT', message)
}

function timestamp(ns: bigint): { seconds: number; nanos: number } {
  return { seconds: Number(ns / 1_000_000_000n), nanos: Number(ns % 1_000_000_000n) }
}

export function toInfo(row: SnapshotRow): InfoMessage {
  return {
    name: row.key, parent: row.parent, kind: row.kind,
    createdAt: timestamp(row.createdNs), updatedAt: timestamp(row.updatedNs),
    labels: Object.entries(row.labels).map(([key, value]) => ({ key, value }))
  }
}

/** Bytes (allocated blocks, as `du`) and distinct inodes under `dir`. */
export async function diskUsage(dir: string): Promise<Usage> {
  const seen = new Set<number>()
  let size = 0
  const walk = async (p: string): Promise<void> => {
    const st = await lstat(p).catch(() => undefined)
    if (st === undefined || seen.has(st.ino)) return
    seen.add(st.ino)
    size += st.blocks * 512
    if (!st.isDirectory()) return
    for (const name of await readdir(p).catch(() => [] as string[])) await walk(join(p, name))
  }
  await walk(dir)
  return { size, inodes: seen.size }
}

export class Snapshotter {
  readonly root: string
  private readonly store: SnapshotStore
  private readonly lazy: LazyMounts
  private readonly log: Logger

  constructor(components: SnapshotterComponents, root: string) {
    this.store = components.store
    this.lazy = components.lazy
    this.log = components.logger.child({ module: 'snapshotter' })
    this.root = root
  }

  private dir(row: Pick<SnapshotRow, 'id'>): { fs: string; work: string; base: string } {
    const base = join(this.root, 'snapshots', String(row.id))
    return { base, fs: join(base, 'fs'), work: join(base, 'work') }
  }

  private row(key: string): SnapshotRow {
    const r = this.store.get(key)
    if (r === undefined) throw notFound(key)
    return r
  }

  async prepare(key: string, parent: string, labels: Record<string, string>): Promise<MountMessage[]> {
    const lazy = readLazyLabels(labels)
    if (lazy.kind === 'lazy') {
      const claimed = await this.claim(key, parent, labels, lazy.layer)
      if (claimed) throw new NaiadError('NFS_ERR_SNAPSHOT_EXISTS', `lazy layer ${lazy.layer.layer + 1}/${lazy.layer.layers} of ${lazy.layer.image} is ready as ${lazy.layer.target}`)
    } else if (lazy.kind === 'unusable') {
      this.log.warn({ key, why: lazy.why }, 'layer of a lazy image is unpacked as an ordinary layer')
    }
    return this.create(key, parent, labels, SNAPSHOT_KIND.active)
  }

  async view(key: string, parent: string, labels: Record<string, string>): Promise<MountMessage[]> {
    return this.create(key, parent, labels, SNAPSHOT_KIND.view)
  }

  async mounts(key: string): Promise<MountMessage[]> {
    const row = this.row(key)
    if (row.kind !== SNAPSHOT_KIND.active && row.kind !== SNAPSHOT_KIND.view) throw precondition(`snapshot ${key} is committed; only active and view snapshots have mounts`)
    return this.mountsOf(row)
  }

  async commit(name: string, key: string, labels: Record<string, string>): Promise<void> {
    const row = this.row(key)
    if (row.kind !== SNAPSHOT_KIND.active) throw precondition(`snapshot ${key} is not active; only active snapshots can be committed`)
    const usage = await diskUsage(this.dir(row).fs)
    this.store.commit(key, name, { ...row.labels, ...labels }, usage)
  }

  async remove(key: string): Promise<void> {
    const row = this.row(key)
    if (this.store.hasChildren(key)) throw precondition(`snapshot ${key} has children; remove them first`)
    this.store.remove(key)
    await rm(this.dir(row).base, { recursive: true, force: true })
    if (row.lazyImage !== undefined) await this.lazy.release(row.lazyImage)
  }

  stat(key: string): InfoMessage {
    return toInfo(this.row(key))
  }

  /** Updates labels (the only mutable field): all of them, or the `labels.KEY` paths of the mask. */
  update(info: InfoMessage, paths: string[]): InfoMessage {
    const row = this.row(info.name)
    const given: Record<string, string> = {}
    for (const e of info.labels) given[e.key] = e.value
    let labels: Record<string, string>
    if (paths.length === 0 || paths.includes('labels')) {
      labels = given
    } else {
      labels = { ...row.labels }
      for (const p of paths) {
        if (!p.startsWith('labels.')) throw new NaiadError('PROTO_ERR_USAGE', `cannot update field "${p}" of a snapshot (only labels)`)
        const k = p.slice('labels.'.length)
        if (given[k] === undefined) delete labels[k]
        else labels[k] = given[k]
      }
    }
    return toInfo(this.store.setLabels(row.key, labels))
  }

  list(filters: string[]): InfoMessage[] {
    const rows = this.store.all()
    const tests = filters.map(parseFilter)
    return rows.filter((r) => tests.length === 0 || tests.some((t) => t(r))).map(toInfo)
  }

  async usage(key: string): Promise<Usage> {
    const row = this.row(key)
    if (row.lazyImage !== undefined) return { size: 0, inodes: 0 }
    if (row.kind === SNAPSHOT_KIND.committed) return { size: row.size, inodes: row.inodes }
    return diskUsage(this.dir(row).fs)
  }

  /** Removes directories of snapshots that are gone (a removal cut short by a crash). */
  async cleanup(): Promise<number> {
    const ids = this.store.ids()
    let removed = 0
    for (const name of await readdir(join(this.root, 'snapshots')).catch(() => [] as string[])) {
      if (/^\d+$/.test(name) && ids.has(Number(name))) continue
      await rm(join(this.root, 'snapshots', name), { recursive: true, force: true })
      removed++
    }
    return removed
  }

  /**
   * Claims a layer of a lazy image: true when it is now committed as `layer.target`, false
   * when it must be unpacked as an ordinary layer instead (the image cannot be mounted, and
   * nothing of it was claimed yet).
   */
  private async claim(key: string, parent: string, labels: Record<string, string>, layer: LazyLayer): Promise<boolean> {
    if (this.store.get(layer.target) !== undefined) return true
    const parentRow = parent === '' ? undefined : this.store.get(parent)
    if (parent !== '' && parentRow === undefined) throw notFound(parent)
    const continues = layer.layer === 0
      ? parentRow === undefined
      : parentRow?.lazyImage === layer.image && parentRow.lazyLayer === layer.layer - 1
    if (!continues) {
      // The layers below were unpacked (the image could not be mounted when they came): go on as they did.
      if (parentRow?.lazyImage !== undefined) throw precondition(`layer ${layer.layer} of ${layer.image} does not continue the claimed chain below ${parent}`)
      this.log.info({ key, image: layer.image, layer: layer.layer }, 'lower layers were unpacked; unpacking this one too')
      return false
    }
    try {
      await this.lazy.ensure(layer.image, lazyRef(layer))
    } catch (err) {
      // Before the first claim, containerd can still download and unpack the image; after it, not.
      if (layer.layer === 0) {
        this.log.warn({ key, image: layer.image, err: (err as Error).message }, 'lazy image cannot be mounted; its layers are unpacked instead')
        return false
      }
      throw err
    }
    const row = this.store.create({
      key: layer.target, parent, kind: SNAPSHOT_KIND.committed, labels: { ...labels, [REMOTE_LABEL]: 'true' },
      lazy: { image: layer.image, layer: layer.layer, layers: layer.layers }
    })
    await mkdir(this.dir(row).fs, { recursive: true })
    this.log.info({ name: layer.target, image: layer.image, layer: `${layer.layer + 1}/${layer.layers}` }, 'lazy layer claimed')
    return true
  }

  private async create(key: string, parent: string, labels: Record<string, string>, kind: SnapshotKind): Promise<MountMessage[]> {
    if (parent !== '') {
      const p = this.store.get(parent)
      if (p === undefined) throw notFound(parent)
      if (p.kind !== SNAPSHOT_KIND.committed) throw precondition(`parent ${parent} is not committed`)
    }
    const row = this.store.create({ key, parent, kind, labels })
    const d = this.dir(row)
    try {
      await mkdir(d.fs, { recursive: true, mode: 0o755 })
      if (kind === SNAPSHOT_KIND.active) await mkdir(d.work, { recursive: true, mode: 0o700 })
      return await this.mountsOf(row)
    } catch (err) {
      this.store.remove(key)
      await rm(d.base, { recursive: true, force: true })
      throw err
    }
  }

  /** The directories below a snapshot, nearest first; a lazy image's top layer is its mount and ends the chain. */
  private async lowerDirs(parent: string): Promise<{ dirs: string[]; lazyImage: string | undefined }> {
    const dirs: string[] = []
    let name = parent
    while (name !== '') {
      const r = this.row(name)
      if (r.lazyImage !== undefined) {
        if (r.lazyLayer !== r.lazyLayers - 1) throw precondition(`${name} is an inner layer of lazy image ${r.lazyImage}; only its top layer holds a tree`)
        const image = this.store.lazyImage(r.lazyImage)
        if (image === undefined) throw precondition(`lazy image ${r.lazyImage} of ${name} is not known (its state was lost)`)
        dirs.push(await this.lazy.ensure(r.lazyImage, image.ref))
        return { dirs, lazyImage: r.lazyImage }
      }
      dirs.push(this.dir(r).fs)
      name = r.parent
    }
    return { dirs, lazyImage: undefined }
  }

  private async mountsOf(row: SnapshotRow): Promise<MountMessage[]> {
    const d = this.dir(row)
    const { dirs, lazyImage } = await this.lowerDirs(row.parent)
    if (lazyImage !== undefined && row.kind === SNAPSHOT_KIND.active) this.lazy.noteStart(lazyImage)
    const readOnly = row.kind === SNAPSHOT_KIND.view
    if (dirs.length === 0) return [{ type: 'bind', source: d.fs, target: '', options: [readOnly ? 'ro' : 'rw', 'rbind'] }]
    if (readOnly && dirs.length === 1) return [{ type: 'bind', source: dirs[0], target: '', options: ['ro', 'rbind'] }]
    if (readOnly) return [{ type: 'overlay', source: 'overlay', target: '', options: [`lowerdir=${dirs.join(':')}`] }]
    return [{ type: 'overlay', source: 'overlay', target: '', options: ['index=off', `workdir=${d.work}`, `upperdir=${d.fs}`, `lowerdir=${dirs.join(':')}`] }]
  }
}

/**
 * containerd's filters for List, the few it sends a snapshotter (`name==…`, `parent==…`,
 * `kind==…`, `labels."KEY"==VALUE`, joined by commas for "and"); anything else matches all,
 * which is allowed: containerd checks the answers again.
 */
export function parseFilter(filter: string): (r: SnapshotRow) => boolean {
  const terms = filter.split(',').map((t) => t.trim()).filter((t) => t !== '')
  const tests = terms.map((t): ((r: SnapshotRow) => boolean) => {
    const m = /^(labels\."((?:[^"\\]|\\.)*)"|labels\.([\w./-]+)|name|parent|kind)\s*==\s*(?:"((?:[^"\\]|\\.)*)"|(.*))$/.exec(t)
    if (m === null) return () => true
    const value = m[4] ?? m[5]
    const label = m[2] ?? m[3]
    if (label !== undefined) return (r) => r.labels[label] === value
    if (m[1] === 'name') return (r) => r.key === value
    if (m[1] === 'parent') return (r) => r.parent === value
    const kinds: Record<string, number> = { view: SNAPSHOT_KIND.view, active: SNAPSHOT_KIND.active, committed: SNAPSHOT_KIND.committed }
    return (r) => kinds[value.toLowerCase()] === r.kind
  })
  return (r) => tests.every((t) => t(r))
}
