/**
 * `vdkit backup`: a full backup of a disk, then points that hold only what changed, each a qcow2
 * child of the point below it (incremental: the last point; differential: the full one), so any
 * tool that reads a qcow2 chain reads a backup point. How a point is made and committed, and what
 * a killed run leaves: NOTES.md.
 */
import { join, normalize } from '../../core/names.js';
import { DiskError } from '../../core/errors.js';
import { Disk } from '../../disk.js';
import type { ByteRange } from '../../formats/types.js';
import { hostFiles } from '../../storage/file.js';
import { DeferredSyncNamespace } from '../../storage/deferred-sync.js';
import { writeAtomic, type Namespace } from '../../storage/namespace.js';
import { throttleProgress } from '../../core/progress.js';
import { changedRanges, rangeBytes } from '../changed.js';
import { convert, dataRanges, moveIntoPlace, type Progress } from '../convert.js';
import { copyRanges } from '../copy-ranges.js';
import { childCreateOptions } from '../child.js';
import { partialPath } from '../partials.js';
import { bitmap as bitmapOp } from '../bitmap.js';
import { listPoints, lockFolder, pointStem, removeUncommitted, writeJson, type ChangeSource, type Manifest, type PointKind, type SourceIdentity } from './points.js';
import { blockSums, digestOf, readSums } from './sums.js';

export interface BackupOptions {
  /** what a later point is backed by: the last point (default) or the full one */
  mode?: 'incremental' | 'differential';
  /**
   * where the changed ranges come from: a qcow2 persistent dirty bitmap of the source (cleared
   * once the point is committed), the source's chain (links above the one the parent point saw
   * on top are new), or, by default, comparing the source with the parent point
   */
  changes?: { bitmap: string } | { chain: true };
  /** the source's format (detected when omitted) */
  format?: string;
  /** the source named in the manifest (default: the name given); the CLI strips credentials from URLs */
  sourceName?: string;
  /** where the backup folder is (default host files); the source is opened by its own name (files or URLs) */
  namespace?: Namespace;
  untrusted?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
  /** the clock for the manifest's time (tests) */
  now?: () => Date;
}

export interface BackupResult {
  manifest: Manifest;
  /** leftovers of a killed run that were removed first */
  removed: string[];
}

/** qcow2's default cluster: the unit a point allocates, so the unit content is compared in */
const UNIT = 64 * 1024;
const CHUNK = 2 * 1024 * 1024;

function union(...lists: readonly (readonly ByteRange[])[]): ByteRange[] {
  const all = lists.flat().filter((r) => r.length > 0).sort((a, b) => a.offset - b.offset);
  const out: ByteRange[] = [];
  for (const r of all) {
    const last = out[out.length - 1];
    if (last && r.offset <= last.offset + last.length) last.length = Math.max(last.length, r.offset + r.length - last.offset);
    else out.push({ offset: r.offset, length: r.length });
  }
  return out;
}

function clip(ranges: readonly ByteRange[], end: number): ByteRange[] {
  return ranges.flatMap((r) => (r.offset >= end ? [] : [{ offset: r.offset, length: Math.min(r.length, end - r.offset) }]));
}

function cancelled(signal: AbortSignal | undefined, path: string): void {
  if (signal?.aborted) throw new DiskError('CANCELLED', undefined, { path }, { cause: signal.reason });
}

async function identityOf(src: Disk, name: string, chain: boolean): Promise<SourceIdentity> {
  const info = await src.info().catch(() => undefined);
  return {
    name,
    format: src.format,
    size: src.capacity,
    ...(info?.uuid ? { uuid: info.uuid } : {}),
    ...(chain ? { chain: src.links.map((l) => normalize(l.path)) } : {}),
  };
}

/** the source must be the disk the folder backs up: same size, and same UUID where both have one */
function checkSameSource(now: SourceIdentity, full: Manifest, dir: string): void {
  if (now.size !== full.source.size) {
    throw new DiskError('INVAL', `the source is not the disk backed up in this folder (or was resized): start a new backup folder`, { path: now.name, field: 'size', expected: full.source.size, found: now.size });
  }
  if (now.uuid && full.source.uuid && now.uuid !== full.source.uuid) {
    throw new DiskError('INVAL', `the source's UUID differs from the one backed up in ${dir}`, { path: now.name, field: 'uuid', expected: full.source.uuid, found: now.uuid });
  }
}

/** the ranges changed since `parent` (see BackupOptions.changes) */
async function rangesSince(src: Disk, parentDisk: Disk, parent: Manifest, points: readonly Manifest[], opts: BackupOptions): Promise<{ ranges: ByteRange[]; by: ChangeSource }> {
  const ch = opts.changes;
  if (ch && 'bitmap' in ch) {
    let ranges = await changedRanges(src, { bitmap: ch.bitmap });
    // the bitmap holds what changed since it was last cleared, at the last full or incremental
    // point: below a point older than the last, add what the points above that one took
    for (let p: Manifest | undefined = points[points.length - 1]; p && p.point !== parent.point; p = p.parent === undefined ? undefined : points[p.parent]) ranges = union(ranges, p.ranges);
    return { ranges, by: 'bitmap' };
  }
  if (ch && 'chain' in ch) {
    const top = parent.source.chain?.[0];
    if (top === undefined) throw new DiskError('INVAL', `point ${parent.point} was not taken with --chain: its source chain is not recorded`, { path: parent.file, field: 'source.chain' });
    const depth = src.links.findIndex((l) => normalize(l.path) === top);
    if (depth < 0) throw new DiskError('INVAL', `the link that was on top at point ${parent.point} is not in the source's chain any more`, { path: src.path, field: 'chain', expected: top, found: src.links.map((l) => l.path) });
    return { ranges: await changedRanges(src, { sinceLink: depth }), by: 'chain' };
  }
  return { ranges: await changedRanges(src, { since: parentDisk, granularity: UNIT, signal: opts.signal }), by: 'content' };
}

/** Take one backup point of `srcName` into the folder `dir` (which must exist). */
export async function backup(srcName: string, dir: string, opts: BackupOptions = {}): Promise<BackupResult> {
  const ns = opts.namespace ?? hostFiles();
  const onProgress = throttleProgress(opts.onProgress);
  if (!(await ns.exists(dir)) || (await ns.kind(dir)) !== 'dir') throw new DiskError('FILENOTFOUND', 'the backup folder does not exist', { path: dir, field: 'dir' });
  const unlock = await lockFolder(ns, dir);
  try {
    const points = await listPoints(ns, dir);
    const removed = await removeUncommitted(ns, dir, points.length);
    const src = await Disk.open(srcName, { readOnly: true, format: opts.format, untrusted: opts.untrusted });
    let manifest: Manifest;
    try {
      // a missing bitmap fails before anything is written
      if (opts.changes && 'bitmap' in opts.changes) await changedRanges(src, { bitmap: opts.changes.bitmap });
      const source = await identityOf(src, opts.sourceName ?? srcName, !!(opts.changes && 'chain' in opts.changes));
      if (points.length > 0) checkSameSource(source, points[0]!, dir);
      manifest = points.length === 0 ? await fullPoint(src, ns, dir, source, opts, onProgress) : await laterPoint(src, ns, dir, source, points, opts, onProgress);
    } finally {
      await src.close();
    }
    // the point is committed: only now may the bitmap forget what it marked (a kill before this
    // leaves it set, and the next point copies those ranges again)
    if (opts.changes && 'bitmap' in opts.changes && manifest.kind !== 'diff') await bitmapOp(srcName, opts.changes.bitmap, [{ op: 'clear' }], { format: opts.format });
    return { manifest, removed };
  } finally {
    await unlock();
  }
}

async function commit(ns: Namespace, dir: string, m: Manifest, sums: Buffer): Promise<Manifest> {
  const stem = pointStem(m.point, m.kind);
  // the sums before the manifest: a manifest is the commit, and what it names is in place
  await writeAtomic(ns, join(dir, `${stem}.sums`), sums);
  await writeJson(ns, join(dir, `${stem}.json`), m);
  return m;
}

async function fullPoint(src: Disk, ns: Namespace, dir: string, source: SourceIdentity, opts: BackupOptions, onProgress?: (p: Progress) => void): Promise<Manifest> {
  const file = `${pointStem(0, 'full')}.qcow2`;
  const path = join(dir, file);
  const time = (opts.now?.() ?? new Date()).toISOString();
  const ranges = await dataRanges(src, src.capacity);
  // convert builds the point under a hidden name, syncs it and renames it into place
  const r = await convert(src, path, { format: 'qcow2', namespace: ns, signal: opts.signal, onProgress });
  const point = await Disk.open(path, { namespace: ns, readOnly: true, format: 'qcow2' });
  let sums: Buffer;
  try {
    sums = await blockSums(point, 'all', undefined, opts.signal);
  } finally {
    await point.close();
  }
  cancelled(opts.signal, path);
  const m: Manifest = {
    vdkitBackup: 1,
    point: 0,
    kind: 'full',
    file,
    time,
    source,
    changedBy: 'full',
    ...(opts.changes && 'bitmap' in opts.changes ? { bitmap: opts.changes.bitmap } : {}),
    ranges,
    bytes: { changed: rangeBytes(ranges), copied: rangeBytes(ranges), written: r.bytesWritten },
    checksum: digestOf(src.capacity, sums),
  };
  return commit(ns, dir, m, sums);
}

async function laterPoint(src: Disk, ns: Namespace, dir: string, source: SourceIdentity, points: readonly Manifest[], opts: BackupOptions, onProgress?: (p: Progress) => void): Promise<Manifest> {
  const n = points.length;
  const kind: PointKind = opts.mode === 'differential' ? 'diff' : 'incr';
  const parent = kind === 'diff' ? points[0]! : points[n - 1]!;
  const file = `${pointStem(n, kind)}.qcow2`;
  const path = join(dir, file);
  const parentPath = join(dir, parent.file);
  const time = (opts.now?.() ?? new Date()).toISOString();
  const parentDisk = await Disk.open(parentPath, { namespace: ns, readOnly: true, format: 'qcow2' });
  let written = 0;
  let ranges: ByteRange[];
  let by: ChangeSource;
  try {
    ({ ranges, by } = await rangesSince(src, parentDisk, parent, points, opts));
    ranges = clip(ranges, src.capacity);
    cancelled(opts.signal, path);
    const partial = partialPath(path);
    // nobody sees the point before its rename: its ordering flushes wait for one sync at the end
    const staging = new DeferredSyncNamespace(ns);
    const spec = childCreateOptions(parentDisk.image, parentPath, partial, { format: 'qcow2', namespace: staging });
    const dst = await Disk.create(partial, { ...spec, namespace: staging, overwrite: true });
    const total = rangeBytes(ranges);
    let done = 0;
    let shown = 0;
    try {
      onProgress?.({ done: 0, total, written: 0 });
      // written only where the source differs from the parent point: a bitmap that marks more
      // than changed (a range written with the same bytes, a kill before the clear) costs reads only
      written = await copyRanges((buf, at) => src.readInto(buf, at), dst, ranges, {
        chunkSize: CHUNK,
        zeroBlockSize: UNIT,
        sameAs: parentDisk,
        signal: opts.signal,
        label: path,
        sync: () => staging.syncNow(),
        onChunk: (c, w) => {
          done += c.length;
          onProgress?.({ done, total, written: (shown += w) });
        },
      });
      cancelled(opts.signal, path);
      await dst.flush();
      await staging.seal();
      await moveIntoPlace(dst.image, path);
    } catch (err) {
      await dst.close().catch(() => {});
      await ns.remove(partial).catch(() => {});
      throw err;
    }
  } finally {
    await parentDisk.close();
  }
  const point = await Disk.open(path, { namespace: ns, readOnly: true, format: 'qcow2' });
  let sums: Buffer;
  try {
    const base = await readSums(ns, join(dir, `${pointStem(parent.point, parent.kind)}.sums`), src.capacity);
    sums = await blockSums(point, ranges, base, opts.signal);
  } finally {
    await point.close();
  }
  cancelled(opts.signal, path);
  const m: Manifest = {
    vdkitBackup: 1,
    point: n,
    kind,
    file,
    parent: parent.point,
    time,
    source,
    changedBy: by,
    ...(opts.changes && 'bitmap' in opts.changes ? { bitmap: opts.changes.bitmap } : {}),
    ranges,
    bytes: { changed: rangeBytes(ranges), copied: rangeBytes(ranges), written },
    checksum: digestOf(src.capacity, sums),
  };
  return commit(ns, dir, m, sums);
}
