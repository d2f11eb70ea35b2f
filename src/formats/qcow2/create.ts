/**
 * Creating qcow2 files as `qemu-img create -f qcow2` (QEMU 7.2) does, byte for byte for the
 * same options (qcow2.md §10): cluster 0 = header (v3: 112 bytes, v2: 72) + backing format
 * extension + feature name table (v3, clusters above 4 KiB) + end marker + backing file name;
 * cluster 1 = refcount table (one cluster), cluster 2 = refcount block (clusters 0-2 in use);
 * then the L1 table is grown to its size through the allocator, exactly as QEMU's
 * qcow2_grow_l1_table does after creating that three-cluster image, so it lands at cluster 3
 * and the file ends right after it (not padded to a cluster).
 */
import { DiskError } from '../../core/errors.js';
import { isPowerOfTwo } from '../../core/ints.js';
import type { Namespace } from '../../storage/namespace.js';
import type { CreateOptions } from '../types.js';
import { createFile } from '../common/create.js';
import type { Qcow2Image } from './image.js';
import { openQcow2 } from './open.js';
import { setInitialSize } from './resize.js';
import {
  AUTOCLEAR,
  COMPRESSION_DEFLATE,
  COMPRESSION_ZSTD,
  DEFAULT_CLUSTER_BITS,
  INCOMPAT,
  EXT,
  MAX_BACKING_NAME,
  MAX_CLUSTER_BITS,
  MAX_L1_BYTES,
  MIN_CLUSTER_BITS,
  QCOW2_MAGIC,
  TYPES,
  V3_HEADER_LENGTH,
  encodeFeatureTable,
  encodeHeaderArea,
  encodeL2,
  formatToQemu,
  geometry,
  l1EntriesFor,
  setRefcount,
  type ExtensionRecord,
  type HeaderValue,
} from './structs.js';

export async function createQcow2(ns: Namespace, path: string, opts: CreateOptions): Promise<Qcow2Image> {
  const version = opts.type === undefined ? 3 : TYPES[opts.type.toLowerCase()];
  if (version === undefined) {
    throw new DiskError('INVAL', `unknown qcow2 type ${JSON.stringify(opts.type)}`, { path, field: 'type', expected: 'v3 (compat 1.1, default) or v2 (compat 0.10)', found: opts.type });
  }
  const cs = opts.clusterSize ?? 2 ** DEFAULT_CLUSTER_BITS;
  if (!isPowerOfTwo(cs) || cs < 2 ** MIN_CLUSTER_BITS || cs > 2 ** MAX_CLUSTER_BITS) {
    throw new DiskError('INVAL', 'cluster size must be a power of two from 512 bytes to 2 MiB', { path, field: 'clusterSize', expected: '512..2097152', found: cs });
  }
  const clusterBits = Math.log2(cs);
  if (!Number.isSafeInteger(opts.capacity) || opts.capacity < 0 || opts.capacity % 512 !== 0) {
    throw new DiskError('INVAL', 'capacity must be a whole number of 512-byte sectors', { path, field: 'capacity', found: opts.capacity });
  }
  const l1Entries = l1EntriesFor(opts.capacity, geometry(clusterBits, false));
  if (l1Entries * 8 > MAX_L1_BYTES) {
    throw new DiskError('INVAL', `capacity too large for ${cs}-byte clusters (the L1 table would exceed QEMU's 32 MiB)`, { path, field: 'capacity', expected: `<= ${(MAX_L1_BYTES / 8) * (cs / 8) * cs}`, found: opts.capacity });
  }
  const zstd = opts.compressionType === 'zstd';
  if (opts.compressionType !== undefined && !zstd && opts.compressionType !== 'zlib') {
    throw new DiskError('INVAL', `unknown compression type ${JSON.stringify(opts.compressionType)}`, { path, field: 'compressionType', expected: 'zlib or zstd', found: opts.compressionType });
  }
  if (zstd && version < 3) throw new DiskError('INVAL', 'zstd compression needs version 3 (compat 1.1)', { path, field: 'compressionType', found: 'zstd' });
  if (opts.preallocate) throw new DiskError('NOTSUPPORTED', 'qcow2 preallocation is not supported (images are created sparse)', { path, field: 'preallocate' });

  const exts: ExtensionRecord[] = [];
  let name: Buffer | undefined;
  if (opts.parent) {
    name = Buffer.from(opts.parent.hint, 'utf8');
    if (name.length === 0 || name.length > MAX_BACKING_NAME) {
      throw new DiskError('NAMETOOLONG', 'a backing file name has 1 to 1023 bytes', { path, struct: 'header', field: 'backing_file_size', found: name.length });
    }
    // the backing format: what the parent is, by content (QEMU >= 6.1 always records it); the
    // chain layer probed it
    const fmt = opts.parent.facts?.format;
    if (fmt !== undefined) exts.push({ type: EXT.BACKING_FORMAT, data: Buffer.from(formatToQemu(fmt), 'latin1') });
  }
  // an external data file (QEMU >= 4.0): its name after the backing format, as QEMU orders them
  if (opts.dataFileRaw && opts.dataFile === undefined) throw new DiskError('INVAL', 'data_file_raw needs a data file (data_file=NAME)', { path, field: 'dataFileRaw' });
  if (opts.dataFile !== undefined) {
    const bytes = Buffer.from(opts.dataFile, 'utf8');
    if (version < 3) throw new DiskError('INVAL', 'an external data file needs version 3 (compat 1.1)', { path, field: 'dataFile', found: opts.dataFile });
    if (bytes.length === 0 || bytes.includes(0)) throw new DiskError('INVAL', 'empty or invalid data file name', { path, field: 'dataFile', found: opts.dataFile });
    if (opts.preallocate) throw new DiskError('NOTSUPPORTED', 'preallocation with an external data file is not supported', { path, field: 'preallocate' });
    exts.push({ type: EXT.DATA_FILE, data: bytes });
  }
  if (version === 3 && cs > 4096) exts.push({ type: EXT.FEATURE_TABLE, data: encodeFeatureTable() });
  const h: HeaderValue = {
    magic: QCOW2_MAGIC,
    version,
    backing_file_offset: 0n,
    backing_file_size: 0,
    cluster_bits: clusterBits,
    size: 0n, // set after the L1 table is grown, as QEMU does
    crypt_method: 0,
    l1_size: 0,
    l1_table_offset: 0n,
    refcount_table_offset: BigInt(cs),
    refcount_table_clusters: 1,
    nb_snapshots: 0,
    snapshots_offset: 0n,
    incompatible_features: (zstd ? 1n << BigInt(INCOMPAT.COMPRESSION) : 0n) | (opts.dataFile !== undefined ? 1n << BigInt(INCOMPAT.DATA_FILE) : 0n),
    compatible_features: 0n,
    autoclear_features: opts.dataFileRaw ? 1n << BigInt(AUTOCLEAR.DATA_FILE_RAW) : 0n,
    refcount_order: 4,
    header_length: version === 3 ? V3_HEADER_LENGTH : 0,
    compression_type: zstd ? COMPRESSION_ZSTD : COMPRESSION_DEFLATE,
  };
  const area = encodeHeaderArea(h, Buffer.alloc(0), exts, name);
  if (area.length > cs) {
    throw new DiskError('NAMETOOLONG', 'the header, its extensions and the backing file name do not fit in cluster 0', { path, struct: 'header', field: 'backing_file_size', expected: `<= ${cs} bytes in all`, found: area.length });
  }
  const tableEntry = Buffer.alloc(8);
  tableEntry.writeBigUInt64BE(BigInt(2 * cs));
  const block = Buffer.alloc(8);
  for (let c = 0; c < 3; c++) setRefcount(block, c, 4, 1);

  // the data file first, sized as the disk (as qemu-img create makes it): the image names it
  const dataPath = opts.dataFile === undefined ? undefined : ns.resolve(path, opts.dataFile);
  if (dataPath !== undefined) {
    const d = await ns.create(dataPath, { overwrite: opts.overwrite });
    try {
      await d.truncate(opts.capacity);
      await d.flush();
    } finally {
      await d.close();
    }
  }
  try {
    await createFile(ns, path, opts, async (store) => {
      await store.write(0, area);
      await store.write(cs, tableEntry);
      await store.write(2 * cs, block);
      await store.truncate(3 * cs);
    });
  } catch (err) {
    if (dataPath !== undefined) await ns.remove(dataPath).catch(() => {});
    throw err;
  }
  let image: Qcow2Image | undefined;
  try {
    // a child is opened as the chain layer opens its top (it does the copy-on-write); the data
    // file's name is the creator's choice, wherever it points
    image = await openQcow2(ns, path, { readOnly: false, allowExternalExtents: true });
    await setInitialSize.call(image, opts.capacity);
    if (opts.dataFileRaw) await mapDataFileRaw(image);
    await image.flush();
    return image;
  } catch (err) {
    await image?.close().catch(() => {});
    await ns.remove(path).catch(() => {});
    if (dataPath !== undefined) await ns.remove(dataPath).catch(() => {});
    throw err;
  }
}

/**
 * data_file_raw: every guest cluster mapped to the same offset of the data file (QEMU makes
 * such an image with its metadata preallocated), so the data file reads as the guest does from
 * the start. Per L2 table: refcount, table, flush, L1 entry.
 */
async function mapDataFileRaw(image: Qcow2Image): Promise<void> {
  const { clusterSize: cs, l2Entries } = image.geometry;
  const clusters = Math.ceil(image.capacity / cs);
  for (let i = 0; i * l2Entries < clusters; i++) {
    const table = Buffer.alloc(cs);
    for (let j = 0; j < l2Entries && i * l2Entries + j < clusters; j++) encodeL2(table, j, image.geometry, (i * l2Entries + j) * cs, { copied: true });
    const at = await image.refs.alloc(1);
    await image.writeRaw(at, table);
    await image.store.flush();
    await image.writeL1Entry(i, at, true);
  }
}
