/**
 * Commit and merge (VDMerge, qemu-img commit, VMware "delete snapshot"): fold links of a chain
 * into one, in either direction, so that the remaining chain reads exactly as before.
 *
 * commit (down): the data of the links above `base` goes into `base`; the top is left as an
 *   empty child of the base (or removed with `drop`) and the links in between are removed.
 *   Order, journaled beside the base (chain/journal.ts):
 *     1. journal {phase: copy}; 2. copy every range the upper links hold into the base, keeping
 *     the base's CID (what the chain reads does not change while the base fills up);
 *     3. journal {phase: switch}; 4. base gets its new CID; 5. top re-pointed at the base (new
 *     CID) and emptied, or removed; 6. the links in between removed; 7. journal removed.
 *   Killed at any point, the chain still reads the same data (in the window between 4 and 5
 *   the journal vouches for the base's new CID), and running the commit again completes it.
 *   The base must have no other children (their content would change under them) unless forced.
 *
 * merge into the top (up): the data of the links between the top and `base` is copied into
 *   the top where the top has none, keeping the top's CID (its children stay valid); then the
 *   top is re-pointed at `base` (one atomic descriptor write) and the merged links are removed
 *   when no other child uses them. Killed before the re-pointing, the top merely holds copies
 *   of its parents' data; running the merge again completes it.
 */
import { DiskError } from '../core/errors.js';
import { hostFiles } from '../storage/file.js';
import { refuseUnsafe, type Namespace } from '../storage/namespace.js';
import { backingTo } from '../chain/chain.js';
import { findChildren } from '../chain/children.js';
import { readJournal, removeJournal, writeJournal, type CommitJournal } from '../chain/journal.js';
import { DEFAULT_FORMAT, backends, driverByName } from '../formats/registry.js';
import { Disk, chainFormats, openLinkIn } from '../disk.js';
import type { Image } from '../formats/types.js';
import type { Progress } from './convert.js';
import { throttleProgress } from '../core/progress.js';

/** how a copy between links is watched and stopped (commit and merge) */
interface CopyWatch {
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
  /** called after each step (journal written, each chunk copied, identity switched, ...); tests stop commits there */
  onStep?: (step: string) => Promise<void> | void;
}

/** what commit and merge both take */
interface ChainCopyOptions extends CopyWatch {
  untrusted?: boolean;
  /** where the files are named (default: host files); an 'unsafe' cache mode is refused */
  namespace?: Namespace;
}

export interface CommitOptions extends ChainCopyOptions {
  /** the link to commit into (default: the top's parent) */
  base?: string;
  /** remove the top after committing (default: keep it as an empty child of the base) */
  drop?: boolean;
  /** commit even though the base has other children (they will no longer match it) */
  force?: boolean;
}

const CHUNK = 1024 * 1024;

async function filesOf(ns: Namespace, path: string): Promise<string[]> {
  const img = await openLinkIn(ns, path, { readOnly: true });
  try {
    const files = (await img.info()).files.map((f) => ns.absolute(f));
    // the descriptor last, so a removal stopped half-way still leaves a findable disk
    const head = ns.absolute(path);
    return [...files.filter((f) => f !== head), head];
  } finally {
    await img.close();
  }
}

async function removeFiles(ns: Namespace, files: readonly string[]): Promise<void> {
  for (const f of files) await ns.remove(f);
}

function chainPaths(d: Disk): string[] {
  const layers = (d.image as { layers?: Image[] }).layers ?? [d.image];
  return layers.map((l) => l.namespace.absolute(l.path));
}

/** Copy the chain's content into `target` over the ranges `want` selects (by depth). */
async function copyRanges(
  from: Disk,
  to: Disk,
  want: (depth: number | undefined) => boolean,
  opts: CopyWatch,
): Promise<number> {
  const ranges = (await from.blockStatus()).filter((r) => want(r.depth));
  const total = ranges.reduce((a, r) => a + r.length, 0);
  let done = 0;
  for (const r of ranges) {
    for (let at = r.offset; at < r.offset + r.length; at += CHUNK) {
      if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: to.path }, { cause: opts.signal.reason });
      const n = Math.min(CHUNK, r.offset + r.length - at);
      await to.write(at, await from.read(at, n));
      done += n;
      opts.onProgress?.({ done, total, written: done });
      await opts.onStep?.(`copied ${at}+${n}`);
    }
  }
  return total;
}

export async function commit(topPath: string, opts: CommitOptions = {}): Promise<{ base: string; bytesCopied: number }> {
  opts = { ...opts, onProgress: throttleProgress(opts.onProgress) };
  const ns = opts.namespace ?? hostFiles();
  refuseUnsafe(ns, 'commit', topPath);
  const top = ns.absolute(topPath);
  let journal: CommitJournal | undefined;
  let basePath: string;
  if (opts.base !== undefined) {
    basePath = ns.absolute(opts.base);
    journal = await readJournal(ns, basePath);
  } else {
    // the base is the top's parent; an interrupted commit's journal sits beside it
    const probe = await Disk.open(top, { namespace: ns, readOnly: true, untrusted: opts.untrusted });
    const paths = chainPaths(probe);
    await probe.close();
    if (paths.length < 2) throw new DiskError('INVAL', 'this disk has no parent to commit into', { path: topPath });
    basePath = paths[1]!;
    journal = await readJournal(ns, basePath);
  }
  let copied = 0;
  if (journal && ns.absolute(journal.top) !== top) {
    throw new DiskError('NOTSUPPORTED', `another commit into this base is unfinished (from ${journal.top}); resume that one first`, { path: basePath });
  }
  if (!journal) {
    const chain = await Disk.open(top, { namespace: ns, readOnly: true, untrusted: opts.untrusted });
    let paths: string[];
    let oldId: string | undefined;
    let layerFormat = DEFAULT_FORMAT; // set from the base link below
    try {
      paths = chainPaths(chain);
      const depth = paths.indexOf(basePath);
      if (depth < 1) throw new DiskError('INVAL', `${opts.base ?? basePath} is not below ${topPath} in its chain`, { path: topPath, field: 'base', found: opts.base });
      const baseLayer = ((chain.image as { layers?: Image[] }).layers ?? [chain.image])[depth]!;
      oldId = baseLayer.identity();
      layerFormat = baseLayer.format;
      journal = {
        version: 1,
        op: 'commit',
        top,
        base: basePath,
        depth,
        oldId: oldId ?? '',
        // VMDK: the base's content changes, so does its CID; VDI/VHD keep their UUID (VirtualBox
        // and Hyper-V find disks by it), so children need no re-linking
        newId: driverByName(layerFormat).capabilities.identityFollowsContent ? (driverByName(layerFormat).newIdentity() ?? '') : (oldId ?? ''),
        phase: 'copy',
        drop: !!opts.drop,
        removeFiles: [],
      };
    } finally {
      await chain.close();
    }
    if (!oldId && driverByName(layerFormat).capabilities.identityFollowsContent) throw new DiskError('NOTSUPPORTED', 'the base has no identity to renew', { path: basePath });
    const inChain = new Set(paths.slice(0, journal.depth));
    const base = await openLinkIn(ns, basePath, { readOnly: true });
    const others = (await findChildren(base, chainFormats, backends().flatMap((b) => b.extensions)).finally(() => base.close())).filter((c) => !inChain.has(ns.absolute(c)));
    if (others.length > 0 && !opts.force) {
      throw new DiskError('RDONLY', `the base has another child (${others[0]}) that the commit would break; remove it or pass --force (force)`, { path: basePath, field: 'children', found: others });
    }
    for (const p of paths.slice(1, journal.depth)) journal.removeFiles.push(...(await filesOf(ns, p)));
    if (journal.drop) journal.removeFiles.push(...(await filesOf(ns, top)));
    await writeJournal(ns, journal);
    await opts.onStep?.('journal');
  }

  if (journal.phase === 'copy') {
    const from = await Disk.open(top, { namespace: ns, readOnly: true, untrusted: opts.untrusted });
    try {
      // the base opened as a chain of its own: writes into it copy-on-write from below it
      const to = await Disk.open(basePath, { namespace: ns, force: true, preserveIdentity: true, untrusted: opts.untrusted });
      try {
        copied = await copyRanges(from, to, (d) => d !== undefined && d < journal!.depth, opts);
        await to.flush();
      } finally {
        await to.close();
      }
    } finally {
      await from.close();
    }
    journal.phase = 'switch';
    await writeJournal(ns, journal);
    await opts.onStep?.('switch');
  }

  // switch: every step below is idempotent, so a resumed commit simply runs them again
  if (journal.newId !== journal.oldId) {
    const base = await openLinkIn(ns, basePath, { cowByCaller: true });
    try {
      await base.setIdentity(journal.newId);
      await base.flush();
    } finally {
      await base.close();
    }
  }
  await opts.onStep?.('base identity');
  if (!journal.drop) {
    const change = await backingTo(ns, top, basePath, journal.newId, chainFormats);
    const t = await openLinkIn(ns, top, { cowByCaller: true, preserveIdentity: true });
    try {
      await t.setBacking(change);
      await opts.onStep?.('top relinked');
      await t.makeEmpty();
      await t.flush();
    } finally {
      await t.close();
    }
  }
  await opts.onStep?.('top emptied');
  for (const f of journal.removeFiles) {
    await ns.remove(f);
    await opts.onStep?.(`removed ${f}`);
  }
  await removeJournal(ns, basePath);
  return { base: basePath, bytesCopied: copied };
}

export interface MergeOptions extends ChainCopyOptions {
  /** the link that becomes the top's parent; links above it are merged into the top (default: the parent's parent) */
  base?: string;
  /** merge every parent into the top: the top becomes a standalone disk */
  all?: boolean;
  /** merge even though a child in the top's folder depends on it (its content does not change, so the child stays valid) */
  force?: boolean;
}

export async function mergeIntoTop(topPath: string, opts: MergeOptions = {}): Promise<{ bytesCopied: number; parent?: string }> {
  opts = { ...opts, onProgress: throttleProgress(opts.onProgress) };
  const ns = opts.namespace ?? hostFiles();
  refuseUnsafe(ns, 'merge', topPath);
  const top = ns.absolute(topPath);
  const d = await Disk.open(top, { namespace: ns, preserveIdentity: true, untrusted: opts.untrusted, force: opts.force });
  let paths: string[];
  let depth: number;
  let copied: number;
  let parentId: string | undefined;
  try {
    paths = chainPaths(d);
    if (paths.length < 2) throw new DiskError('INVAL', 'this disk has no parent to merge', { path: topPath });
    depth = opts.all ? paths.length : opts.base !== undefined ? paths.indexOf(ns.absolute(opts.base)) : Math.min(2, paths.length);
    if (depth < 1) throw new DiskError('INVAL', `${opts.base} is not below ${topPath} in its chain`, { path: topPath, field: 'base', found: opts.base });
    copied = await copyRanges(d, d, (x) => x !== undefined && x >= 1 && x < depth, opts);
    await d.flush();
    const layers = (d.image as { layers?: Image[] }).layers ?? [d.image];
    parentId = depth < paths.length ? layers[depth]!.identity() : undefined;
  } finally {
    await d.close();
  }
  const newParent = depth < paths.length ? paths[depth] : undefined;
  const change = newParent ? await backingTo(ns, top, newParent, parentId!, chainFormats) : undefined;
  const t = await openLinkIn(ns, top, { cowByCaller: true, preserveIdentity: true });
  try {
    await t.setBacking(change);
  } finally {
    await t.close();
  }
  // merged links go when nothing else depends on them
  for (const p of paths.slice(1, depth)) {
    const img = await openLinkIn(ns, p, { readOnly: true });
    const kids = await findChildren(img, chainFormats, backends().flatMap((b) => b.extensions)).finally(() => img.close());
    if (kids.length === 0) await removeFiles(ns, await filesOf(ns, p));
    else break; // a link still used keeps everything below it too
  }
  return { bytesCopied: copied, parent: newParent };
}
