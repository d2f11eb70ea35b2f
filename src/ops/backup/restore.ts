/**
 * `vdkit restore`: the disk as of a backup point, either converted into a new image of any format
 * (the point's qcow2 chain is the source) or written in place onto an image that holds an older
 * point (only the ranges that differ between the two points), then checked against the point's
 * checksum in its manifest.
 */
import { join } from '../../core/names.js';
import { DiskError } from '../../core/errors.js';
import { Disk } from '../../disk.js';
import { hostFiles } from '../../storage/file.js';
import type { Namespace } from '../../storage/namespace.js';
import { throttleProgress } from '../../core/progress.js';
import { changedRanges, rangeBytes } from '../changed.js';
import { checksum } from '../checksum.js';
import { convert, type Progress } from '../convert.js';
import { copyRanges } from '../copy-ranges.js';
import { listPoints, type Manifest } from './points.js';

export interface RestoreOptions {
  /** the point: its number, or a time (the last point taken at or before it); default the last point */
  point?: number | Date;
  /** the new image's format (default qcow2); with inPlace, the target's format (detected when omitted) */
  format?: string;
  /** the new image's type (VMDK monolithicSparse, ...) */
  type?: string;
  overwrite?: boolean;
  /** write onto the existing `target`, which must hold an older (or any other) point of this folder */
  inPlace?: boolean;
  /** where the backup folder is (default host files); the target is named as for convert */
  namespace?: Namespace;
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

export interface RestoreResult {
  point: Manifest;
  /** in place: the point the target held before */
  from?: Manifest;
  /** the ranges written (in place) or the bytes the new image got */
  bytesWritten: number;
  /** the target's checksum after the restore (equal to the manifest's, else the restore threw) */
  checksum: string;
}

/** the point `sel` names among `points` (see RestoreOptions.point) */
export function pickPoint(points: readonly Manifest[], sel: number | Date | undefined, dir: string): Manifest {
  if (points.length === 0) throw new DiskError('FILENOTFOUND', 'the folder holds no committed backup point', { path: dir, field: 'point' });
  if (sel === undefined) return points[points.length - 1]!;
  if (typeof sel === 'number') {
    const p = points[sel];
    if (!p) throw new DiskError('INVAL', `no backup point ${sel}: the folder has points 0..${points.length - 1}`, { path: dir, field: 'point', expected: `0..${points.length - 1}`, found: sel });
    return p;
  }
  const at = sel.getTime();
  const before = points.filter((p) => Date.parse(p.time) <= at);
  if (before.length === 0) throw new DiskError('INVAL', `no backup point was taken at or before ${sel.toISOString()} (the first: ${points[0]!.time})`, { path: dir, field: 'point', found: sel.toISOString() });
  return before[before.length - 1]!;
}

function mismatch(target: string, point: Manifest, found: string): DiskError {
  return new DiskError('CORRUPT', `the restored disk does not match backup point ${point.point} (left as it is, for inspection)`, { path: target, field: 'checksum', expected: point.checksum, found });
}

export async function restore(dir: string, target: string, opts: RestoreOptions = {}): Promise<RestoreResult> {
  const ns = opts.namespace ?? hostFiles();
  const onProgress = throttleProgress(opts.onProgress);
  const points = await listPoints(ns, dir);
  const point = pickPoint(points, opts.point, dir);
  const src = await Disk.open(join(dir, point.file), { namespace: ns, readOnly: true, format: 'qcow2' });
  try {
    if (src.capacity !== point.source.size) throw new DiskError('CORRUPT', 'the backup point has another size than its manifest says', { path: src.path, field: 'size', expected: point.source.size, found: src.capacity });
    if (opts.inPlace) return await inPlace(src, point, points, dir, target, { ...opts, onProgress });
    const r = await convert(src, target, { format: opts.format ?? 'qcow2', type: opts.type, overwrite: opts.overwrite, signal: opts.signal, onProgress });
    const out = await Disk.open(target, { readOnly: true, format: opts.format ?? 'qcow2' });
    let sum: string;
    try {
      sum = await checksum(out, { signal: opts.signal });
    } finally {
      await out.close();
    }
    if (sum !== point.checksum) throw mismatch(target, point, sum);
    return { point, bytesWritten: r.bytesWritten, checksum: sum };
  } finally {
    await src.close();
  }
}

async function inPlace(src: Disk, point: Manifest, points: readonly Manifest[], dir: string, target: string, opts: RestoreOptions): Promise<RestoreResult> {
  const ns = opts.namespace ?? hostFiles();
  const dst = await Disk.open(target, { format: opts.format });
  try {
    if (dst.capacity !== src.capacity) throw new DiskError('INVAL', 'the target is not the size of the backed-up disk', { path: target, field: 'capacity', expected: src.capacity, found: dst.capacity });
    // what the target holds now, known by its checksum: the newest point that has it
    const before = await checksum(dst, { signal: opts.signal });
    const from = [...points].reverse().find((p) => p.checksum === before);
    if (!from) throw new DiskError('INVAL', `the target holds none of the backup points of ${dir}: restore into a new image instead`, { path: target, field: 'checksum', found: before });
    let written = 0;
    if (from.point !== point.point) {
      const old = await Disk.open(join(dir, from.file), { namespace: ns, readOnly: true, format: 'qcow2' });
      let ranges;
      try {
        // a point below in the same chain: what the links above it store; otherwise by content
        ranges = await changedRanges(src, { since: old, granularity: 64 * 1024, signal: opts.signal });
      } finally {
        await old.close();
      }
      const total = rangeBytes(ranges);
      let done = 0;
      opts.onProgress?.({ done, total, written });
      written = await copyRanges((buf, at) => src.readInto(buf, at), dst, ranges, {
        chunkSize: 2 * 1024 * 1024,
        zeroBlockSize: 64 * 1024,
        below: dst,
        signal: opts.signal,
        label: target,
        onChunk: (c, w) => {
          done += c.length;
          opts.onProgress?.({ done, total, written: w });
        },
      });
      await dst.flush();
    }
    const after = await checksum(dst, { signal: opts.signal });
    if (after !== point.checksum) throw mismatch(target, point, after);
    return { point, from, bytesWritten: written, checksum: after };
  } finally {
    await dst.close();
  }
}
