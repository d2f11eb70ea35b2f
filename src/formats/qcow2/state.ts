/**
 * The open qcow2 image as every role sees it: the header, the in-memory L1 table, the refcounts,
 * the snapshot list, the L2 table cache, and the guest-to-host mapping over them (QEMU's
 * qcow2-cluster.c lookup side). The roles (open.ts, write.ts, links.ts, metadata.ts,
 * maintain.ts, compact.ts, defrag.ts, resize.ts, check.ts) are plain functions over this state;
 * image.ts adds the data path, which the state declares abstract so maintenance can call it.
 */
import { DiskError, atMost } from '../../core/errors.js';
import { inflateRawSync, zlibConstants as zc } from '../../core/platform.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { BlockExtent, BlockState } from '../types.js';
import { type FileState, Refcounts } from './refcounts.js';
import type { BitmapSet } from './bitmaps.js';
import type { SnapshotInfo } from './snapshots.js';
import { AUTOCLEAR, COMPRESSION_ZSTD, decodeL1, decodeL2, encodeL1, EXT, type ExtensionRecord, formatFromQemu, type Geometry, geometry, Header, type HeaderField, type HeaderValue, INCOMPAT, type L2Entry, V2_HEADER_LENGTH } from './structs.js';

/** L2 tables kept in memory */
const L2_CACHE_BYTES = 32 * 1024 * 1024;
/** inflated compressed clusters kept (sequential reads of one cluster in pieces) */
const INFLATE_CACHE = 4;

export interface Segment {
  offset: number;
  length: number;
  state: BlockState;
  /** normal data: host byte offset of `offset` */
  host: number;
  /** compressed data: the cluster's descriptor and guest start */
  comp?: { offset: number; csize: number; cluster: number; field: string };
}

/** An external data file (incompatible bit 2, header extension 0x44415441): the guest data. */
export interface DataFile {
  /** the name as the image stores it (relative to the image's folder, as QEMU resolves it) */
  name: string;
  /** the name in the namespace */
  path: string;
  store: ByteStore;
  /** bytes of the data file (grows as writes land past its end) */
  size: number;
  /** autoclear bit 1 (data_file_raw): the data file is a raw image of the guest, kept so */
  raw: boolean;
}

export abstract class Qcow2State {
  readonly clusterSize: number;
  readonly g: Geometry;
  readonly l2Cache = new Map<number, Buffer>();
  readonly l2CacheLimit: number;
  /** Image.storeZeros: written zeros are stored as data clusters, not zero entries */
  storeZeros = false;
  readonly inflated = new Map<number, Buffer>();
  closed = false;
  prepared = false;

  /** set by open: where this image's file is named */
  namespace!: Namespace;
  /**
   * set by open when the image has an external data file: host offsets of data clusters are
   * offsets in it (equal to the guest offsets when vdkit or QEMU allocate them), and data
   * clusters have no refcounts in the image file
   */
  dataFile?: DataFile;
  /**
   * the persistent bitmaps (set by open when the bitmaps extension is there and autoclear bit 0
   * says it is valid; bitmaps.ts, bitmap-write.ts)
   */
  bitmaps?: BitmapSet;
  constructor(
    readonly path: string,
    readonly store: ByteStore,
    readonly h: HeaderValue,
    /** header bytes between 112 and header_length (fields from a newer QEMU), kept as they are */
    readonly headerTail: Buffer,
    public exts: ExtensionRecord[],
    public backingName: string | undefined,
    /** bytes of cluster 0 the header, extensions and name use now */
    public headerArea: number,
    public l1: Buffer,
    /** replaced when amend rewrites the refcounts at another width */
    public refs: Refcounts,
    /** replaced when the table is rewritten (snapshot-write.ts) */
    public snapshots: SnapshotInfo[],
    /** bytes the snapshot table spans from snapshots_offset */
    public snapshotTableBytes: number,
    readonly file: FileState,
    readonly readOnly: boolean,
    readonly warnings: string[],
  ) {
    this.g = geometry(h.cluster_bits, (h.incompatible_features & (1n << BigInt(INCOMPAT.EXTL2))) !== 0n, (h.incompatible_features & (1n << BigInt(INCOMPAT.DATA_FILE))) !== 0n);
    this.clusterSize = this.g.clusterSize;
    this.l2CacheLimit = Math.max(16, Math.floor(L2_CACHE_BYTES / this.clusterSize));
  }

  // ------------------------------------------------------------------ the data path (image.ts)

  abstract blockStatus(offset: number, length: number): Promise<BlockExtent[]>;
  abstract write(data: Buffer, offset: number): Promise<void>;
  abstract flush(): Promise<void>;
  abstract close(): Promise<void>;

  // ------------------------------------------------------------------ header and features

  get type(): string {
    return this.h.version === 2 ? 'v2' : 'v3';
  }

  /** virtual size in bytes (header `size`) */
  get capacity(): number {
    return Number(this.h.size);
  }

  /** geometry of the mapping (cluster size, L2 entry size and count) */
  get geometry(): Geometry {
    return this.g;
  }

  get header(): Readonly<HeaderValue> {
    return this.h;
  }

  get l1Table(): Buffer {
    return this.l1;
  }

  get fileSize(): number {
    return this.file.size;
  }

  get storeForCheck(): ByteStore {
    return this.store;
  }

  /** data of the header extension of this type, if the image has one */
  extension(type: number): Buffer | undefined {
    return this.exts.find((e) => e.type === type)?.data;
  }

  hasIncompat(bit: number): boolean {
    return (this.h.incompatible_features & (1n << BigInt(bit))) !== 0n;
  }

  /** vdkit's name for the backing format extension's format (QEMU "vpc" is vdkit "vhd"), if present */
  backingFormat(): string | undefined {
    const e = this.exts.find((x) => x.type === EXT.BACKING_FORMAT);
    return e ? formatFromQemu(e.data.toString('latin1')) : undefined;
  }

  /** Operations that move or share data clusters within the image file (QEMU refuses snapshots too). */
  refuseDataFile(what: string): void {
    if (!this.dataFile) return;
    throw new DiskError('NOTSUPPORTED', `${what}: not for an image with an external data file (its data clusters are in ${this.dataFile.name}, not in the image file)`, { path: this.path, struct: 'header', field: 'incompatible_features', bits: [INCOMPAT.DATA_FILE] });
  }

  checkWritable(): void {
    if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.path });
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
  }

  /** Before the first change: clear the autoclear bits we do not maintain (unknown ones). */
  async prepareWrite(): Promise<void> {
    this.checkWritable();
    if (this.prepared) return;
    // the raw bit of a data file stays: writes keep the data file raw (write.ts); the bitmaps
    // bit stays while the bitmaps are kept in step (bitmap-write.ts)
    let keep = this.dataFile?.raw ? 1n << BigInt(AUTOCLEAR.DATA_FILE_RAW) : 0n;
    if (this.bitmaps) keep |= 1n << BigInt(AUTOCLEAR.BITMAPS);
    if (this.h.version >= 3 && (this.h.autoclear_features & ~keep) !== 0n) {
      this.h.autoclear_features &= keep;
      await this.writeHeaderFields(['autoclear_features']);
    }
    this.prepared = true;
  }

  /** Write the bytes of these header fields (encoded from the current header) in one write. */
  async writeHeaderFields(fields: HeaderField[]): Promise<void> {
    const full = Header.encode(this.h);
    let from = Infinity;
    let to = 0;
    const widths: Partial<Record<HeaderField, number>> = {
      version: 4, size: 8, refcount_table_clusters: 4, l1_size: 4, incompatible_features: 8, compatible_features: 8, autoclear_features: 8,
      refcount_table_offset: 8, l1_table_offset: 8, nb_snapshots: 4, snapshots_offset: 8, refcount_order: 4,
    };
    for (const f of fields) {
      const at = Header.offsetOf(f);
      const w = widths[f];
      if (w === undefined) throw new DiskError('INTERNAL', `writeHeaderFields: no width for ${f}`);
      if (this.h.version === 2 && at >= V2_HEADER_LENGTH) throw new DiskError('INTERNAL', `version 2 headers have no ${f}`);
      from = Math.min(from, at);
      to = Math.max(to, at + w);
    }
    await this.store.write(from, full.subarray(from, to));
  }

  /** Clear the dirty bit after a repair run rebuilt the refcounts. */
  async clearDirty(): Promise<void> {
    if (!this.hasIncompat(INCOMPAT.DIRTY)) return;
    this.h.incompatible_features &= ~(1n << BigInt(INCOMPAT.DIRTY));
    await this.writeHeaderFields(['incompatible_features']);
  }

  // ------------------------------------------------------------------ tables

  /** Rewrite L1 entry `i` from the in-memory table (check --repair fixes COPIED flags). */
  async writeL1Entry(i: number, l2Offset: number, copied: boolean): Promise<void> {
    encodeL1(this.l1, i, l2Offset, copied);
    await this.store.write(Number(this.h.l1_table_offset) + i * 8, this.l1.subarray(i * 8, i * 8 + 8));
  }

  /** Rewrite L1 entries (check --repair fixes COPIED flags): one write spanning them. */
  async writeL1Entries(list: [index: number, l2Offset: number, copied: boolean][]): Promise<void> {
    if (list.length === 0) return;
    let lo = Infinity;
    let hi = -1;
    for (const [i, off, copied] of list) {
      encodeL1(this.l1, i, off, copied);
      lo = Math.min(lo, i);
      hi = Math.max(hi, i);
    }
    await this.store.write(Number(this.h.l1_table_offset) + lo * 8, this.l1.subarray(lo * 8, (hi + 1) * 8));
  }

  /** Write whole clusters the caller allocated (check --repair copies). */
  async writeRaw(at: number, bytes: Buffer): Promise<void> {
    await this.store.write(at, bytes);
    this.file.size = Math.max(this.file.size, at + bytes.length);
  }

  /** Rewrite bytes of an L2 table in the file and in the cache (check --repair). */
  async writeL2Bytes(l2Offset: number, byteOffset: number, bytes: Buffer): Promise<void> {
    await this.store.write(l2Offset + byteOffset, bytes);
    const t = this.l2Cache.get(l2Offset);
    if (t) bytes.copy(t, byteOffset);
  }

  // ------------------------------------------------------------------ mapping

  /** bytes of guest data one L2 table maps */
  get span(): number {
    return 2 ** this.g.l2Bits;
  }

  /** The L2 table of L1 entry `i`, or null; its offset is checked first. */
  async loadL2(i: number): Promise<Buffer | null> {
    if (i >= this.h.l1_size) return null;
    const e = decodeL1(this.l1, i);
    if (e.offset === 0) return null;
    const hit = this.l2Cache.get(e.offset);
    if (hit) {
      this.l2Cache.delete(e.offset);
      this.l2Cache.set(e.offset, hit);
      return hit;
    }
    const where = { path: this.path, struct: 'L1 table', field: `l1[${i}]`, found: e.offset };
    if (e.offset % this.clusterSize !== 0) throw new DiskError('CORRUPT', 'L2 table offset is not cluster aligned', where);
    if (e.offset + this.clusterSize > this.file.size) throw new DiskError('CORRUPT', 'L2 table lies past the end of the file', { ...where, expected: atMost(this.file.size - this.clusterSize) });
    const t = await this.store.read(e.offset, this.clusterSize);
    this.cacheL2(e.offset, t);
    return t;
  }

  cacheL2(offset: number, t: Buffer): void {
    this.l2Cache.set(offset, t);
    if (this.l2Cache.size > this.l2CacheLimit) this.l2Cache.delete(this.l2Cache.keys().next().value!);
  }

  /** A data cluster's host offset, checked (aligned, inside the file; a data file reads zeros past its end, as QEMU's). */
  checkData(e: L2Entry, field: string): void {
    if (e.offset % this.clusterSize !== 0) throw new DiskError('CORRUPT', 'data cluster offset is not cluster aligned', { path: this.path, struct: 'L2 table', field, found: e.offset });
    if (this.dataFile) return;
    if (e.offset >= this.file.size) throw new DiskError('CORRUPT', 'data cluster lies past the end of the file', { path: this.path, struct: 'L2 table', field, expected: `< ${this.file.size}`, found: e.offset });
  }

  /** What [offset, offset+length) is made of, in order; adjacent like pieces merged. */
  async segments(offset: number, length: number): Promise<Segment[]> {
    const out: Segment[] = [];
    const push = (s: Segment) => {
      const last = out[out.length - 1];
      if (last && last.state === s.state && !last.comp && !s.comp && last.offset + last.length === s.offset && (s.state !== 'data' || last.host + last.length === s.host)) last.length += s.length;
      else out.push(s);
    };
    const { clusterSize: cs, l2Entries } = this.g;
    const extended = this.g.l2EntrySize === 16;
    const sub = cs / 32;
    const end = offset + length;
    let at = offset;
    while (at < end) {
      const l1i = Math.floor(at / this.span);
      const sliceEnd = Math.min(end, (l1i + 1) * this.span);
      const l2 = await this.loadL2(l1i);
      if (!l2) {
        push({ offset: at, length: sliceEnd - at, state: 'unallocated', host: -1 });
        at = sliceEnd;
        continue;
      }
      while (at < sliceEnd) {
        const c = Math.floor(at / cs);
        const cStart = c * cs;
        const cEnd = Math.min(sliceEnd, cStart + cs);
        const idx = c - l1i * l2Entries;
        if (!extended && l2.readUInt32BE(idx * 8) === 0 && l2.readUInt32BE(idx * 8 + 4) === 0) {
          // a run of empty standard entries (most of a sparse table) is one unallocated piece,
          // found without decoding each entry: `info` counts the data of every table this way
          let next = idx + 1;
          while ((l1i * l2Entries + next) * cs < sliceEnd && l2.readUInt32BE(next * 8) === 0 && l2.readUInt32BE(next * 8 + 4) === 0) next++;
          const runEnd = Math.min(sliceEnd, (l1i * l2Entries + next) * cs);
          push({ offset: at, length: runEnd - at, state: 'unallocated', host: -1 });
          at = runEnd;
          continue;
        }
        const e = decodeL2(l2, idx, this.g);
        const field = `l2[${l1i}][${idx}]`;
        if (e.kind === 'compressed' && this.dataFile) {
          throw new DiskError('CORRUPT', 'compressed cluster in an image with an external data file (QEMU refuses them too)', { path: this.path, struct: 'L2 table', field, found: e.offset });
        } else if (e.kind === 'compressed') {
          push({ offset: at, length: cEnd - at, state: 'data', host: -1, comp: { offset: e.offset, csize: e.csize, cluster: cStart, field } });
        } else if (extended) {
          if (e.offset !== 0) this.checkData(e, field);
          for (let x = at; x < cEnd; ) {
            const s = Math.floor((x - cStart) / sub);
            const sEnd = Math.min(cEnd, cStart + (s + 1) * sub);
            const alloc = (e.allocMask >>> s) & 1;
            const zero = (e.zeroMask >>> s) & 1;
            if (alloc && (zero || e.offset === 0)) {
              throw new DiskError('CORRUPT', zero ? 'subcluster both allocated and zero' : 'allocated subcluster without a host cluster', { path: this.path, struct: 'L2 table', field, found: s });
            }
            if (alloc) push({ offset: x, length: sEnd - x, state: 'data', host: e.offset + (x - cStart) });
            else push({ offset: x, length: sEnd - x, state: zero ? 'zero' : 'unallocated', host: -1 });
            x = sEnd;
          }
        } else if (e.kind === 'normal') {
          this.checkData(e, field);
          push({ offset: at, length: cEnd - at, state: 'data', host: e.offset + (at - cStart) });
        } else {
          push({ offset: at, length: cEnd - at, state: e.kind === 'zero' ? 'zero' : 'unallocated', host: -1 });
        }
        at = cEnd;
      }
    }
    return out;
  }

  /** Guest data at `host`: in the image file, or in the data file when there is one. */
  async readHost(dst: Buffer, host: number): Promise<void> {
    const [store, size] = this.dataFile ? [this.dataFile.store, this.dataFile.size] : [this.store, this.file.size];
    if (host + dst.length <= size) await store.readInto(dst, host);
    else (await store.readZeroPadded(host, dst.length)).copy(dst);
  }

  /** One compressed cluster, inflated (raw deflate, or zstd: exactly one cluster, as QEMU). */
  async inflate(comp: { offset: number; csize: number; field: string; cluster?: number }): Promise<Buffer> {
    const hit = this.inflated.get(comp.offset);
    if (hit) return hit;
    const where = { path: this.path, struct: 'L2 table', field: comp.field, found: comp.offset };
    if (comp.offset >= this.file.size) throw new DiskError('CORRUPT', 'compressed cluster lies past the end of the file', { ...where, expected: `< ${this.file.size}` });
    const src = await this.store.read(comp.offset, Math.min(comp.csize, this.file.size - comp.offset));
    let out: Buffer;
    if (this.h.compression_type === COMPRESSION_ZSTD) {
      const { unzstdCluster } = await import('./zstd.js');
      out = await unzstdCluster(src, this.clusterSize, { path: this.path, field: comp.field, found: comp.offset, guest: comp.cluster ?? -1 });
    } else {
      try {
        out = inflateRawSync(src, { finishFlush: zc.Z_SYNC_FLUSH, maxOutputLength: this.clusterSize });
      } catch (err) {
        throw new DiskError('ZLIB', `compressed cluster does not inflate into one cluster (${(err as Error).message})`, where, { cause: err });
      }
      if (out.length !== this.clusterSize) {
        throw new DiskError('ZLIB', 'compressed cluster inflates to less than a cluster', { ...where, expected: this.clusterSize, length: out.length });
      }
    }
    this.inflated.set(comp.offset, out);
    if (this.inflated.size > INFLATE_CACHE) this.inflated.delete(this.inflated.keys().next().value!);
    return out;
  }
}
