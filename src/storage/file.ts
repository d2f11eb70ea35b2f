import { open, type FileHandle, stat, rename, unlink, lstat, realpath, readdir, link, mkdtemp, mkdir, rm, readFile } from 'node:fs/promises';
import { appendFileSync, constants, createReadStream, readSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { tmpdir } from 'node:os';
import { dirname as hostDirname, isAbsolute as hostIsAbsolute, join as hostJoin, resolve as hostResolve } from 'node:path';
import { DiskError, fromSystemError } from '../core/errors.js';
import { fileExtents, holesAvailable, type FileExtent } from './holes.js';
import type { ByteStore } from './store.js';
import type { CacheMode, NameKind, NameStat, Namespace } from './namespace.js';

export interface FileOpenOptions {
  readOnly?: boolean;
  /** create the file; fails if it exists unless `overwrite` */
  create?: boolean;
  overwrite?: boolean;
  /** 'unsafe': flush does not fdatasync (the namespace's cache mode) */
  cacheMode?: CacheMode;
}

/**
 * Reads up to SYNC_READ_MAX are done synchronously while the file's pages come from the page
 * cache: a 4 KiB pread there takes microseconds, while the thread-pool round trip of an async
 * read (queue, wake a worker, wake the loop, resolve) costs about as much CPU again as the whole
 * request does in the NBD server (random 4 KiB reads: ~30 -> ~15 us of server CPU each). Larger
 * reads stay in the pool: synchronous 256 KiB reads cut nbdcopy's server CPU by a further ~18 %
 * but made its copies slower (the loop copies file data instead of writing other replies while
 * a worker copies). A read slower than SLOW_SYNC_READ_MS plus SLOW_MS_PER_MIB per MiB, SLOW_RUN
 * times in a row, went to the device, and then every read of this file goes through the thread
 * pool for ASYNC_AFTER_SLOW_MS, so a cold disk blocks the event loop for a few device reads per
 * period and parallel reads keep their queue depth. One slow read alone is not enough: on a
 * busy machine the process is now and then preempted inside a cached read (seen: 2 in 1250
 * reads at a load of 40 on 2 cores, which with a one-read rule kept 80 % of reads in the pool).
 */
const SYNC_READ_MAX = 64 * 1024;
const SLOW_SYNC_READ_MS = 0.2;
const SLOW_MS_PER_MIB = 0.5;
const SLOW_RUN = 2;
const ASYNC_AFTER_SLOW_MS = 1000;

/**
 * Length in bytes of the block device numbered `rdev` (Linux: /sys/dev/block/MAJOR:MINOR/size
 * counts 512-byte sectors whatever the device's own sector size); undefined where that is not known.
 */
export async function blockDeviceBytes(rdev: number): Promise<number | undefined> {
  const dev = BigInt(rdev);
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  try {
    const sectors = Number((await readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8')).trim());
    return Number.isSafeInteger(sectors * 512) ? sectors * 512 : undefined;
  } catch {
    return undefined;
  }
}

export class FileStore implements ByteStore {
  private closed = false;
  /** Date.now() until which reads go through the thread pool (sync reads were slow) */
  private asyncUntil = 0;
  /** slow sync reads in a row */
  private slowRun = 0;
  private constructor(
    readonly name: string,
    private readonly fh: FileHandle,
    readonly readOnly: boolean,
    private readonly cacheMode: CacheMode = 'writeback',
  ) {}

  static async open(path: string, opts: FileOpenOptions = {}): Promise<FileStore> {
    const readOnly = !opts.create && !!opts.readOnly;
    let flags: number;
    if (opts.create) flags = constants.O_RDWR | constants.O_CREAT | (opts.overwrite ? constants.O_TRUNC : constants.O_EXCL);
    else flags = readOnly ? constants.O_RDONLY : constants.O_RDWR;
    try {
      const fh = await open(path, flags, 0o644);
      const st = await fh.stat();
      if (!st.isFile() && !st.isBlockDevice()) {
        await fh.close();
        throw new DiskError('INVALIDDISK', 'not a regular file', { path });
      }
      return new FileStore(path, fh, readOnly, opts.cacheMode);
    } catch (err) {
      throw fromSystemError(err, path);
    }
  }

  async size(): Promise<number> {
    try {
      const st = await this.fh.stat();
      // a block device (a raw-device VMDK's extent) says 0 in st_size: ask the kernel for its length
      if (st.isBlockDevice()) return (await blockDeviceBytes(st.rdev)) ?? st.size;
      return st.size;
    } catch (err) {
      throw fromSystemError(err, this.name);
    }
  }

  async extents(offset: number, length: number): Promise<FileExtent[] | undefined> {
    if (!holesAvailable()) return undefined;
    return fileExtents(this.fh.fd, await this.size(), offset, length);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    await this.readInto(buf, offset);
    return buf;
  }

  async readInto(into: Buffer, offset: number): Promise<void> {
    let done = 0;
    if (into.length <= SYNC_READ_MAX && !this.closed && (this.asyncUntil === 0 || Date.now() >= this.asyncUntil)) {
      // process.hrtime, not performance.now: the first use of the global `performance` loads
      // perf_hooks (about 1 ms of every `vdkit info`)
      const t = process.hrtime.bigint();
      try {
        done = readSync(this.fh.fd, into, 0, into.length, offset);
      } catch (err) {
        throw fromSystemError(err, this.name);
      }
      this.asyncUntil = 0;
      if (Number(process.hrtime.bigint() - t) / 1e6 <= SLOW_SYNC_READ_MS + (into.length / (1024 * 1024)) * SLOW_MS_PER_MIB) this.slowRun = 0;
      else if (++this.slowRun >= SLOW_RUN) {
        this.slowRun = 0;
        this.asyncUntil = Date.now() + ASYNC_AFTER_SLOW_MS;
      }
      if (done === into.length) return;
      // short (end of file, or a signal): the loop below finishes or reports it
    }
    while (done < into.length) {
      let n: number;
      try {
        ({ bytesRead: n } = await this.fh.read(into, done, into.length - done, offset + done));
      } catch (err) {
        throw fromSystemError(err, this.name);
      }
      if (n === 0) {
        throw new DiskError('CORRUPT', 'unexpected end of file', { path: this.name, offset: offset + done, length: into.length - done });
      }
      done += n;
    }
  }

  async readZeroPadded(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      let n: number;
      try {
        ({ bytesRead: n } = await this.fh.read(buf, done, length - done, offset + done));
      } catch (err) {
        throw fromSystemError(err, this.name);
      }
      if (n === 0) break;
      done += n;
    }
    return buf;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    this.checkWritable();
    let done = 0;
    while (done < data.length) {
      try {
        const { bytesWritten } = await this.fh.write(data, done, data.length - done, offset + done);
        done += bytesWritten;
      } catch (err) {
        throw fromSystemError(err, this.name);
      }
    }
  }

  async writev(offset: number, data: readonly Buffer[]): Promise<void> {
    this.checkWritable();
    if (data.length === 1) return this.write(offset, data[0]!);
    let total = 0;
    for (const b of data) total += b.length;
    try {
      const { bytesWritten } = await this.fh.writev(data as Buffer[], offset);
      if (bytesWritten === total) return;
      // A short vectored write: finish the rest with plain writes.
      let skip = bytesWritten;
      let at = offset;
      for (const b of data) {
        if (skip >= b.length) {
          skip -= b.length;
          at += b.length;
          continue;
        }
        await this.write(at + skip, b.subarray(skip));
        at += b.length;
        skip = 0;
      }
    } catch (err) {
      throw fromSystemError(err, this.name);
    }
  }

  async truncate(length: number): Promise<void> {
    this.checkWritable();
    try {
      await this.fh.truncate(length);
    } catch (err) {
      throw fromSystemError(err, this.name);
    }
  }

  async flush(): Promise<void> {
    if (this.readOnly || this.closed || this.cacheMode === 'unsafe') return;
    try {
      await this.fh.datasync();
    } catch (err) {
      throw fromSystemError(err, this.name);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.fh.close();
    } catch (err) {
      throw fromSystemError(err, this.name);
    }
  }

  private checkWritable(): void {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.name });
    if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.name });
  }
}

let fileNamespaces = 0;

/**
 * Files of the host, named by their paths (a relative name is relative to the process's
 * folder). The one place besides FileStore that touches node:fs and node:path.
 */
export class FileNamespace implements Namespace {
  readonly label = 'file';
  readonly cacheMode: CacheMode;
  constructor(opts: { cacheMode?: CacheMode } = {}) {
    this.cacheMode = opts.cacheMode ?? 'writeback';
    fileNamespaces++;
  }

  /** how many were made in this process (a test that must touch no file asserts it stays put) */
  static get instances(): number {
    return fileNamespaces;
  }

  open(name: string, opts: { write?: boolean } = {}): Promise<ByteStore> {
    return FileStore.open(name, { readOnly: !opts.write, cacheMode: this.cacheMode });
  }

  async create(name: string, opts: { overwrite?: boolean } = {}): Promise<ByteStore> {
    const st = await FileStore.open(name, { create: true, overwrite: !!opts.overwrite, cacheMode: this.cacheMode });
    await this.syncFolder(name);
    return st;
  }

  async rename(from: string, to: string): Promise<void> {
    try {
      await rename(from, to);
    } catch (err) {
      throw fromSystemError(err, from);
    }
    await this.syncFolder(to);
    if (hostDirname(hostResolve(from)) !== hostDirname(hostResolve(to))) await this.syncFolder(from);
  }

  async link(from: string, to: string): Promise<boolean> {
    try {
      await link(from, to);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'EXDEV' || code === 'EMLINK') return false;
      throw fromSystemError(err, to);
    }
    await this.syncFolder(to);
    return true;
  }

  async remove(name: string): Promise<void> {
    try {
      await unlink(name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(err, name);
      return;
    }
    await this.syncFolder(name);
  }

  async list(dirName: string): Promise<string[]> {
    try {
      return await readdir(dirName);
    } catch (err) {
      throw fromSystemError(err, dirName);
    }
  }

  async stat(name: string): Promise<NameStat> {
    try {
      const st = await stat(name);
      return { size: st.size, id: `${st.dev}:${st.ino}`, mtimeMs: st.mtimeMs, allocated: st.blocks * 512, links: st.nlink };
    } catch (err) {
      throw fromSystemError(err, name);
    }
  }

  async exists(name: string): Promise<boolean> {
    try {
      await stat(name);
      return true;
    } catch {
      return false;
    }
  }

  async kind(name: string): Promise<NameKind> {
    try {
      const st = await lstat(name);
      if (st.isSymbolicLink()) return 'symlink';
      if (st.isFile()) return 'file';
      if (st.isDirectory()) return 'dir';
      if (st.isBlockDevice() || st.isCharacterDevice()) return 'device';
      return 'other';
    } catch {
      return 'missing';
    }
  }

  async realName(name: string): Promise<string> {
    try {
      return await realpath(name);
    } catch (err) {
      throw fromSystemError(err, name);
    }
  }

  absolute(name: string): string {
    return hostResolve(name);
  }

  resolve(base: string, relativeName: string): string {
    if (hostIsAbsolute(relativeName)) return hostResolve(relativeName);
    return hostResolve(hostDirname(hostResolve(base)), relativeName);
  }

  /** 'durable': a new, renamed or removed name survives a host crash once this returns */
  private async syncFolder(name: string): Promise<void> {
    if (this.cacheMode !== 'durable') return;
    let fh: FileHandle | undefined;
    try {
      fh = await open(hostDirname(hostResolve(name)), constants.O_RDONLY);
      await fh.sync();
    } catch (err) {
      // some file systems cannot sync a folder (EINVAL); the data itself was synced by flush
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw fromSystemError(err, name);
    } finally {
      await fh?.close().catch(() => {});
    }
  }
}

let defaultFiles: FileNamespace | undefined;

/** The namespace path-taking calls use (openDisk(path), the CLI): host files, cache mode writeback. */
export function hostFiles(): FileNamespace {
  return (defaultFiles ??= new FileNamespace());
}

/** A host file as a stream (the CLI reads `--input` with it). */
export function hostReadStream(path: string, highWaterMark = 1024 * 1024): Readable {
  return createReadStream(path, { highWaterMark });
}

/** A new, empty folder under the host's temporary folder (the tour runs in one). */
export function makeHostTempFolder(prefix: string): Promise<string> {
  return mkdtemp(hostJoin(tmpdir(), prefix));
}

/** A host folder (and its parents) made when missing (`ova extract` DIR, a backup folder named for the first time). */
export async function makeHostFolder(path: string): Promise<void> {
  try {
    await mkdir(path, { recursive: true });
  } catch (err) {
    throw fromSystemError(err, path);
  }
}

export function removeHostFolder(path: string): Promise<void> {
  return rm(path, { recursive: true, force: true });
}

/**
 * Append one line to a host file at once (a log that must survive the process dying right
 * after: VixDiskLib's tmpDirectory log).
 */
export function hostAppendLine(path: string, line: string): void {
  appendFileSync(path, line.endsWith('\n') ? line : `${line}\n`);
}
