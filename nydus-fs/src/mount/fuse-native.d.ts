// The part of fuse-native (2.x, CommonJS, untyped) that nydus-fs uses.
declare module 'fuse-native' {
  /** The signal a handler gives fuse-native's native side: result, then op-specific values. */
  type Signal = (result: number, ...rest: unknown[]) => void

  class Fuse {
    constructor(mnt: string, ops: Fuse.Operations, opts?: Fuse.FuseOptions)
    readonly mnt: string
    ops: Fuse.Operations
    mount(cb: (err: Error | null) => void): void
    unmount(cb: (err: Error | null) => void): void
    static unmount(mnt: string, cb: (err: Error | null) => void): void
    protected _op_getxattr(signal: Signal, path: string, name: string, valueBuf: Buffer, position: number): void
    protected _op_listxattr(signal: Signal, path: string, listBuf: Buffer): void
    static readonly ENOENT: number
    static readonly EIO: number
    static readonly EROFS: number
    static readonly EACCES: number
    static readonly EISDIR: number
    static readonly ENOTDIR: number
    static readonly EINVAL: number
    static readonly ENODATA: number
    static readonly ERANGE: number
    static readonly EBADF: number
    static readonly ENOTSUP: number
    static readonly EOPNOTSUPP: number
  }

  // Types only (a declaration merge, nothing at run time).
  namespace Fuse {
    type Cb<T extends unknown[] = []> = (err: number, ...result: T) => void
    export type Signal = (result: number, ...rest: unknown[]) => void

    export interface Stat {
      mode: number
      uid: number
      gid: number
      size: number
      dev?: number
      nlink: number
      ino?: number
      rdev?: number
      blksize?: number
      blocks?: number
      atime: number | Date
      mtime: number | Date
      ctime: number | Date
    }

    export interface Statfs {
      bsize: number
      frsize: number
      blocks: number
      bfree: number
      bavail: number
      files: number
      ffree: number
      favail: number
      fsid: number
      flag: number
      namemax: number
    }

    export interface Operations {
      init?(cb: Cb): void
      access?(path: string, mode: number, cb: Cb): void
      statfs?(path: string, cb: (err: number, statfs?: Statfs) => void): void
      getattr?(path: string, cb: (err: number, stat?: Stat) => void): void
      readdir?(path: string, cb: (err: number, names?: string[], stats?: Stat[]) => void): void
      readlink?(path: string, cb: (err: number, target?: string) => void): void
      open?(path: string, flags: number, cb: (err: number, fd?: number) => void): void
      opendir?(path: string, flags: number, cb: (err: number, fd?: number) => void): void
      release?(path: string, fd: number, cb: Cb): void
      releasedir?(path: string, fd: number, cb: Cb): void
      /** `cb(bytesRead)`, or a negative errno. */
      read?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (result: number) => void): void
      write?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (result: number) => void): void
      getxattr?(path: string, name: string, position: number, cb: (err: number, value?: Buffer | null) => void): void
      listxattr?(path: string, cb: (err: number, names?: string[]) => void): void
      setxattr?(path: string, name: string, value: Buffer, position: number, flags: number, cb: Cb): void
      removexattr?(path: string, name: string, cb: Cb): void
      create?(path: string, mode: number, cb: (err: number, fd?: number) => void): void
      truncate?(path: string, size: number, cb: Cb): void
      ftruncate?(path: string, fd: number, size: number, cb: Cb): void
      utimens?(path: string, atime: number, mtime: number, cb: Cb): void
      chown?(path: string, uid: number, gid: number, cb: Cb): void
      chmod?(path: string, mode: number, cb: Cb): void
      mknod?(path: string, mode: number, dev: number, cb: Cb): void
      unlink?(path: string, cb: Cb): void
      rename?(src: string, dest: string, cb: Cb): void
      link?(src: string, dest: string, cb: Cb): void
      symlink?(src: string, dest: string, cb: Cb): void
      mkdir?(path: string, mode: number, cb: Cb): void
      rmdir?(path: string, cb: Cb): void
      flush?(path: string, fd: number, cb: Cb): void
      fsync?(path: string, datasync: boolean, fd: number, cb: Cb): void
    }

    export interface FuseOptions {
      force?: boolean
      mkdir?: boolean
      debug?: boolean
      allowOther?: boolean
      allowRoot?: boolean
      autoUnmount?: boolean
      defaultPermissions?: boolean
      kernelCache?: boolean
      autoCache?: boolean
      maxRead?: number
      fsname?: string
      subtype?: string
      entryTimeout?: number
      attrTimeout?: number
      acAttrTimeout?: number
      /** Per-operation answer deadline in ms (`false`: none); fuse-native answers ETIMEDOUT after it. */
      timeout?: number | false | Record<string, number | false>
    }
  }

  export = Fuse
}
