/**
 * Writing COWD (ESX sparse, "vmfsSparse") extents, as ESX and QEMU's early VMDK3 driver did
 * (NOTES.md "COWD writes"): a grain not yet in the file is placed at the next free sector, with its
 * grain table placed there first when the directory has none for it, and the header's freeSector
 * moves past them. Grains follow at any sector (COWD needs no alignment), tables are 32 sectors of
 * 4096 u32 entries, and there is no redundant copy and no zero-grain value.
 *
 * Crash-safe order, one batch per write request:
 *   1. uncleanShutdown = 1 in the header (once a session, flushed) before the first change;
 *   2. the new zeroed tables and the new grains (whole, zero-padded) in one write at the next free
 *      sector; fdatasync (the file is that long before freeSector says so);
 *   3. freeSector moved past them (header sector 0 only); fdatasync (it covers them before an
 *      entry names them);
 *   4. the directory entries of the new tables, then the table entries of the new grains.
 * A power cut before 4 leaks the space below freeSector (check: a leak, ESXi reuses nothing
 * either); no entry ever names bytes that are not durable or lie above freeSector. Close flushes and sets uncleanShutdown = 0.
 *
 * A read-write open reads every table once (prepare): overlapping pieces are refused (NEEDSREPAIR),
 * and allocation starts after the header, the directory, every table and every grain they name,
 * or at freeSector when that is later: a freeSector that lags the file (a crash of another
 * writer) must not place a grain over one in use.
 */
import { DiskError } from '../../core/errors.js';
import { SECTOR_SIZE, unitSpans } from '../../core/ints.js';
import { u32Bytes } from '../../binary/tables.js';
import type { StructValue } from '../../binary/struct.js';
import type { ByteStore } from '../../storage/store.js';
import { COWD_GTES_PER_GT, COWD_HEADER_BYTES, CowdHeader } from './structs.js';

/** what the writer shares with the extent it writes for (esx-sparse.ts) */
export interface CowdTarget {
  readonly store: ByteStore;
  readonly path: string;
  readonly header: StructValue<typeof CowdHeader.fields>;
  /** directory entries the capacity needs (GT sectors, 0 = none); updated as tables are added */
  readonly gd: Uint32Array;
  /** byte offset of each directory entry's table (0 = none): the reader's copy of `gd` */
  readonly tables: Float64Array;
  /** first sector after the header and the whole directory */
  readonly metaEndSector: number;
  readonly grainSectors: number;
  /** the file length the reader checks entries against; raised as grains are added */
  readonly bounds: { fileSize: number };
  /** a table's entries, from the extent's cache or the file; undefined when the directory has none */
  table(g: number): Promise<Uint32Array | undefined>;
  /** put a table's entries in the extent's cache */
  cache(g: number, words: Uint32Array): void;
  /** the file offset of grain `gi` from entry `i` of its table, validated (CORRUPT when bad); < 0 unallocated */
  locate(words: Uint32Array, i: number, gi: number): number;
}

const GT_SECTORS = (COWD_GTES_PER_GT * 4) / SECTOR_SIZE;
/** entries and freeSector are u32 sectors */
const MAX_SECTOR = 0xffffffff;

export class CowdWriter {
  private nextFree = -1;
  private unclean = false;

  constructor(private readonly t: CowdTarget) {}

  async write(data: Buffer, offset: number): Promise<void> {
    const t = this.t;
    const gb = t.grainSectors * SECTOR_SIZE;
    await this.setUnclean(true);
    const direct: Promise<void>[] = [];
    const fresh: { gi: number; buf: Buffer }[] = [];
    for (const { index: gi, within, pos, n } of unitSpans(offset, data.length, gb)) {
      const g = Math.floor(gi / COWD_GTES_PER_GT);
      const words = await t.table(g);
      const at = words ? t.locate(words, gi - g * COWD_GTES_PER_GT, gi) : -1;
      const chunk = data.subarray(pos, pos + n);
      if (at >= 0) direct.push(t.store.write(at + within, chunk));
      else if (n === gb) fresh.push({ gi, buf: chunk });
      else {
        const buf = Buffer.alloc(gb);
        chunk.copy(buf, within);
        fresh.push({ gi, buf });
      }
    }
    await Promise.all(direct);
    if (fresh.length === 0) return;

    if (this.nextFree < 0) await this.prepare();
    const start = this.nextFree;
    const newTables = [...new Set(fresh.map((f) => Math.floor(f.gi / COWD_GTES_PER_GT)))].filter((g) => t.gd[g] === 0);
    const tableSector = new Map(newTables.map((g, k) => [g, start + k * GT_SECTORS]));
    const grainStart = start + newTables.length * GT_SECTORS;
    const end = grainStart + fresh.length * t.grainSectors;
    if (end > MAX_SECTOR) throw new DiskError('NOSPACE', 'COWD extent is full: grains cannot lie beyond sector 2^32', { path: t.path, field: 'freeSector' });
    const bufs = [...newTables.map(() => Buffer.alloc(GT_SECTORS * SECTOR_SIZE)), ...fresh.map((f) => f.buf)];
    await t.store.writev(start * SECTOR_SIZE, bufs);
    this.nextFree = end;
    t.bounds.fileSize = Math.max(t.bounds.fileSize, end * SECTOR_SIZE);
    // the file holds the new sectors before freeSector names them (a freeSector past the end of
    // the file is a truncated file to every reader), and freeSector covers them before an entry
    // names them (an entry above freeSector is a grain ESX would allocate over): two barriers,
    // found by the crash-state test (test/conformance/cowd-crash-states.test.ts)
    await t.store.flush();
    await this.writeHeaderField('freeSector', end);
    await t.store.flush();

    for (const [g, sector] of tableSector) {
      await t.store.write(t.header.gdOffset * SECTOR_SIZE + g * 4, u32Bytes(Uint32Array.of(sector), 0, 1));
      t.gd[g] = sector;
      t.tables[g] = sector * SECTOR_SIZE;
      t.cache(g, new Uint32Array(COWD_GTES_PER_GT));
    }
    const spans = new Map<number, { lo: number; hi: number; words: Uint32Array }>();
    for (let k = 0; k < fresh.length; k++) {
      const gi = fresh[k]!.gi;
      const g = Math.floor(gi / COWD_GTES_PER_GT);
      const i = gi - g * COWD_GTES_PER_GT;
      const words = spans.get(g)?.words ?? (await t.table(g))!;
      words[i] = grainStart + k * t.grainSectors;
      const s = spans.get(g);
      if (s) {
        s.lo = Math.min(s.lo, i);
        s.hi = Math.max(s.hi, i);
      } else spans.set(g, { lo: i, hi: i, words });
    }
    await Promise.all([...spans].map(([g, { lo, hi, words }]) => t.store.write(t.gd[g]! * SECTOR_SIZE + lo * 4, u32Bytes(words, lo, hi + 1))));
  }

  /** end of a session: data durable, then uncleanShutdown = 0 (only if this session set it) */
  async close(): Promise<void> {
    if (!this.unclean) return;
    await this.t.store.flush();
    await this.setUnclean(false);
  }

  private async setUnclean(on: boolean): Promise<void> {
    if (this.unclean === on) return;
    await this.writeHeaderField('uncleanShutdown', on ? 1 : 0);
    await this.t.store.flush();
    this.unclean = on;
  }

  /** one header field changed, written as the one sector that holds it */
  private async writeHeaderField(field: 'freeSector' | 'uncleanShutdown', value: number): Promise<void> {
    const t = this.t;
    t.header[field] = value;
    const bytes = CowdHeader.encode(t.header, Buffer.alloc(COWD_HEADER_BYTES));
    const sector = Math.floor(CowdHeader.offsetOf(field) / SECTOR_SIZE) * SECTOR_SIZE;
    await t.store.write(sector, bytes.subarray(sector, sector + SECTOR_SIZE));
  }

  /**
   * Before a read-write session: every table is read once; pieces that overlap (two grains, a
   * grain and a table, a grain over the header or directory) are refused with NEEDSREPAIR, since
   * a write to one would change the other (found by the fuzzer: a grainSize changed from 1 to 5
   * made every grain run over the next). Also sets where allocation starts: after the header, the
   * directory, every table and every grain, or at freeSector when that is later.
   */
  async prepare(): Promise<void> {
    const t = this.t;
    const gs = t.grainSectors;
    let end = Math.max(t.metaEndSector, t.header.freeSector);
    // entries past the end of the file are damage the reads and check report, not space in use
    const fileSectors = Math.ceil(t.bounds.fileSize / SECTOR_SIZE);
    let starts = new Uint32Array(1024);
    let count = 0;
    const where = (g: number, i: number) => ({ path: t.path, struct: 'grain table', field: `GTE[${g * COWD_GTES_PER_GT + i}]` });
    for (let g = 0; g < t.gd.length; g++) {
      if (t.gd[g] === 0) continue;
      end = Math.max(end, t.gd[g]! + GT_SECTORS);
      const words = (await t.table(g))!;
      for (let i = 0; i < words.length; i++) {
        const e = words[i]!;
        if (e === 0 || e >= fileSectors) continue;
        if (e < t.metaEndSector) throw new DiskError('NEEDSREPAIR', 'a grain lies over the header or grain directory: writing would damage them', { ...where(g, i), found: e });
        end = Math.max(end, e + gs);
        if (count < MAX_OVERLAP_GRAINS) {
          if (count === starts.length) {
            const grown = new Uint32Array(Math.min(starts.length * 2, MAX_OVERLAP_GRAINS));
            grown.set(starts);
            starts = grown;
          }
          starts[count++] = e;
        }
      }
    }
    const sorted = starts.subarray(0, count).sort();
    for (let k = 1; k < sorted.length; k++) {
      if (sorted[k]! - sorted[k - 1]! < gs) {
        throw new DiskError('NEEDSREPAIR', `two grains share sectors (${sorted[k - 1]} and ${sorted[k]}, ${gs} sectors each): a write to one would change the other`, { path: t.path, struct: 'grain table', field: 'GTE', found: sorted[k] });
      }
    }
    // a table over a grain: the first grain starting before the table's end must end before its start
    for (let g = 0; g < t.gd.length; g++) {
      const at = t.gd[g]!;
      if (at === 0) continue;
      let lo = 0;
      let hi = sorted.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (sorted[mid]! < at + GT_SECTORS) lo = mid + 1;
        else hi = mid;
      }
      if (lo > 0 && sorted[lo - 1]! + gs > at) {
        throw new DiskError('NEEDSREPAIR', `grain table ${g} (sector ${at}) and a grain (sector ${sorted[lo - 1]}) share sectors`, { path: t.path, struct: 'grain directory', field: `GDE[${g}]`, found: at });
      }
    }
    this.nextFree = end;
  }
}

/** grains whose overlaps the read-write open checks (128 MiB of starts); beyond, only allocation is kept apart */
const MAX_OVERLAP_GRAINS = 32 * 1024 * 1024;
