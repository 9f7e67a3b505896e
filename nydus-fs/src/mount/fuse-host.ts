// Mounting and unmounting with fuse-native, with the options a read-only image wants, and
// two of its handlers made safe: fuse-native copies xattr values and name lists into the
// kernel's buffer without checking its size, so a short buffer would be over-read by
// libfuse; here a value that does not fit answers ERANGE, as getxattr(2) promises.

import Fuse from 'fuse-native'
import { NaiadError } from '@naiad/proto/contracts'

class LazyFuse extends Fuse {
  protected override _op_getxattr(signal: Fuse.Signal, path: string, name: string, valueBuf: Buffer, _position: number): void {
    this.ops.getxattr!(path, name, 0, (err, value) => {
      if (err !== 0) return signal(err, valueBuf.buffer)
      if (value === null || value === undefined) return signal(Fuse.ENODATA, valueBuf.buffer)
      if (valueBuf.length === 0) return signal(value.length, valueBuf.buffer)
      if (value.length > valueBuf.length) return signal(Fuse.ERANGE, valueBuf.buffer)
      value.copy(valueBuf)
      signal(value.length, valueBuf.buffer)
    })
  }

  protected override _op_listxattr(signal: Fuse.Signal, path: string, listBuf: Buffer): void {
    this.ops.listxattr!(path, (err, names) => {
      if (err !== 0) return signal(err, listBuf.buffer)
      const list = Buffer.concat((names ?? []).map((n) => Buffer.from(`${n}\0`)))
      if (listBuf.length === 0) return signal(list.length, listBuf.buffer)
      if (list.length > listBuf.length) return signal(Fuse.ERANGE, listBuf.buffer)
      list.copy(listBuf)
      signal(list.length, listBuf.buffer)
    })
  }
}

export interface FuseMountOptions {
  /** Shown as the mount's source (e.g. the image reference); no commas. */
  fsname: string
  allowOther: boolean
  /** fuse-native's own per-read deadline, a backstop behind the fetcher's. */
  readTimeoutMs: number
  /** Seconds the kernel may cache entries and attributes. */
  cacheTimeoutSec: number
}

export type FuseMount = Fuse

export async function mountFuse(mountpoint: string, ops: Fuse.Operations, options: FuseMountOptions): Promise<FuseMount> {
  // fuse-native has no switch for these mount options; they ride along in fsname, whose
  // value it appends to `-o` verbatim. ro: the kernel refuses writes before they reach us;
  // use_ino: st_ino is ours, so hardlinks show one inode; the image never changes, so
  // negative lookups may be cached too.
  const fsname = `${options.fsname.replace(/[,\s]/g, '_')},ro,use_ino,negative_timeout=${options.cacheTimeoutSec}${process.getuid?.() === 0 ? ',suid' : ''}`
  const fuse = new LazyFuse(mountpoint, ops, {
    force: true,
    mkdir: true,
    fsname,
    subtype: 'nydus-fs',
    allowOther: options.allowOther,
    defaultPermissions: true,
    kernelCache: true,
    entryTimeout: options.cacheTimeoutSec,
    attrTimeout: options.cacheTimeoutSec,
    timeout: { default: 30_000, read: options.readTimeoutMs + 10_000 }
  })
  await new Promise<void>((resolve, reject) => {
    fuse.mount((err) => err === null || err === undefined
      ? resolve()
      : reject(new NaiadError('NFS_ERR_MOUNT', `cannot mount FUSE on ${mountpoint}: ${err.message}`, { cause: err })))
  })
  return fuse
}

export async function unmountFuse(fuse: FuseMount): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    fuse.unmount((err) => err === null || err === undefined
      ? resolve()
      : reject(new NaiadError('NFS_ERR_MOUNT', `cannot unmount ${fuse.mnt}: ${err.message}`, { cause: err })))
  })
}
