/**
 * A hosted sparse extent (KDMV): monolithicSparse files, the -sNNN files of split disks,
 * hosted deltas, and streamOptimized files (read-only). Layout and rules: NOTES.md §3-4.
 * This file is the data path (tables, reads, writes, block status); opening and validation
 * are in open.ts, growing in resize.ts, discard/compact/defragment in compact.ts, check and
 * repair in check.ts, each working on this object as a SparseState (map.ts).
 *
 * Write order (crash safety): the whole grain's data is written at the end of the file first;
 * only then are its grain-table entries written, to the primary GT and then to the redundant
 * GT. A crash in between leaks a grain but never exposes garbage, and every byte written by an
 * earlier, completed write stays reachable.
 */
import { appendExtent, appendMapped } from '../common/extents.js';
import { inflateSync } from '../../core/platform.js';
import { DiskError } from '../../core/errors.js';
import { SECTOR_SIZE, ceilDiv, roundUp, unitSpans } from '../../core/ints.js';
import type { ByteStore } from '../../storage/store.js';
import type { BlockState, CheckFinding, MappedExtent } from '../types.js';
import { FLAG_COMPRESSED, FLAG_MARKERS, FLAG_ZEROED_GTE, GRAIN_MARKER_HEAD, MarkerHead, SparseExtentHeader, type SparseExtentHeaderValue } from './structs.js';
import { ZEROS, planRead } from '../common/read-plan.js';
import { readU32Array, u32Bytes } from '../../binary/tables.js';
import type { SparseState } from './map.js';
import type { Overlap, SparseMap } from './overlap.js';
import { checkExtent } from './check.js';
import { compactExtent, dataGrainCount, defragmentExtent, discardExtent } from './compact.js';
import { growExtent } from './resize.js';

/** cached grain tables (a 512-entry GT is 2 KiB: 8192 of them cover 256 GiB in 16 MiB) */
const GT_CACHE_LIMIT = 8192;
const GRAIN_CACHE_LIMIT = 16;

export class SparseExtent implements SparseState {
  readonly header: SparseExtentHeaderValue;
  readonly path: string;
  readonly grainSectors: number;
  readonly grainBytes: number;
  readonly numGTEs: number;
  readonly capacityBytes: number;
  readonly compressed: boolean;
  readonly markers: boolean;
  readonly zeroedGrains: boolean;
  readonly version: number;
  readonly gd: Uint32Array;
  /** replaced when a repair rebuilds the redundant copy elsewhere */
  rgd: Uint32Array | undefined;
  readonly gtBytes: number;
  readonly gtCache = new Map<number, Uint32Array>();
  private readonly grainCache = new Map<number, Buffer>();
  fileSize: number;
  nextFree: number;
  readonly gdOffsetBytes: number;
  rgdOffsetBytes: number;
  readonly overHeadSectors: number;
  /** metadata pieces sharing sectors (found at open; a read-write open is refused unless for a check) */
  overlaps: Overlap[] = [];
  /** why this handle may not write (an open for check of an extent whose metadata overlaps) */
  refusal: DiskError | undefined;

  /** built by openSparseExtent (open.ts), which validates the header and directories first */
  constructor(
    readonly store: ByteStore,
    header: SparseExtentHeaderValue,
    fields: {
      grainSectors: number;
      numGTEs: number;
      capacitySectors: number;
      gd: Uint32Array;
      rgd?: Uint32Array;
      fileSize: number;
      gdOffsetBytes: number;
      rgdOffsetBytes: number;
    },
    readonly readOnly: boolean,
  ) {
    this.header = header;
    this.path = store.name;
    this.version = header.version;
    this.grainSectors = fields.grainSectors;
    this.grainBytes = fields.grainSectors * SECTOR_SIZE;
    this.numGTEs = fields.numGTEs;
    this.capacityBytes = fields.capacitySectors * SECTOR_SIZE;
    this.compressed = (header.flags & FLAG_COMPRESSED) !== 0;
    this.markers = (header.flags & FLAG_MARKERS) !== 0;
    this.zeroedGrains = (header.flags & FLAG_ZEROED_GTE) !== 0;
    this.gd = fields.gd;
    this.rgd = fields.rgd;
    this.gtBytes = roundUp(fields.numGTEs * 4, SECTOR_SIZE);
    this.fileSize = fields.fileSize;
    this.nextFree = roundUp(fields.fileSize, this.grainBytes);
    this.gdOffsetBytes = fields.gdOffsetBytes;
    this.rgdOffsetBytes = fields.rgdOffsetBytes;
    this.overHeadSectors = Number(header.overHead);
  }

  /** the extent's metadata layout, for the overlap rules */
  map(): SparseMap {
    return {
      path: this.path,
      fileSize: this.fileSize,
      overHead: this.overHeadSectors,
      descriptorOffset: Number(this.header.descriptorOffset),
      descriptorSize: Number(this.header.descriptorSize),
      gdOffset: this.gdOffsetBytes / SECTOR_SIZE,
      rgdOffset: this.rgdOffsetBytes / SECTOR_SIZE,
      gdSectors: ceilDiv(this.gd.length * 4, SECTOR_SIZE),
      gtSectors: this.gtBytes / SECTOR_SIZE,
      grainSectors: this.grainSectors,
      numGTEs: this.numGTEs,
      gd: this.gd,
      rgd: this.rgd,
    };
  }

  /** RDONLY, or the overlap that makes this handle (opened for a check) refuse writes */
  assertWritable(): void {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    if (this.refusal) throw this.refusal;
  }

  get uncleanShutdown(): boolean {
    return this.header.uncleanShutdown !== 0;
  }

  async readEmbeddedDescriptor(): Promise<string | undefined> {
    const off = Number(this.header.descriptorOffset);
    const size = Number(this.header.descriptorSize);
    if (off === 0 || size === 0) return undefined;
    const raw = await this.store.read(off * SECTOR_SIZE, size * SECTOR_SIZE);
    const nul = raw.indexOf(0);
    return raw.subarray(0, nul < 0 ? raw.length : nul).toString('utf8');
  }

  /** Rewrite the embedded descriptor in place; it must fit the reserved sectors. */
  async writeEmbeddedDescriptor(text: string): Promise<void> {
    this.assertWritable();
    const off = Number(this.header.descriptorOffset);
    const size = Number(this.header.descriptorSize);
    const bytes = Buffer.from(text, 'utf8');
    if (off === 0 || bytes.length > size * SECTOR_SIZE) {
      throw new DiskError('NOSPACE', 'descriptor does not fit the space reserved for it in the sparse file', { path: this.path, field: 'descriptorSize', expected: `<= ${size * SECTOR_SIZE} bytes`, found: bytes.length });
    }
    const buf = Buffer.alloc(size * SECTOR_SIZE);
    bytes.copy(buf);
    await this.store.write(off * SECTOR_SIZE, buf);
  }

  async setUncleanShutdown(unclean: boolean): Promise<void> {
    await this.store.write(SparseExtentHeader.offsetOf('uncleanShutdown'), Buffer.from([unclean ? 1 : 0]));
  }

  // ---------------------------------------------------------------- tables

  async gt(gdIndex: number): Promise<Uint32Array | undefined> {
    const cached = this.gtCache.get(gdIndex);
    if (cached !== undefined) return cached;
    const gde = this.gd[gdIndex]!;
    if (gde === 0) return undefined;
    const at = gde * SECTOR_SIZE;
    if (at + this.numGTEs * 4 > this.fileSize) {
      throw new DiskError('CORRUPT', 'grain table lies past the end of the file', { path: this.path, struct: 'grain directory', field: `GDE[${gdIndex}]`, expected: `< ${this.fileSize} bytes`, found: at });
    }
    const table = await readU32Array(this.store, at, this.numGTEs);
    if (this.gtCache.size >= GT_CACHE_LIMIT) this.gtCache.delete(this.gtCache.keys().next().value!);
    this.gtCache.set(gdIndex, table);
    return table;
  }

  /**
   * Load the grain tables of directory entries from..to that sit back to back in the file with
   * one read per run (at most 1 MiB), instead of one read per table. Returns the last entry
   * handled, so a scan over a whole disk costs a few large reads.
   */
  private async prefetchTables(from: number, to: number): Promise<number> {
    const maxRun = Math.max(1, Math.floor((1024 * 1024) / this.gtBytes));
    const limit = Math.min(to, from + GT_CACHE_LIMIT / 2 - 1);
    let g = from;
    while (g <= limit) {
      const first = this.gd[g]!;
      if (first === 0 || this.gtCache.has(g)) {
        g++;
        continue;
      }
      const step = this.gtBytes / SECTOR_SIZE;
      let n = 1;
      while (g + n <= limit && n < maxRun && this.gd[g + n] === first + n * step && !this.gtCache.has(g + n)) n++;
      const at = first * SECTOR_SIZE;
      if (at + n * this.gtBytes > this.fileSize) return g - 1; // let gt() report the bad entry
      const all = await readU32Array(this.store, at, (n * this.gtBytes) / 4);
      for (let i = 0; i < n; i++) {
        if (this.gtCache.size >= GT_CACHE_LIMIT) this.gtCache.delete(this.gtCache.keys().next().value!);
        this.gtCache.set(g + i, all.subarray((i * this.gtBytes) / 4, (i * this.gtBytes) / 4 + this.numGTEs));
      }
      g += n;
    }
    return limit;
  }

  /** The grain table entry of grain `gi` (0 where there is no grain table). */
  async gte(gi: number): Promise<number> {
    const g = Math.floor(gi / this.numGTEs);
    const table = this.gtCache.get(g) ?? (await this.gt(g));
    if (table === undefined) return 0;
    return this.checkedEntry(gi, table[gi - g * this.numGTEs]!);
  }

  checkedEntry(gi: number, e: number): number {
    if (e > 1 && (e < this.overHeadSectors || (!this.compressed && e * SECTOR_SIZE >= this.fileSize))) {
      // Grains live between the metadata area and the end of the file; anything else would
      // make a write land on the header, descriptor or tables.
      const past = e * SECTOR_SIZE >= this.fileSize;
      throw new DiskError('CORRUPT', past ? 'grain lies past the end of the file' : 'grain table entry points into the metadata area', {
        path: this.path,
        struct: 'grain table',
        field: `GTE[${gi}]`,
        expected: `sector ${this.overHeadSectors} .. ${Math.ceil(this.fileSize / SECTOR_SIZE) - 1}`,
        found: e,
      });
    }
    return e;
  }

  private stateOf(e: number): BlockState {
    return e === 0 ? 'unallocated' : e === 1 ? 'zero' : 'data';
  }

  // ---------------------------------------------------------------- I/O

  /** Read `into.length` bytes at byte `offset` of this extent. Unallocated grains read as zeros. */
  read(into: Buffer, offset: number): Promise<void> {
    if (this.compressed) return this.readCompressed(into, offset);
    const per = this.numGTEs;
    const grainAt = (gi: number, e: number) => (this.checkedEntry(gi, e) <= 1 ? ZEROS : e * SECTOR_SIZE);
    return planRead(into, offset, {
      unit: this.grainBytes,
      locate: (gi) => {
        const g = Math.floor(gi / per);
        // a cached table (or none at all) answers at once; a table to load costs one await
        const table = this.gtCache.get(g);
        if (table) return grainAt(gi, table[gi - g * per]!);
        if (this.gd[g] === 0) return ZEROS;
        return this.gt(g).then((t) => grainAt(gi, t![gi - g * per]!));
      },
      readFile: (part, at) => this.readFile(part, at),
    });
  }

  /** streamOptimized: every allocated grain is inflated on its own (nothing to coalesce) */
  private async readCompressed(into: Buffer, offset: number): Promise<void> {
    const gb = this.grainBytes;
    for (let pos = 0; pos < into.length; ) {
      const gi = Math.floor((offset + pos) / gb);
      const within = offset + pos - gi * gb;
      const n = Math.min(gb - within, into.length - pos);
      const e = await this.gte(gi);
      if (e <= 1) into.fill(0, pos, pos + n);
      else (await this.compressedGrain(gi, e)).copy(into, pos, within, within + n);
      pos += n;
    }
  }

  async readFile(into: Buffer, at: number): Promise<void> {
    if (at + into.length <= this.fileSize) return this.store.readInto(into, at);
    // a last grain cut short by a truncated file reads as zeros past the end (as QEMU does)
    const buf = await this.store.readZeroPadded(at, into.length);
    buf.copy(into);
  }

  private async compressedGrain(gi: number, e: number): Promise<Buffer> {
    const hit = this.grainCache.get(gi);
    if (hit) return hit;
    const at = e * SECTOR_SIZE;
    const where = { path: this.path, struct: 'grain marker', field: `GTE[${gi}]` };
    if (at >= this.fileSize) throw new DiskError('CORRUPT', 'compressed grain lies past the end of the file', { ...where, found: at, expected: `< ${this.fileSize}` });
    const maxCompressed = 2 * this.grainBytes;
    let data: Buffer;
    if (this.markers) {
      const head = await this.store.readZeroPadded(at, MarkerHead.size);
      const { val: lba, size } = MarkerHead.decode(head, 0, this.path);
      const expected = BigInt(gi) * BigInt(this.grainSectors);
      if (lba !== expected) throw new DiskError('CORRUPT', 'grain marker names another grain', { ...where, field: 'lba', expected, found: lba });
      if (size === 0 || size > maxCompressed - GRAIN_MARKER_HEAD || at + GRAIN_MARKER_HEAD + size > this.fileSize) {
        throw new DiskError('CORRUPT', 'bad compressed grain size', { ...where, field: 'size', expected: `1..${Math.min(maxCompressed - GRAIN_MARKER_HEAD, this.fileSize - at - GRAIN_MARKER_HEAD)}`, found: size });
      }
      data = await this.store.read(at + GRAIN_MARKER_HEAD, size);
    } else {
      data = await this.store.read(at, Math.min(maxCompressed, this.fileSize - at));
    }
    let out: Buffer;
    try {
      out = inflateSync(data, { maxOutputLength: this.grainBytes, finishFlush: 2 /* Z_SYNC_FLUSH: tolerate trailing bytes */ });
    } catch (err) {
      throw new DiskError('ZLIB', 'cannot inflate compressed grain', { ...where, field: 'data' }, { cause: err });
    }
    let grain = out;
    if (out.length < this.grainBytes) {
      grain = Buffer.alloc(this.grainBytes);
      out.copy(grain);
    }
    if (this.grainCache.size >= GRAIN_CACHE_LIMIT) this.grainCache.delete(this.grainCache.keys().next().value!);
    this.grainCache.set(gi, grain);
    return grain;
  }

  /**
   * Write `data` at byte `offset` of this extent. Grains not yet allocated are allocated
   * whole at the end of the file, the rest of each new grain zero-filled.
   */
  async write(data: Buffer, offset: number): Promise<void> {
    this.assertWritable();
    const gb = this.grainBytes;
    const direct: Promise<void>[] = [];
    const fresh: { gi: number; buf: Buffer }[] = [];
    for (const { index: gi, within, pos, n } of unitSpans(offset, data.length, gb)) {
      const e = await this.gte(gi);
      const chunk = data.subarray(pos, pos + n);
      if (e > 1) {
        direct.push(this.store.write(e * SECTOR_SIZE + within, chunk));
      } else if (n === gb) {
        fresh.push({ gi, buf: chunk });
      } else {
        const buf = Buffer.alloc(gb);
        chunk.copy(buf, within);
        fresh.push({ gi, buf });
      }
    }
    await Promise.all(direct);
    if (fresh.length === 0) return;

    // Grain tables missing from the directory are created first (VMware does; QEMU cannot).
    for (const f of fresh) {
      const g = Math.floor(f.gi / this.numGTEs);
      if (this.gd[g] === 0) await this.allocateGrainTable(g);
    }
    // Data first, in one vectored write of consecutive grains...
    const start = this.nextFree;
    if ((start + fresh.length * gb) / SECTOR_SIZE > 0xffffffff) {
      throw new DiskError('NOSPACE', 'sparse extent is full: grains cannot lie beyond sector 2^32', { path: this.path });
    }
    await this.store.writev(start, fresh.map((f) => f.buf));
    this.nextFree = start + fresh.length * gb;
    this.fileSize = Math.max(this.fileSize, this.nextFree);
    // ...made durable (a power cut keeps any subset of the writes since the last flush: an
    // entry that lands without its grain names bytes past the end of the file or never
    // written; found by the crash explorer, test/crash/)...
    await this.store.flush();
    // ...then the table entries that point at it.
    const entries = fresh.map((f, i) => ({ gi: f.gi, value: (start + i * gb) / SECTOR_SIZE }));
    await this.setEntries(entries);
  }

  /**
   * Set grain table entries, writing each touched span to the GT and then the redundant GT.
   * `redundantFirst` is for entries that free a grain (0, or 1 for a zero grain): written to the
   * copy first, a kill in between leaves a copy that merely lags the primary, which still maps
   * the intact old grain (check calls that a warning, not corruption).
   */
  async setEntries(entries: { gi: number; value: number }[], redundantFirst = false): Promise<void> {
    // the tables are held here: a large batch may push them out of the cache meanwhile
    const byTable = new Map<number, { lo: number; hi: number; table: Uint32Array }>();
    for (const { gi, value } of entries) {
      const g = Math.floor(gi / this.numGTEs);
      const table = byTable.get(g)?.table ?? (await this.gt(g))!;
      const idx = gi - g * this.numGTEs;
      table[idx] = value;
      const span = byTable.get(g);
      if (span) {
        span.lo = Math.min(span.lo, idx);
        span.hi = Math.max(span.hi, idx);
      } else byTable.set(g, { lo: idx, hi: idx, table });
    }
    const writePrimary = async () => {
      const primary: Promise<void>[] = [];
      for (const [g, { lo, hi, table }] of byTable) {
        primary.push(this.store.write(this.gd[g]! * SECTOR_SIZE + lo * 4, u32Bytes(table, lo, hi + 1)));
      }
      await Promise.all(primary);
    };
    const writeRedundant = async () => {
      if (!this.rgd) return;
      const redundant: Promise<void>[] = [];
      for (const [g, { lo, hi, table }] of byTable) {
        const r = this.rgd![g]!;
        if (r === 0) continue;
        redundant.push(this.store.write(r * SECTOR_SIZE + lo * 4, u32Bytes(table, lo, hi + 1)));
      }
      await Promise.all(redundant);
    };
    try {
      if (redundantFirst && this.rgd) {
        await writeRedundant();
        await this.store.flush();
        await writePrimary();
      } else {
        // the primary durable before the copy: a power cut then leaves a copy that lags the
        // primary (a warning, repaired from the primary), never one ahead of it (a corruption,
        // since which table is right is unknown)
        await writePrimary();
        if (this.rgd) await this.store.flush();
        await writeRedundant();
      }
    } catch (err) {
      // the cached tables hold entries the file may not: read them from the file again, so
      // this handle goes on from what is on the disk (an I/O error, a full disk)
      for (const g of byTable.keys()) this.gtCache.delete(g);
      throw err;
    }
  }

  /** Give directory entry `g` a new, empty grain table (and redundant copy) at the end of the file. */
  private async allocateGrainTable(g: number): Promise<void> {
    const copies = this.rgd ? 2 : 1;
    const start = this.nextFree;
    const zero = Buffer.alloc(this.gtBytes * copies);
    await this.store.write(start, zero);
    this.nextFree = roundUp(start + zero.length, this.grainBytes);
    this.fileSize = Math.max(this.fileSize, start + zero.length);
    // the empty tables durable before a directory entry names them
    await this.store.flush();
    const gtSector = start / SECTOR_SIZE;
    this.gd[g] = gtSector;
    await this.store.write(this.gdOffsetBytes + g * 4, u32Bytes(this.gd, g, g + 1));
    if (this.rgd) {
      this.rgd[g] = gtSector + this.gtBytes / SECTOR_SIZE;
      await this.store.write(this.rgdOffsetBytes + g * 4, u32Bytes(this.rgd, g, g + 1));
    }
    this.gtCache.set(g, new Uint32Array(this.numGTEs));
  }

  /**
   * Block status of [offset, offset+length) within this extent, adjacent equal states merged;
   * `mapped`: with the file offset of each grain stored uncompressed (mapStatus), ranges
   * merging only where the grains follow each other in the file.
   */
  async status(offset: number, length: number, mapped = false): Promise<MappedExtent[]> {
    const out: MappedExtent[] = [];
    const gb = this.grainBytes;
    const coverage = gb * this.numGTEs;
    const end = offset + length;
    const push = (at: number, n: number, state: BlockState, grain = 0) => {
      if (!mapped) appendExtent(out, at, n, state);
      else if (state === 'data' && !this.compressed) appendMapped(out, at, n, state, this.path, grain * SECTOR_SIZE + (at % gb));
      else appendMapped(out, at, n, state);
    };
    let pos = offset;
    let prefetchedTo = -1;
    while (pos < end) {
      // one grain-table range per step; its entries are scanned without awaiting
      const g = Math.floor(pos / coverage);
      const rangeEnd = Math.min((g + 1) * coverage, end);
      if (g > prefetchedTo && end - pos > coverage) prefetchedTo = await this.prefetchTables(g, Math.floor((end - 1) / coverage));
      const table = this.gd[g] === 0 ? undefined : (this.gtCache.get(g) ?? (await this.gt(g)));
      if (table === undefined) {
        push(pos, rangeEnd - pos, 'unallocated');
        pos = rangeEnd;
        continue;
      }
      const base = g * this.numGTEs;
      while (pos < rangeEnd) {
        const gi = Math.floor(pos / gb);
        const n = Math.min((gi + 1) * gb, rangeEnd) - pos;
        const e = this.checkedEntry(gi, table[gi - base]!);
        push(pos, n, this.stateOf(e), e);
        pos += n;
      }
    }
    return out;
  }

  /**
   * Drop every grain: zero each grain table (primary, then redundant) and cut the file back to
   * the metadata area. Stopped half-way, some grains are merely unreferenced (leaked until the
   * truncate), never half-referenced.
   */
  async clear(): Promise<void> {
    this.assertWritable();
    const zero = Buffer.alloc(this.gtBytes);
    for (const dir of [this.gd, this.rgd]) {
      if (!dir) continue;
      for (let g = 0; g < dir.length; g++) if (dir[g] !== 0) await this.store.write(dir[g]! * SECTOR_SIZE, zero);
    }
    this.gtCache.clear();
    this.grainCache.clear();
    // keep any grain tables that were allocated after overHead (foreign files with GDE 0)
    let end = this.overHeadSectors * SECTOR_SIZE;
    for (const dir of [this.gd, this.rgd]) if (dir) for (const e of dir) if (e !== 0) end = Math.max(end, e * SECTOR_SIZE + this.gtBytes);
    end = roundUp(end, SECTOR_SIZE);
    await this.store.flush();
    await this.store.truncate(end);
    this.fileSize = end;
    this.nextFree = roundUp(end, this.grainBytes);
  }

  // ------------------------------------------------- discard, compact, defragment (NOTES.md)

  /** a grain that must read zeros over a parent can be marked GTE 1 (version 2 + flag bit 2) */
  get hasZeroMarker(): boolean {
    return this.zeroedGrains && this.version >= 2;
  }

  async flush(): Promise<void> {
    await this.store.flush();
  }

  // ------------------------------------------------- maintenance (resize.ts, compact.ts, check.ts)

  growTo(capacitySectors: number): Promise<void> {
    return growExtent.call(this, capacitySectors);
  }

  discard(offset: number, length: number, opts: { hasParent: boolean; limit: number }): Promise<void> {
    return discardExtent.call(this, offset, length, opts);
  }

  dataGrainCount(): Promise<number> {
    return dataGrainCount.call(this);
  }

  /** resolves to the grains moved */
  compact(opts: { hasParent: boolean; signal?: AbortSignal; onGrain?: () => void }): Promise<number> {
    return compactExtent.call(this, opts);
  }

  /** resolves to the grains moved */
  defragment(opts: { signal?: AbortSignal; onGrain?: () => void }): Promise<number> {
    return defragmentExtent.call(this, opts);
  }

  check(repair: boolean, dryRun = false): Promise<{ findings: CheckFinding[]; leakedBytes: number }> {
    return checkExtent.call(this, repair, dryRun);
  }

}

