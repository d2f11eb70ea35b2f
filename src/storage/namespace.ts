/**
 * Namespace: a set of named byte stores (a folder tree of files, memory, later an object store
 * or an NBD export). Drivers, the chain layer and operations name files only through one, so
 * an image works wherever its bytes live. Names are '/'-separated (core/names.ts); how a
 * relative name becomes absolute is the namespace's business (`absolute`, `resolve`).
 */
import { DiskError } from '../core/errors.js';
import type { ByteStore } from './store.js';
import type { CommittingSink } from './sink.js';

/**
 * How far `flush` goes, per namespace instance (qemu-img's `-t` cache modes):
 * - 'writeback' (the default): flush makes written data durable (fdatasync), so metadata that
 *   points at data is never durable before the data (the crash-safe orders rely on this);
 * - 'durable': as writeback, and creating, renaming or removing a name is made durable too
 *   (the folder is synced), so a finished convert or rename survives a host crash;
 * - 'unsafe': flush only hands data to the kernel (qemu-img convert's default): faster, but a
 *   host crash soon after can lose or tear the output. In-place operations refuse it.
 * The order of writes inside a store is the same in every mode; only durability differs.
 */
export type CacheMode = 'durable' | 'writeback' | 'unsafe';

export const CACHE_MODES: readonly CacheMode[] = ['durable', 'writeback', 'unsafe'];

export interface NameStat {
  size: number;
  /** stable identity for "the same file" (two names of one hard-linked file share it): dev:ino for files */
  id: string;
  mtimeMs: number;
  /** bytes the backing storage has allocated for it, where known */
  allocated?: number;
  /** number of names the file has (hard links), where known */
  links?: number;
}

/** what a name is, without following a symbolic link at the name itself */
export type NameKind = 'file' | 'dir' | 'device' | 'symlink' | 'other' | 'missing';

export interface Namespace {
  /** for messages: "file" or "memory:<n>" */
  readonly label: string;
  readonly cacheMode: CacheMode;
  /** open an existing name; stores opened for writing inherit the namespace's cache mode */
  open(name: string, opts?: { write?: boolean }): Promise<ByteStore>;
  /** create a name (empty); FILEEXISTS when it exists, unless `overwrite` (then it is emptied) */
  create(name: string, opts?: { overwrite?: boolean }): Promise<ByteStore>;
  /** give `from` the name `to`, replacing what `to` named (atomically where the storage can) */
  rename(from: string, to: string): Promise<void>;
  /**
   * a second name for `from` (hard link), so a rename can make new names whole before the old
   * ones go; false where the storage has none (the caller renames instead)
   */
  link(from: string, to: string): Promise<boolean>;
  /** remove a name; a missing name is not an error */
  remove(name: string): Promise<void>;
  /** the names (last components) in a folder */
  list(dirName: string): Promise<string[]>;
  /** size, identity, time; FILENOTFOUND when missing */
  stat(name: string): Promise<NameStat>;
  exists(name: string): Promise<boolean>;
  kind(name: string): Promise<NameKind>;
  /** the name with every symbolic link resolved (or `absolute(name)` where there are none) */
  realName(name: string): Promise<string>;
  /** a name made absolute (a file namespace: against the process's folder) and normalized */
  absolute(name: string): string;
  /** `relativeName` taken relative to the folder of `base` (parent hints, extent names); absolute names stay absolute */
  resolve(base: string, relativeName: string): string;
  /**
   * Optional: a new name written front to back, for storage that takes such output better than
   * random writes (an object store: one multipart upload, no local copy). The name appears when
   * the sink closes and not at all when it is aborted. `sizeHint`: about how big it will be.
   * Writers of stream-shaped output (raw, streamOptimized) use it where it exists.
   */
  createSequential?(name: string, opts?: { overwrite?: boolean; sizeHint?: number }): Promise<CommittingSink>;
}

/** Write `data` under a temporary name, flush, and rename it over `name`: readers see the old bytes or the new ones. */
export async function writeAtomic(ns: Namespace, name: string, data: Buffer): Promise<void> {
  const tmp = `${name}.vdkit-tmp-${typeof process === 'object' ? process.pid : 0}`;
  const st = await ns.create(tmp, { overwrite: true });
  try {
    await st.write(0, data);
    await st.flush();
  } finally {
    await st.close();
  }
  await ns.rename(tmp, name);
}

/** A small text file (journal, record), at most `maxBytes`. */
export async function readText(ns: Namespace, name: string, maxBytes: number): Promise<string> {
  const st = await ns.open(name);
  try {
    return (await st.read(0, Math.min(await st.size(), maxBytes))).toString('utf8');
  } finally {
    await st.close();
  }
}

/** The same file under two names (hard links, or one name twice), or false when either is missing. */
export async function sameFile(ns: Namespace, a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([ns.stat(a).catch(() => undefined), ns.stat(b).catch(() => undefined)]);
  return !!x && !!y && x.id === y.id;
}

/**
 * In-place operations (compact, defragment, resize, repair, commit, rebase) rely on flush as a
 * barrier between a copy and the table entry that points at it: with flush a no-op a host crash
 * could leave the entry durable and the data not. They refuse an unsafe namespace.
 */
export function refuseUnsafe(ns: Namespace, what: string, name: string): void {
  if (ns.cacheMode === 'unsafe') {
    throw new DiskError('NOTSUPPORTED', `${what} changes the image in place and needs flush barriers for crash safety; it refuses cache mode 'unsafe' (use 'writeback' or 'durable')`, {
      path: name,
      field: 'cacheMode',
      found: 'unsafe',
      expected: 'writeback or durable',
    });
  }
}
