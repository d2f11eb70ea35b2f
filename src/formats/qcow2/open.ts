/**
 * Opening a qcow2 image: the header, its extensions, features, L1 and refcount tables and the
 * snapshot table validated before anything is trusted; then, for a read-write open, what must
 * hold before the first write (no corrupt bit, refcounts rebuilt when dirty, a consistent image).
 */
import { DiskError, atMost } from '../../core/errors.js';
import { toSafeNumber } from '../../core/ints.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { OpenOptions } from '../types.js';
import { resolveBesideFile } from '../common/beside-file.js';
import { Qcow2Image } from './image.js';
import { type FileState, Refcounts } from './refcounts.js';
import { liveExtension, readBitmapDirectory, unkeepable } from './bitmaps.js';
import { readSnapshots } from './snapshots.js';
import { useSnapshot } from './snapshot-read.js';
import type { Qcow2State } from './state.js';
import { AUTOCLEAR, bitsOf, COMPRESSION_DEFLATE, COMPRESSION_ZSTD, decodeFeatureTable, EXT, ExtensionHeader, type ExtensionRecord, geometry, Header, INCOMPAT, KNOWN_INCOMPAT_MASK, l1EntriesFor, MAX_BACKING_NAME, MAX_CLUSTER_BITS, MAX_L1_BYTES, MAX_REFTABLE_BYTES, MIN_CLUSTER_BITS, V2_HEADER_LENGTH, V3_HEADER_LENGTH, V3_MIN_HEADER_LENGTH } from './structs.js';

/** the checker, loaded when an open needs it (read-write: a read-only `vdkit info` does not) */
const checkQcow2: typeof import('./check.js').checkQcow2 = async (state, opts) => (await import('./check.js')).checkQcow2(state, opts);

export async function openQcow2(ns: Namespace, path: string, opts: OpenOptions = {}): Promise<Qcow2Image> {
  const readOnly = !!opts.readOnly;
  const store = await ns.open(path, { write: !readOnly });
  let image: Qcow2Image;
  try {
    image = await loadQcow2(path, store, readOnly);
    image.namespace = ns;
    if (opts.snapshot) await useSnapshot(image, opts.snapshot);
    if (image.hasIncompat(INCOMPAT.DATA_FILE)) await openDataFile(image, ns, opts);
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }
  try {
    if (!readOnly) await readWriteChecks.call(image, !!opts.tolerateDamage);
  } catch (err) {
    await image.close().catch(() => {});
    throw err;
  }
  return image;
}

/**
 * The external data file, by the name the image stores, relative to the image's folder (as
 * QEMU resolves it) and through the image's own namespace; a name that leaves the folder is
 * refused unless `allowExternalExtents`, as a VMDK extent's is.
 */
async function openDataFile(image: Qcow2Image, ns: Namespace, opts: OpenOptions): Promise<void> {
  const name = image.extension(EXT.DATA_FILE)!.toString('utf8');
  const full = await resolveBesideFile(ns, image.path, name, !!opts.allowExternalExtents, { what: 'data file', owner: 'image', badName: 'CORRUPT' });
  const store = await ns.open(full, { write: !image.readOnly });
  try {
    const raw = (image.h.autoclear_features & (1n << BigInt(AUTOCLEAR.DATA_FILE_RAW))) !== 0n;
    image.dataFile = { name, path: full, store, size: await store.size(), raw };
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }
}

export async function loadQcow2(path: string, store: ByteStore, readOnly: boolean): Promise<Qcow2Image> {
  const fileSize = await store.size();
  const bad = (field: string, message: string, expected?: unknown, found?: unknown, code: 'CORRUPT' | 'INVALIDDISK' = 'CORRUPT') =>
    new DiskError(code, message, { path, struct: 'header', field, expected, found });
  if (fileSize < V2_HEADER_LENGTH) throw bad('magic', 'file is too short for a qcow2 header', `>= ${V2_HEADER_LENGTH} bytes`, fileSize, 'INVALIDDISK');
  const first = await store.readZeroPadded(0, V3_HEADER_LENGTH);
  Header.decode(first, 0, path); // magic
  const version = first.readUInt32BE(Header.offsetOf('version'));
  if (version === 1) {
    throw new DiskError('NOTSUPPORTED', "qcow version 1 (QEMU's original qcow format, not qcow2) is not a format vdkit reads; qemu-img convert makes a qcow2 of it", { path, struct: 'header', field: 'version', found: version });
  }
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
    throw bad('backing_file_size', 'backing file name runs past cluster 0 or the end of the file', atMost(Math.min(cs, fileSize) - backingOffset), h.backing_file_size);
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
    // QEMU can be given the data file on its command line; vdkit takes the name the image stores
    const name = exts.find((e) => e.type === EXT.DATA_FILE)?.data;
    if (!name || name.length === 0) {
      throw new DiskError('UNSUPPORTEDFEATURE', 'the image keeps its data in an external data file (incompatible bit 2) but names none (header extension 0x44415441)', { path, struct: 'header', field: 'incompatible_features', found: `0x${incompat.toString(16)}`, bits: [INCOMPAT.DATA_FILE] });
    }
  }
  if (h.compression_type !== COMPRESSION_DEFLATE || has(INCOMPAT.COMPRESSION)) {
    if (h.compression_type === COMPRESSION_DEFLATE || !has(INCOMPAT.COMPRESSION)) {
      throw bad('compression_type', 'compression type and incompatible bit 3 disagree', 'both zero (deflate) or both set', `type ${h.compression_type}, bit 3 ${has(INCOMPAT.COMPRESSION) ? 'set' : 'clear'}`);
    }
    if (h.compression_type !== COMPRESSION_ZSTD) {
      throw new DiskError('UNSUPPORTEDFEATURE', `compression type ${h.compression_type} is not supported (0 deflate and 1 zstd are)`, { path, struct: 'header', field: 'compression_type', expected: '0 or 1', found: h.compression_type });
    }
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
    if (l1Offset + h.l1_size * 8 > fileSize) throw bad('l1_table_offset', 'L1 table lies past the end of the file', atMost(fileSize - h.l1_size * 8), l1Offset);
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
  // ---- persistent bitmaps: only while autoclear bit 0 says a bitmap-aware writer kept them
  const bitmapsExt = h.version >= 3 ? liveExtension(exts, h.autoclear_features) : undefined;
  const bitmaps = bitmapsExt ? await readBitmapDirectory(path, store, bitmapsExt, fileSize, { clusterSize: cs, capacity: size }) : undefined;
  if (!bitmapsExt && exts.some((e) => e.type === EXT.BITMAPS)) warnings.push('bitmaps extension ignored: a program unaware of bitmaps wrote to the image (autoclear bit 0 is clear); their clusters are leaks');
  const inconsistent = bitmaps?.list.filter((b) => b.inconsistent) ?? [];
  if (inconsistent.length > 0) warnings.push(`bitmap(s) ${inconsistent.map((b) => `'${b.name}'`).join(', ')} inconsistent (in_use set: not closed cleanly)`);
  image = new Qcow2Image(path, store, h, headerTail, exts, backingName, areaEnd, l1, refs, snapshots, snapshotTableBytes, file, readOnly, warnings);
  image.bitmaps = bitmaps;
  return image;
}

/** What a read-write open must check or do before anything is written. */
async function readWriteChecks(this: Qcow2State, tolerateDamage: boolean): Promise<void> {
  const where = { path: this.path, struct: 'header', field: 'incompatible_features', found: `0x${this.h.incompatible_features.toString(16)}` };
  if (this.hasIncompat(INCOMPAT.CORRUPT)) {
    throw new DiskError('NEEDSREPAIR', 'the corrupt bit is set (QEMU found metadata corruption): open read-only, or repair with `qemu-img check -r all`', { ...where, bits: [INCOMPAT.CORRUPT] });
  }
  if (this.hasIncompat(INCOMPAT.EXTL2)) {
    throw new DiskError('UNSUPPORTEDFEATURE', 'extended L2 entries (incompatible bit 4) are supported for reading only: open read-only', { ...where, bits: [INCOMPAT.EXTL2] });
  }
  for (const b of this.bitmaps?.list ?? []) {
    const why = unkeepable(b);
    if (why) throw new DiskError('UNSUPPORTEDFEATURE', `bitmap '${b.name}' has ${why}: vdkit could not keep it in step with writes; open read-only`, { path: this.path, struct: 'bitmap directory', field: 'flags', found: b.flags });
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
  if (!tolerateDamage) await refuseInconsistent.call(this);
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
async function refuseInconsistent(this: Qcow2State): Promise<void> {
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
