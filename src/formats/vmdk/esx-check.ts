/**
 * Consistency check of ESXi delta extents (COWD and SESparse; esx-sparse.ts reads them), the
 * counterpart of SparseExtent.check for hosted sparse. Layouts: NOTES.md and vmdk.md §5.
 *
 * Design notes
 * - Opening already refuses what makes reads unsafe (headers, the grain directory: tables past
 *   the end, over the headers, two entries naming one table). The check walks what opening
 *   leaves to the reads: every grain table entry, whether two of them (or a grain and a grain
 *   table) claim the same space, and header fields that readers do not use but ESXi does
 *   (COWD freeSector; the SESparse journal, free bitmap, back map and grain-area bounds).
 * - Report only: vdkit never writes these files (ESXi keeps them in step with its free-space
 *   count, journal and back map), so a repair run reports every finding as not repairable
 *   (`vmkfstools -x repair` on ESXi mends them) and changes nothing. VmdkImage.maintenance().check adds that.
 * - Overlaps are found with one bit per unit of space (COWD: per sector of the file, since
 *   grains need not be grain-aligned; SESparse: per grain slot of the grain area), sized by
 *   the real file length, never by a header field. Only when a unit is claimed twice is the
 *   walk repeated, to name the first claimant as well.
 * - Neither format aligns grains in the file: COWD grains follow their 32-sector table at any
 *   sector (grainSize 3 is legal), and a SESparse grain's place is grainsOffset + index x 8
 *   sectors by construction. So there is no alignment finding: a bad place shows up as a grain
 *   outside its area or overlapping something else.
 * - Space nothing uses: a COWD hole below freeSector is a leak (ESXi never frees COWD grains).
 *   A file running past freeSector is not: ESXi grows redo logs in 16 MB steps. A SESparse
 *   grain slot nothing uses is free space its free bitmap tracks (guest UNMAP frees grains), not
 *   a leak; the bitmap's and back map's own encodings are not public, so they are not decoded.
 */
import { SECTOR_SIZE, ceilDiv } from '../../core/ints.js';
import type { CheckFinding } from '../types.js';
import { SESPARSE_GRAIN_SECTORS, SESPARSE_GT_SECTORS } from './structs.js';
import { type CowdFacts, type EsxSparseExtent, type SeSparseFacts, seSparseGrainIndex } from './esx-sparse.js';
import { readU32Array } from '../../binary/tables.js';

const ENTRIES_PER_GT = 4096;
const COWD_GT_SECTORS = (ENTRIES_PER_GT * 4) / SECTOR_SIZE;
/** directory entries read at a time when looking past the capacity (64 KiB of COWD entries) */
const GD_CHUNK_WORDS = 16384;

export interface EsxCheckResult {
  findings: CheckFinding[];
  leakedBytes: number;
}

/** Walk one ESXi delta extent; reads only. */
export async function checkEsxExtent(e: EsxSparseExtent): Promise<EsxCheckResult> {
  const f = e.facts;
  return f.kind === 'COWD' ? checkCowd(e, f) : checkSeSparse(e, f);
}

/** One bit per unit; remembers the units claimed a second time. */
class Occupancy {
  private readonly bits: Uint8Array;
  readonly twice = new Set<number>();
  constructor(readonly units: number) {
    this.bits = new Uint8Array(ceilDiv(units, 8));
  }
  /** claim [start, start+n), all inside the map; true if any unit was already taken */
  claim(start: number, n: number): boolean {
    let clash = false;
    for (let u = start; u < start + n; u++) {
      const m = 1 << (u & 7);
      const i = u >>> 3;
      if (this.bits[i]! & m) {
        this.twice.add(u);
        clash = true;
      } else this.bits[i]! |= m;
    }
    return clash;
  }
  taken(u: number): boolean {
    return (this.bits[u >>> 3]! & (1 << (u & 7))) !== 0;
  }
}

// ------------------------------------------------------------------ COWD

/** who holds a range of a COWD file: a grain (>= 0) or metadata (HEADER, GD, or table g as -3 - g) */
const HEADER = -1;
const GD = -2;
const tableOwner = (g: number) => -3 - g;

/** at most this many findings per extent: a garbage table would otherwise give one per entry */
const MAX_FINDINGS = 1000;

/**
 * A findings list that keeps the first MAX_FINDINGS and then one summary finding counting the
 * rest (a corruption when any of the rest is one), so memory stays bounded by a constant
 * whatever the file holds.
 */
function boundedFindings(): CheckFinding[] {
  const list: CheckFinding[] = [];
  let summary: CheckFinding | undefined;
  let dropped = 0;
  const push = (...items: CheckFinding[]): number => {
    for (const f of items) {
      if (list.length < MAX_FINDINGS) {
        Array.prototype.push.call(list, f);
        continue;
      }
      dropped++;
      if (!summary) {
        summary = { kind: f.kind, message: '', struct: f.struct };
        Array.prototype.push.call(list, summary);
      }
      if (f.kind === 'corruption') summary.kind = 'corruption';
      summary.message = `${dropped} more findings left out (the first ${MAX_FINDINGS} are listed)`;
    }
    return list.length;
  };
  Object.defineProperty(list, 'push', { value: push });
  return list;
}

async function checkCowd(e: EsxSparseExtent, f: CowdFacts): Promise<EsxCheckResult> {
  const findings = boundedFindings();
  const h = f.header;
  const grainSectors = h.grainSize;
  const fileSectors = Math.floor(f.fileSize / SECTOR_SIZE);
  const grains = ceilDiv(h.numSectors, grainSectors);
  const tables = e.tableOffsets;
  const gtWhere = { struct: 'grain table' };
  const name = (o: number) => (o >= 0 ? `grain ${o}` : o === HEADER ? 'the header' : o === GD ? 'the grain directory' : `grain table ${-3 - o}`);

  // directory entries past what the capacity needs: readers ignore them, ESXi writes none
  const needed = f.gd.length;
  if (h.numGDEntries > needed) {
    findings.push({ kind: 'warning', message: `numGDEntries is ${h.numGDEntries}, the capacity needs ${needed}`, struct: 'CowdHeader', field: 'numGDEntries' });
    await forExtraEntries(e, h.gdOffset * SECTOR_SIZE + needed * 4, h.numGDEntries - needed, 1, (i, lo) => {
      if (lo !== 0) findings.push({ kind: 'warning', message: `grain directory entry ${needed + i} lies beyond the capacity and names a grain table (sector ${lo}) that no reader uses`, struct: 'grain directory', field: `GDE[${needed + i}]`, offset: h.gdOffset * SECTOR_SIZE + (needed + i) * 4 });
    });
  }

  /**
   * Every claim on the file's sectors in one fixed order (header, directory, tables, grains),
   * reporting bad entries on the first pass only. `visit` gets [start, start+n) in sectors.
   */
  let usedEnd = f.metaEndSector;
  const walk = async (visit: (start: number, n: number, owner: number) => void, report: boolean) => {
    visit(0, Math.min(h.gdOffset, fileSectors), HEADER);
    visit(h.gdOffset, Math.min(f.metaEndSector, fileSectors) - h.gdOffset, GD);
    for (let g = 0; g < tables.length; g++) if (tables[g] !== 0) visit(f.gd[g]!, COWD_GT_SECTORS, tableOwner(g));
    for (let g = 0; g < tables.length; g++) {
      if (tables[g] === 0) continue;
      const words = await readU32Array(e.store, tables[g]!, ENTRIES_PER_GT);
      for (let i = 0; i < ENTRIES_PER_GT; i++) {
        const s = words[i]!;
        if (s === 0) continue;
        const gi = g * ENTRIES_PER_GT + i;
        const where = { ...gtWhere, field: `GTE[${gi}]`, offset: s * SECTOR_SIZE };
        if (gi >= grains) {
          if (report) findings.push({ kind: 'warning', message: `grain table entry ${gi} lies beyond the capacity (${grains} grains) and points at sector ${s}; no reader uses it`, ...where });
          continue;
        }
        if (s < f.metaEndSector) {
          if (report) findings.push({ kind: 'corruption', message: `grain ${gi} points into the header or grain directory (sector ${s}, grains start at ${f.metaEndSector})`, ...where });
          continue;
        }
        if (s + grainSectors > fileSectors) {
          if (report) {
            const message = s >= fileSectors ? `grain ${gi} lies past the end of the file (sector ${s} of ${fileSectors})` : `grain ${gi} runs past the end of the file (sectors ${s}..${s + grainSectors - 1} of ${fileSectors})`;
            findings.push({ kind: 'corruption', message, ...where });
          }
          continue;
        }
        usedEnd = Math.max(usedEnd, s + grainSectors);
        visit(s, grainSectors, gi);
      }
    }
  };

  const occ = new Occupancy(fileSectors);
  const clashes: { owner: number; unit: number }[] = [];
  await walk((start, n, owner) => {
    if (owner < GD) usedEnd = Math.max(usedEnd, start + n);
    if (occ.claim(start, n)) clashes.push({ owner, unit: firstTwice(occ, start, n) });
  }, true);
  if (clashes.length > 0) {
    // second pass: the first claimant of each unit claimed twice
    const first = new Map<number, number>();
    await walk((start, n, owner) => {
      for (let u = start; u < start + n; u++) if (occ.twice.has(u) && !first.has(u)) first.set(u, owner);
    }, false);
    for (const c of clashes) {
      const other = first.get(c.unit)!;
      const field = c.owner >= 0 ? `GTE[${c.owner}]` : `GDE[${-3 - c.owner}]`;
      findings.push({ kind: 'corruption', message: `${name(c.owner)} overlaps ${name(other)} (sector ${c.unit})`, struct: c.owner >= 0 ? 'grain table' : 'grain directory', field, offset: c.unit * SECTOR_SIZE });
    }
  }

  // freeSector: where ESXi puts the next table or grain. Below the end of what is in use, the
  // next allocation overwrites live data.
  if (h.freeSector < usedEnd) {
    findings.push({ kind: 'corruption', message: `freeSector ${h.freeSector} lies before the end of the grains and tables in use (sector ${usedEnd}): ESXi would allocate over them`, struct: 'CowdHeader', field: 'freeSector' });
  }
  // holes below freeSector that nothing uses (ESXi allocates at freeSector and never frees)
  let leaked = 0;
  const holesEnd = Math.min(h.freeSector, fileSectors);
  for (let s = f.metaEndSector; s < holesEnd; s++) if (!occ.taken(s)) leaked += SECTOR_SIZE;
  if (leaked > 0) findings.push({ kind: 'leak', message: `${leaked} bytes below freeSector are used by no grain or grain table`, struct: 'grain table' });
  if (h.uncleanShutdown !== 0) findings.push({ kind: 'warning', message: 'the extent was not closed cleanly (uncleanShutdown is set)', struct: 'CowdHeader', field: 'uncleanShutdown' });
  return { findings, leakedBytes: leaked };
}

function firstTwice(occ: Occupancy, start: number, n: number): number {
  for (let u = start; u < start + n; u++) if (occ.twice.has(u)) return u;
  return start;
}

/** Call `each(i, lo, hi)` for `count` directory entries of `wordsPer` u32 words from `at`. */
async function forExtraEntries(e: EsxSparseExtent, at: number, count: number, wordsPer: 1 | 2, each: (i: number, lo: number, hi: number) => void): Promise<void> {
  for (let i = 0; i < count; ) {
    const n = Math.min(count - i, GD_CHUNK_WORDS / wordsPer);
    const words = await readU32Array(e.store, at + i * wordsPer * 4, n * wordsPer);
    for (let k = 0; k < n; k++) each(i + k, words[k * wordsPer]!, wordsPer === 2 ? words[k * 2 + 1]! : 0);
    i += n;
  }
}

// ------------------------------------------------------------------ SESparse

/** a u64 sector field as a number; beyond 2^53 it cannot lie inside any file */
const sectors = (v: bigint) => (v > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(v));

const REGIONS = [
  ['volatileHeader', 'the volatile header'],
  ['journalHeader', 'the journal header'],
  ['journal', 'the journal'],
  ['grainDir', 'the grain directory'],
  ['grainTables', 'the grain-table area'],
  ['freeBitmap', 'the free bitmap'],
  ['backmap', 'the back map'],
  ['grains', 'the grain area'],
] as const;

async function checkSeSparse(e: EsxSparseExtent, f: SeSparseFacts): Promise<EsxCheckResult> {
  const findings = boundedFindings();
  const h = f.header;
  const where = { struct: 'SeSparseConstHeader' };
  const fileSectors = Math.floor(f.fileSize / SECTOR_SIZE);

  // the header's areas: inside the file and apart from each other (ESXi lays them out one after the other)
  if (h.volatileHeaderSize < 1n) findings.push({ kind: 'corruption', message: 'volatile header size is 0 sectors (it takes one)', ...where, field: 'volatileHeaderSize' });
  const areas = [{ key: 'constant', what: 'the constant header', start: 0, size: 1 }];
  for (const [key, what] of REGIONS) {
    const start = sectors(h[`${key}Offset`]);
    const size = sectors(h[`${key}Size`]);
    if (size === 0) continue;
    areas.push({ key, what, start, size });
    if (start + size <= fileSectors) continue;
    const field = start >= fileSectors ? `${key}Offset` : `${key}Size`;
    const message = `${what} (sectors ${start}+${size}) runs past the end of the file (${fileSectors} sectors)`;
    // the grain area may be declared before ESXi has grown the file to it: only grains that lie
    // past the end (reported below) are lost
    findings.push({ kind: key === 'grains' ? 'warning' : 'corruption', message, ...where, field });
  }
  for (let a = 0; a < areas.length; a++) {
    for (let b = a + 1; b < areas.length; b++) {
      const x = areas[a]!;
      const y = areas[b]!;
      if (x.start < y.start + y.size && y.start < x.start + x.size) {
        // the area that starts first runs into the other: its size, or the other's offset, is
        // wrong; name the size (the constant header has none: then the other's offset)
        const [first, second] = x.start <= y.start ? [x, y] : [y, x];
        const field = first.key === 'constant' ? `${second.key}Offset` : `${first.key}Size`;
        findings.push({ kind: 'corruption', message: `${x.what} (sectors ${x.start}+${x.size}) overlaps ${y.what} (sectors ${y.start}+${y.size})`, ...where, field });
      }
    }
  }
  if (h.grainTablesSize % BigInt(SESPARSE_GT_SECTORS) !== 0n) {
    findings.push({ kind: 'warning', message: `grain-table area size ${h.grainTablesSize} is not a whole number of ${SESPARSE_GT_SECTORS}-sector tables`, ...where, field: 'grainTablesSize' });
  }
  if (h.grainsSize % BigInt(SESPARSE_GRAIN_SECTORS) !== 0n) {
    findings.push({ kind: 'warning', message: `grain area size ${h.grainsSize} is not a whole number of ${SESPARSE_GRAIN_SECTORS}-sector grains`, ...where, field: 'grainsSize' });
  }

  // directory entries past what the capacity needs must be empty (when the directory is in the file)
  const gdAt = sectors(h.grainDirOffset) * SECTOR_SIZE;
  const gdEntries = sectors(h.grainDirSize) * (SECTOR_SIZE / 8);
  if (gdAt + gdEntries * 8 <= f.fileSize) {
    await forExtraEntries(e, gdAt + f.needed * 8, gdEntries - f.needed, 2, (i, lo, hi) => {
      if (lo !== 0 || hi !== 0) findings.push({ kind: 'corruption', message: `grain directory entry ${f.needed + i} lies beyond the capacity but is not empty`, struct: 'grain directory', field: `GDE[${f.needed + i}]`, offset: gdAt + (f.needed + i) * 8 });
    });
  }

  // the volatile header's count of tables in use (QEMU does not read it; ESXi allocates the
  // next table from it)
  const tables = e.tableOffsets;
  let inUse = 0;
  for (const at of tables) if (at !== 0) inUse++;
  const vWhere = { struct: 'SeSparseVolatileHeader', field: 'freeGtNumber' };
  if (f.volatile.freeGtNumber > BigInt(f.gtSlots)) {
    findings.push({ kind: 'corruption', message: `freeGtNumber ${f.volatile.freeGtNumber} is beyond the ${f.gtSlots} grain tables the grain-table area holds`, ...vWhere });
  } else if (BigInt(inUse) > f.volatile.freeGtNumber) {
    findings.push({ kind: 'warning', message: `${inUse} grain tables are in use but freeGtNumber is ${f.volatile.freeGtNumber}: ESXi may hand out a table in use`, ...vWhere });
  }

  // every grain table entry
  const grainBytes = SESPARSE_GRAIN_SECTORS * SECTOR_SIZE;
  const capacityGrains = ceilDiv(sectors(h.capacity), SESPARSE_GRAIN_SECTORS);
  const areaSlots = Math.floor(sectors(h.grainsSize) / SESPARSE_GRAIN_SECTORS);
  const fileSlots = Math.max(0, Math.floor((f.fileSize - f.grainsAt) / grainBytes));
  const hex = (lo: number, hi: number) => `0x${hi.toString(16).padStart(8, '0')}${lo.toString(16).padStart(8, '0')}`;
  const walk = async (visit: (slot: number, gi: number) => void, report: boolean) => {
    for (let g = 0; g < tables.length; g++) {
      if (tables[g] === 0) continue;
      const words = await readU32Array(e.store, tables[g]!, ENTRIES_PER_GT * 2);
      for (let i = 0; i < ENTRIES_PER_GT; i++) {
        const lo = words[2 * i]!;
        const hi = words[2 * i + 1]!;
        if (lo === 0 && hi === 0) continue;
        const gi = g * ENTRIES_PER_GT + i;
        const at = { struct: 'grain table', field: `GTE[${gi}]`, offset: tables[g]! + i * 8 };
        const bad = (message: string, kind: CheckFinding['kind'] = 'corruption') => {
          if (report) findings.push({ kind, message, ...at });
        };
        if (gi >= capacityGrains) {
          bad(`grain table entry ${gi} lies beyond the capacity (${capacityGrains} grains) but is not empty (${hex(lo, hi)}); no reader uses it`, 'warning');
          continue;
        }
        const type = hi >>> 28;
        if (type === 1 || type === 2) continue; // unmapped, zero
        if (type === 0) {
          bad(`unallocated grain table entry ${gi} has bits set (${hex(lo, hi)})`);
          continue;
        }
        if (type !== 3) {
          bad(`grain table entry ${gi} has an unknown type (${hex(lo, hi)}, top nibble ${type})`);
          continue;
        }
        const slot = seSparseGrainIndex(lo, hi);
        if (slot >= areaSlots) {
          bad(`grain ${gi} lies outside the grain area (grain index ${slot}, grainsSize holds ${areaSlots})`);
          continue;
        }
        if (slot >= fileSlots) {
          bad(`grain ${gi} does not fit in the file (grain index ${slot}, the file holds ${fileSlots} whole grains)`);
          continue;
        }
        visit(slot, gi);
      }
    }
  };
  const occ = new Occupancy(fileSlots);
  const clashes: { slot: number; gi: number }[] = [];
  await walk((slot, gi) => {
    if (occ.claim(slot, 1)) clashes.push({ slot, gi });
  }, true);
  if (clashes.length > 0) {
    const first = new Map<number, number>();
    await walk((slot, gi) => {
      if (occ.twice.has(slot) && !first.has(slot)) first.set(slot, gi);
    }, false);
    for (const c of clashes) {
      findings.push({ kind: 'corruption', message: `grains ${first.get(c.slot)} and ${c.gi} share grain index ${c.slot}`, struct: 'grain table', field: `GTE[${c.gi}]`, offset: f.grainsAt + c.slot * grainBytes });
    }
  }
  return { findings, leakedBytes: 0 };
}
