/**
 * ESXi delta extents: COWD (createType "vmfsSparse", extent type VMFSSPARSE; the ESX redo-log /
 * snapshot format up to ESXi 6.5; written in place by cowd-write.ts) and SESparse (createType
 * "seSparse", extent type SESPARSE; the snapshot format of ESXi 6.5+, read-only). Layouts: NOTES.md and ../shared/formats/vmdk.md §5.
 *
 * Design notes
 * - Both are two-level maps from a virtual grain to a place in the file: a grain directory (GD)
 *   read at open and grain tables (GTs) of 4096 entries read on demand and cached. They differ in
 *   entry width and meaning only, so one class walks the tables and one small decoder per kind
 *   turns an entry into "unallocated" (the parent's), "zero", or a byte offset in the file.
 *   COWD: u32 entries, GDE = GT sector, GTE = grain sector, 0 = unallocated, no zero grains.
 *   SESparse: u64 entries, GDE = 0x10000000_<GT index>, GTE top nibble 0 unallocated,
 *   1 unmapped, 2 zero, 3 allocated (grain index split over bits 0-47 and 48-59).
 * - COWD writes allocate tables and grains at freeSector and move it, as ESX does
 *   (cowd-write.ts). SESparse is read-only, as in QEMU: it keeps a journal, a free bitmap and a
 *   back map in step with every allocation, whose encodings are not public; a read-write open is
 *   NOTSUPPORTED, naming the file, before anything is read.
 * - Untrusted fields: every region is checked against the file length before it is read, and
 *   the GD is read only for the entries the capacity needs (numGDEntries / grainDirSize may claim
 *   more, never fewer), so no allocation is sized by a field the file cannot back. Directory
 *   entries are checked at open (inside the file, clear of the headers, no table used twice);
 *   table entries when used, as QEMU does: a bad entry fails the reads that touch it with CORRUPT
 *   naming `GTE[n]`, and the rest of the disk stays readable.
 * - SESparse "unmapped" (guest UNMAP) and "zero" grains read as zeros and are reported as zero,
 *   not unallocated: they hide the parent's data (QEMU reads them the same way).
 * - SESparse is refused unless it has exactly the values QEMU accepts (version 2.1, 4 KiB grains,
 *   4096-entry tables, no flags, zero reserved words and padding) and a clean journal
 *   (replayJournal = 0): the format is not documented, and those are the files anyone has checked.
 */
import { appendExtent } from '../common/extents.js';
import { DiskError, atMost, type ErrorCode } from '../../core/errors.js';
import { SECTOR_SIZE, ceilDiv, toSafeNumber } from '../../core/ints.js';
import type { ByteStore } from '../../storage/store.js';
import type { BlockExtent, BlockState } from '../types.js';
import type { ExtentLine } from './descriptor.js';
import type { Extent } from './extents.js';
import { readU32Array } from '../../binary/tables.js';
import { checkDirectory } from './layout.js';
import {
  COWD_GTES_PER_GT,
  COWD_HEADER_BYTES,
  CowdHeader,
  SESPARSE_GRAIN_SECTORS,
  SESPARSE_GT_SECTORS,
  SESPARSE_VERSION,
  SeSparseConstHeader,
  SeSparseVolatileHeader,
} from './structs.js';
import { isZero } from '../../binary/zeros.js';
import { CowdWriter } from './cowd-write.js';
import { ZEROS, planRead } from '../common/read-plan.js';
import type { StructValue } from '../../binary/struct.js';

/** decoded table entry: a byte offset in the file (>= 0) or one of these */
const UNALLOCATED = -1;
const ZERO = -2;

/** largest COWD grain (1 MiB); QEMU accepts more, but nothing writes it */
export const MAX_COWD_GRAIN_SECTORS = 2048;
/** SESparse disks end just below 64 TiB (QEMU's bound): a 32 MiB directory at most */
export const MAX_SESPARSE_SECTORS = 2 ** 37;
/** cached grain tables (16 or 32 KiB each) */
const GT_CACHE_LIMIT = 512;
const ENTRIES_PER_GT = 4096;

export type EsxKind = 'COWD' | 'SESparse';

interface Layout {
  kind: EsxKind;
  capacityBytes: number;
  grainBytes: number;
  /** byte offset in the file of the GT of each directory entry the capacity needs; 0 = none */
  tables: Float64Array;
  /** bytes per table entry */
  entryBytes: 4 | 8;
  /** decode entry `i` of a table (u32 words, little-endian order) for virtual grain `gi` */
  decode(words: Uint32Array, i: number, gi: number): number;
  /** header facts for info and notes */
  version: number;
  /** what opening read and derived, for check (esx-check.ts) */
  facts: EsxFacts;
}

/** The headers and derived places of a COWD extent, as opened. */
export interface CowdFacts {
  kind: 'COWD';
  fileSize: number;
  header: StructValue<typeof CowdHeader.fields>;
  /** grain directory entries the capacity needs (GT sectors; 0 = none) */
  gd: Uint32Array;
  /** first sector after the header and the whole grain directory (numGDEntries) */
  metaEndSector: number;
}

/** The headers and derived places of a SESparse extent, as opened. */
export interface SeSparseFacts {
  kind: 'SESparse';
  fileSize: number;
  header: StructValue<typeof SeSparseConstHeader.fields>;
  volatile: StructValue<typeof SeSparseVolatileHeader.fields>;
  /** GDEs the capacity needs */
  needed: number;
  /** grain-table slots in grainTablesSize */
  gtSlots: number;
  /** byte offset of the grain area (grainsOffset) */
  grainsAt: number;
}

export type EsxFacts = CowdFacts | SeSparseFacts;

export class EsxSparseExtent implements Extent {
  private constructor(
    readonly line: ExtentLine,
    readonly store: ByteStore,
    readonly path: string,
    private readonly layout: Layout,
    private readonly gtCache = new Map<number, Uint32Array>(),
    /** a COWD extent opened read-write (cowd-write.ts); SESparse is never written */
    private writer?: CowdWriter,
  ) {}

  get kind(): EsxKind {
    return this.layout.kind;
  }
  get length(): number {
    return this.line.sectorCount * SECTOR_SIZE;
  }
  get grainBytes(): number {
    return this.layout.grainBytes;
  }
  get capacityBytes(): number {
    return this.layout.capacityBytes;
  }
  get version(): number {
    return this.layout.version;
  }
  /** headers and places as opened, for check */
  get facts(): EsxFacts {
    return this.layout.facts;
  }
  /** byte offset in the file of the grain table of each directory entry the capacity needs; 0 = none */
  get tableOffsets(): Float64Array {
    return this.layout.tables;
  }

  /** Open a COWD extent; read-write opens write through cowd-write.ts. */
  static async openCowd(line: ExtentLine, store: ByteStore, opts: { readOnly: boolean }): Promise<EsxSparseExtent> {
    const path = store.name;
    const fileSize = await store.size();
    // raised by the writer as grains are added: entries are checked against the file as it is now
    const bounds = { fileSize };
    const bad = (field: string, message: string, expected: unknown, found: unknown, code: ErrorCode = 'CORRUPT') =>
      new DiskError(code, message, { path, struct: 'CowdHeader', field, expected, found });
    if (fileSize < COWD_HEADER_BYTES) throw bad('file length', 'file is too short for a COWD header', `>= ${COWD_HEADER_BYTES} bytes`, fileSize, 'INVALIDDISK');
    const h = CowdHeader.decode(await store.read(0, COWD_HEADER_BYTES), 0, path);
    // version, flags and the generations are informational (QEMU ignores them too).
    if (h.grainSize < 1 || h.grainSize > MAX_COWD_GRAIN_SECTORS) throw bad('grainSize', 'invalid grain size', `1..${MAX_COWD_GRAIN_SECTORS} sectors`, h.grainSize);
    if (h.numSectors === 0) throw bad('numSectors', 'capacity is zero', '> 0', 0);
    const needed = ceilDiv(h.numSectors, COWD_GTES_PER_GT * h.grainSize);
    if (h.numGDEntries < needed) throw bad('numGDEntries', 'grain directory does not cover the capacity', `>= ${needed}`, h.numGDEntries);
    const headerSectors = COWD_HEADER_BYTES / SECTOR_SIZE;
    if (h.gdOffset < headerSectors) throw bad('gdOffset', 'grain directory overlaps the header', `>= ${headerSectors}`, h.gdOffset);
    const gdAt = h.gdOffset * SECTOR_SIZE;
    if (gdAt + needed * 4 > fileSize) throw bad('gdOffset', 'grain directory lies past the end of the file', `<= ${fileSize - needed * 4} bytes`, gdAt);
    // the part of the directory we do not need must still be in the file: a claim of billions
    // of entries is a damaged header, not a big disk
    if (gdAt + h.numGDEntries * 4 > fileSize) throw bad('numGDEntries', 'grain directory runs past the end of the file', `<= ${Math.floor((fileSize - gdAt) / 4)}`, h.numGDEntries);
    const fileSectors = Math.ceil(fileSize / SECTOR_SIZE);
    if (h.freeSector > fileSectors) throw bad('freeSector', 'file truncated: the next free sector lies past its end', `<= ${fileSectors}`, h.freeSector);
    const metaEnd = ceilDiv(gdAt + h.numGDEntries * 4, SECTOR_SIZE); // first sector after the GD
    const gd = await readU32Array(store, gdAt, needed);
    for (let i = 0; i < gd.length; i++) {
      const e = gd[i]!;
      if (e !== 0 && e < metaEnd) {
        throw new DiskError('CORRUPT', 'grain table overlaps the header or grain directory', { path, struct: 'grain directory', field: `GDE[${i}]`, expected: `>= ${metaEnd}`, found: e });
      }
    }
    const gtSectors = (COWD_GTES_PER_GT * 4) / SECTOR_SIZE;
    checkDirectory(gd, 'GDE', gtSectors, fileSize, path);
    const tables = new Float64Array(needed);
    for (let i = 0; i < needed; i++) tables[i] = gd[i]! * SECTOR_SIZE;
    const grainBytes = h.grainSize * SECTOR_SIZE;
    const metaEndBytes = metaEnd * SECTOR_SIZE;
    const decode = (words: Uint32Array, i: number, gi: number): number => {
      const e = words[i]!;
      if (e === 0) return UNALLOCATED;
      const at = e * SECTOR_SIZE;
      if (at < metaEndBytes || at >= bounds.fileSize) {
        throw new DiskError('CORRUPT', at >= bounds.fileSize ? 'grain lies past the end of the file' : 'grain table entry points into the header or grain directory', {
          path,
          struct: 'grain table',
          field: `GTE[${gi}]`,
          expected: `sector ${metaEnd} .. ${Math.ceil(bounds.fileSize / SECTOR_SIZE) - 1}`,
          found: e,
        });
      }
      return at;
    };
    checkLine(line, h.numSectors, path, 'numSectors');
    const facts: CowdFacts = { kind: 'COWD', fileSize, header: h, gd, metaEndSector: metaEnd };
    const extent = new EsxSparseExtent(line, store, path, { kind: 'COWD', capacityBytes: h.numSectors * SECTOR_SIZE, grainBytes, tables, entryBytes: 4, decode, version: h.version, facts });
    if (!opts.readOnly) {
      extent.writer = new CowdWriter({
        store,
        path,
        header: h,
        gd,
        tables,
        metaEndSector: metaEnd,
        grainSectors: h.grainSize,
        bounds,
        table: (g) => extent.table(g),
        cache: (g, words) => extent.gtCache.set(g, words),
        locate: decode,
      });
      await extent.writer.prepare();
    }
    return extent;
  }

  /** Open a SESparse extent. `readOnly` must be true: we never write these files. */
  static async openSeSparse(line: ExtentLine, store: ByteStore, opts: { readOnly: boolean }): Promise<EsxSparseExtent> {
    const path = store.name;
    refuseWrite(opts.readOnly, path, 'SESparse');
    const fileSize = await store.size();
    const bad = (field: string, message: string, expected: unknown, found: unknown, code: ErrorCode = 'CORRUPT', struct = 'SeSparseConstHeader') =>
      new DiskError(code, message, { path, struct, field, expected, found });
    if (fileSize < SECTOR_SIZE) throw bad('file length', 'file is too short for a SESparse header', `>= ${SECTOR_SIZE} bytes`, fileSize, 'INVALIDDISK');
    const h = SeSparseConstHeader.decode(await store.read(0, SECTOR_SIZE), 0, path);
    const hex = (v: bigint) => `0x${v.toString(16).padStart(16, '0')}`;
    if (h.version !== SESPARSE_VERSION) throw bad('version', 'unsupported SESparse version', hex(SESPARSE_VERSION), hex(h.version), 'UNSUPPORTEDDISKVERSION');
    if (h.grainSize !== BigInt(SESPARSE_GRAIN_SECTORS)) throw bad('grainSize', 'unsupported grain size', SESPARSE_GRAIN_SECTORS, h.grainSize, 'UNSUPPORTEDFEATURE');
    if (h.grainTableSize !== BigInt(SESPARSE_GT_SECTORS)) throw bad('grainTableSize', 'unsupported grain table size', SESPARSE_GT_SECTORS, h.grainTableSize, 'UNSUPPORTEDFEATURE');
    if (h.flags !== 0n) throw bad('flags', 'unsupported flags', 0, hex(h.flags), 'UNSUPPORTEDFEATURE');
    for (const f of ['reserved1', 'reserved2', 'reserved3', 'reserved4'] as const) {
      if (h[f] !== 0n) throw bad(f, 'reserved field is not zero', 0, hex(h[f]), 'UNSUPPORTEDFEATURE');
    }
    if (!isZero(h.pad)) throw bad('pad', 'header padding is not zero', 'zeros', 'non-zero bytes', 'UNSUPPORTEDFEATURE');

    const num = (field: keyof typeof h & string) => toSafeNumber(h[field] as bigint, { path, struct: 'SeSparseConstHeader', field });
    const capacity = num('capacity');
    if (capacity === 0 || capacity > MAX_SESPARSE_SECTORS) throw bad('capacity', 'invalid capacity', `1..${MAX_SESPARSE_SECTORS} sectors`, capacity);
    /** a region that must lie inside the file, after the constant header */
    const region = (field: 'volatileHeaderOffset' | 'grainDirOffset' | 'grainTablesOffset' | 'grainsOffset', bytes: number, what: string): number => {
      const sector = num(field);
      if (sector < 1) throw bad(field, `${what} overlaps the constant header`, '>= 1', sector);
      const at = sector * SECTOR_SIZE;
      if (at + bytes > fileSize) throw bad(field, `${what} lies past the end of the file`, `<= ${fileSize - bytes} bytes`, at);
      return at;
    };

    const volAt = region('volatileHeaderOffset', SECTOR_SIZE, 'volatile header');
    const v = SeSparseVolatileHeader.decode(await store.read(volAt, SECTOR_SIZE), 0, path);
    if (v.replayJournal !== 0n) {
      throw bad('replayJournal', 'the disk was not closed cleanly and its journal must be replayed (attach it on ESXi once); vdkit, like QEMU, does not replay SESparse journals', 0, v.replayJournal, 'NEEDSREPAIR', 'SeSparseVolatileHeader');
    }
    if (!isZero(v.pad)) throw bad('pad', 'volatile header padding is not zero', 'zeros', 'non-zero bytes', 'UNSUPPORTEDFEATURE', 'SeSparseVolatileHeader');

    const gtBytes = SESPARSE_GT_SECTORS * SECTOR_SIZE;
    const coverage = ENTRIES_PER_GT * SESPARSE_GRAIN_SECTORS; // sectors per GT (16 MiB)
    const needed = ceilDiv(capacity, coverage);
    const gdSectors = num('grainDirSize');
    if (gdSectors * (SECTOR_SIZE / 8) < needed) throw bad('grainDirSize', 'grain directory does not cover the capacity', `>= ${ceilDiv(needed * 8, SECTOR_SIZE)} sectors`, gdSectors);
    const gdAt = region('grainDirOffset', needed * 8, 'grain directory');
    const gtAreaAt = num('grainTablesOffset');
    if (gtAreaAt < 1) throw bad('grainTablesOffset', 'grain tables overlap the constant header', '>= 1', gtAreaAt);
    const gtSlots = Math.floor(num('grainTablesSize') / SESPARSE_GT_SECTORS);
    const grainsAt = region('grainsOffset', 0, 'grain area');
    // The directory, the table area and the start of the grains are fixed, separate areas (ESXi
    // lays them out one after the other): a directory that runs into the tables is a damaged
    // size field, refused before a directory of that size is read.
    const gdSector = gdAt / SECTOR_SIZE;
    const gtAreaEnd = gtAreaAt + gtSlots * SESPARSE_GT_SECTORS;
    const overlaps = (a: number, aEnd: number, b: number, bEnd: number) => a < bEnd && b < aEnd;
    if (overlaps(gdSector, gdSector + gdSectors, gtAreaAt, gtAreaEnd)) {
      throw bad('grainDirSize', 'grain directory overlaps the grain-table area', `<= ${gtAreaAt > gdSector ? gtAreaAt - gdSector : 'n/a'} sectors`, gdSectors);
    }
    const grainsSector = grainsAt / SECTOR_SIZE;
    if (overlaps(grainsSector, grainsSector + 1, gdSector, gdSector + gdSectors) || overlaps(grainsSector, grainsSector + 1, gtAreaAt, gtAreaEnd)) {
      throw bad('grainsOffset', 'grain area starts inside the grain directory or the grain-table area', 'an offset after both', grainsSector);
    }

    const gd = await readU32Array(store, gdAt, needed * 2);
    const tables = new Float64Array(needed);
    const used = new Map<number, number>();
    for (let i = 0; i < needed; i++) {
      const lo = gd[2 * i]!;
      const hi = gd[2 * i + 1]!;
      if (lo === 0 && hi === 0) continue;
      const where = { path, struct: 'grain directory', field: `GDE[${i}]` };
      if (hi !== 0x10000000) throw new DiskError('CORRUPT', 'grain directory entry is neither empty nor an allocated grain table', { ...where, expected: '0 or 0x10000000xxxxxxxx', found: hex((BigInt(hi) << 32n) | BigInt(lo)) });
      if (lo >= gtSlots) throw new DiskError('CORRUPT', 'grain table index out of range', { ...where, expected: `< ${gtSlots} (grainTablesSize / ${SESPARSE_GT_SECTORS})`, found: lo });
      const at = (gtAreaAt + lo * SESPARSE_GT_SECTORS) * SECTOR_SIZE;
      if (at + gtBytes > fileSize) throw new DiskError('CORRUPT', 'grain table lies past the end of the file', { ...where, expected: atMost(fileSize - gtBytes, ' bytes'), found: at });
      const other = used.get(lo);
      if (other !== undefined) throw new DiskError('CORRUPT', `grain directory entries ${other} and ${i} name the same grain table`, { ...where, found: lo });
      used.set(lo, i);
      tables[i] = at;
    }
    const grainBytes = SESPARSE_GRAIN_SECTORS * SECTOR_SIZE;
    const decode = (words: Uint32Array, i: number, gi: number): number => {
      const lo = words[2 * i]!;
      const hi = words[2 * i + 1]!;
      const where = { path, struct: 'grain table', field: `GTE[${gi}]` };
      switch (hi >>> 28) {
        case 0:
          if (lo !== 0 || hi !== 0) throw new DiskError('CORRUPT', 'unallocated grain table entry has bits set', { ...where, expected: 0, found: hex((BigInt(hi) << 32n) | BigInt(lo)) });
          return UNALLOCATED;
        case 1: // unmapped by the guest (SCSI UNMAP)
        case 2: // zero grain
          return ZERO;
        case 3: {
          const index = seSparseGrainIndex(lo, hi);
          const at = grainsAt + index * grainBytes;
          if (!Number.isSafeInteger(at) || at >= fileSize) {
            throw new DiskError('CORRUPT', 'grain lies past the end of the file', { ...where, expected: `grain index < ${Math.ceil((fileSize - grainsAt) / grainBytes)}`, found: index });
          }
          return at;
        }
        default:
          throw new DiskError('CORRUPT', 'unknown grain table entry type', { ...where, expected: 'top nibble 0-3', found: hex((BigInt(hi) << 32n) | BigInt(lo)) });
      }
    };
    checkLine(line, capacity, path, 'capacity');
    const facts: SeSparseFacts = { kind: 'SESparse', fileSize, header: h, volatile: v, needed, gtSlots, grainsAt };
    return new EsxSparseExtent(line, store, path, { kind: 'SESparse', capacityBytes: capacity * SECTOR_SIZE, grainBytes, tables, entryBytes: 8, decode, version: 2, facts });
  }

  /** The same extent under another extent line (a bare file is described once its header is read). */
  withLine(line: ExtentLine): EsxSparseExtent {
    checkLine(line, this.layout.capacityBytes / SECTOR_SIZE, this.path, this.layout.kind === 'COWD' ? 'numSectors' : 'capacity');
    // one cache and one writer for both: the writer keeps the cached tables current
    return new EsxSparseExtent(line, this.store, this.path, this.layout, this.gtCache, this.writer);
  }

  // ---------------------------------------------------------------- tables

  private async table(g: number): Promise<Uint32Array | undefined> {
    const at = this.layout.tables[g]!;
    if (at === 0) return undefined;
    const hit = this.gtCache.get(g);
    if (hit) return hit;
    const words = await readU32Array(this.store, at, (ENTRIES_PER_GT * this.layout.entryBytes) / 4);
    if (this.gtCache.size >= GT_CACHE_LIMIT) this.gtCache.delete(this.gtCache.keys().next().value!);
    this.gtCache.set(g, words);
    return words;
  }

  // ---------------------------------------------------------------- Extent

  read(into: Buffer, offset: number): Promise<void> {
    const { tables, decode, grainBytes } = this.layout;
    return planRead(into, offset, {
      unit: grainBytes,
      locate: (gi) => {
        const g = Math.floor(gi / ENTRIES_PER_GT);
        if (tables[g] === 0) return ZEROS;
        const entry = (words: Uint32Array) => {
          const e = decode(words, gi - g * ENTRIES_PER_GT, gi);
          return e < 0 ? ZEROS : e;
        };
        // a cached table answers at once; a table to load costs one await per table, not per grain
        const words = this.gtCache.get(g);
        return words ? entry(words) : this.table(g).then((w) => entry(w!));
      },
      readFile: (part, at) => this.readFile(part, at),
    });
  }

  private async readFile(into: Buffer, at: number): Promise<void> {
    // A grain whose end lies past the end of a truncated file reads as zeros there (as QEMU does).
    (await this.store.readZeroPadded(at, into.length)).copy(into);
  }

  async write(data: Buffer, offset: number): Promise<void> {
    if (!this.writer) throw new DiskError(this.layout.kind === 'COWD' ? 'RDONLY' : 'NOTSUPPORTED', `${this.layout.kind} extent opened read-only`, { path: this.path, offset, field: 'extent type', found: this.line.type });
    await this.writer.write(data, offset);
  }

  async status(offset: number, length: number): Promise<BlockExtent[]> {
    const out: BlockExtent[] = [];
    const push = (at: number, n: number, state: BlockState) => appendExtent(out, at, n, state);
    const gb = this.layout.grainBytes;
    const coverage = ENTRIES_PER_GT * gb;
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const g = Math.floor(pos / coverage);
      const rangeEnd = Math.min((g + 1) * coverage, end);
      const words = await this.table(g);
      if (words === undefined) {
        push(pos, rangeEnd - pos, 'unallocated');
        pos = rangeEnd;
        continue;
      }
      const wide = this.layout.entryBytes === 8;
      while (pos < rangeEnd) {
        const gi = Math.floor(pos / gb);
        const n = Math.min((gi + 1) * gb, rangeEnd) - pos;
        const i = gi - g * ENTRIES_PER_GT;
        // an all-zero entry is unallocated in both kinds: skip the decoder for the common case
        // (a whole-disk scan of a 512-byte-grain COWD visits billions of entries)
        if (words[wide ? 2 * i : i] === 0 && (!wide || words[2 * i + 1] === 0)) {
          push(pos, n, 'unallocated');
          pos += n;
          continue;
        }
        const e = this.layout.decode(words, i, gi);
        push(pos, n, e === UNALLOCATED ? 'unallocated' : e === ZERO ? 'zero' : 'data');
        pos += n;
      }
    }
    return out;
  }

  async flush(): Promise<void> {
    if (this.writer) await this.store.flush();
  }

  async close(): Promise<void> {
    try {
      await this.writer?.close();
    } finally {
      this.gtCache.clear();
      await this.store.close();
    }
  }
}

/** Grain index of an allocated SESparse GTE (top nibble 3): entry bits 48-59 are its low 12 bits, bits 0-47 the rest. */
export function seSparseGrainIndex(lo: number, hi: number): number {
  return ((hi & 0xffff) * 2 ** 32 + lo) * 4096 + ((hi >>> 16) & 0xfff);
}

function refuseWrite(readOnly: boolean, path: string, what: string): void {
  if (!readOnly) {
    throw new DiskError('NOTSUPPORTED', `${what} extents can only be opened read-only (vdkit, like QEMU, does not write SESparse: its journal, free bitmap and back map are not documented); open the disk read-only`, { path, field: 'extent type' });
  }
}

function checkLine(line: ExtentLine, capacitySectors: number, path: string, field: string): void {
  if (line.sectorCount > capacitySectors) {
    throw new DiskError('CORRUPT', 'extent line is larger than the extent header capacity', { path, field, expected: `>= ${line.sectorCount} sectors`, found: capacitySectors });
  }
}

