/**
 * qcow2 driver: one QEMU copy-on-write image (version 2 or 3) opened as an Image.
 *
 * Design notes (full map in NOTES.md)
 * - Mapping: L1 (in memory) -> L2 tables (LRU cache) -> host clusters; an L2 entry is
 *   unallocated (ask the backing file), zero (flag, with or without a preallocated cluster),
 *   normal, or compressed (raw deflate, inflated into exactly one cluster). Extended L2 entries
 *   (subclusters) are read, per subcluster; images that use them open read-only.
 * - Allocation and crash-safe order for every write request, per L2 table it touches:
 *   refcounts of the new L2 table and data clusters (written through by refcounts.ts), then the
 *   data, then the L2 table (whole, when new) or its changed entries, then the L1 entry; clusters
 *   the request stops using (copy-on-write sources, clusters turned into zero-flag entries) are
 *   freed last. A killed writer leaves at worst clusters whose refcount is too high (leaks that
 *   `check --repair` or `qemu-img check -r leaks` reclaims), never a table pointing at a cluster
 *   of refcount 0 or at data not written yet.
 * - Copy-on-write: an L2 table or data cluster whose COPIED bit is clear (refcount != 1:
 *   internal snapshots share it, or it is compressed) is never written in place; a copy is
 *   made, pointed at, and the original's refcount lowered. clusterSize is the cluster size, so
 *   the chain layer widens partial writes over clusters this image lacks and fills them from the
 *   backing chain; partial writes over zero clusters are padded with zeros here.
 * - Whole clusters of zeros become zero-flag entries (version 3) instead of data; in a base
 *   without a backing file, zeros over an unallocated cluster change nothing.
 * - No lazy refcounts, so the dirty bit is never set by us; a dirty image opened read-write has
 *   its refcounts rebuilt first (check.ts), as QEMU does.
 */
import { zlibConstants as zc, inflateRawSync } from '../../core/platform.js';
import { DiskError } from '../../core/errors.js';
import { toSafeNumber } from '../../core/ints.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { BackingChange, BackingLink, BlockExtent, BlockState, Capabilities, CheckOptions, CheckReport, DiskInfo, Image, InPlaceOptions, InPlaceResult, OpenOptions } from '../types.js';
import { checkQcow2 } from './check.js';
import { Refcounts, type FileState } from './refcounts.js';
import {
  EXT,
  ExtensionHeader,
  Header,
  INCOMPAT,
  KNOWN_INCOMPAT_MASK,
  MAX_BACKING_NAME,
  MAX_CLUSTER_BITS,
  MAX_L1_BYTES,
  MAX_REFTABLE_BYTES,
  MAX_SNAPSHOTS,
  MAX_SNAPSHOT_EXTRA,
  MAX_SNAPSHOT_TABLE_BYTES,
  MIN_CLUSTER_BITS,
  SnapshotHeader,
  V2_HEADER_LENGTH,
  V3_HEADER_LENGTH,
  V3_MIN_HEADER_LENGTH,
  bitsOf,
  decodeFeatureTable,
  decodeL1,
  decodeL2,
  encodeHeaderArea,
  encodeL1,
  encodeL2,
  formatFromQemu,
  formatToQemu,
  geometry,
  headerAreaSize,
  l1EntriesFor,
  type ExtensionRecord,
  type Geometry,
  type HeaderField,
  type HeaderValue,
  type L2Entry,
} from './structs.js';
import { isZero } from '../../binary/zeros.js';
import { planRelayout, type PlanItem, type PlanMove, type RelayoutPlan } from '../common/relayout-plan.js';

/** clusters moved per crash-safe step of defragment (4 flushes each) */
const MOVE_BATCH = 64;

export const QCOW2_CAPABILITIES: Capabilities = Object.freeze({
  write: 'native',
  blockStatus: 'native',
  zero: 'native',
  metadata: true,
  createTypes: ['v3', 'v2'],
  differencing: true,
  differencingSameSize: false,
  parentLink: 'name',
  identityFollowsContent: false,
  split: false,
  discard: 'native',
  resize: 'grow-shrink',
  flush: 'concurrent',
  check: 'repair',
  compact: 'native',
  defragment: 'native',
});

const READ_ONLY_CAPABILITIES: Capabilities = Object.freeze({ ...QCOW2_CAPABILITIES, write: 'none' });

/**
 * qcow2 records no identity of its backing file (a child holds only the name and format), so
 * there is nothing to compare: `backing()` never has a parentId. Chain operations still ask
 * the parent for an identity to record (createChild, commit, rebase); every qcow2 image answers
 * with this constant, which no qcow2 child ever checks.
 */

/** L2 tables kept in memory */
const L2_CACHE_BYTES = 32 * 1024 * 1024;
/** inflated compressed clusters kept (sequential reads of one cluster in pieces) */
const INFLATE_CACHE = 4;

export interface SnapshotInfo {
  index: number;
  id: string;
  name: string;
  l1Offset: number;
  l1Size: number;
  /** seconds since the epoch */
  date: number;
  vmStateSize: number;
  /** virtual disk size at the time (extra data), when recorded */
  diskSize?: number;
}

interface Segment {
  offset: number;
  length: number;
  state: BlockState;
  /** normal data: host byte offset of `offset` */
  host: number;
  /** compressed data: the cluster's descriptor and guest start */
  comp?: { offset: number; csize: number; cluster: number; field: string };
}

interface Plan {
  idx: number;
  /** guest offset of the cluster */
  start: number;
  action: 'inplace' | 'alloc' | 'zero';
  /** inplace: the bytes and where they go in the host file; alloc: the whole new cluster */
  data: Buffer;
  host: number;
  /** clusters to free after the L2 update (byte ranges) */
  free?: [number, number];
  /** alloc over zeros: the written bytes alone, at this offset in the cluster (the rest reads as zeros) */
  piece?: { at: number; bytes: Buffer };
}

export class Qcow2Image implements Image {
  readonly format = 'qcow2';
  readonly capabilities: Capabilities;
  readonly clusterSize: number;
  private readonly g: Geometry;
  private readonly l2Cache = new Map<number, Buffer>();
  private readonly l2CacheLimit: number;
  private readonly inflated = new Map<number, Buffer>();
  private closed = false;
  private prepared = false;

  /** set by open: where this image's file is named */
  namespace!: Namespace;
  private constructor(
    readonly path: string,
    private readonly store: ByteStore,
    private readonly h: HeaderValue,
    /** header bytes between 112 and header_length (fields from a newer QEMU), kept as they are */
    private readonly headerTail: Buffer,
    private exts: ExtensionRecord[],
    private backingName: string | undefined,
    /** bytes of cluster 0 the header, extensions and name use now */
    private headerArea: number,
    private l1: Buffer,
    readonly refs: Refcounts,
    readonly snapshots: SnapshotInfo[],
    /** bytes the snapshot table spans from snapshots_offset */
    readonly snapshotTableBytes: number,
    private readonly file: FileState,
    readonly readOnly: boolean,
    private readonly warnings: string[],
  ) {
    this.g = geometry(h.cluster_bits, (h.incompatible_features & (1n << BigInt(INCOMPAT.EXTL2))) !== 0n);
    this.clusterSize = this.g.clusterSize;
    this.capabilities = readOnly ? READ_ONLY_CAPABILITIES : QCOW2_CAPABILITIES;
    this.l2CacheLimit = Math.max(16, Math.floor(L2_CACHE_BYTES / this.clusterSize));
  }

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

  // ------------------------------------------------------------------ open and validation

  static async open(ns: Namespace, path: string, opts: OpenOptions = {}): Promise<Qcow2Image> {
    const readOnly = !!opts.readOnly;
    const store = await ns.open(path, { write: !readOnly });
    let image: Qcow2Image;
    try {
      image = await Qcow2Image.load(path, store, readOnly);
      image.namespace = ns;
    } catch (err) {
      await store.close().catch(() => {});
      throw err;
    }
    try {
      if (!readOnly) await image.readWriteChecks(!!opts.cowByCaller, !!opts.forCheck);
    } catch (err) {
      await image.close().catch(() => {});
      throw err;
    }
    return image;
  }

  private static async load(path: string, store: ByteStore, readOnly: boolean): Promise<Qcow2Image> {
    const fileSize = await store.size();
    const bad = (field: string, message: string, expected?: unknown, found?: unknown, code: 'CORRUPT' | 'INVALIDDISK' = 'CORRUPT') =>
      new DiskError(code, message, { path, struct: 'header', field, expected, found });
    if (fileSize < V2_HEADER_LENGTH) throw bad('magic', 'file is too short for a qcow2 header', `>= ${V2_HEADER_LENGTH} bytes`, fileSize, 'INVALIDDISK');
    const first = await store.readZeroPadded(0, V3_HEADER_LENGTH);
    Header.decode(first, 0, path); // magic
    const version = first.readUInt32BE(Header.offsetOf('version'));
    if (version !== 2 && version !== 3) {
      throw new DiskError('UNSUPPORTEDDISKVERSION', 'unsupported qcow2 version', { path, struct: 'header', field: 'version', expected: '2 or 3', found: version });
    }
    const clusterBits = first.readUInt32BE(Header.offsetOf('cluster_bits'));
    if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
      throw bad('cluster_bits', 'cluster size out of range', `${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS} (512 B to 2 MiB)`, clusterBits);
    }
    const cs = 2 ** clusterBits;
    let headerLength = V2_HEADER_LENGTH;
    if (version === 3) {
      headerLength = first.readUInt32BE(Header.offsetOf('header_length'));
      if (headerLength < V3_MIN_HEADER_LENGTH || headerLength % 8 !== 0 || headerLength > cs) {
        throw bad('header_length', 'invalid header length', `a multiple of 8 from ${V3_MIN_HEADER_LENGTH} to the cluster size ${cs}`, headerLength);
      }
    }
    // cluster 0 holds the header, its extensions and the backing file name
    const c0 = await store.readZeroPadded(0, Math.min(cs, Math.max(fileSize, V3_HEADER_LENGTH)));
    const raw = Buffer.alloc(V3_HEADER_LENGTH);
    c0.copy(raw, 0, 0, Math.min(headerLength, V3_HEADER_LENGTH));
    const h = Header.decode(raw, 0, path);
    if (version === 2) {
      h.refcount_order = 4;
      h.header_length = V2_HEADER_LENGTH;
    }
    const headerTail = Buffer.from(c0.subarray(V3_HEADER_LENGTH, Math.max(V3_HEADER_LENGTH, headerLength)));

    // ---- header extensions (up to the backing file name, or the end of cluster 0)
    const backingOffset = toSafeNumber(h.backing_file_offset, { path, struct: 'header', field: 'backing_file_offset' });
    if (backingOffset !== 0 && (backingOffset > cs || backingOffset < headerLength)) {
      throw bad('backing_file_offset', 'backing file name must lie in cluster 0, after the header', `${headerLength}..${cs}`, backingOffset);
    }
    if (backingOffset !== 0 && h.backing_file_size > MAX_BACKING_NAME) {
      throw bad('backing_file_size', 'backing file name is too long', `<= ${MAX_BACKING_NAME} bytes`, h.backing_file_size);
    }
    if (backingOffset !== 0 && (backingOffset + h.backing_file_size > cs || backingOffset + h.backing_file_size > fileSize)) {
      throw bad('backing_file_size', 'backing file name runs past cluster 0 or the end of the file', `<= ${Math.min(cs, fileSize) - backingOffset}`, h.backing_file_size);
    }
    const extEnd = Math.min(backingOffset !== 0 ? backingOffset : cs, c0.length);
    const exts: ExtensionRecord[] = [];
    let at = headerLength;
    let areaEnd = headerLength;
    let featureNames = new Map<string, string>();
    for (let n = 0; at < extEnd; n++) {
      const where = { path, struct: 'header extension', field: `extension[${n}]`, offset: at };
      if (at + 8 > extEnd) throw new DiskError('CORRUPT', 'truncated header extension', { ...where, expected: `8 bytes before ${extEnd}`, found: extEnd - at });
      const e = ExtensionHeader.decode(c0, at, path);
      if (e.type === EXT.END) {
        areaEnd = at + 8;
        break;
      }
      if (e.length > extEnd - at - 8) {
        throw new DiskError('CORRUPT', 'header extension runs past the end of cluster 0 (or into the backing file name)', { ...where, expected: `<= ${extEnd - at - 8} bytes`, found: e.length });
      }
      const data = Buffer.from(c0.subarray(at + 8, at + 8 + e.length));
      if (e.type === EXT.BACKING_FORMAT && e.length > 15) {
        throw new DiskError('CORRUPT', 'backing format name is too long', { ...where, field: 'backing format', expected: '<= 15 bytes', found: e.length });
      }
      if (e.type === EXT.FEATURE_TABLE) featureNames = decodeFeatureTable(data);
      exts.push({ type: e.type, data });
      at += 8 + Math.ceil(e.length / 8) * 8;
      areaEnd = at;
    }
    let backingName: string | undefined;
    if (backingOffset !== 0) {
      backingName = c0.toString('utf8', backingOffset, backingOffset + h.backing_file_size);
      areaEnd = backingOffset + h.backing_file_size;
    }

    // ---- features
    const incompat = h.incompatible_features;
    const named = (type: number, bits: number[]) => bits.map((b) => `${b}${featureNames.has(`${type}:${b}`) ? ` (${featureNames.get(`${type}:${b}`)})` : ''}`).join(', ');
    const unknown = incompat & ~KNOWN_INCOMPAT_MASK;
    if (unknown !== 0n) {
      throw new DiskError('UNSUPPORTEDFEATURE', `unknown incompatible feature bits ${named(0, bitsOf(unknown))}`, {
        path,
        struct: 'header',
        field: 'incompatible_features',
        expected: 'bits 0..4 only',
        found: `0x${incompat.toString(16)}`,
        bits: bitsOf(unknown),
      });
    }
    const has = (bit: number) => (incompat & (1n << BigInt(bit))) !== 0n;
    if (has(INCOMPAT.DATA_FILE)) {
      throw new DiskError('UNSUPPORTEDFEATURE', 'external data files (incompatible bit 2) are not supported', { path, struct: 'header', field: 'incompatible_features', found: `0x${incompat.toString(16)}`, bits: [INCOMPAT.DATA_FILE] });
    }
    if (h.compression_type !== 0 || has(INCOMPAT.COMPRESSION)) {
      if (h.compression_type === 0 || !has(INCOMPAT.COMPRESSION)) {
        throw bad('compression_type', 'compression type and incompatible bit 3 disagree', 'both zero (deflate) or both set', `type ${h.compression_type}, bit 3 ${has(INCOMPAT.COMPRESSION) ? 'set' : 'clear'}`);
      }
      throw new DiskError('UNSUPPORTEDFEATURE', `compression type ${h.compression_type}${h.compression_type === 1 ? ' (zstd)' : ''} is not supported (deflate only)`, {
        path,
        struct: 'header',
        field: 'compression_type',
        expected: 0,
        found: h.compression_type,
      });
    }
    if (h.crypt_method !== 0) {
      throw new DiskError('UNSUPPORTEDFEATURE', `encrypted images (crypt_method ${h.crypt_method}: ${h.crypt_method === 1 ? 'AES' : h.crypt_method === 2 ? 'LUKS' : 'unknown'}) are not supported`, {
        path,
        struct: 'header',
        field: 'crypt_method',
        expected: 0,
        found: h.crypt_method,
      });
    }
    if (h.refcount_order > 6) throw bad('refcount_order', 'refcount width out of range', '0..6 (1 to 64 bits)', h.refcount_order);
    if (has(INCOMPAT.EXTL2) && clusterBits < 14) throw bad('cluster_bits', 'extended L2 entries need clusters of at least 16 KiB (subclusters of 512 bytes)', '>= 14', clusterBits);

    // ---- size and L1
    const size = toSafeNumber(h.size, { path, struct: 'header', field: 'size' });
    const g = geometry(clusterBits, has(INCOMPAT.EXTL2));
    if (h.l1_size > MAX_L1_BYTES / 8) throw bad('l1_size', "L1 table larger than QEMU's 32 MiB cap", `<= ${MAX_L1_BYTES / 8} entries`, h.l1_size);
    const l1Need = l1EntriesFor(size, g);
    if (h.l1_size < l1Need) throw bad('l1_size', 'L1 table too small for the disk size', `>= ${l1Need}`, h.l1_size);
    const l1Offset = toSafeNumber(h.l1_table_offset, { path, struct: 'header', field: 'l1_table_offset' });
    if (h.l1_size > 0) {
      if (l1Offset === 0 || l1Offset % cs !== 0) throw bad('l1_table_offset', 'L1 table offset is not a cluster boundary after the header', `a non-zero multiple of ${cs}`, l1Offset);
      if (l1Offset + h.l1_size * 8 > fileSize) throw bad('l1_table_offset', 'L1 table lies past the end of the file', `<= ${fileSize - h.l1_size * 8}`, l1Offset);
    }
    const l1 = h.l1_size > 0 ? await store.read(l1Offset, h.l1_size * 8) : Buffer.alloc(0);

    // ---- refcount table
    const rtOffset = toSafeNumber(h.refcount_table_offset, { path, struct: 'header', field: 'refcount_table_offset' });
    const rtClusters = h.refcount_table_clusters;
    if (rtClusters === 0) throw bad('refcount_table_clusters', 'image has no refcount table', '>= 1', 0);
    if (rtClusters * cs > MAX_REFTABLE_BYTES) throw bad('refcount_table_clusters', "refcount table larger than QEMU's 8 MiB cap", `<= ${MAX_REFTABLE_BYTES / cs}`, rtClusters);
    if (rtOffset === 0 || rtOffset % cs !== 0) throw bad('refcount_table_offset', 'refcount table offset is not a cluster boundary after the header', `a non-zero multiple of ${cs}`, rtOffset);
    if (rtOffset >= fileSize) throw bad('refcount_table_offset', 'refcount table lies past the end of the file', `< ${fileSize}`, rtOffset);
    if (rtOffset + rtClusters * cs > fileSize) throw bad('refcount_table_clusters', 'refcount table runs past the end of the file', `<= ${Math.floor((fileSize - rtOffset) / cs)}`, rtClusters);
    const table = await store.read(rtOffset, rtClusters * cs);

    // ---- snapshot table
    const { list: snapshots, bytes: snapshotTableBytes } = await readSnapshots(path, store, h, fileSize, cs);

    const file: FileState = { size: fileSize };
    let image!: Qcow2Image;
    const refs = new Refcounts(path, store, clusterBits, h.refcount_order, rtOffset, rtClusters, table, file, async (offset, clusters) => {
      h.refcount_table_offset = BigInt(offset);
      h.refcount_table_clusters = clusters;
      await image.writeHeaderFields(['refcount_table_offset', 'refcount_table_clusters']);
    });
    const warnings: string[] = [];
    if (has(INCOMPAT.DIRTY)) warnings.push('dirty bit set: refcounts may be out of date (rebuilt on a read-write open)');
    if (has(INCOMPAT.CORRUPT)) warnings.push('corrupt bit set: QEMU found metadata corruption; the image opens read-only only');
    if (snapshots.length > 0) warnings.push(`${snapshots.length} internal snapshot(s): listed in metadata key "snapshots"`);
    image = new Qcow2Image(path, store, h, headerTail, exts, backingName, areaEnd, l1, refs, snapshots, snapshotTableBytes, file, readOnly, warnings);
    return image;
  }

  /** What a read-write open must check or do before anything is written. */
  private async readWriteChecks(cowByCaller: boolean, forCheck: boolean): Promise<void> {
    const where = { path: this.path, struct: 'header', field: 'incompatible_features', found: `0x${this.h.incompatible_features.toString(16)}` };
    if (this.hasIncompat(INCOMPAT.CORRUPT)) {
      throw new DiskError('NEEDSREPAIR', 'the corrupt bit is set (QEMU found metadata corruption): open read-only, or repair with `qemu-img check -r all`', { ...where, bits: [INCOMPAT.CORRUPT] });
    }
    if (this.hasIncompat(INCOMPAT.EXTL2)) {
      throw new DiskError('UNSUPPORTEDFEATURE', 'extended L2 entries (incompatible bit 4) are supported for reading only: open read-only', { ...where, bits: [INCOMPAT.EXTL2] });
    }
    if (this.backingName !== undefined && !cowByCaller) {
      // alone, a partial write over a cluster the backing file holds would zero-fill the rest
      throw new DiskError('PARTIALCHAIN', 'this qcow2 image has a backing file: open its chain (without singleLink) to write to it, or open this link read-only', {
        path: this.path,
        field: 'backing_file_offset',
        found: this.backingName,
      });
    }
    this.refs.validateTable();
    if (this.hasIncompat(INCOMPAT.DIRTY)) {
      // refcounts may be stale (lazy refcounts): rebuild them before the first allocation
      await checkQcow2(this, { repair: true });
      this.h.incompatible_features &= ~(1n << BigInt(INCOMPAT.DIRTY));
      await this.writeHeaderFields(['incompatible_features']);
      await this.store.flush();
      this.warnings.splice(0, this.warnings.length, ...this.warnings.filter((w) => !w.startsWith('dirty bit')));
      this.warnings.push('dirty bit was set: refcounts rebuilt at open');
    }
    if (!forCheck) await this.refuseInconsistent();
  }

  /**
   * Writing is safe only while the refcounts say who owns every cluster: a cluster named by an
   * entry but counted less (refcount 0 after a cut or a damaged block, two entries on one
   * cluster of refcount 1), an entry past the end of the file (the next allocation at the end
   * lands on it), metadata overlapping anything, or COPIED on a shared cluster (written in
   * place) lets an acknowledged write land where another entry reads. The whole check runs
   * (one read per run of adjacent tables); any corruption refuses the read-write open, as
   * QEMU marks such an image corrupt at its first write. Leaks are harmless and allowed.
   */
  private async refuseInconsistent(): Promise<void> {
    const report = await checkQcow2(this, { repair: false });
    const bad = report.findings.filter((f) => f.kind === 'corruption');
    if (bad.length === 0) return;
    const first = bad[0]!;
    throw new DiskError('NEEDSREPAIR', `metadata is inconsistent (${bad.length} finding${bad.length > 1 ? 's' : ''}, first: ${first.message}): open read-only, or repair with \`vdkit check --repair\``, {
      path: this.path,
      struct: first.struct,
      field: first.field,
      found: bad.slice(0, 5).map((f) => f.message),
    });
  }

  /** data of the header extension of this type, if the image has one */
  extension(type: number): Buffer | undefined {
    return this.exts.find((e) => e.type === type)?.data;
  }

  hasIncompat(bit: number): boolean {
    return (this.h.incompatible_features & (1n << BigInt(bit))) !== 0n;
  }

  // ------------------------------------------------------------------ chain links

  backing(): BackingLink | undefined {
    if (this.backingName === undefined) return undefined;
    const fmt = this.backingFormat();
    // the name exactly as stored: the chain layer decides what it may follow (json:, nbd:, ...)
    return fmt === undefined ? { hint: this.backingName } : { hint: this.backingName, format: fmt };
  }

  /** vdkit's name for the backing format extension's format (QEMU "vpc" is vdkit "vhd"), if present */
  backingFormat(): string | undefined {
    const e = this.exts.find((x) => x.type === EXT.BACKING_FORMAT);
    return e ? formatFromQemu(e.data.toString('latin1')) : undefined;
  }

  /** qcow2 has no identity: a child names its backing file and format only (parentLink 'name') */
  identity(): undefined {
    return undefined;
  }

  /** qcow2 stores no identity: nothing to set. */
  async setIdentity(_id: string): Promise<void> {
    this.checkWritable();
  }

  /**
   * Rewrite the backing file name and the backing format extension (the new parent's format,
   * as the chain layer found it: `link.parent.format`); undefined removes both. The caller
   * (rebase, merge) has already copied in whatever the old backing chain supplied.
   */
  async setBacking(link: BackingChange | undefined): Promise<void> {
    await this.prepareWrite();
    await this.rewriteHeaderArea(link?.hint, link?.parent?.format);
  }

  /** Write cluster 0 anew with this backing name and format (both undefined: none). */
  async rewriteHeaderArea(name: string | undefined, format: string | undefined): Promise<void> {
    const nameBytes = name === undefined ? undefined : Buffer.from(name, 'utf8');
    if (nameBytes && (nameBytes.length === 0 || nameBytes.length > MAX_BACKING_NAME)) {
      throw new DiskError('NAMETOOLONG', 'a backing file name has 1 to 1023 bytes', { path: this.path, struct: 'header', field: 'backing_file_size', expected: `1..${MAX_BACKING_NAME}`, found: nameBytes.length });
    }
    const exts = this.exts.filter((e) => e.type !== EXT.BACKING_FORMAT);
    if (nameBytes && format !== undefined) exts.unshift({ type: EXT.BACKING_FORMAT, data: Buffer.from(formatToQemu(format), 'latin1') });
    const headerLength = this.h.version === 2 ? V2_HEADER_LENGTH : this.h.header_length;
    const need = headerAreaSize(headerLength, exts, nameBytes);
    if (need > this.clusterSize) {
      throw new DiskError('NAMETOOLONG', 'the header, its extensions and the backing file name do not fit in cluster 0', { path: this.path, struct: 'header', field: 'backing_file_size', expected: `<= ${this.clusterSize} bytes in all`, found: need });
    }
    const area = encodeHeaderArea(this.h, this.headerTail, exts, nameBytes);
    // zeros over what the old name and extensions used beyond the new end
    const out = Buffer.alloc(Math.max(area.length, this.headerArea));
    area.copy(out);
    await this.store.write(0, out);
    this.exts = exts;
    this.backingName = name;
    this.h.backing_file_offset = nameBytes ? BigInt(area.length - nameBytes.length) : 0n;
    this.h.backing_file_size = nameBytes?.length ?? 0;
    this.headerArea = area.length;
  }

  /**
   * Drop every mapping (commit empties the top): the L1 table is cleared first (from then on
   * the old L2 tables and data only leak), then their refcounts are lowered, then the file is
   * cut after the last cluster still in use.
   */
  async makeEmpty(): Promise<void> {
    await this.prepareWrite();
    const l2s: number[] = [];
    for (let i = 0; i < this.h.l1_size; i++) {
      const e = decodeL1(this.l1, i);
      if (e.offset !== 0) l2s.push(e.offset);
    }
    if (l2s.length > 0) {
      const zero = Buffer.alloc(this.l1.length);
      await this.store.write(Number(this.h.l1_table_offset), zero);
      const tables: Buffer[] = [];
      for (const off of l2s) tables.push(this.l2Cache.get(off) ?? (await this.store.read(off, this.clusterSize)));
      this.l1 = zero;
      this.l2Cache.clear();
      this.inflated.clear();
      const cs = this.clusterSize;
      const frees: number[] = [];
      l2s.forEach((off, t) => {
        frees.push(off / cs);
        const l2 = tables[t]!;
        for (let i = 0; i < this.g.l2Entries; i++) {
          const e = decodeL2(l2, i, this.g);
          if (e.kind === 'compressed') for (let c = Math.floor(e.offset / cs); c <= Math.floor((e.offset + e.csize - 1) / cs); c++) frees.push(c);
          else if (e.offset !== 0) frees.push(e.offset / cs);
        }
      });
      await this.refs.decrementMany(frees);
    }
    const last = await this.refs.lastUsed();
    const end = Math.max((last + 1) * this.clusterSize, Number(this.h.l1_table_offset) + this.l1.length);
    if (end < this.file.size) {
      await this.store.truncate(end);
      this.file.size = end;
    }
    this.refs.freeIndex = 0;
  }

  // ------------------------------------------------------------------ mapping

  /** bytes of guest data one L2 table maps */
  private get span(): number {
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
    if (e.offset + this.clusterSize > this.file.size) throw new DiskError('CORRUPT', 'L2 table lies past the end of the file', { ...where, expected: `<= ${this.file.size - this.clusterSize}` });
    const t = await this.store.read(e.offset, this.clusterSize);
    this.cacheL2(e.offset, t);
    return t;
  }

  private cacheL2(offset: number, t: Buffer): void {
    this.l2Cache.set(offset, t);
    if (this.l2Cache.size > this.l2CacheLimit) this.l2Cache.delete(this.l2Cache.keys().next().value!);
  }

  /** A data cluster's host offset, checked (aligned, inside the file). */
  private checkData(e: L2Entry, field: string): void {
    if (e.offset % this.clusterSize !== 0) throw new DiskError('CORRUPT', 'data cluster offset is not cluster aligned', { path: this.path, struct: 'L2 table', field, found: e.offset });
    if (e.offset >= this.file.size) throw new DiskError('CORRUPT', 'data cluster lies past the end of the file', { path: this.path, struct: 'L2 table', field, expected: `< ${this.file.size}`, found: e.offset });
  }

  /** What [offset, offset+length) is made of, in order; adjacent like pieces merged. */
  private async segments(offset: number, length: number): Promise<Segment[]> {
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
        const e = decodeL2(l2, idx, this.g);
        const field = `l2[${l1i}][${idx}]`;
        if (e.kind === 'compressed') {
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

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const out: BlockExtent[] = [];
    for (const s of await this.segments(offset, length)) {
      const last = out[out.length - 1];
      if (last && last.state === s.state) last.length += s.length;
      else out.push({ offset: s.offset, length: s.length, state: s.state });
    }
    return out;
  }

  async read(into: Buffer, offset: number): Promise<void> {
    const segs = await this.segments(offset, into.length);
    await Promise.all(
      segs.map(async (s) => {
        const dst = into.subarray(s.offset - offset, s.offset - offset + s.length);
        if (s.state !== 'data') dst.fill(0);
        else if (s.comp) {
          const cl = await this.inflate(s.comp);
          cl.copy(dst, 0, s.offset - s.comp.cluster, s.offset - s.comp.cluster + s.length);
        } else await this.readHost(dst, s.host);
      }),
    );
  }

  private async readHost(dst: Buffer, host: number): Promise<void> {
    if (host + dst.length <= this.file.size) await this.store.readInto(dst, host);
    else (await this.store.readZeroPadded(host, dst.length)).copy(dst);
  }

  /** One compressed cluster, inflated (raw deflate into exactly one cluster, as QEMU). */
  private async inflate(comp: { offset: number; csize: number; field: string }): Promise<Buffer> {
    const hit = this.inflated.get(comp.offset);
    if (hit) return hit;
    const where = { path: this.path, struct: 'L2 table', field: comp.field, found: comp.offset };
    if (comp.offset >= this.file.size) throw new DiskError('CORRUPT', 'compressed cluster lies past the end of the file', { ...where, expected: `< ${this.file.size}` });
    const src = await this.store.read(comp.offset, Math.min(comp.csize, this.file.size - comp.offset));
    let out: Buffer;
    try {
      out = inflateRawSync(src, { finishFlush: zc.Z_SYNC_FLUSH, maxOutputLength: this.clusterSize });
    } catch (err) {
      throw new DiskError('ZLIB', `compressed cluster does not inflate into one cluster (${(err as Error).message})`, where, { cause: err });
    }
    if (out.length !== this.clusterSize) {
      throw new DiskError('ZLIB', 'compressed cluster inflates to less than a cluster', { ...where, expected: this.clusterSize, length: out.length });
    }
    this.inflated.set(comp.offset, out);
    if (this.inflated.size > INFLATE_CACHE) this.inflated.delete(this.inflated.keys().next().value!);
    return out;
  }

  // ------------------------------------------------------------------ writing

  async write(data: Buffer, offset: number): Promise<void> {
    await this.prepareWrite();
    const end = offset + data.length;
    for (let at = offset; at < end; ) {
      const l1i = Math.floor(at / this.span);
      const stop = Math.min(end, (l1i + 1) * this.span);
      await this.writeSlice(l1i, data.subarray(at - offset, stop - offset), at);
      at = stop;
    }
  }

  /** A write within one L2 table's range (see the order in the file comment). */
  private async writeSlice(l1i: number, data: Buffer, offset: number): Promise<void> {
    const cs = this.clusterSize;
    const g = this.g;
    const v3 = this.h.version >= 3;
    const l1e = decodeL1(this.l1, l1i);
    let l2: Buffer;
    let fresh = false;
    let sharedL2 = 0;
    if (l1e.offset === 0) {
      l2 = Buffer.alloc(cs);
      fresh = true;
    } else {
      const cur = (await this.loadL2(l1i))!;
      if (l1e.copied) l2 = cur;
      else {
        // shared with a snapshot: write a copy, point the L1 entry at it, then drop one reference
        l2 = Buffer.from(cur);
        fresh = true;
        sharedL2 = l1e.offset;
      }
    }
    const end = offset + data.length;
    const plans: Plan[] = [];
    for (let c = Math.floor(offset / cs); c * cs < end; c++) {
      const start = c * cs;
      const from = Math.max(offset, start);
      const to = Math.min(end, start + cs);
      const piece = data.subarray(from - offset, to - offset);
      const idx = c - l1i * g.l2Entries;
      const whole = from === start && to >= Math.min(start + cs, this.capacity);
      const e = decodeL2(l2, idx, g);
      const field = `l2[${l1i}][${idx}]`;
      if (e.kind === 'normal' && e.copied) {
        this.checkData(e, field);
        if (whole && v3 && isZero(piece)) plans.push({ idx, start, action: 'zero', data: piece, host: 0, free: [e.offset, cs] });
        else plans.push({ idx, start, action: 'inplace', data: piece, host: e.offset + (from - start) });
        continue;
      }
      // everything else gets a new cluster (or a zero entry): the old content, then the new bytes
      let content: Buffer;
      if (whole && piece.length === cs) content = piece;
      else {
        content = Buffer.alloc(cs);
        if (!whole) {
          if (e.kind === 'compressed') (await this.inflate({ offset: e.offset, csize: e.csize, field })).copy(content);
          else if (e.kind === 'normal') {
            this.checkData(e, field);
            await this.readHost(content, e.offset);
          }
        }
        piece.copy(content, from - start);
      }
      let free: [number, number] | undefined;
      if (e.kind === 'compressed') free = [e.offset, e.csize];
      else if (e.offset !== 0) free = [e.offset, cs];
      if (isZero(content)) {
        if (e.kind === 'unallocated' && this.backingName === undefined) continue; // already reads as zeros
        if (e.kind === 'zero' && e.offset === 0) continue;
        if (v3) {
          plans.push({ idx, start, action: 'zero', data: content, host: 0, free });
          continue;
        }
      }
      const overZeros = !whole && (e.kind === 'unallocated' || e.kind === 'zero');
      plans.push({ idx, start, action: 'alloc', data: content, host: 0, free, piece: overZeros ? { at: from - start, bytes: piece } : undefined });
    }
    if (plans.length === 0) return;

    // 1. refcounts: the new L2 table first, then the data clusters (contiguous), as QEMU
    const eof = this.file.size;
    const l2Off = fresh ? await this.refs.alloc(1) : l1e.offset;
    if (fresh) this.assertNoOverlap(l2Off, cs, 'a new L2 table');
    const allocs = plans.filter((p) => p.action === 'alloc');
    if (allocs.length > 0) {
      const base = await this.refs.alloc(allocs.length);
      this.assertNoOverlap(base, allocs.length * cs, 'new data clusters');
      allocs.forEach((p, i) => (p.host = base + i * cs));
      // 2. data. Clusters past the old end of the file were never written (holes): over zeros
      //    only the new bytes go there, so partial writes keep the file sparse.
      const parts = allocs.map((p) => (p.piece && p.host >= eof ? { at: p.host + p.piece.at, bytes: p.piece.bytes } : { at: p.host, bytes: p.data }));
      for (let i = 0; i < parts.length; ) {
        let j = i + 1;
        while (j < parts.length && parts[j]!.at === parts[j - 1]!.at + parts[j - 1]!.bytes.length) j++;
        await this.store.writev(parts[i]!.at, coalesce(parts.slice(i, j).map((x) => x.bytes)));
        i = j;
      }
      const end = base + allocs.length * cs;
      // the file can only be short of `end` when the last cluster was written partly (a hole)
      const last = parts[parts.length - 1]!;
      if (last.at + last.bytes.length < end && (await this.store.size()) < end) await this.store.truncate(end);
      this.file.size = Math.max(this.file.size, end);
    }
    const inplace = plans.filter((p) => p.action === 'inplace');
    for (let i = 0; i < inplace.length; ) {
      // runs of clusters that follow each other in the file
      let j = i + 1;
      while (j < inplace.length && inplace[j]!.host === inplace[j - 1]!.host + inplace[j - 1]!.data.length) j++;
      const run = inplace.slice(i, j);
      await this.store.writev(run[0]!.host, coalesce(run.map((p) => p.data)));
      const last = run[run.length - 1]!;
      this.file.size = Math.max(this.file.size, last.host + last.data.length);
      i = j;
    }
    // 3. L2 entries
    let lo = Infinity;
    let hi = -1;
    for (const p of plans) {
      if (p.action === 'inplace') continue;
      if (p.action === 'alloc') encodeL2(l2, p.idx, g, p.host, { copied: true });
      else encodeL2(l2, p.idx, g, 0, { zero: true });
      lo = Math.min(lo, p.idx);
      hi = Math.max(hi, p.idx);
    }
    if (fresh) {
      await this.store.write(l2Off, l2);
      this.file.size = Math.max(this.file.size, l2Off + cs);
      // 4. the L1 entry
      encodeL1(this.l1, l1i, l2Off, true);
      await this.store.write(Number(this.h.l1_table_offset) + l1i * 8, this.l1.subarray(l1i * 8, l1i * 8 + 8));
      if (sharedL2) this.l2Cache.delete(sharedL2);
      this.cacheL2(l2Off, l2);
    } else if (hi >= 0) {
      const es = g.l2EntrySize;
      await this.store.write(l2Off + lo * es, l2.subarray(lo * es, (hi + 1) * es));
    }
    // 5. what is no longer referenced from here: the new entries made durable first, so that
    // a power loss cannot leave an old entry naming a cluster already handed to someone else
    const frees: number[] = [];
    for (const p of plans) {
      if (!p.free) continue;
      const [at, len] = p.free;
      for (let c = Math.floor(at / cs); c <= Math.floor((at + len - 1) / cs); c++) frees.push(c);
      this.inflated.delete(at);
    }
    if (sharedL2 || frees.length > 0) await this.store.flush();
    if (sharedL2) await this.refs.update(sharedL2 / cs, 1, -1);
    if (frees.length > 0) await this.refs.decrementMany(frees);
  }

  /**
   * QEMU's overlap check ("cached" mode), before clusters the allocator handed out are written:
   * the header, the L1 table, the refcount table and blocks, the snapshot table and the L2
   * tables in the cache must not lie there. The open-time check makes this unreachable for a
   * consistent image; it stops a write that would destroy metadata if refcounts were wrong.
   */
  private assertNoOverlap(at: number, bytes: number, what: string): void {
    const cs = this.clusterSize;
    const hit = (name: string, off: number, len: number) => {
      if (len > 0 && at < off + len && off < at + bytes) {
        throw new DiskError('CORRUPT', `refusing to write ${what} over the ${name} (the refcounts say the clusters are free): repair with \`vdkit check --repair\``, { path: this.path, struct: name, found: at, expected: `not in [${off}, ${off + len})` });
      }
    };
    hit('header', 0, cs);
    hit('L1 table', Number(this.h.l1_table_offset), this.h.l1_size * 8);
    hit('refcount table', this.refs.tableOffset, this.refs.tableClusters * cs);
    if (this.snapshots.length > 0) hit('snapshot table', Number(this.h.snapshots_offset), this.snapshotTableBytes);
    for (let c = at; c < at + bytes; c += cs) {
      if (this.refs.isBlockAt(c)) hit('refcount block', c, cs);
      // a cached table is confirmed against the L1 table (rare: only when the check would fire)
      if (this.l2Cache.has(c) && this.l1Names(c)) hit('L2 table', c, cs);
    }
  }

  private l1Names(l2Offset: number): boolean {
    for (let i = 0; i < this.h.l1_size; i++) if (decodeL1(this.l1, i).offset === l2Offset) return true;
    return false;
  }

  // ------------------------------------------------------------------ discard / compact

  /**
   * Whole clusters: in a base without a backing file the L2 entry becomes 0 (unallocated);
   * in a child a v3 image gets the zero flag, a v2 image zeros written as data (v2 has no way to
   * hide the backing file otherwise). Their clusters are freed (entry first, then refcount).
   * Parts of clusters stored here get zeros written; a part of a cluster a child does not
   * store is left (the chain layer owns the backing file's bytes).
   */
  async discard(offset: number, length: number): Promise<void> {
    await this.prepareWrite();
    const cs = this.clusterSize;
    const end = offset + length;
    const whole: number[] = [];
    for (let c = Math.floor(offset / cs); c * cs < end; c++) {
      const from = Math.max(offset, c * cs);
      const to = Math.min(end, (c + 1) * cs, this.capacity);
      const cEnd = Math.min((c + 1) * cs, this.capacity);
      if (from === c * cs && to === cEnd) {
        whole.push(c);
        continue;
      }
      const st = await this.blockStatus(from, to - from);
      if (st.some((r) => r.state === 'data')) await this.write(Buffer.alloc(to - from), from);
    }
    if (whole.length === 0) return;
    if (this.backingName !== undefined) {
      // a child: the zero flag through the write path (v3), zeros as data (v2)
      const z = Buffer.alloc(cs);
      for (const c of whole) await this.write(z.subarray(0, Math.min(cs, this.capacity - c * cs)), c * cs);
      return;
    }
    const set = new Set(whole);
    await this.dropClusters((e, c) => set.has(c) && (e.kind !== 'unallocated' || e.offset !== 0), 'unallocate');
  }

  /**
   * Drop the clusters `pick` selects, per L2 table: the entries rewritten (0, or the zero flag),
   * then the clusters' refcounts lowered. Tables shared with a snapshot (L1 COPIED clear) are
   * left alone.
   */
  private async dropClusters(pick: (e: L2Entry, cluster: number) => boolean | Promise<boolean>, mark: 'unallocate' | 'zero', progress?: (l1i: number) => void): Promise<void> {
    const cs = this.clusterSize;
    const g = this.g;
    for (let l1i = 0; l1i < this.h.l1_size; l1i++) {
      progress?.(l1i);
      const l1e = decodeL1(this.l1, l1i);
      if (l1e.offset === 0 || !l1e.copied) continue;
      const l2 = (await this.loadL2(l1i))!;
      const frees: number[] = [];
      let lo = Infinity;
      let hi = -1;
      for (let idx = 0; idx < g.l2Entries; idx++) {
        const c = l1i * g.l2Entries + idx;
        if (c * cs >= this.capacity) break;
        const e = decodeL2(l2, idx, g);
        if (!(await pick(e, c))) continue;
        if (e.kind === 'compressed') {
          for (let x = Math.floor(e.offset / cs); x <= Math.floor((e.offset + e.csize - 1) / cs); x++) frees.push(x);
          this.inflated.delete(e.offset);
        } else if (e.offset !== 0) {
          this.checkData(e, `l2[${l1i}][${idx}]`);
          frees.push(e.offset / cs);
        }
        encodeL2(l2, idx, g, 0, { zero: mark === 'zero' });
        lo = Math.min(lo, idx);
        hi = Math.max(hi, idx);
      }
      if (hi < 0) continue;
      const es = g.l2EntrySize;
      await this.store.write(l1e.offset + lo * es, l2.subarray(lo * es, (hi + 1) * es));
      if (frees.length > 0) {
        await this.store.flush();
        await this.refs.decrementMany(frees);
      }
    }
    await this.store.flush();
  }

  /** the file cut after the last cluster in use (never before the L1 table), allocation from the start again */
  private async cutAfterLastUse(): Promise<void> {
    const cs = this.clusterSize;
    const last = await this.refs.lastUsed();
    const end = Math.max((last + 1) * cs, Number(this.h.l1_table_offset) + this.l1.length);
    if (end < this.file.size) {
      await this.store.truncate(end);
      await this.store.flush();
      this.file.size = end;
    }
    this.refs.freeIndex = 0;
  }

  /**
   * 1. Clusters stored here (refcount 1) that read as zeros are dropped: unallocated in a base,
   *    the zero flag in a v3 child (a v2 child keeps them: it has no zero marker).
   * 2. Without internal snapshots, the highest data clusters and L2 tables are moved down into
   *    the lowest free clusters, in batches: target refcounts raised, data copied, flush, table
   *    entries pointed at the copies, flush, old refcounts lowered. A kill leaves at most leaked
   *    clusters (check -r leaks), never an entry pointing at a cluster of refcount 0 or at bytes
   *    not yet copied. Moving stops at the first cluster that is other metadata.
   * 3. The file is cut after the last cluster with a refcount.
   */
  async compact(opts: InPlaceOptions = {}): Promise<InPlaceResult> {
    await this.prepareWrite();
    const fileBytesBefore = await this.store.size();
    const cs = this.clusterSize;
    const cancel = () => {
      if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: this.path }, { cause: opts.signal.reason });
    };
    const child = this.backingName !== undefined;
    if (!child || this.h.version >= 3) {
      const buf = Buffer.alloc(cs);
      await this.dropClusters(
        async (e) => {
          if (e.kind !== 'normal' || !e.copied) return false;
          await this.readHost(buf, e.offset);
          return isZero(buf);
        },
        child ? 'zero' : 'unallocate',
        (l1i) => {
          cancel();
          opts.onProgress?.(l1i, this.h.l1_size);
        },
      );
    }
    opts.onProgress?.(this.h.l1_size, this.h.l1_size);
    if (this.snapshots.length === 0) await this.moveDown();
    await this.cutAfterLastUse();
    return { fileBytesBefore, fileBytesAfter: await this.store.size() };
  }

  /** Step 2 of compact: the highest movable clusters into the lowest free ones. */
  private async moveDown(): Promise<void> {
    const cs = this.clusterSize;
    const g = this.g;
    const total = Math.ceil(this.file.size / cs);
    const used = new Uint8Array(total);
    for (let c = 0; c < total; c++) used[c] = (await this.refs.get(c)) > 0 ? 1 : 0;
    // who points at each cluster we may move: an L2 entry (data) or an L1 entry (L2 table)
    type Owner = { l1i: number; idx: number };
    const owners = new Map<number, Owner>();
    for (let l1i = 0; l1i < this.h.l1_size; l1i++) {
      const l1e = decodeL1(this.l1, l1i);
      if (l1e.offset === 0 || !l1e.copied) continue;
      owners.set(l1e.offset / cs, { l1i, idx: -1 });
      const l2 = (await this.loadL2(l1i))!;
      for (let idx = 0; idx < g.l2Entries; idx++) {
        const e = decodeL2(l2, idx, g);
        if (e.kind === 'normal' && e.copied && e.offset % cs === 0) owners.set(e.offset / cs, { l1i, idx });
      }
    }
    let low = 0;
    let high = total - 1;
    const buf = Buffer.alloc(cs);
    for (;;) {
      const batch: { from: number; to: number; o: Owner }[] = [];
      let stop = false;
      while (batch.length < 64) {
        while (high >= 0 && !used[high]) high--;
        while (low < high && used[low]) low++;
        if (low >= high) break;
        const o = owners.get(high);
        // other metadata (refcount blocks or table, L1, snapshots) stays where it is
        if (!o || this.refs.blockOffset(Math.floor(low / this.refs.entriesPerBlock)) === 0) {
          stop = true;
          break;
        }
        // an L2 table moves alone: the data moves of its entries must not race its copy
        if (o.idx < 0 && batch.length > 0) break;
        batch.push({ from: high, to: low, o });
        used[low] = 1;
        used[high] = 0;
        if (o.idx < 0) break;
      }
      if (batch.length === 0) break;
      // a. refcounts of the targets
      for (const b of batch) {
        if (!(await this.refs.update(b.to, 1, 1))) throw new DiskError('INTERNAL', 'compact: a refcount block appeared under a target cluster', { path: this.path, found: b.to });
      }
      // b. the copies
      for (const b of batch) {
        if (b.o.idx < 0) {
          const t = (await this.loadL2(b.o.l1i))!;
          await this.store.write(b.to * cs, t);
        } else {
          await this.store.readInto(buf, b.from * cs);
          await this.store.write(b.to * cs, buf);
        }
      }
      await this.store.flush();
      // c. the entries
      for (const b of batch) {
        if (b.o.idx < 0) {
          const t = (await this.loadL2(b.o.l1i))!;
          await this.writeL1Entry(b.o.l1i, b.to * cs, true);
          this.l2Cache.delete(b.from * cs);
          this.cacheL2(b.to * cs, t);
        } else {
          const l2Off = decodeL1(this.l1, b.o.l1i).offset;
          const t = (await this.loadL2(b.o.l1i))!;
          encodeL2(t, b.o.idx, g, b.to * cs, { copied: true });
          const es = g.l2EntrySize;
          await this.store.write(l2Off + b.o.idx * es, t.subarray(b.o.idx * es, (b.o.idx + 1) * es));
        }
        owners.delete(b.from);
        owners.set(b.to, b.o);
      }
      await this.store.flush();
      // d. the old clusters freed
      await this.refs.decrementMany(batch.map((b) => b.from));
      await this.store.flush();
      if (stop) break;
    }
  }

  /**
   * Defragment (NOTES.md "Defragment"): the data clusters of the active L1/L2 tables in guest
   * order from the start of the file, skipping every cluster that holds anything else (header,
   * L1, L2 tables, refcount table and blocks, compressed clusters, preallocated zero clusters,
   * leaked clusters): those stay where they are. The moves come in batches from
   * relayout-plan.ts; per batch: the targets' refcounts raised, flush; the copies, flush; the L2
   * entries pointed at them, flush; the old clusters' refcounts lowered, flush. A kill leaves at
   * most leaked clusters. Refcount blocks for every target are made before the first move (a
   * block made mid-way could land on a planned target). Images with internal snapshots are
   * refused (their clusters are shared). The file is cut after the last cluster in use.
   */
  async defragment(opts: InPlaceOptions = {}): Promise<InPlaceResult> {
    await this.prepareWrite();
    if (this.snapshots.length > 0) {
      throw new DiskError('NOTSUPPORTED', `an image with internal snapshots cannot be defragmented (their clusters are shared; ${this.snapshots.length} snapshot(s))`, { path: this.path, struct: 'header', field: 'nb_snapshots', found: this.snapshots.length });
    }
    const fileBytesBefore = await this.store.size();
    const cs = this.clusterSize;
    const g = this.g;
    const shared = (field: string, found: unknown) =>
      new DiskError('NOTSUPPORTED', 'a cluster is shared (COPIED flag clear or refcount above 1) although the image has no snapshots: run check first', { path: this.path, struct: 'L2 table', field, found });
    // the data clusters of the active tables in guest order, and the entry that points at each
    const hosts: number[] = [];
    const owners: { l1i: number; idx: number }[] = [];
    const meta = new Set<number>([0]);
    for (let c = 0; c < Math.ceil(this.l1.length / cs); c++) meta.add(Number(this.h.l1_table_offset) / cs + c);
    for (let c = 0; c < this.refs.tableClusters; c++) meta.add(this.refs.tableOffset / cs + c);
    for (let rt = 0; rt < this.refs.tableEntries; rt++) if (this.refs.blockOffset(rt) !== 0) meta.add(this.refs.blockOffset(rt) / cs);
    for (let l1i = 0; l1i < this.h.l1_size; l1i++) {
      const l1e = decodeL1(this.l1, l1i);
      if (l1e.offset === 0) continue;
      if (!l1e.copied) throw shared(`l1[${l1i}]`, l1e.offset);
      const l2 = (await this.loadL2(l1i))!;
      meta.add(l1e.offset / cs);
      for (let idx = 0; idx < g.l2Entries; idx++) {
        if ((l1i * g.l2Entries + idx) * cs >= this.capacity) break;
        const e = decodeL2(l2, idx, g);
        if (e.kind !== 'normal') continue;
        const field = `l2[${l1i}][${idx}]`;
        this.checkData(e, field);
        if (!e.copied) throw shared(field, e.offset);
        hosts.push(e.offset / cs);
        owners.push({ l1i, idx });
      }
    }
    const isData = new Set<number>();
    hosts.forEach((h, i) => {
      const field = `l2[${owners[i]!.l1i}][${owners[i]!.idx}]`;
      if (isData.has(h) || meta.has(h)) throw new DiskError('CORRUPT', 'a data cluster is also used by another entry or by metadata: run check', { path: this.path, struct: 'L2 table', field, found: h * cs });
      isData.add(h);
    });
    for (const h of hosts) if ((await this.refs.get(h)) !== 1) throw shared(`refcount[${h}]`, await this.refs.get(h));
    const total = hosts.length;
    opts.onProgress?.(0, total);
    const items: PlanItem[] = hosts.map((at) => ({ at, len: 1 }));
    let plan: RelayoutPlan | undefined;
    for (let attempt = 0; !plan; attempt++) {
      // fixed: every cluster with a refcount that is not a data cluster we move
      const limit = Math.max(Math.ceil(this.file.size / cs), (await this.refs.lastUsed()) + 1);
      const fixed = new Uint8Array(limit);
      for (let c = 0; c < limit; c++) if (!isData.has(c) && (await this.refs.get(c)) > 0) fixed[c] = 1;
      const p = planRelayout(items, fixed, 0, MOVE_BATCH);
      // every refcount block the moves need and the file lacks, made in one go: each new block
      // is a cluster the next plan must step around, so a few rounds settle it
      const missing = new Map<number, number>(); // refcount block index -> a cluster it covers
      for (const b of p.batches) {
        for (const m of b.moves) {
          const rt = Math.floor(m.to / this.refs.entriesPerBlock);
          if (this.refs.blockOffset(rt) === 0 && !missing.has(rt)) missing.set(rt, m.to);
        }
      }
      if (missing.size === 0) plan = p;
      else {
        if (attempt >= 64) throw new DiskError('INTERNAL', 'defragment: refcount blocks for the targets keep moving the plan', { path: this.path });
        // new blocks go past the final layout (a block there is dropped again at the end,
        // when it describes only free clusters; among the targets it would stay for good)
        this.refs.freeIndex = Math.max(this.refs.freeIndex, p.finalEnd);
        for (const cluster of missing.values()) await this.refs.ensureBlock(cluster);
        await this.store.flush();
      }
    }
    const buf = Buffer.alloc(cs);
    for (const b of plan.batches) {
      if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: this.path }, { cause: opts.signal.reason });
      // a. the targets' refcounts (their blocks exist: see above)
      const targets = b.moves.map((m) => m.to).sort((x, y) => x - y);
      for (let i = 0; i < targets.length; ) {
        let j = i + 1;
        while (j < targets.length && targets[j] === targets[j - 1]! + 1) j++;
        if (!(await this.refs.update(targets[i]!, j - i, 1))) throw new DiskError('INTERNAL', 'defragment: a refcount block appeared under a target cluster', { path: this.path, found: targets[i] });
        i = j;
      }
      await this.store.flush();
      // b. the copies
      for (const m of b.moves) {
        await this.readHost(buf, m.from * cs);
        await this.store.write(m.to * cs, buf);
        this.file.size = Math.max(this.file.size, (m.to + 1) * cs);
      }
      await this.store.flush();
      // c. the L2 entries, one write per table
      const byTable = new Map<number, PlanMove[]>();
      for (const m of b.moves) {
        const l1i = owners[m.item]!.l1i;
        const list = byTable.get(l1i);
        if (list) list.push(m);
        else byTable.set(l1i, [m]);
      }
      for (const [l1i, moves] of byTable) {
        const t = (await this.loadL2(l1i))!;
        let lo = Infinity;
        let hi = -1;
        for (const m of moves) {
          const idx = owners[m.item]!.idx;
          encodeL2(t, idx, g, m.to * cs, { copied: true });
          lo = Math.min(lo, idx);
          hi = Math.max(hi, idx);
        }
        const es = g.l2EntrySize;
        await this.store.write(decodeL1(this.l1, l1i).offset + lo * es, t.subarray(lo * es, (hi + 1) * es));
      }
      await this.store.flush();
      // d. the old clusters
      await this.refs.decrementMany(b.moves.map((m) => m.from));
      await this.store.flush();
      opts.onProgress?.(b.placed, total);
    }
    await this.refs.dropEmptyBlocks();
    await this.cutAfterLastUse();
    opts.onProgress?.(total, total);
    return { fileBytesBefore, fileBytesAfter: await this.store.size() };
  }

  /** Before the first change: clear the autoclear bits we do not maintain (bitmaps, raw data file). */
  private async prepareWrite(): Promise<void> {
    this.checkWritable();
    if (this.prepared) return;
    if (this.h.version >= 3 && this.h.autoclear_features !== 0n) {
      this.h.autoclear_features = 0n;
      await this.writeHeaderFields(['autoclear_features']);
    }
    this.prepared = true;
  }

  /** Write the bytes of these header fields (encoded from the current header) in one write. */
  async writeHeaderFields(fields: HeaderField[]): Promise<void> {
    const full = Header.encode(this.h);
    let from = Infinity;
    let to = 0;
    const widths: Partial<Record<HeaderField, number>> = { size: 8, refcount_table_clusters: 4, l1_size: 4, incompatible_features: 8, autoclear_features: 8, refcount_table_offset: 8, l1_table_offset: 8 };
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

  /**
   * Grow the L1 table to `entries` (create; QEMU's qcow2_grow_l1_table): the new table in fresh
   * clusters, then the header, then the old table freed.
   */
  async growL1(entries: number): Promise<void> {
    if (entries <= this.h.l1_size) return;
    const cs = this.clusterSize;
    const bytes = entries * 8;
    const at = await this.refs.alloc(Math.ceil(bytes / cs));
    const next = Buffer.alloc(bytes);
    this.l1.copy(next);
    await this.store.write(at, next);
    this.file.size = Math.max(this.file.size, at + bytes);
    const old = { offset: Number(this.h.l1_table_offset), size: this.h.l1_size };
    this.h.l1_size = entries;
    this.h.l1_table_offset = BigInt(at);
    await this.writeHeaderFields(['l1_size', 'l1_table_offset']);
    this.l1 = next;
    if (old.size > 0) await this.refs.update(old.offset / cs, Math.ceil((old.size * 8) / cs), -1);
  }

  /**
   * Give a new, empty image its size (create; QEMU creates with size 0 and then truncates):
   * the L1 table grown first, then the header's size field.
   */
  async setInitialSize(capacity: number): Promise<void> {
    await this.growL1(l1EntriesFor(capacity, this.g));
    this.h.size = BigInt(capacity);
    await this.writeHeaderFields(['size']);
  }

  /**
   * Resize in place (qemu-img resize). Grow: the L1 table first (a larger one in fresh clusters,
   * then the header points at it, as QEMU's qcow2_grow_l1_table), the tail of a partial last
   * cluster zeroed while still beyond the end, then the header's size field (one 8-byte write:
   * what makes the new size visible). Shrink: what lies beyond the new end is zeroed first
   * (v3: zero-flag entries, so its clusters are freed), then the size field; the L1 table keeps
   * its entries (a table longer than needed is valid), so growing again reads zeros there.
   */
  async resize(newCapacity: number): Promise<void> {
    try {
      await this.prepareWrite();
      const old = this.capacity;
      if (newCapacity < old && this.snapshots.length > 0) throw new DiskError('CANTSHRINK', 'an image with internal snapshots cannot be shrunk', { path: this.path, field: 'nb_snapshots', found: this.snapshots.length });
      if (this.hasIncompat(INCOMPAT.DATA_FILE)) throw new DiskError('NOTSUPPORTED', 'images with an external data file cannot be resized', { path: this.path, field: 'incompatible_features' });
      const cs = this.clusterSize;
      // What lies past the end must read as zeros should the disk grow (again). Grow: the tail
      // of the old last cluster, and anything still mapped past the old end (a shrink stopped
      // before its zeros), zeroed before the switch (the header size). Shrink: the switch first,
      // then the cut part zeroed while it is past the end, so a stop shows the old disk whole
      // or the new one.
      const zeroRanges = async (from: number, to: number, all: boolean) => {
        const zeros = Buffer.alloc(Math.max(cs, 1024 * 1024));
        for (const r of await this.blockStatus(from, to - from)) {
          if (r.state === 'unallocated' && !all) continue;
          for (let at = r.offset; at < r.offset + r.length; at += zeros.length) await this.write(zeros.subarray(0, Math.min(zeros.length, r.offset + r.length - at)), at);
        }
        await this.store.flush();
      };
      if (newCapacity > old) {
        await this.growL1(l1EntriesFor(newCapacity, this.g));
        // blockStatus and write see the new size in memory; the file keeps the old until the switch
        this.h.size = BigInt(newCapacity);
        try {
          const tail = Math.min(newCapacity, Math.ceil(old / cs) * cs) - old;
          if (tail > 0 && (await this.blockStatus(old - (old % cs), cs)).some((r) => r.state !== 'unallocated')) await this.write(Buffer.alloc(tail), old);
          const next = Math.ceil(old / cs) * cs;
          if (next < newCapacity) await zeroRanges(next, newCapacity, false);
        } finally {
          this.h.size = BigInt(old);
        }
        await this.store.flush();
        this.h.size = BigInt(newCapacity);
        await this.writeHeaderFields(['size']);
      } else {
        this.h.size = BigInt(newCapacity);
        await this.writeHeaderFields(['size']);
        await this.store.flush();
        this.h.size = BigInt(old);
        try {
          await zeroRanges(newCapacity, old, !!this.backingName);
        } finally {
          this.h.size = BigInt(newCapacity);
        }
      }
    } finally {
      await this.close();
    }
  }

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

  async check(opts: CheckOptions): Promise<CheckReport> {
    if (opts.repair && !opts.dryRun) this.checkWritable();
    else if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.path });
    return checkQcow2(this, opts);
  }

  /** Clear the dirty bit after a repair run rebuilt the refcounts. */
  async clearDirty(): Promise<void> {
    if (!this.hasIncompat(INCOMPAT.DIRTY)) return;
    this.h.incompatible_features &= ~(1n << BigInt(INCOMPAT.DIRTY));
    await this.writeHeaderFields(['incompatible_features']);
  }

  async flush(): Promise<void> {
    if (!this.readOnly && !this.closed) await this.store.flush();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (!this.readOnly) await this.store.flush();
    } finally {
      await this.store.close();
    }
  }

  private checkWritable(): void {
    if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.path });
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
  }

  // ------------------------------------------------------------------ metadata and info

  metadataKeys(): string[] {
    const keys = ['compat', 'clusterSize', 'refcountBits', 'lazyRefcounts', 'extendedL2', 'compressionType', 'dirty', 'corrupt', 'snapshots'];
    if (this.backingName !== undefined) keys.push('backingFile', 'backingFormat');
    return keys;
  }

  readMetadata(key: string): string | undefined {
    const bool = (b: boolean) => (b ? 'true' : 'false');
    switch (key) {
      case 'compat':
        return this.h.version === 2 ? '0.10' : '1.1';
      case 'clusterSize':
        return String(this.clusterSize);
      case 'refcountBits':
        return String(1 << this.h.refcount_order);
      case 'lazyRefcounts':
        return bool((this.h.compatible_features & 1n) !== 0n);
      case 'extendedL2':
        return bool(this.hasIncompat(INCOMPAT.EXTL2));
      case 'compressionType':
        return this.h.compression_type === 0 ? 'zlib' : String(this.h.compression_type);
      case 'dirty':
        return bool(this.hasIncompat(INCOMPAT.DIRTY));
      case 'corrupt':
        return bool(this.hasIncompat(INCOMPAT.CORRUPT));
      case 'snapshots':
        return JSON.stringify(this.snapshots.map((s) => ({ id: s.id, name: s.name, date: new Date(s.date * 1000).toISOString(), vmStateSize: s.vmStateSize, diskSize: s.diskSize, l1Size: s.l1Size })));
      case 'backingFile':
        return this.backingName;
      case 'backingFormat':
        return this.backingFormat();
      default:
        return undefined;
    }
  }

  async writeMetadata(key: string, value: string): Promise<void> {
    this.checkWritable();
    throw new DiskError('NOTSUPPORTED', 'qcow2 metadata is read-only (it follows from the image structure; the backing file changes with rebase)', {
      path: this.path,
      struct: 'header',
      field: key,
      found: value,
      expected: 'none writable',
    });
  }

  /**
   * Bytes this image stores, counted per L2 table and remembered per table offset: the cost is
   * bounded by the L1 size and the file size even when a crafted L1 table names one L2 table
   * millions of times (the CPU-exhaustion class of CVE-2015-5162).
   */
  private async dataBytes(): Promise<number> {
    const memo = new Map<number, number>();
    let total = 0;
    for (let i = 0; i < this.h.l1_size && i * this.span < this.capacity; i++) {
      const e = decodeL1(this.l1, i);
      if (e.offset === 0) continue;
      const start = i * this.span;
      const full = start + this.span <= this.capacity;
      const known = full ? memo.get(e.offset) : undefined;
      if (known !== undefined) {
        total += known;
        continue;
      }
      let n = 0;
      for (const s of await this.segments(start, Math.min(this.span, this.capacity - start))) if (s.state === 'data') n += s.length;
      if (full) memo.set(e.offset, n);
      total += n;
    }
    return total;
  }

  async info(): Promise<DiskInfo> {
    const allocatedBytes = await this.dataBytes();
    return {
      format: 'qcow2',
      type: this.type,
      capacity: this.capacity,
      sectors: Math.floor(this.capacity / 512),
      numLinks: 1,
      parent: this.backingName,
      version: this.h.version,
      extents: [{ path: this.path, type: 'QCOW2', access: this.readOnly ? 'RDONLY' : 'RW', length: this.capacity, virtualOffset: 0, fileOffset: 0 }],
      allocatedBytes,
      fileSize: this.file.size,
      diskSize: (await this.namespace.stat(this.path)).allocated ?? this.file.size,
      readOnly: this.readOnly,
      files: [this.path],
      ...(this.warnings.length > 0 ? { warnings: [...this.warnings] } : {}),
    };
  }
}

// ------------------------------------------------------------------ helpers

/** Adjacent views of one buffer joined back into one view (a large write stays one piece). */
function coalesce(parts: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (const p of parts) {
    const last = out[out.length - 1];
    if (last && last.buffer === p.buffer && last.byteOffset + last.length === p.byteOffset) out[out.length - 1] = Buffer.from(p.buffer, last.byteOffset, last.length + p.length);
    else out.push(p);
  }
  return out;
}

/**
 * The snapshot table (qcow2.md §8): every size bounded (65536 entries, 1 KiB of extra data
 * each, 64 MiB in all) and inside the file before anything is allocated for it.
 */
async function readSnapshots(path: string, store: ByteStore, h: HeaderValue, fileSize: number, cs: number): Promise<{ list: SnapshotInfo[]; bytes: number }> {
  const n = h.nb_snapshots;
  if (n === 0) return { list: [], bytes: 0 };
  const bad = (field: string, message: string, expected?: unknown, found?: unknown) => new DiskError('CORRUPT', message, { path, struct: 'snapshot table', field, expected, found });
  if (n > MAX_SNAPSHOTS) throw new DiskError('CORRUPT', 'too many snapshots', { path, struct: 'header', field: 'nb_snapshots', expected: `<= ${MAX_SNAPSHOTS}`, found: n });
  const offset = toSafeNumber(h.snapshots_offset, { path, struct: 'header', field: 'snapshots_offset' });
  if (offset === 0 || offset % cs !== 0) throw new DiskError('CORRUPT', 'snapshot table offset is not a cluster boundary after the header', { path, struct: 'header', field: 'snapshots_offset', found: offset });
  // smallest possible table: 40 bytes per entry
  if (offset + n * 40 > fileSize) throw new DiskError('CORRUPT', 'snapshot table lies past the end of the file', { path, struct: 'header', field: 'snapshots_offset', expected: `<= ${fileSize - n * 40}`, found: offset });
  const limit = Math.min(fileSize, offset + MAX_SNAPSHOT_TABLE_BYTES);
  // a window over the table, refilled as entries are parsed
  let win: Buffer = Buffer.alloc(0);
  let winAt = offset;
  const bytes = async (at: number, len: number, field: string): Promise<Buffer> => {
    if (at + len > limit) throw bad(field, at + len > fileSize ? 'snapshot table runs past the end of the file' : 'snapshot table larger than 64 MiB', `<= ${limit}`, at + len);
    if (at < winAt || at + len > winAt + win.length) {
      winAt = at;
      win = await store.read(at, Math.min(limit - at, Math.max(len, 64 * 1024)));
    }
    return win.subarray(at - winAt, at - winAt + len);
  };
  const out: SnapshotInfo[] = [];
  let at = offset;
  for (let i = 0; i < n; i++) {
    const field = `snapshot[${i}]`;
    const s = SnapshotHeader.decode(await bytes(at, 40, field), 0, path);
    if (s.extra_data_size > MAX_SNAPSHOT_EXTRA) throw bad(`${field}.extra_data_size`, 'snapshot extra data too large', `<= ${MAX_SNAPSHOT_EXTRA}`, s.extra_data_size);
    if (h.version >= 3 && s.extra_data_size < 16) throw bad(`${field}.extra_data_size`, 'version 3 snapshots carry at least 16 bytes of extra data', '>= 16', s.extra_data_size);
    const extra = await bytes(at + 40, s.extra_data_size, field);
    let vmStateSize = s.vm_state_size;
    let diskSize: number | undefined;
    if (s.extra_data_size >= 8) vmStateSize = Number(extra.readBigUInt64BE(0) & BigInt(Number.MAX_SAFE_INTEGER));
    if (s.extra_data_size >= 16) diskSize = Number(extra.readBigUInt64BE(8) & BigInt(Number.MAX_SAFE_INTEGER));
    const strAt = at + 40 + s.extra_data_size;
    const id = (await bytes(strAt, s.id_str_size, field)).toString('utf8');
    const name = (await bytes(strAt + s.id_str_size, s.name_size, field)).toString('utf8');
    const l1Offset = s.l1_table_offset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(s.l1_table_offset);
    out.push({ index: i, id, name, l1Offset, l1Size: s.l1_size, date: s.date_sec, vmStateSize, diskSize });
    at = strAt + s.id_str_size + s.name_size;
    at = Math.ceil(at / 8) * 8;
  }
  return { list: out, bytes: at - offset };
}
