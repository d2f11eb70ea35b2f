/**
 * Changed areas (VDDK's QueryChangedDiskAreas): the byte ranges of a disk that changed since an
 * earlier generation, from what the disk records, reading content only where nothing else can
 * tell.
 * - `sinceLink: N`: what the links above depth N store (0 = the top): `sinceLink: 1` is what the
 *   top child holds, i.e. what changed since its parent was frozen (qemu-img map's depth < N).
 * - `since: Disk`: ranges where the two disks differ. When `since` is a link of `newer`'s chain
 *   it is the `sinceLink` of its depth (allocation alone); otherwise, per range, two sides
 *   that both read as zeros without looking (zero or unallocated) are equal, and the rest is
 *   read and compared in `granularity` units (default one sector).
 * - `bitmap: NAME`: the ranges a persistent dirty bitmap of the top image marks (qcow2).
 * - `allocated: true` (the guide's "*" change ID): every range some link stores (data or zeros).
 * Results are sorted, non-overlapping, maximal runs, clipped to the disk.
 */
import { normalize } from '../core/names.js';
import { DiskError } from '../core/errors.js';
import type { Disk } from '../disk.js';
import type { BlockExtent, ByteRange } from '../formats/types.js';
import { lastAtOrBelow } from '../binary/search.js';

export type ChangedSince =
  | { allocated: true }
  | { sinceLink: number }
  | { since: Disk; granularity?: number; signal?: AbortSignal }
  | { bitmap: string };

const CHUNK = 1024 * 1024;

function push(out: ByteRange[], offset: number, length: number): void {
  if (length <= 0) return;
  const last = out[out.length - 1];
  if (last && last.offset + last.length === offset) last.length += length;
  else out.push({ offset, length });
}

async function allocatedAbove(d: Disk, depth: number): Promise<ByteRange[]> {
  const out: ByteRange[] = [];
  if (d.capacity === 0) return out;
  for (const r of await d.mapStatus()) if (r.state !== 'unallocated' && (r.depth ?? 0) < depth) push(out, r.offset, r.length);
  return out;
}

function quietAt(status: BlockExtent[], offset: number): { quiet: boolean; end: number } {
  if (status.length === 0) return { quiet: true, end: Infinity };
  const e = status[lastAtOrBelow(status.length, (i) => status[i]!.offset, offset)]!;
  if (offset >= e.offset + e.length) return { quiet: true, end: Infinity };
  return { quiet: e.state !== 'data', end: e.offset + e.length };
}

/** Where two disks of any formats differ, in `g`-byte units (allocation first, then content). */
async function differences(a: Disk, b: Disk, g: number, signal?: AbortSignal): Promise<ByteRange[]> {
  const statusOf = async (d: Disk) => (d.capacity === 0 ? [] : d.image.capabilities.blockStatus === 'emulate' ? [{ offset: 0, length: d.capacity, state: 'data' as const }] : d.blockStatus());
  const [sa, sb] = [await statusOf(a), await statusOf(b)];
  const out: ByteRange[] = [];
  const chunk = Math.max(g, Math.floor(CHUNK / g) * g);
  const end = a.capacity;
  for (let at = 0; at < end; ) {
    if (signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: a.path }, { cause: signal.reason });
    const qa = quietAt(sa, at);
    const qb = at < b.capacity ? quietAt(sb, at) : { quiet: true, end: Infinity };
    let stop = Math.min(end, at + chunk, qa.end, qb.end);
    if (!(qa.quiet && qb.quiet)) {
      // whole units: from the unit holding `at` (a quiet piece before it in that unit reads
      // as zeros on both sides anyway) to a unit boundary
      const from = Math.floor(at / g) * g;
      stop = Math.min(end, Math.ceil(stop / g) * g);
      const x = await a.read(from, stop - from);
      const inB = Math.max(0, Math.min(stop, b.capacity) - from);
      const y = Buffer.alloc(stop - from);
      if (inB > 0) (await b.read(from, inB)).copy(y);
      for (let u = 0; u < x.length; u += g) {
        const n = Math.min(g, x.length - u);
        if (x.compare(y, u, u + n, u, u + n) !== 0) push(out, from + u, n);
      }
    }
    at = stop;
  }
  return out;
}

/** The ranges of `newer` that changed since the generation `spec` names (see the file header). */
export async function changedRanges(newer: Disk, spec: ChangedSince): Promise<ByteRange[]> {
  if ('allocated' in spec) return allocatedAbove(newer, Infinity);
  if ('sinceLink' in spec) {
    if (!Number.isInteger(spec.sinceLink) || spec.sinceLink < 0) throw new DiskError('INVAL', 'a link depth is a whole number (0 = the top)', { path: newer.path, field: 'sinceLink', found: spec.sinceLink });
    if (spec.sinceLink >= newer.links.length) {
      throw new DiskError('INVAL', `the chain has ${newer.links.length} link(s): depths 0..${newer.links.length - 1}`, { path: newer.path, field: 'sinceLink', expected: `< ${newer.links.length}`, found: spec.sinceLink });
    }
    return allocatedAbove(newer, spec.sinceLink);
  }
  if ('bitmap' in spec) {
    const top = newer.links[0]!;
    const b = top.maintenance().bitmaps;
    if (!b) throw new DiskError('NOTSUPPORTED', `${top.format} images have no persistent bitmaps (qcow2 has them)`, { path: top.path, field: 'format', found: top.format });
    return b.dirty(spec.bitmap);
  }
  const g = spec.granularity ?? 512;
  if (!Number.isInteger(g) || g < 1) throw new DiskError('INVAL', 'granularity is a whole number of bytes', { field: 'granularity', found: g });
  // an older generation of the same chain: what the links above it store (link paths are the
  // namespace's resolved names, so a plain normalize compares them)
  const older = normalize(spec.since.links[0]!.path);
  const depth = newer.links.findIndex((l) => normalize(l.path) === older);
  if (depth >= 0 && spec.since.links.length === newer.links.length - depth) return allocatedAbove(newer, depth);
  return differences(newer, spec.since, g, spec.signal);
}

/** Bytes the ranges cover. */
export function rangeBytes(ranges: readonly ByteRange[]): number {
  return ranges.reduce((n, r) => n + r.length, 0);
}
