/**
 * Copying files and trees out of a disk's filesystem onto the host (`vdkit copy-out`, like
 * virt-copy-out), through the filesystem interface only, so it works for every reader. The
 * host side goes through storage/host-tree.ts (the one layer that touches node:fs).
 *
 * The filesystem is untrusted, the host is not: every name is checked before it is joined to a
 * host path (empty, `.`, `..`, or holding '/' or NUL: refused, since a damaged or crafted
 * directory can hold any of those), a directory met again below itself is not entered twice,
 * nothing is written through a symbolic link (storage opens O_NOFOLLOW), and a symbolic link is
 * recreated only when its target text provably stays inside DEST (see `linkStaysInside`).
 * Modes and times are set after a file's data and after a directory's contents (a 0555
 * directory can then still be filled); when the host refuses them, a warning says so.
 */
import { DiskError } from '../core/errors.js';
import type { Filesystem, FsStat } from '../inside/fs/types.js';
import { hostCreateFile, hostKind, hostLink, hostMkdir, hostSetAttributes, hostSymlink } from '../storage/host-tree.js';

/** bytes per read from the filesystem */
const CHUNK = 1024 * 1024;
/** blocks of zeros this size are skipped (left as holes) rather than written */
const ZERO_BLOCK = 4096;
const ZEROS = Buffer.alloc(ZERO_BLOCK);

export interface CopyOutOptions {
  /** told about everything skipped or kept only in part */
  warn(text: string): void;
}

export interface CopyOutResult {
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
  /** names refused because they would escape DEST (a damaged or crafted filesystem) */
  refused: number;
  /** entries skipped: devices, fifos, sockets, symlinks pointing out of DEST, directory loops */
  skipped: number;
}

/** why `name`, as a directory entry, cannot become a host path component; undefined when it can */
export function unsafeName(name: string): string | undefined {
  if (name === '' || name === '.' || name === '..') return `the name "${name}" would not stay inside the destination`;
  if (name.includes('/')) return `the name ${JSON.stringify(name)} holds '/'`;
  if (name.includes('\0')) return `the name ${JSON.stringify(name)} holds a NUL byte`;
  return undefined;
}

/**
 * Whether a symlink at depth `depth` below DEST (0: directly in DEST) with target `target`
 * resolves inside DEST however the host resolves it: relative, its leading `..` parts climb no
 * higher than DEST (they walk directories copy-out made, never links), and no `..` follows a
 * normal part (which could be a link whose `..` is somewhere else).
 */
export function linkStaysInside(target: string, depth: number): boolean {
  if (target === '' || target.startsWith('/') || target.includes('\0')) return false;
  let up = 0;
  let down = false;
  for (const p of target.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') {
      if (down) return false;
      up++;
    } else down = true;
  }
  return up <= depth;
}

const joinHost = (dir: string, name: string) => (dir.endsWith('/') ? dir + name : `${dir}/${name}`);

class Copier {
  readonly result: CopyOutResult = { files: 0, dirs: 0, symlinks: 0, bytes: 0, refused: 0, skipped: 0 };
  /** host path of files with more than one link, by inode: the next name becomes a hard link */
  private readonly linked = new Map<number, string>();

  constructor(
    private readonly fs: Filesystem,
    private readonly opts: CopyOutOptions,
  ) {}

  private async attributes(host: string, st: FsStat, withMode: boolean): Promise<void> {
    const problem = await hostSetAttributes(host, { ...(withMode ? { mode: st.mode & 0o7777 } : {}), atime: st.atime, mtime: st.mtime });
    if (problem) this.opts.warn(`${host}: kept the data but not ${problem}`);
  }

  private async file(st: FsStat, host: string): Promise<void> {
    const first = st.nlink > 1 ? this.linked.get(st.ino) : undefined;
    if (first !== undefined && (await hostKind(host)) === 'missing') {
      await hostLink(first, host);
      this.result.files++;
      return;
    }
    const w = await hostCreateFile(host);
    try {
      for (let at = 0; at < st.size; at += CHUNK) {
        const data = await this.fs.readIno(st.ino, at, Math.min(CHUNK, st.size - at));
        if (data.length === 0) break;
        // runs of non-zero blocks are written; zero blocks stay holes (finish sets the length)
        let from = -1;
        for (let b = 0; b <= data.length; b += ZERO_BLOCK) {
          const zero = b === data.length || data.subarray(b, b + ZERO_BLOCK).equals(ZEROS.subarray(0, Math.min(ZERO_BLOCK, data.length - b)));
          if (!zero && from < 0) from = b;
          if (zero && from >= 0) {
            await w.write(data.subarray(from, b), at + from);
            from = -1;
          }
        }
        if (from >= 0) await w.write(data.subarray(from), at + from);
      }
      await w.finish(st.size);
    } catch (err) {
      await w.abort();
      throw err;
    }
    this.result.files++;
    this.result.bytes += st.size;
    if (st.nlink > 1) this.linked.set(st.ino, host);
    await this.attributes(host, st, true);
  }

  /** copy the entry `st` (named `shown` for messages) to `host`; `depth`: directories below DEST */
  async entry(st: FsStat, shown: string, host: string, depth: number, ancestors: Set<number>): Promise<void> {
    switch (st.type) {
      case 'file':
        return this.file(st, host);
      case 'dir': {
        if (ancestors.has(st.ino)) {
          this.opts.warn(`${shown}: a directory inside itself (a loop in the filesystem): not entered again`);
          this.result.skipped++;
          return;
        }
        await hostMkdir(host);
        this.result.dirs++;
        ancestors.add(st.ino);
        for (const e of await this.fs.readdirIno(st.ino)) {
          const path = shown === '/' ? `/${e.name}` : `${shown}/${e.name}`;
          const why = unsafeName(e.name);
          if (why) {
            this.opts.warn(`${shown}: refused an entry: ${why}`);
            this.result.refused++;
            continue;
          }
          await this.entry(await this.fs.statIno(e.ino), path, joinHost(host, e.name), depth + 1, ancestors);
        }
        ancestors.delete(st.ino);
        return this.attributes(host, st, true);
      }
      case 'symlink': {
        const target = await this.fs.readlinkIno(st.ino);
        if (!linkStaysInside(target, depth)) {
          this.opts.warn(`${shown}: symbolic link to ${JSON.stringify(target)} not recreated: it would point outside the destination`);
          this.result.skipped++;
          return;
        }
        await hostSymlink(target, host);
        this.result.symlinks++;
        return this.attributes(host, st, false);
      }
      default:
        this.opts.warn(`${shown}: ${st.type} not copied (only files, directories and symbolic links are)`);
        this.result.skipped++;
    }
  }
}

/**
 * Copy each of `paths` (files or directories, symlinks followed in them) of `fs` into the host
 * directory `dest`, which must exist, under its own last name (`/` copies the root's contents).
 */
export async function copyOut(fs: Filesystem, paths: readonly string[], dest: string, opts: CopyOutOptions): Promise<CopyOutResult> {
  if ((await hostKind(dest)) !== 'dir') throw new DiskError('INVAL', 'the destination must be an existing directory', { path: dest });
  const c = new Copier(fs, opts);
  for (const path of paths) {
    const st = await fs.stat(path, { follow: true });
    // the name the path ends in, after the walk's own `.` and `..` handling
    const parts: string[] = [];
    for (const p of path.split('/')) {
      if (p === '' || p === '.') continue;
      if (p === '..') parts.pop();
      else parts.push(p);
    }
    const name = parts[parts.length - 1];
    if (name === undefined) {
      if (st.type !== 'dir') throw new DiskError('INTERNAL', 'the root is not a directory', { path });
      // the root: its contents go into DEST itself, which keeps its own mode and times
      for (const e of await fs.readdirIno(st.ino)) {
        const why = unsafeName(e.name);
        if (why) {
          opts.warn(`/: refused an entry: ${why}`);
          c.result.refused++;
          continue;
        }
        await c.entry(await fs.statIno(e.ino), `/${e.name}`, joinHost(dest, e.name), 0, new Set([st.ino]));
      }
      continue;
    }
    await c.entry(st, path, joinHost(dest, name), 0, new Set());
  }
  return c.result;
}
