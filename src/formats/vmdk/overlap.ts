/**
 * Metadata overlap rules of a hosted sparse extent (NOTES.md "Overlap rules"), the VMDK
 * counterpart of QEMU's qcow2 overlap-check. The fixed pieces — header sector, embedded
 * descriptor, GD, RGD, every GT and redundant GT — must be pairwise disjoint; every grain an
 * entry names must lie in the file, at or after overHead, and apart from every piece that sits
 * past overHead (GTs allocated later, directories a resize moved). A write lands only on a
 * grain an entry names or past the highest sector any entry names, so with these rules a new
 * grain or table can never land on something the file still uses.
 *
 * Cost: the structure check is O(tables log tables) on the directories already in memory; the
 * entry scan reads each GT once (consecutive GTs in 1 MiB reads) and keeps one bit per grain
 * slot of the file (skipped above 32 MiB of bits), never memory sized by a header field.
 */
import { DiskError } from '../../core/errors.js';
import { SECTOR_SIZE } from '../../core/ints.js';
import type { ByteStore } from '../../storage/store.js';

export interface SparseMap {
  path: string;
  fileSize: number;
  /** all in sectors; 0 = absent */
  overHead: number;
  descriptorOffset: number;
  descriptorSize: number;
  gdOffset: number;
  rgdOffset: number;
  gdSectors: number;
  gtSectors: number;
  grainSectors: number;
  numGTEs: number;
  gd: Uint32Array;
  rgd?: Uint32Array;
}

export type PieceKind = 'header' | 'descriptor' | 'gd' | 'rgd' | 'gt' | 'rgt';

export interface Piece {
  kind: PieceKind;
  /** what a message calls it: "grain table 3" */
  name: string;
  /** the header or directory field that places it */
  field: string;
  start: number;
  end: number;
}

export interface Overlap {
  a: Piece;
  b: Piece;
}

const REDUNDANT: ReadonlySet<PieceKind> = new Set(['rgd', 'rgt']);
export const isRedundant = (p: Piece) => REDUNDANT.has(p.kind);

function fixedPieces(m: SparseMap): Piece[] {
  const out: Piece[] = [{ kind: 'header', name: 'header', field: 'magicNumber', start: 0, end: 1 }];
  if (m.descriptorOffset !== 0 && m.descriptorSize !== 0) {
    out.push({ kind: 'descriptor', name: 'embedded descriptor', field: 'descriptorSize', start: m.descriptorOffset, end: m.descriptorOffset + m.descriptorSize });
  }
  out.push({ kind: 'gd', name: 'grain directory', field: 'gdOffset', start: m.gdOffset, end: m.gdOffset + m.gdSectors });
  if (m.rgd) out.push({ kind: 'rgd', name: 'redundant grain directory', field: 'rgdOffset', start: m.rgdOffset, end: m.rgdOffset + m.gdSectors });
  return out;
}

/** the tables starting at sector `s` (primary first), found by a scan: only called per overlap found */
function tablesAt(m: SparseMap, s: number): Piece[] {
  const out: Piece[] = [];
  for (const [dir, kind] of [[m.gd, 'gt'], [m.rgd, 'rgt']] as const) {
    if (!dir) continue;
    for (let g = 0; g < dir.length; g++) {
      if (dir[g] !== s) continue;
      out.push(kind === 'gt'
        ? { kind, name: `grain table ${g}`, field: `GDE[${g}]`, start: s, end: s + m.gtSectors }
        : { kind, name: `redundant grain table ${g}`, field: `RGDE[${g}]`, start: s, end: s + m.gtSectors });
    }
  }
  return out;
}

function sortedTableStarts(m: SparseMap): Uint32Array {
  let n = 0;
  for (const dir of [m.gd, m.rgd]) if (dir) for (let i = 0; i < dir.length; i++) if (dir[i] !== 0) n++;
  const starts = new Uint32Array(n);
  n = 0;
  for (const dir of [m.gd, m.rgd]) if (dir) for (let i = 0; i < dir.length; i++) if (dir[i] !== 0) starts[n++] = dir[i]!;
  return starts.sort();
}

/** first index whose value is >= v */
function lowerBound(a: Uint32Array, v: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Pairs of metadata pieces that share a sector (at most `limit`). */
export function metadataOverlaps(m: SparseMap, limit = 16): Overlap[] {
  const out: Overlap[] = [];
  const fixed = fixedPieces(m);
  for (let i = 0; i < fixed.length; i++) {
    for (let j = i + 1; j < fixed.length; j++) {
      const a = fixed[i]!;
      const b = fixed[j]!;
      if (a.start < b.end && b.start < a.end) out.push({ a, b });
    }
  }
  const starts = sortedTableStarts(m);
  const gts = m.gtSectors;
  for (let i = 1; i < starts.length && out.length < limit; i++) {
    const s0 = starts[i - 1]!;
    const s1 = starts[i]!;
    if (s1 - s0 >= gts) continue;
    if (s0 === s1) {
      const both = tablesAt(m, s0);
      if (both.length >= 2) out.push({ a: both[0]!, b: both[1]! });
    } else out.push({ a: tablesAt(m, s0)[0]!, b: tablesAt(m, s1)[0]! });
  }
  for (const f of fixed) {
    for (let i = lowerBound(starts, Math.max(0, f.start - gts + 1)); i < starts.length && starts[i]! < f.end && out.length < limit; i++) {
      if (i > 0 && starts[i] === starts[i - 1]) continue;
      for (const t of tablesAt(m, starts[i]!)) out.push({ a: f, b: t });
    }
  }
  return out.slice(0, limit);
}

export function overlapMessage(o: Overlap): string {
  return `${o.a.name} (sectors ${o.a.start}..${o.a.end - 1}) overlaps ${o.b.name} (sectors ${o.b.start}..${o.b.end - 1})`;
}

/** The read-write refusal for an extent whose metadata overlaps itself. */
export function overlapError(path: string, o: Overlap): DiskError {
  return new DiskError('NEEDSREPAIR', `${overlapMessage(o)}: a write would land on metadata still in use; open read-only, or run check --repair`, {
    path,
    struct: 'SparseExtentHeader',
    field: o.b.field,
    found: o.b.start * SECTOR_SIZE,
    offset: o.b.start * SECTOR_SIZE,
  });
}

export interface EntryProblem {
  kind: 'metadata-area' | 'past-end' | 'over-table' | 'grain-overlap';
  gi: number;
  sector: number;
  message: string;
  /** over-table: the table or directory the grain runs into */
  piece?: Piece;
}

/**
 * Walk every primary grain table entry once: the highest sector a grain covers (new grains go
 * after it) and the entries that break the rules (before overHead, past the end of the file,
 * over a table or directory past overHead, two entries starting within one grain of each other).
 */
export async function scanGrainEntries(store: ByteStore, m: SparseMap, opts: { limit: number; stopAtLimit: boolean }): Promise<{ highWater: number; problems: EntryProblem[] }> {
  const fileSectors = Math.floor(m.fileSize / SECTOR_SIZE);
  const gs = m.grainSectors;
  const problems: EntryProblem[] = [];
  let highWater = 0;
  // metadata past overHead, sorted by start: usually none, so the common case is one compare
  const late: Piece[] = [];
  for (const p of fixedPieces(m)) if (p.end > m.overHead && p.kind !== 'header') late.push(p);
  for (const [dir, kind] of [[m.gd, 'gt'], [m.rgd, 'rgt']] as const) {
    if (!dir) continue;
    for (let g = 0; g < dir.length; g++) {
      const s = dir[g]!;
      if (s !== 0 && s + m.gtSectors > m.overHead) late.push({ kind, name: `${kind === 'gt' ? '' : 'redundant '}grain table ${g}`, field: `${kind === 'gt' ? '' : 'R'}GDE[${g}]`, start: s, end: s + m.gtSectors });
    }
  }
  late.sort((a, b) => a.start - b.start);
  const lateStart = late.length > 0 ? late[0]!.start : Infinity;
  const lateMaxEnd: number[] = [];
  for (let i = 0, mx = 0; i < late.length; i++) lateMaxEnd.push((mx = Math.max(mx, late[i]!.end)));
  // one bit per grain slot of the file: two entries in one slot overlap
  const slots = Math.ceil(fileSectors / gs) + 1;
  const seen = slots <= 32 * 8 * 1024 * 1024 ? new Uint8Array(Math.ceil(slots / 8)) : undefined;

  const gtBytes = m.gtSectors * SECTOR_SIZE;
  const maxRun = Math.max(1, Math.floor((1024 * 1024) / gtBytes));
  const dir = m.gd;
  const add = (kind: EntryProblem['kind'], gi: number, sector: number, message: string, piece?: Piece) => {
    if (problems.length < opts.limit) problems.push({ kind, gi, sector, message, ...(piece ? { piece } : {}) });
  };
  for (let g = 0; g < dir.length && (!opts.stopAtLimit || problems.length < opts.limit); ) {
    const first = dir[g]!;
    if (first === 0) {
      g++;
      continue;
    }
    let n = 1;
    while (g + n < dir.length && n < maxRun && dir[g + n] === first + n * m.gtSectors) n++;
    const buf = await store.readZeroPadded(first * SECTOR_SIZE, n * gtBytes);
    for (let k = 0; k < n; k++) {
      for (let i = 0; i < m.numGTEs; i++) {
        const e = buf.readUInt32LE(k * gtBytes + i * 4);
        if (e <= 1) continue;
        const gi = (g + k) * m.numGTEs + i;
        if (e < m.overHead) {
          add('metadata-area', gi, e, `grain ${gi} points into the metadata area (sector ${e}, overHead ${m.overHead})`);
          continue;
        }
        if (e >= fileSectors) {
          add('past-end', gi, e, `grain ${gi} lies past the end of the file (sector ${e}, file ${fileSectors} sectors: truncated?)`);
          continue;
        }
        highWater = Math.max(highWater, e + gs);
        if (e + gs > lateStart) {
          // the last piece starting before the grain's end, then back while one may still reach the grain
          let lo = 0;
          let hi = late.length;
          while (lo < hi) {
            const mid = (lo + hi) >> 1;
            if (late[mid]!.start < e + gs) lo = mid + 1;
            else hi = mid;
          }
          let j = lo - 1;
          for (; j >= 0 && lateMaxEnd[j]! > e; j--) {
            if (late[j]!.end > e) {
              add('over-table', gi, e, `grain ${gi} (sector ${e}) overlaps ${late[j]!.name} (sectors ${late[j]!.start}..${late[j]!.end - 1})`, late[j]);
              break;
            }
          }
        }
        if (seen) {
          const slot = Math.floor(e / gs);
          if (seen[slot >> 3]! & (1 << (slot & 7))) add('grain-overlap', gi, e, `grain ${gi} (sector ${e}) overlaps another grain of the file`);
          seen[slot >> 3]! |= 1 << (slot & 7);
        }
      }
    }
    g += n;
  }
  return { highWater, problems };
}

export function entryError(path: string, p: EntryProblem): DiskError {
  return new DiskError('NEEDSREPAIR', `${p.message}: a new grain could be placed on a sector this entry names; open read-only, or run check`, {
    path,
    struct: 'grain table',
    field: `GTE[${p.gi}]`,
    found: p.sector,
    offset: p.sector * SECTOR_SIZE,
  });
}
