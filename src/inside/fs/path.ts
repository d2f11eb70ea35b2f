/**
 * Path lookup, once for every reader: a path is split on '/', `.` and empty parts dropped, and
 * `..` pops a stack of the directories walked, so it never climbs above the filesystem's root
 * and never trusts a directory's on-disk `..` entry (a damaged one could point anywhere). A
 * symlink met on the way restarts the walk at its target (from the root when absolute); like
 * Linux, at most 40 are followed per lookup, so a loop is an error and not a hang.
 */
import { DiskError } from '../../core/errors.js';
import type { Filesystem, FsDirEntry, FsStat, FsStatfs, InodeReader, StatOptions } from './types.js';

/** symlinks followed per lookup (Linux's MAXSYMLINKS) */
export const MAX_SYMLINKS = 40;
/** path components walked per lookup, counting those symlink targets add */
const MAX_STEPS = 4096;

function parts(path: string): string[] {
  return path.split('/').filter((p) => p !== '' && p !== '.');
}

export class FileTree implements Filesystem {
  readonly rootIno: number;

  constructor(readonly reader: InodeReader) {
    this.rootIno = reader.rootIno;
  }

  statfs(): FsStatfs {
    return this.reader.statfs();
  }
  statIno(ino: number): Promise<FsStat> {
    return this.reader.statIno(ino);
  }
  readdirIno(ino: number): Promise<FsDirEntry[]> {
    return this.reader.readdirIno(ino);
  }
  lookupIno(dirIno: number, name: string): Promise<number | undefined> {
    return this.reader.lookupIno(dirIno, name);
  }
  readIno(ino: number, offset: number, length: number): Promise<Buffer> {
    return this.reader.readIno(ino, offset, length);
  }
  readlinkIno(ino: number): Promise<string> {
    return this.reader.readlinkIno(ino);
  }

  async resolve(path: string, opts: StatOptions = {}): Promise<number> {
    const stack = [this.rootIno];
    const pending = parts(path);
    let links = 0;
    let steps = 0;
    while (pending.length > 0) {
      if (++steps > MAX_STEPS) throw new DiskError('INVAL', `more than ${MAX_STEPS} path components`, { path });
      const name = pending.shift()!;
      if (name === '..') {
        if (stack.length > 1) stack.pop();
        continue;
      }
      const dir = stack[stack.length - 1]!;
      const dirStat = await this.reader.statIno(dir);
      if (dirStat.type !== 'dir') throw new DiskError('INVAL', 'not a directory', { path, field: name, found: dirStat.type });
      const ino = await this.reader.lookupIno(dir, name);
      if (ino === undefined) throw new DiskError('FILENOTFOUND', 'no such file or directory', { path, field: name });
      if (pending.length > 0 || opts.follow) {
        const st = await this.reader.statIno(ino);
        if (st.type === 'symlink') {
          if (++links > MAX_SYMLINKS) throw new DiskError('INVAL', `too many levels of symbolic links (more than ${MAX_SYMLINKS})`, { path, field: name });
          const target = await this.reader.readlinkIno(ino);
          if (target.startsWith('/')) stack.length = 1;
          pending.unshift(...parts(target));
          continue;
        }
      }
      stack.push(ino);
    }
    return stack[stack.length - 1]!;
  }

  async stat(path: string, opts: StatOptions = {}): Promise<FsStat> {
    return this.reader.statIno(await this.resolve(path, opts));
  }

  async readdir(path: string): Promise<FsDirEntry[]> {
    const ino = await this.resolve(path, { follow: true });
    const st = await this.reader.statIno(ino);
    if (st.type !== 'dir') throw new DiskError('INVAL', 'not a directory', { path, found: st.type });
    return this.reader.readdirIno(ino);
  }

  async read(path: string, offset: number, length: number): Promise<Buffer> {
    const ino = await this.resolve(path, { follow: true });
    const st = await this.reader.statIno(ino);
    if (st.type === 'dir') throw new DiskError('INVAL', 'is a directory', { path });
    return this.reader.readIno(ino, offset, length);
  }

  async readlink(path: string): Promise<string> {
    const ino = await this.resolve(path);
    const st = await this.reader.statIno(ino);
    if (st.type !== 'symlink') throw new DiskError('INVAL', 'not a symbolic link', { path, found: st.type });
    return this.reader.readlinkIno(ino);
  }
}
