import { open, type FileHandle, stat, rename, unlink, lstat, realpath, readdir, link } from 'node:fs/promises';
import { constants } from 'node:fs';
import { DiskError, fromSystemError } from '../core/errors.js';
import type { ByteStore } from './store.js';
import { cacheMode } from './cache-mode.js';

export interface FileOpenOptions {
  readOnly?: boolean;
  /** create the file; fails if it exists unless `overwrite` */
  create?: boolean;
  overwrite?: boolean;
}

export class FileStore implements ByteStore {
  private closed = false;
  private constructor(
    readonly name: string,
    private readonly fh: FileHandle,
    readonly readOnly: boolean,
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
      return new FileStore(path, fh, readOnly);
    } catch (err) {
      throw fromSystemError(err, path);
    }
  }

  async size(): Promise<number> {
    try {
      return (await this.fh.stat()).size;
    } catch (err) {
      throw fromSystemError(err, this.name);
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    await this.readInto(buf, offset);
    return buf;
  }

  async readInto(into: Buffer, offset: number): Promise<void> {
    let done = 0;
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
    if (this.readOnly || this.closed || cacheMode() === 'unsafe') return;
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

/** Small filesystem helpers for drivers that manage several files; kept here so only storage/ imports fs. */
export const fsx = {
  async exists(path: string): Promise<boolean> {
    try {
      await stat(path);
      return true;
    } catch {
      return false;
    }
  },
  async fileSize(path: string): Promise<number> {
    try {
      return (await stat(path)).size;
    } catch (err) {
      throw fromSystemError(err, path);
    }
  },
  /** allocated bytes on the host file system (st_blocks * 512) */
  async allocatedSize(path: string): Promise<number> {
    try {
      return (await stat(path)).blocks * 512;
    } catch (err) {
      throw fromSystemError(err, path);
    }
  },
  async kind(path: string): Promise<'file' | 'dir' | 'device' | 'symlink' | 'other' | 'missing'> {
    try {
      const st = await lstat(path);
      if (st.isSymbolicLink()) return 'symlink';
      if (st.isFile()) return 'file';
      if (st.isDirectory()) return 'dir';
      if (st.isBlockDevice() || st.isCharacterDevice()) return 'device';
      return 'other';
    } catch {
      return 'missing';
    }
  },
  async realpath(path: string): Promise<string> {
    try {
      return await realpath(path);
    } catch (err) {
      throw fromSystemError(err, path);
    }
  },

  async readText(path: string, maxBytes: number): Promise<string> {
    const st = await FileStore.open(path, { readOnly: true });
    try {
      return (await st.read(0, Math.min(await st.size(), maxBytes))).toString('utf8');
    } finally {
      await st.close();
    }
  },
  async writeFileAtomic(path: string, data: Buffer): Promise<void> {
    const tmp = `${path}.vdkit-tmp-${process.pid}`;
    const st = await FileStore.open(tmp, { create: true, overwrite: true });
    try {
      await st.write(0, data);
      await st.flush();
    } finally {
      await st.close();
    }
    try {
      await rename(tmp, path);
    } catch (err) {
      throw fromSystemError(err, path);
    }
  },

  async list(dir: string): Promise<string[]> {
    try {
      return await readdir(dir);
    } catch (err) {
      throw fromSystemError(err, dir);
    }
  },
  async rename(from: string, to: string): Promise<void> {
    try {
      await rename(from, to);
    } catch (err) {
      throw fromSystemError(err, from);
    }
  },
  /**
   * A second name for `from` (hard link), so a rename can make the new names whole before the
   * old ones go; false where the file system has no hard links (the caller renames instead).
   */
  async link(from: string, to: string): Promise<boolean> {
    try {
      await link(from, to);
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'EXDEV' || code === 'EMLINK') return false;
      throw fromSystemError(err, to);
    }
  },
  /** device, inode and link count of a file (lstat), or undefined when there is none */
  async fileId(path: string): Promise<{ dev: number; ino: number; nlink: number } | undefined> {
    try {
      const st = await lstat(path);
      return st.isFile() ? { dev: st.dev, ino: st.ino, nlink: st.nlink } : undefined;
    } catch {
      return undefined;
    }
  },
  async remove(path: string): Promise<void> {
    try {
      await unlink(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(err, path);
    }
  },


};
