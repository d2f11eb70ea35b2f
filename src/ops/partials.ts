/**
 * Temporary names of targets being written (convert, chain clone) and the cleanup of what killed
 * runs left behind.
 *
 * A target `<dir>/<stem><ext>` is built as `<dir>/.<stem>.vdkit-partial-<pid><ext>` (its extents
 * carry the same prefix) and renamed when complete. A chain clone also keeps a record
 * `.<stem of its top>.vdkit-partial-<pid>.chain` listing the final names of its links and, once
 * its renames begin, those that may be in place (chain/NOTES.md "Clone keeping the chain"). Leftovers belong to a
 * process that no longer runs; the pid in the name says which.
 */
import { basename, dirname, extname, join } from '../core/names.js';
import { readText, writeAtomic, type Namespace } from '../storage/namespace.js';
import { openLinkIn } from '../disk.js';
import { DiskError } from '../core/errors.js';
import { describeChain } from './chain-list.js';

/** The hidden temporary name a target is built under, in its own folder. */
export function partialPath(finalPath: string, pid = process.pid): string {
  const ext = extname(finalPath);
  return join(dirname(finalPath), `.${basename(finalPath, ext)}.vdkit-partial-${pid}${ext}`);
}

/** The prefix every partial file of `finalPath` starts with (any process). */
export function partialPrefix(finalPath: string): string {
  return `.${basename(finalPath, extname(finalPath))}.vdkit-partial-`;
}

/**
 * `err`, raised while `finalPath` was being built under its hidden name, with that name (and its
 * extents', which share the prefix) replaced by the final one in the message and details: the
 * user typed the destination, never `.x.vdkit-partial-<pid>`, and a failed run removes it anyway.
 * Changed in place so the code, cause and stack stay those of the original.
 */
export function namingTargets(err: unknown, finalPaths: readonly string[], pid = process.pid): unknown {
  if (!(err instanceof Error)) return err;
  const swaps = finalPaths.map((f) => [`${partialPrefix(f)}${pid}`, basename(f, extname(f))] as const);
  const fix = (text: string) => swaps.reduce((t, [hidden, stem]) => t.split(hidden).join(stem), text);
  if (!swaps.some(([hidden]) => err.message.includes(hidden) || String((err as { path?: unknown }).path ?? '').includes(hidden))) return err;
  err.message = fix(err.message);
  if (err.stack) err.stack = fix(err.stack);
  const bag = (err instanceof DiskError ? err.details : err) as Record<string, unknown>;
  for (const [k, v] of Object.entries(bag)) if (typeof v === 'string') bag[k] = fix(v);
  return err;
}

export function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** the pid in a leftover's name after `prefix`, when that process no longer runs */
function stalePid(name: string, prefix: string): number | undefined {
  if (!name.startsWith(prefix)) return undefined;
  const pid = Number(/^(\d+)/.exec(name.slice(prefix.length))?.[1]);
  return Number.isSafeInteger(pid) && pid !== process.pid && !processRuns(pid) ? pid : undefined;
}

/** the record a chain clone keeps beside its top while it runs */
export interface CloneRecord {
  version: 1;
  /** absolute final paths, base first; the last is the top */
  links: string[];
  /**
   * final paths of the lower links that may be in place: empty until the renames begin, then all
   * of them (written once, before the first rename, so no rename can happen unrecorded)
   */
  mayBeInPlace: string[];
}

const RECORD_SUFFIX = '.chain';
const MAX_RECORD_BYTES = 1024 * 1024;

export function recordPath(topPath: string): string {
  return join(dirname(topPath), `${partialPrefix(topPath)}${process.pid}${RECORD_SUFFIX}`);
}

export async function writeRecord(ns: Namespace, path: string, rec: CloneRecord): Promise<void> {
  await writeAtomic(ns, path, Buffer.from(JSON.stringify(rec), 'utf8'));
}

/** Files of one link, the named file last (so a removal stopped half-way leaves a findable disk). */
export async function linkFiles(ns: Namespace, path: string): Promise<string[]> {
  const self = ns.absolute(path);
  try {
    const img = await openLinkIn(ns, path, { readOnly: true });
    try {
      const files = (await img.info()).files.map((f) => ns.absolute(f));
      return [...files.filter((f) => f !== self), self];
    } finally {
      await img.close().catch(() => {});
    }
  } catch {
    return [self];
  }
}

/**
 * Remove what converts and clones to `dstPath` left behind when they were killed. For each clone
 * record: the temporary files of every name it lists, and the lower links that may have been
 * renamed into place, unless the chain now at its top uses them (its top's rename happened, only
 * the record's removal did not). Then the hidden partial files of `dstPath` itself.
 */
export async function removeStalePartials(ns: Namespace, dstPath: string): Promise<void> {
  const dir = dirname(dstPath);
  const prefix = partialPrefix(dstPath);
  const names = await ns.list(dir);
  for (const name of names) {
    if (!name.endsWith(RECORD_SUFFIX) || stalePid(name, prefix) === undefined) continue;
    const path = join(dir, name);
    let rec: CloneRecord | undefined;
    try {
      const parsed = JSON.parse(await readText(ns, path, MAX_RECORD_BYTES)) as Partial<CloneRecord>;
      if (Array.isArray(parsed.links) && Array.isArray(parsed.mayBeInPlace) && [...parsed.links, ...parsed.mayBeInPlace].every((p) => typeof p === 'string')) rec = parsed as CloneRecord;
    } catch {
      // unreadable: only the record itself goes
    }
    if (rec) {
      // only names in this folder: a record is a file anyone could have written
      const here = (p: string) => dirname(ns.absolute(p)) === ns.absolute(dir);
      for (const l of rec.links) if (here(l) && ns.absolute(l) !== ns.absolute(dstPath)) await removeOwnPartials(ns, l);
      const top = rec.links[rec.links.length - 1];
      const inUse = new Set<string>();
      if (top !== undefined && here(top) && (await ns.exists(top))) {
        const c = await describeChain(top, { namespace: ns }).catch(() => undefined);
        for (const l of c?.links ?? []) inUse.add(ns.resolve(top, l.path));
      }
      for (const l of rec.mayBeInPlace) {
        if (!here(l) || l === top || inUse.has(ns.absolute(l))) continue;
        for (const f of await linkFiles(ns, l)) await ns.remove(f);
      }
    }
    await ns.remove(path);
  }
  await removeOwnPartials(ns, dstPath);
}

/** the hidden partial files (and extents, and records) of `finalPath` whose process is gone */
async function removeOwnPartials(ns: Namespace, finalPath: string): Promise<void> {
  const dir = dirname(finalPath);
  const prefix = partialPrefix(finalPath);
  for (const name of await ns.list(dir)) if (stalePid(name, prefix) !== undefined) await ns.remove(join(dir, name));
}
