/**
 * A hosted sparse extent (KDMV): monolithicSparse files, the -sNNN files of split disks,
 * hosted deltas, and streamOptimized files (read-only). Layout and rules: NOTES.md §3-4.
 *
 * Write order (crash safety): the whole grain's data is written at the end of the file first;
 * only then are its grain-table entries written, to the primary GT and then to the redundant
 * GT. A crash in between leaks a grain but never exposes garbage, and every byte written by an
 * earlier, completed write stays reachable.
 */
import { inflateSync } from '../../core/platform.js';
import { DiskError } from '../../core/errors.js';
import { SECTOR_SIZE, ceilDiv, isPowerOfTwo, roundUp, toSafeNumber } from '../../core/ints.js';
import type { ByteStore } from '../../storage/store.js';
import type { BlockExtent, BlockState, CheckFinding } from '../types.js';
import {
  COMPRESSION_DEFLATE,
  COMPRESSION_NONE,
  FLAG_COMPRESSED,
  FLAG_MARKERS,
  FLAG_REDUNDANT_GD,
  FLAG_VALID_NEWLINE,
  FLAG_ZEROED_GTE,
  GD_AT_END,
  GRAIN_MARKER_HEAD,
  KNOWN_FLAGS,
  MARKER_EOS,
  MARKER_FOOTER,
  MarkerHead,
  SparseExtentHeader,
  type SparseExtentHeaderValue,
} from './structs.js';
import { isZero } from '../../binary/zeros.js';
import { ZEROS, planRead } from '../common/read-plan.js';
import { MAX_GD_ENTRIES, MAX_GRAIN_SECTORS, checkDirectory, readU32Array, u32Bytes } from './layout.js';
import { entryError, isRedundant, metadataOverlaps, overlapError, overlapMessage, scanGrainEntries, type EntryProblem, type Overlap, type SparseMap } from './overlap.js';

/** 1 MiB, the size a descriptor may have at all (MAX_DESCRIPTOR_BYTES, QEMU's bound) */
const MAX_DESCRIPTOR_SECTORS = 2048;
/** cached grain tables (a 512-entry GT is 2 KiB: 8192 of them cover 256 GiB in 16 MiB) */
const GT_CACHE_LIMIT = 8192;
const GRAIN_CACHE_LIMIT = 16;

export interface SparseOpenOptions {
  readOnly: boolean;
  /**
   * opened for check / repair: metadata that overlaps itself is recorded for the check
   * instead of refusing a read-write open, and every write other than a repair is refused
   */
  forCheck?: boolean;
}

export class SparseExtent {
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
  private readonly gd: Uint32Array;
  /** replaced when a repair rebuilds the redundant copy elsewhere */
  private rgd: Uint32Array | undefined;
  private readonly gtBytes: number;
  private readonly gtCache = new Map<number, Uint32Array>();
  private readonly grainCache = new Map<number, Buffer>();
  private fileSize: number;
  private nextFree: number;
  private readonly gdOffsetBytes: number;
  private rgdOffsetBytes: number;
  private readonly overHeadSectors: number;
  /** metadata pieces sharing sectors (found at open; a read-write open is refused unless for a check) */
  overlaps: Overlap[] = [];
  /** why this handle may not write (an open for check of an extent whose metadata overlaps) */
  private refusal: DiskError | undefined;

  private constructor(
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

  static async open(store: ByteStore, opts: SparseOpenOptions): Promise<SparseExtent> {
    const path = store.name;
    const fileSize = await store.size();
    if (fileSize < SECTOR_SIZE) {
      throw new DiskError('INVALIDDISK', 'file is too short for a sparse extent header', { path, struct: 'SparseExtentHeader', expected: '>= 512 bytes', found: fileSize });
    }
    const head = await store.read(0, SECTOR_SIZE);
    let header = SparseExtentHeader.decode(head, 0, path);
    const bad = (field: string, message: string, expected: unknown, found: unknown, code: 'CORRUPT' | 'UNSUPPORTEDDISKVERSION' | 'UNSUPPORTEDFEATURE' | 'CMPUNSUP' = 'CORRUPT') =>
      new DiskError(code, message, { path, struct: 'SparseExtentHeader', field, expected, found });

    if (header.version < 1 || header.version > 3) {
      throw bad('version', 'unsupported sparse extent version', '1, 2 or 3', header.version, 'UNSUPPORTEDDISKVERSION');
    }
    const unknown = header.flags & ~KNOWN_FLAGS;
    if (unknown & 0xffff0000) throw bad('flags', 'unknown incompatible flags', `bits of 0x${KNOWN_FLAGS.toString(16)}`, `0x${header.flags.toString(16)}`, 'UNSUPPORTEDFEATURE');
    if (header.flags & FLAG_MARKERS && !(header.flags & FLAG_COMPRESSED)) {
      throw bad('flags', 'markers without compression', 'compressed flag with markers', `0x${header.flags.toString(16)}`);
    }
    if (header.flags & FLAG_VALID_NEWLINE) {
      const ok = header.singleEndLineChar === 0x0a && header.nonEndLineChar === 0x20 && header.doubleEndLineChar1 === 0x0d && header.doubleEndLineChar2 === 0x0a;
      if (!ok) throw bad('singleEndLineChar', 'newline check bytes are damaged (file transferred in text mode?)', '0a 20 0d 0a', [header.singleEndLineChar, header.nonEndLineChar, header.doubleEndLineChar1, header.doubleEndLineChar2].map((b) => b.toString(16).padStart(2, '0')).join(' '));
    }
    if (header.compressAlgorithm !== COMPRESSION_NONE && header.compressAlgorithm !== COMPRESSION_DEFLATE) {
      throw bad('compressAlgorithm', 'unsupported compression algorithm', '0 or 1', header.compressAlgorithm, 'CMPUNSUP');
    }
    if (header.flags & FLAG_COMPRESSED && header.compressAlgorithm !== COMPRESSION_DEFLATE) {
      throw bad('compressAlgorithm', 'compressed flag set without deflate', 1, header.compressAlgorithm, 'CMPUNSUP');
    }

    // A stream with its grain directory at the end: the footer (last-but-one sector) holds the real header.
    if (header.gdOffset === GD_AT_END) {
      if (!(header.flags & FLAG_MARKERS)) throw bad('gdOffset', 'grain directory at end of file without markers', 'a sector number', 'GD_AT_END');
      if (fileSize % SECTOR_SIZE !== 0 || fileSize < 4 * SECTOR_SIZE) throw bad('footer', 'stream file length is not whole sectors', 'a multiple of 512', fileSize);
      const tail = await store.read(fileSize - 3 * SECTOR_SIZE, 3 * SECTOR_SIZE);
      const footerMarker = MarkerHead.decode(tail, 0, path);
      const eos = MarkerHead.decode(tail, 2 * SECTOR_SIZE, path);
      if (footerMarker.size !== 0 || footerMarker.type !== MARKER_FOOTER || eos.val !== 0n || eos.size !== 0 || eos.type !== MARKER_EOS) {
        throw bad('footer', 'invalid stream footer or end-of-stream marker', 'footer marker, footer, EOS at end of file', 'something else');
      }
      header = SparseExtentHeader.decode(tail, SECTOR_SIZE, path);
      if (header.gdOffset === GD_AT_END) throw bad('gdOffset', 'footer does not give the grain directory', 'a sector number', 'GD_AT_END');
    }

    const num = (v: bigint, field: string) => toSafeNumber(v, { path, struct: 'SparseExtentHeader', field });
    const grainSectors = num(header.grainSize, 'grainSize');
    if (!isPowerOfTwo(grainSectors) || grainSectors > MAX_GRAIN_SECTORS) {
      throw bad('grainSize', 'invalid grain size', `a power of two <= ${MAX_GRAIN_SECTORS} sectors`, grainSectors);
    }
    const numGTEs = header.numGTEsPerGT;
    if (!isPowerOfTwo(numGTEs) || numGTEs > 512) throw bad('numGTEsPerGT', 'invalid number of grain table entries', 'a power of two <= 512', numGTEs);
    const capacitySectors = num(header.capacity, 'capacity');
    if (capacitySectors * SECTOR_SIZE > Number.MAX_SAFE_INTEGER) throw bad('capacity', 'capacity is too large', '< 2^44 sectors', capacitySectors);
    const coverage = numGTEs * grainSectors;
    const numGDEntries = ceilDiv(capacitySectors, coverage);
    if (numGDEntries > MAX_GD_ENTRIES) throw bad('capacity', 'grain directory too large (L1 size too big)', `<= ${MAX_GD_ENTRIES} entries`, numGDEntries);

    const overHead = num(header.overHead, 'overHead');
    if (!(header.flags & FLAG_COMPRESSED) && overHead * SECTOR_SIZE > fileSize) {
      throw bad('overHead', 'file truncated', `at least ${overHead * SECTOR_SIZE} bytes`, fileSize);
    }

    const descriptorOffset = num(header.descriptorOffset, 'descriptorOffset');
    const descriptorSize = num(header.descriptorSize, 'descriptorSize');
    if (descriptorSize > MAX_DESCRIPTOR_SECTORS) throw bad('descriptorSize', 'embedded descriptor too large', `<= ${MAX_DESCRIPTOR_SECTORS} sectors`, descriptorSize);
    if (descriptorOffset !== 0 && descriptorSize === 0) throw bad('descriptorSize', 'descriptor offset without a size', '> 0', 0);
    if (descriptorOffset !== 0 && (descriptorOffset + descriptorSize) * SECTOR_SIZE > fileSize) {
      throw bad('descriptorOffset', 'embedded descriptor lies past the end of the file', `<= ${fileSize} bytes`, (descriptorOffset + descriptorSize) * SECTOR_SIZE);
    }
    const gdBytes = numGDEntries * 4;
    const gdOffset = num(header.gdOffset, 'gdOffset');
    if (gdOffset === 0 || gdOffset * SECTOR_SIZE + gdBytes > fileSize) {
      throw bad('gdOffset', 'grain directory lies outside the file', `inside ${fileSize} bytes`, gdOffset * SECTOR_SIZE);
    }
    const gtSectors = ceilDiv(numGTEs * 4, SECTOR_SIZE);
    const gd = await readU32Array(store, gdOffset * SECTOR_SIZE, numGDEntries);
    checkDirectory(gd, 'GDE', gtSectors, fileSize, path);

    let rgd: Uint32Array | undefined;
    let rgdOffsetBytes = 0;
    if (header.flags & FLAG_REDUNDANT_GD) {
      const rgdOffset = num(header.rgdOffset, 'rgdOffset');
      if (rgdOffset !== 0) {
        if (rgdOffset * SECTOR_SIZE + gdBytes > fileSize) throw bad('rgdOffset', 'redundant grain directory lies outside the file', `inside ${fileSize} bytes`, rgdOffset * SECTOR_SIZE);
        if (rgdOffset === gdOffset) throw bad('rgdOffset', 'redundant grain directory is the primary one', `!= ${gdOffset}`, rgdOffset);
        rgd = await readU32Array(store, rgdOffset * SECTOR_SIZE, numGDEntries);
        checkDirectory(rgd, 'RGDE', gtSectors, fileSize, path);
        rgdOffsetBytes = rgdOffset * SECTOR_SIZE;
      }
    }
    const readOnly = opts.readOnly || store.readOnly;
    if (!readOnly && header.flags & FLAG_COMPRESSED) {
      throw new DiskError('CMPRDONLY', 'streamOptimized (compressed) extents can only be opened read-only', { path });
    }
    const extent = new SparseExtent(store, header, { grainSectors, numGTEs, capacitySectors, gd, rgd, fileSize, gdOffsetBytes: gdOffset * SECTOR_SIZE, rgdOffsetBytes }, readOnly);
    // Overlap rules (overlap.ts, NOTES.md): checked on every open so that check reports them;
    // a read-write open is refused, except the one a check --repair makes to mend them.
    extent.overlaps = header.flags & FLAG_COMPRESSED ? [] : metadataOverlaps(extent.map());
    if (!readOnly && extent.overlaps.length > 0) {
      const err = overlapError(path, extent.overlaps[0]!);
      if (!opts.forCheck) throw err;
      extent.refusal = err;
    }
    if (!readOnly && !opts.forCheck) {
      // every entry inside the grain area and apart from the tables, and new grains past the
      // highest sector any entry names (a truncated file must not get a grain an entry still names)
      const scan = await scanGrainEntries(store, extent.map(), { limit: 1, stopAtLimit: true });
      if (scan.problems.length > 0) throw entryError(path, scan.problems[0]!);
      extent.nextFree = Math.max(extent.nextFree, roundUp(scan.highWater * SECTOR_SIZE, extent.grainBytes));
    }
    return extent;
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
  private assertWritable(): void {
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

  /**
   * Grow the extent's capacity in place (resize). The grain directory usually has no room for
   * more entries (the first grain table follows it), so new zeroed grain tables (and redundant
   * ones), a new RGD and a new GD are written past the end of the file; then one write of the
   * header sector switches capacity, gdOffset and rgdOffset together. Killed before that write,
   * the extent is as it was plus unreferenced space at the end. The old directories become
   * unused metadata space before overHead. The caller then rewrites the extent line.
   */
  async growTo(capacitySectors: number): Promise<void> {
    this.assertWritable();
    if (this.compressed) throw new DiskError('NOTSUPPORTED', 'a compressed (streamOptimized) extent cannot grow in place: convert it to monolithicSparse first', { path: this.path, field: 'flags' });
    const oldEntries = this.gd.length;
    const entries = ceilDiv(capacitySectors, this.numGTEs * this.grainSectors);
    if (entries > MAX_GD_ENTRIES) throw new DiskError('INVAL', 'grain directory would be too large', { path: this.path, field: 'capacity', expected: `<= ${MAX_GD_ENTRIES} entries`, found: entries });
    const gtSectors = this.gtBytes / SECTOR_SIZE;
    const gdSectors = ceilDiv(entries * 4, SECTOR_SIZE);
    const fresh = entries - oldEntries;
    if (fresh === 0) {
      // the directory already covers the new size: only the header's capacity changes
      const head = await this.store.read(0, SECTOR_SIZE);
      const h = SparseExtentHeader.decode(head, 0, this.path);
      h.capacity = BigInt(capacitySectors);
      SparseExtentHeader.encode(h, head, 0);
      await this.store.write(0, head);
      await this.store.flush();
      return;
    }
    let at = this.nextFree / SECTOR_SIZE;
    const gd = new Uint32Array(entries);
    gd.set(this.gd);
    for (let i = 0; i < fresh; i++) gd[oldEntries + i] = at + i * gtSectors;
    at += fresh * gtSectors;
    let rgd: Uint32Array | undefined;
    let rgdAt = 0;
    if (this.rgd) {
      rgd = new Uint32Array(entries);
      rgd.set(this.rgd);
      for (let i = 0; i < fresh; i++) rgd[oldEntries + i] = at + i * gtSectors;
      at += fresh * gtSectors;
      rgdAt = at;
      at += gdSectors;
    }
    const gdAt = at;
    at += gdSectors;
    const end = roundUp(at * SECTOR_SIZE, this.grainBytes);
    if (end / SECTOR_SIZE > 0xffffffff) throw new DiskError('NOSPACE', 'sparse extent would pass 2 TiB of sector numbers', { path: this.path, field: 'gdOffset' });
    // the new tables are zeros: extending the file writes them
    await this.store.truncate(end);
    if (rgd) await this.store.write(rgdAt * SECTOR_SIZE, u32Bytes(rgd, 0, entries));
    await this.store.write(gdAt * SECTOR_SIZE, u32Bytes(gd, 0, entries));
    await this.store.flush();
    const head = await this.store.read(0, SECTOR_SIZE);
    const h = SparseExtentHeader.decode(head, 0, this.path);
    h.capacity = BigInt(capacitySectors);
    h.gdOffset = BigInt(gdAt);
    if (rgd) h.rgdOffset = BigInt(rgdAt);
    SparseExtentHeader.encode(h, head, 0);
    await this.store.write(0, head);
    await this.store.flush();
  }

  async setUncleanShutdown(unclean: boolean): Promise<void> {
    await this.store.write(SparseExtentHeader.offsetOf('uncleanShutdown'), Buffer.from([unclean ? 1 : 0]));
  }

  // ---------------------------------------------------------------- tables

  private async gt(gdIndex: number): Promise<Uint32Array | undefined> {
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
  private async gte(gi: number): Promise<number> {
    const g = Math.floor(gi / this.numGTEs);
    const table = this.gtCache.get(g) ?? (await this.gt(g));
    if (table === undefined) return 0;
    return this.checkedEntry(gi, table[gi - g * this.numGTEs]!);
  }

  private checkedEntry(gi: number, e: number): number {
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

  private async readFile(into: Buffer, at: number): Promise<void> {
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
    let pos = 0;
    while (pos < data.length) {
      const vo = offset + pos;
      const gi = Math.floor(vo / gb);
      const within = vo - gi * gb;
      const n = Math.min(gb - within, data.length - pos);
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
      pos += n;
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
  private async setEntries(entries: { gi: number; value: number }[], redundantFirst = false): Promise<void> {
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
        await writePrimary();
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
    const gtSector = start / SECTOR_SIZE;
    this.gd[g] = gtSector;
    await this.store.write(this.gdOffsetBytes + g * 4, u32Bytes(this.gd, g, g + 1));
    if (this.rgd) {
      this.rgd[g] = gtSector + this.gtBytes / SECTOR_SIZE;
      await this.store.write(this.rgdOffsetBytes + g * 4, u32Bytes(this.rgd, g, g + 1));
    }
    this.gtCache.set(g, new Uint32Array(this.numGTEs));
  }

  /** Block status of [offset, offset+length) within this extent, adjacent equal states merged. */
  async status(offset: number, length: number): Promise<BlockExtent[]> {
    const out: BlockExtent[] = [];
    const gb = this.grainBytes;
    const coverage = gb * this.numGTEs;
    const end = offset + length;
    const push = (at: number, n: number, state: BlockState) => {
      const last = out[out.length - 1];
      if (last && last.state === state) last.length += n;
      else out.push({ offset: at, length: n, state });
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
        push(pos, n, this.stateOf(this.checkedEntry(gi, table[gi - base]!)));
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

  /** whether two grain slots (both inside the grain area) hold the same bytes */
  private async sameGrain(a: number, b: number, fileSectors: number): Promise<boolean> {
    const inside = (e: number) => e >= this.overHeadSectors && e < fileSectors;
    if (!inside(a) || !inside(b)) return false;
    const [x, y] = await Promise.all([this.store.readZeroPadded(a * SECTOR_SIZE, this.grainBytes), this.store.readZeroPadded(b * SECTOR_SIZE, this.grainBytes)]);
    return x.equals(y);
  }

  // ------------------------------------------------- discard, compact, defragment (NOTES.md)

  /** a grain that must read zeros over a parent can be marked GTE 1 (version 2 + flag bit 2) */
  get hasZeroMarker(): boolean {
    return this.zeroedGrains && this.version >= 2;
  }

  /**
   * Mark [offset, offset+length) of this extent unused. `limit` is where the extent's virtual
   * range ends (its extent line): a grain reaching it counts as whole. Whole grains: GTE 0 in a
   * base; in a child GTE 1 where the header allows it, else zeros are written (a v1 child has
   * no other way to hide its parent). Parts of grains: zeros written where the grain is
   * allocated; a part of a child's unallocated grain needs the parent's bytes around it, so the
   * caller must write those zeros through the chain.
   */
  async discard(offset: number, length: number, opts: { hasParent: boolean; limit: number }): Promise<void> {
    this.assertWritable();
    const gb = this.grainBytes;
    const frees: { gi: number; value: number }[] = [];
    const zeroWrites: { at: number; n: number }[] = [];
    const end = offset + length;
    for (let pos = offset; pos < end; ) {
      const gi = Math.floor(pos / gb);
      const within = pos - gi * gb;
      const n = Math.min(gb - within, end - pos);
      const whole = within === 0 && pos + n >= Math.min((gi + 1) * gb, opts.limit);
      const e = await this.gte(gi);
      if (whole) {
        if (!opts.hasParent) {
          if (e !== 0) frees.push({ gi, value: 0 });
        } else if (this.hasZeroMarker) {
          if (e !== 1) frees.push({ gi, value: 1 });
        } else zeroWrites.push({ at: pos, n });
      } else if (e > 1) {
        zeroWrites.push({ at: pos, n });
      } else if (e === 0 && opts.hasParent) {
        throw new DiskError('INVAL', 'part of a grain a child does not hold yet: discard it through the chain (the rest of the grain comes from the parent)', { path: this.path, field: `GTE[${gi}]`, offset: pos });
      }
      pos += n;
    }
    if (frees.length > 0) await this.setEntries(frees, true);
    const zeros = Buffer.alloc(gb);
    for (const z of zeroWrites) await this.write(zeros.subarray(0, z.n), z.at);
  }

  /** Number of grains holding data (for progress totals). */
  async dataGrainCount(): Promise<number> {
    let n = 0;
    for (let g = 0; g < this.gd.length; g++) {
      const table = await this.gt(g);
      if (table) for (let i = 0; i < table.length; i++) if (table[i]! > 1) n++;
    }
    return n;
  }

  /**
   * Compact: grains that read as zeros are dropped (GTE 0 in a base, GTE 1 in a child whose
   * header allows it; a version-1 child keeps them, since GTE 0 would show the parent), then
   * grains are moved from the end of the file into the free slots below them, and the file is
   * cut after the last one. Leaked slots (a killed write, a discard) are reclaimed the same way.
   * Crash order per batch of moves: copy the grains to their new slots, flush; point the GT,
   * then the redundant GT at them, flush; only then are the old slots free for reuse or the cut.
   */
  async compact(opts: { hasParent: boolean; signal?: AbortSignal; onGrain?: () => void }): Promise<void> {
    const space = await this.beginRelayout(opts.signal);
    // 1. find grains that read as zeros and drop them (redundant table first: see setEntries)
    const dropTo = !opts.hasParent ? 0 : this.hasZeroMarker ? 1 : -1;
    const buf = Buffer.alloc(this.grainBytes * 16);
    const drops: { gi: number; value: number }[] = [];
    const bySector = space.grains.map((_, i) => i).sort((a, b) => space.sector[a]! - space.sector[b]!);
    for (let k = 0; k < bySector.length; k += 16) {
      checkAbort(opts.signal, this.path);
      const batch = bySector.slice(k, k + 16);
      await Promise.all(batch.map((i, j) => this.readFile(buf.subarray(j * this.grainBytes, (j + 1) * this.grainBytes), space.sector[i]! * SECTOR_SIZE)));
      for (let j = 0; j < batch.length; j++) {
        opts.onGrain?.();
        if (dropTo < 0) continue;
        const grain = buf.subarray(j * this.grainBytes, (j + 1) * this.grainBytes);
        if (isZero(grain)) drops.push({ gi: space.grains[batch[j]!]!, value: dropTo });
      }
    }
    if (drops.length > 0) {
      for (let k = 0; k < drops.length; k += 4096) await this.setEntries(drops.slice(k, k + 4096), true);
      await this.store.flush();
      const dropped = new Set(drops.map((d) => d.gi));
      for (let i = 0; i < space.grains.length; i++) if (dropped.has(space.grains[i]!)) space.release(i);
    }
    // 2. move grains down from the end into the lowest free slots
    const live = space.liveIndexes().sort((a, b) => space.sector[b]! - space.sector[a]!);
    let free = 0;
    let moves: { i: number; to: number }[] = [];
    for (const i of live) {
      while (!space.isFree(free)) free++;
      if (space.slotSector(free) >= space.sector[i]!) break;
      moves.push({ i, to: free });
      space.reserve(free);
      if (moves.length >= MOVE_BATCH) {
        await this.moveGrains(space, moves, opts.signal);
        moves = [];
      }
    }
    if (moves.length > 0) await this.moveGrains(space, moves, opts.signal);
    await this.cutAfterUse(space);
  }

  /**
   * Defragment: grains in virtual order from the first grain slot on (slots holding grain
   * tables allocated after the metadata area are skipped), so a sequential read of the disk is
   * a sequential read of the file. Window by window: grains sitting in the window's slots that
   * belong elsewhere are moved out of the way (to free slots past the final area, else to the
   * end of the file), then the window's grains are moved in. Every move has compact's crash
   * order; the file is cut after the last grain.
   */
  async defragment(opts: { signal?: AbortSignal; onGrain?: () => void }): Promise<void> {
    const space = await this.beginRelayout(opts.signal);
    const order = space.liveIndexes().sort((a, b) => space.grains[a]! - space.grains[b]!);
    const targets: number[] = [];
    for (let slot = 0; targets.length < order.length; slot++) if (!space.isFixed(slot)) targets.push(slot);
    const finalEnd = targets.length > 0 ? targets[targets.length - 1]! + 1 : 0;
    let spare = finalEnd;
    const spareSlot = () => {
      while (!space.isFree(spare)) spare++;
      return spare;
    };
    for (let k = 0; k < order.length; k += MOVE_BATCH) {
      checkAbort(opts.signal, this.path);
      const window = new Set<number>();
      for (let j = k; j < Math.min(k + MOVE_BATCH, order.length); j++) window.add(targets[j]!);
      // out of the way: whatever occupies a window slot and is not the grain that belongs there
      const evict: { i: number; to: number }[] = [];
      for (let j = k; j < Math.min(k + MOVE_BATCH, order.length); j++) {
        const t = targets[j]!;
        for (const i of space.occupants(t)) {
          if (i === order[j] && space.sector[i] === space.slotSector(t)) continue;
          if (evict.some((m) => m.i === i)) continue;
          const to = spareSlot();
          space.reserve(to);
          evict.push({ i, to });
        }
      }
      if (evict.length > 0) await this.moveGrains(space, evict, opts.signal);
      if (spare > finalEnd) spare = finalEnd; // evicted sources may have freed slots there
      const place: { i: number; to: number }[] = [];
      for (let j = k; j < Math.min(k + MOVE_BATCH, order.length); j++) {
        const i = order[j]!;
        const t = targets[j]!;
        if (space.sector[i] === space.slotSector(t)) continue;
        space.reserve(t);
        place.push({ i, to: t });
      }
      if (place.length > 0) await this.moveGrains(space, place, opts.signal);
      for (let j = k; j < Math.min(k + MOVE_BATCH, order.length); j++) opts.onGrain?.();
    }
    await this.cutAfterUse(space);
  }

  /**
   * Start of compact / defragment: the redundant tables are made equal to the primary ones
   * (a killed earlier run may have left a copy naming a slot the primary no longer uses, which
   * must not be handed to another grain), and the map of the grain area is built.
   */
  private async beginRelayout(signal?: AbortSignal): Promise<GrainSpace> {
    this.assertWritable();
    if (this.compressed) throw new DiskError('NOTSUPPORTED', 'compressed (streamOptimized) extents cannot be rearranged in place', { path: this.path, field: 'flags' });
    checkAbort(signal, this.path);
    this.gtCache.clear();
    const fileSectors = Math.ceil(this.fileSize / SECTOR_SIZE);
    const fixed: [number, number][] = [[0, this.overHeadSectors]];
    const gtSectors = this.gtBytes / SECTOR_SIZE;
    const gdSectors = Math.ceil((this.gd.length * 4) / SECTOR_SIZE);
    fixed.push([this.gdOffsetBytes / SECTOR_SIZE, this.gdOffsetBytes / SECTOR_SIZE + gdSectors]);
    if (this.rgd) fixed.push([this.rgdOffsetBytes / SECTOR_SIZE, this.rgdOffsetBytes / SECTOR_SIZE + gdSectors]);
    for (const dir of [this.gd, this.rgd]) if (dir) for (const e of dir) if (e !== 0) fixed.push([e, e + gtSectors]);
    const grains: number[] = [];
    const sectors: number[] = [];
    let synced = false;
    for (let g = 0; g < this.gd.length; g++) {
      const table = await this.gt(g);
      if (!table) continue;
      for (let i = 0; i < table.length; i++) {
        const gi = g * this.numGTEs + i;
        const e = this.checkedEntry(gi, table[i]!);
        if (e > 1) {
          grains.push(gi);
          sectors.push(e);
        }
      }
      if (this.rgd && this.rgd[g] !== 0) {
        const copy = await readU32Array(this.store, this.rgd[g]! * SECTOR_SIZE, this.numGTEs);
        if (!u32Bytes(copy, 0, copy.length).equals(u32Bytes(table, 0, table.length))) {
          await this.store.write(this.rgd[g]! * SECTOR_SIZE, u32Bytes(table, 0, table.length));
          synced = true;
        }
      }
    }
    if (synced) await this.store.flush();
    return new GrainSpace(this.path, this.overHeadSectors, this.grainSectors, fileSectors, fixed, grains, sectors);
  }

  /** Move a batch of grains to reserved free slots in the crash-safe order (see compact). */
  private async moveGrains(space: GrainSpace, moves: { i: number; to: number }[], signal?: AbortSignal): Promise<void> {
    checkAbort(signal, this.path);
    const gb = this.grainBytes;
    for (let k = 0; k < moves.length; k += 16) {
      const part = moves.slice(k, k + 16);
      const bufs = part.map(() => Buffer.allocUnsafe(gb));
      await Promise.all(part.map((m, j) => this.readFile(bufs[j]!, space.sector[m.i]! * SECTOR_SIZE)));
      await Promise.all(part.map((m, j) => this.store.write(space.slotSector(m.to) * SECTOR_SIZE, bufs[j]!)));
    }
    for (const m of moves) this.fileSize = Math.max(this.fileSize, (space.slotSector(m.to) + this.grainSectors) * SECTOR_SIZE);
    await this.store.flush();
    await this.setEntries(moves.map((m) => ({ gi: space.grains[m.i]!, value: space.slotSector(m.to) })));
    await this.store.flush();
    for (const m of moves) space.moved(m.i, m.to);
    this.nextFree = roundUp(this.fileSize, gb);
  }

  /** Cut the file after the last grain or table still in use (the moves are durable by now). */
  private async cutAfterUse(space: GrainSpace): Promise<void> {
    const end = space.usedEndSector() * SECTOR_SIZE;
    if (end < this.fileSize) {
      await this.store.flush();
      await this.store.truncate(end);
      this.fileSize = end;
    }
    this.nextFree = roundUp(this.fileSize, this.grainBytes);
    await this.store.flush();
  }

  async flush(): Promise<void> {
    await this.store.flush();
  }

  /**
   * Report every metadata overlap found at open as corruption. With `repair`: an embedded
   * descriptor running over the next structure is cut back to end before it when its text
   * ends there; a redundant GD or GT that overlaps anything is rebuilt from the primary at the
   * end of the file (rebuildRedundant). Overlaps among the primary structures cannot be mended
   * (which of the two holds the real entries is unknown): marked notRepairable. Returns whether
   * redundant metadata still overlaps something (its tables must then not be compared).
   */
  private async checkOverlaps(repair: boolean, dryRun: boolean, findings: CheckFinding[], hits: EntryProblem[]): Promise<boolean> {
    const m = this.map();
    const isDesc = (o: Overlap) => o.a.kind === 'descriptor' || o.b.kind === 'descriptor';
    const isRed = (o: Overlap) => isRedundant(o.a) || isRedundant(o.b);
    // the descriptor can shrink to end before the first structure starting inside it, if its text ends there
    let descriptorSectors: number | undefined;
    const dOff = m.descriptorOffset;
    const dEnd = dOff + m.descriptorSize;
    if (this.overlaps.some(isDesc)) {
      let limit = dEnd;
      let startsBefore = false;
      const consider = (start: number, end: number) => {
        if (end <= dOff || start >= dEnd) return;
        if (start <= dOff) startsBefore = true;
        else limit = Math.min(limit, start);
      };
      consider(0, 1);
      consider(m.gdOffset, m.gdOffset + m.gdSectors);
      if (m.rgd) consider(m.rgdOffset, m.rgdOffset + m.gdSectors);
      for (const dir of [m.gd, m.rgd]) if (dir) for (const e of dir) if (e !== 0) consider(e, e + m.gtSectors);
      if (!startsBefore && limit > dOff) {
        const text = await this.store.readZeroPadded(dOff * SECTOR_SIZE, (limit - dOff) * SECTOR_SIZE);
        if (text.indexOf(0) >= 0) descriptorSectors = limit - dOff;
      }
    }
    const left = this.overlaps.filter((o) => !(isDesc(o) && descriptorSectors !== undefined));
    const primaryOnly = left.filter((o) => !isRed(o));
    const redHits = hits.filter((p) => p.piece && isRedundant(p.piece));
    const primaryHits = hits.filter((p) => !(p.piece && isRedundant(p.piece)));
    const rebuild = (left.some(isRed) || redHits.length > 0) && primaryOnly.length === 0 && primaryHits.length === 0;
    const act = repair && !dryRun && !this.readOnly;
    for (const o of this.overlaps) {
      const f: CheckFinding = { kind: 'corruption', message: `metadata overlap: ${overlapMessage(o)}`, struct: 'SparseExtentHeader', field: o.b.field, offset: o.b.start * SECTOR_SIZE };
      const fixable = (isDesc(o) && descriptorSectors !== undefined) || (isRed(o) && rebuild);
      if (repair && fixable) {
        f.message += isDesc(o) && descriptorSectors !== undefined ? ` (repair: descriptorSize becomes ${descriptorSectors} sectors; the text fits)` : ' (repair: the redundant grain directory and tables are rebuilt from the primary at the end of the file)';
        if (dryRun) f.wouldRepair = true;
        else if (act) f.repaired = true;
      } else if (repair) {
        f.message += isDesc(o)
          ? ' (not repairable by vdkit: the descriptor text runs into the structure after it)'
          : ' (not repairable by vdkit: primary structures share sectors, so which holds the real entries is unknown; open read-only and copy the disk with convert)';
        f.notRepairable = true;
      }
      findings.push(f);
    }
    for (const p of hits) {
      const f: CheckFinding = { kind: 'corruption', message: p.message, struct: 'grain table', field: `GTE[${p.gi}]`, offset: p.sector * SECTOR_SIZE };
      const red = p.piece !== undefined && isRedundant(p.piece);
      if (repair && red && rebuild) {
        f.message += ' (repair: the redundant grain directory and tables are rebuilt from the primary at the end of the file)';
        if (dryRun) f.wouldRepair = true;
        else if (act) f.repaired = true;
      } else if (repair) {
        f.message += ' (not repairable by vdkit: the grain and a primary table share sectors, so one of them is already wrong; open read-only and copy the disk with convert)';
        f.notRepairable = true;
      }
      findings.push(f);
    }
    if (act) {
      if (descriptorSectors !== undefined) {
        const head = await this.store.read(0, SECTOR_SIZE);
        const h = SparseExtentHeader.decode(head, 0, this.path);
        h.descriptorSize = BigInt(descriptorSectors);
        SparseExtentHeader.encode(h, head, 0);
        await this.store.write(0, head);
        await this.store.flush();
        this.header.descriptorSize = h.descriptorSize;
      }
      if (rebuild) await this.rebuildRedundant();
      this.overlaps = metadataOverlaps(this.map());
    }
    return act && rebuild ? this.overlaps.some(isRed) : left.some(isRed) || redHits.length > 0;
  }

  /**
   * A new redundant copy from the primary: the GTs copied, then the RGD, all past the end of
   * the file and past every grain an entry names; flushed; then one header write moves
   * rgdOffset. Killed before it, the old (overlapping) copy is still named and nothing is lost.
   */
  private async rebuildRedundant(): Promise<void> {
    const gtSectors = this.gtBytes / SECTOR_SIZE;
    const gdSectors = ceilDiv(this.gd.length * 4, SECTOR_SIZE);
    const scan = await scanGrainEntries(this.store, this.map(), { limit: 0, stopAtLimit: false });
    let at = Math.max(roundUp(this.fileSize, this.grainBytes), roundUp(scan.highWater * SECTOR_SIZE, this.grainBytes)) / SECTOR_SIZE;
    const rgd = new Uint32Array(this.gd.length);
    const chunkTables = Math.max(1, Math.floor((1024 * 1024) / this.gtBytes));
    let pending: { g: number; to: number }[] = [];
    const writeChunk = async () => {
      if (pending.length === 0) return;
      const buf = Buffer.alloc(pending.length * this.gtBytes);
      for (let k = 0; k < pending.length; k++) (await this.store.readZeroPadded(this.gd[pending[k]!.g]! * SECTOR_SIZE, this.gtBytes)).copy(buf, k * this.gtBytes);
      await this.store.write(pending[0]!.to * SECTOR_SIZE, buf);
      pending = [];
    };
    for (let g = 0; g < this.gd.length; g++) {
      if (this.gd[g] === 0) continue;
      rgd[g] = at;
      pending.push({ g, to: at });
      at += gtSectors;
      if (pending.length >= chunkTables) await writeChunk();
    }
    await writeChunk();
    const rgdAt = at;
    if (rgdAt + gdSectors > 0xffffffff) throw new DiskError('NOSPACE', 'no room for a new redundant grain directory below sector 2^32', { path: this.path, field: 'rgdOffset' });
    await this.store.write(rgdAt * SECTOR_SIZE, Buffer.concat([u32Bytes(rgd, 0, rgd.length), Buffer.alloc(gdSectors * SECTOR_SIZE - rgd.length * 4)]));
    await this.store.flush();
    const head = await this.store.read(0, SECTOR_SIZE);
    const h = SparseExtentHeader.decode(head, 0, this.path);
    h.rgdOffset = BigInt(rgdAt);
    h.flags |= FLAG_REDUNDANT_GD;
    SparseExtentHeader.encode(h, head, 0);
    await this.store.write(0, head);
    await this.store.flush();
    this.header.rgdOffset = h.rgdOffset;
    this.rgd = rgd;
    this.rgdOffsetBytes = rgdAt * SECTOR_SIZE;
    this.fileSize = Math.max(this.fileSize, (rgdAt + gdSectors) * SECTOR_SIZE);
    this.nextFree = Math.max(this.nextFree, roundUp(this.fileSize, this.grainBytes));
  }

  /**
   * Consistency check of this extent (grain tables against the file and against their
   * redundant copies, grains used twice, grains nothing uses). With `repair`: a redundant
   * table that differs from a sound primary is rewritten from it, and leaked grains at the end
   * of the file are cut off (leaks in the middle stay: moving grains is defragmentation).
   */
  async check(repair: boolean, dryRun = false): Promise<{ findings: CheckFinding[]; leakedBytes: number }> {
    const findings: CheckFinding[] = [];
    const where = { struct: 'grain table' };
    // overlapping metadata first: a repair here changes where the redundant copy lives
    // grains over tables or directories past overHead (the walk below sees every other entry fault)
    const hits = this.compressed ? [] : (await scanGrainEntries(this.store, this.map(), { limit: 64, stopAtLimit: false })).problems.filter((p) => p.kind === 'over-table');
    const redundantSuspect = this.overlaps.length > 0 || hits.length > 0 ? await this.checkOverlaps(repair, dryRun, findings, hits) : false;
    const fileSectors = Math.ceil(this.fileSize / SECTOR_SIZE);
    const used = new Map<number, number>(); // grain sector -> grain index
    for (let g = 0; g < this.gd.length; g++) {
      if (this.gd[g] === 0) continue;
      const table = await readU32Array(this.store, this.gd[g]! * SECTOR_SIZE, this.numGTEs);
      for (let i = 0; i < table.length; i++) {
        const e = table[i]!;
        if (e <= 1) continue;
        const gi = g * this.numGTEs + i;
        if (e < this.overHeadSectors || (!this.compressed && e >= fileSectors)) {
          const f: CheckFinding = { kind: 'corruption', message: `grain ${gi} points outside the grain area (sector ${e})`, ...where, field: `GTE[${gi}]`, offset: e * SECTOR_SIZE };
          if (repair) {
            // its bytes are not in the file (truncated) or are metadata: no repair brings them back
            f.message += ' (not repairable by vdkit: the grain\'s data is not in the file; read-write opens stay refused; copy what reads with convert from a read-only open)';
            f.notRepairable = true;
          }
          findings.push(f);
          continue;
        }
        const other = used.get(e);
        if (other !== undefined) findings.push({ kind: 'corruption', message: `grains ${other} and ${gi} share sector ${e}`, ...where, field: `GTE[${gi}]`, offset: e * SECTOR_SIZE });
        else used.set(e, gi);
      }
      // a redundant table that overlaps other metadata is reported above, never compared or rewritten
      if (this.rgd && this.rgd[g] !== 0 && !redundantSuspect) {
        const copy = await readU32Array(this.store, this.rgd[g]! * SECTOR_SIZE, this.numGTEs);
        if (!u32Bytes(copy, 0, copy.length).equals(u32Bytes(table, 0, table.length))) {
          // A copy that only lacks entries the primary has is what a write interrupted between
          // the two tables leaves (the primary is written first): nothing is lost. Anything else
          // means one of them was damaged.
          // A compact or defragment killed between the two tables leaves the copy naming a
          // grain's old slot, which still holds the same bytes (old slots are reused only once
          // both tables are durable); a discard writes the copy first, so the copy reads 0 or 1.
          let lagging = true;
          for (let i = 0; i < table.length && lagging; i++) {
            if (copy[i] === table[i] || copy[i]! <= 1) continue;
            lagging = table[i]! > 1 && (await this.sameGrain(table[i]!, copy[i]!, fileSectors));
          }
          const f: CheckFinding = lagging
            ? { kind: 'warning', message: `redundant grain table ${g} lags the primary (an interrupted write, discard or grain move)`, struct: 'redundant grain table', field: `RGT[${g}]`, offset: this.rgd[g]! * SECTOR_SIZE }
            : { kind: 'corruption', message: `redundant grain table ${g} differs from the primary`, struct: 'redundant grain table', field: `RGT[${g}]`, offset: this.rgd[g]! * SECTOR_SIZE };
          if (repair && dryRun) f.wouldRepair = true;
          else if (repair && !this.readOnly) {
            await this.store.write(this.rgd[g]! * SECTOR_SIZE, u32Bytes(table, 0, table.length));
            f.repaired = true;
          }
          findings.push(f);
        }
      } else if (this.rgd && this.rgd[g] === 0) {
        findings.push({ kind: 'corruption', message: `redundant grain directory entry ${g} is missing`, struct: 'redundant grain directory', field: `RGDE[${g}]` });
      }
    }
    if (this.compressed) return { findings, leakedBytes: 0 };
    // leaks: grain-sized slots after the metadata area that no table uses. Tables allocated
    // later (for directory entries that had none) and directories a resize moved past the
    // metadata area are metadata, not leaks: a slot holding any sector of them is in use, and
    // a repair never cuts the file before their end.
    const meta = new Set<number>();
    for (const dir of [this.gd, this.rgd]) if (dir) for (const e of dir) if (e !== 0) for (let s = 0; s < this.gtBytes / SECTOR_SIZE; s++) meta.add(e + s);
    const dirSectors = ceilDiv(this.gd.length * 4, SECTOR_SIZE);
    for (const at of [this.gdOffsetBytes, this.rgdOffsetBytes]) if (at > 0) for (let s = 0; s < dirSectors; s++) meta.add(at / SECTOR_SIZE + s);
    const slotUsed = new Set<number>();
    for (const t of meta) if (t >= this.overHeadSectors) slotUsed.add(this.overHeadSectors + Math.floor((t - this.overHeadSectors) / this.grainSectors) * this.grainSectors);
    let leaked = 0;
    let lastUsedEnd = this.overHeadSectors;
    for (const [s] of used) lastUsedEnd = Math.max(lastUsedEnd, s + this.grainSectors);
    for (const t of meta) lastUsedEnd = Math.max(lastUsedEnd, t + 1);
    for (let s = this.overHeadSectors; s < fileSectors; s += this.grainSectors) {
      if (used.has(s) || slotUsed.has(s)) continue;
      leaked += this.grainBytes;
    }
    if (leaked > 0) {
      const tail = Math.max(0, this.fileSize - lastUsedEnd * SECTOR_SIZE);
      const f: CheckFinding = { kind: 'leak', message: `${leaked} bytes of grains are not used by any grain table`, struct: 'grain table' };
      if (repair && dryRun && tail > 0) {
        if (leaked - Math.min(leaked, roundUp(tail, this.grainBytes)) === 0) f.wouldRepair = true;
        else f.message += ` (a repair would cut off ${tail} bytes at the end)`;
      } else if (repair && !this.readOnly && tail > 0) {
        await this.store.flush();
        await this.store.truncate(lastUsedEnd * SECTOR_SIZE);
        this.fileSize = lastUsedEnd * SECTOR_SIZE;
        this.nextFree = roundUp(this.fileSize, this.grainBytes);
        leaked -= Math.min(leaked, roundUp(tail, this.grainBytes));
        if (leaked === 0) f.repaired = true;
        else f.message += ` (${tail} bytes at the end were cut off; ${leaked} remain inside the file)`;
      }
      findings.push(f);
    }
    if (this.header.uncleanShutdown !== 0) findings.push({ kind: 'warning', message: 'the extent was not closed cleanly (uncleanShutdown is set)', struct: 'SparseExtentHeader', field: 'uncleanShutdown' });
    return { findings, leakedBytes: leaked };
  }
}






/** grains moved per crash-safe step (2 flushes each): 64 grains = 4 MiB with the default grain */
const MOVE_BATCH = 64;

function checkAbort(signal: AbortSignal | undefined, path: string): void {
  if (signal?.aborted) throw new DiskError('CANCELLED', undefined, { path }, { cause: signal.reason });
}

/**
 * The grain area of a sparse extent as grain-sized slots, counted from the first
 * grain-aligned sector at or after overHead, for compact and defragment. A slot is free when
 * no grain, table or directory overlaps it. Grains from producers that do not align them
 * (any sector after overHead is legal) may cover two slots; every grain moved lands aligned.
 */
class GrainSpace {
  readonly base: number;
  /** per slot: fixed metadata overlaps it */
  private fixedSlots: Uint8Array;
  /** per slot: how many grains (or reservations) overlap it */
  private count: Int32Array;
  /** per slot: the index of the grain aligned on it, or -1 */
  private owner: Int32Array;
  /** slot -> indexes of unaligned grains overlapping it */
  private readonly loose = new Map<number, number[]>();
  private readonly dead: Uint8Array;
  private readonly fixedEnd: number;

  constructor(
    private readonly path: string,
    overHead: number,
    private readonly gs: number,
    fileSectors: number,
    fixed: [number, number][],
    /** grain index of each grain */
    readonly grains: number[],
    /** current sector of each grain */
    readonly sector: number[],
  ) {
    this.base = roundUp(overHead, gs);
    const slots = Math.max(0, Math.ceil((fileSectors - this.base) / gs)) + grains.length + 2;
    this.fixedSlots = new Uint8Array(slots);
    this.count = new Int32Array(slots);
    this.owner = new Int32Array(slots).fill(-1);
    this.dead = new Uint8Array(grains.length);
    let fixedEnd = overHead;
    for (const [from, to] of fixed) {
      fixedEnd = Math.max(fixedEnd, to);
      for (const s of this.slotsOf(from, to)) {
        this.ensure(s);
        this.fixedSlots[s] = 1;
      }
    }
    this.fixedEnd = fixedEnd;
    for (let i = 0; i < grains.length; i++) this.occupy(i, sector[i]!);
  }

  private slotsOf(from: number, to: number): number[] {
    const out: number[] = [];
    if (to <= this.base) return out;
    for (let s = Math.floor((Math.max(from, this.base) - this.base) / this.gs); this.base + s * this.gs < to; s++) out.push(s);
    return out;
  }

  private ensure(slot: number): void {
    if (slot < this.count.length) return;
    const n = Math.max(slot + 1, this.count.length * 2);
    const grow = <T extends Uint8Array | Int32Array>(a: T, fill: number): T => {
      const b = new (a.constructor as new (n: number) => T)(n);
      b.fill(fill as never);
      b.set(a);
      return b;
    };
    this.fixedSlots = grow(this.fixedSlots, 0);
    this.count = grow(this.count, 0);
    this.owner = grow(this.owner, -1);
  }

  private occupy(i: number, at: number): void {
    const slots = this.slotsOf(at, at + this.gs);
    const aligned = (at - this.base) % this.gs === 0 && at >= this.base;
    for (const s of slots) {
      this.ensure(s);
      this.count[s]!++;
      if (aligned) {
        if (this.owner[s] !== -1) throw new DiskError('CORRUPT', 'two grains share a slot of the file: run check --repair first', { path: this.path, struct: 'grain table', field: `GTE[${this.grains[i]}]`, offset: at * SECTOR_SIZE });
        this.owner[s] = i;
      } else {
        const l = this.loose.get(s);
        if (l) l.push(i);
        else this.loose.set(s, [i]);
      }
    }
  }

  private vacate(i: number, at: number): void {
    for (const s of this.slotsOf(at, at + this.gs)) {
      this.count[s]!--;
      if (this.owner[s] === i) this.owner[s] = -1;
      const l = this.loose.get(s);
      if (l) {
        const rest = l.filter((x) => x !== i);
        if (rest.length) this.loose.set(s, rest);
        else this.loose.delete(s);
      }
    }
  }

  slotSector(slot: number): number {
    return this.base + slot * this.gs;
  }
  isFixed(slot: number): boolean {
    return slot < this.fixedSlots.length && this.fixedSlots[slot] === 1;
  }
  isFree(slot: number): boolean {
    return slot >= this.count.length || (this.count[slot] === 0 && this.fixedSlots[slot] === 0);
  }
  /** hold a free slot as the destination of a pending move */
  reserve(slot: number): void {
    this.ensure(slot);
    this.count[slot]!++;
  }
  /** grains overlapping a slot */
  occupants(slot: number): number[] {
    if (slot >= this.count.length) return [];
    const out = this.owner[slot]! >= 0 ? [this.owner[slot]!] : [];
    return out.concat(this.loose.get(slot) ?? []);
  }
  /** a dropped grain: its slots are free (its table entries are durable by now) */
  release(i: number): void {
    if (this.dead[i]) return;
    this.dead[i] = 1;
    this.vacate(i, this.sector[i]!);
  }
  liveIndexes(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.grains.length; i++) if (!this.dead[i]) out.push(i);
    return out;
  }
  /** a move is durable: the reservation becomes the grain, the old slots are free */
  moved(i: number, slot: number): void {
    this.vacate(i, this.sector[i]!);
    this.count[slot]!--;
    this.sector[i] = this.slotSector(slot);
    this.occupy(i, this.sector[i]!);
  }
  /** first sector after every grain and every piece of metadata */
  usedEndSector(): number {
    let end = this.fixedEnd;
    for (let i = 0; i < this.grains.length; i++) if (!this.dead[i]) end = Math.max(end, this.sector[i]! + this.gs);
    return end;
  }
}
