/**
 * Sequential writer of a whole qcow2 image with compressed clusters (`convert -c`; qcow2.md §6,
 * NOTES.md "Compressed clusters"). Only convert uses it, into a new file nobody sees before it is
 * complete (and removed if the convert fails), so nothing here needs the driver's crash-safe
 * order; the header is still written last.
 *
 * Layout:
 *   cluster 0          header (v3: 112 bytes + feature name table for clusters above 4 KiB; v2: 72)
 *   cluster 1..        the L1 table, sized for the capacity
 *   then, in guest     each L2 table where its first cluster is written (as QEMU places it),
 *   order              compressed clusters packed back to back at byte granularity, and the
 *                      clusters that do not shrink stored whole in clusters of their own
 *   at the end         the refcount blocks, then the refcount table
 *
 * Packing follows QEMU's qcow2_alloc_bytes: a compressed cluster goes where the last one ended
 * if it fits in that host cluster, or runs on into the next host cluster when that one is the
 * next free cluster; otherwise (a stored cluster or an L2 table took the next cluster) it starts
 * a fresh cluster. A host cluster's refcount is the number of compressed clusters whose 512-byte
 * sector range touches it (what qemu-img check counts), 1 for everything else. All-zero clusters
 * are left unallocated (the target is new, so they read as zeros), as qemu-img convert -c does.
 *
 * Compression runs on worker threads (compress-worker.ts); results are placed in guest order,
 * so the output does not depend on the thread count.
 */
import { availableParallelism, loadZstd } from '../../core/platform.js';
import { DiskError } from '../../core/errors.js';
import { ceilDiv, isPowerOfTwo } from '../../core/ints.js';
import type { ByteStore } from '../../storage/store.js';
import { DeflatePool, InOrder, readJobInput, type PoolJob } from '../common/deflate-pool.js';
import type { StreamSource } from '../common/stream-source.js';
import type { CompressedWriteOptions } from '../types.js';
import { TYPES } from './structs.js';
import { compressClusters, STORED_CLUSTER, ZERO_CLUSTER, type ClusterJob, type ClusterResult, type Squeeze } from './compress-worker.js';
import { ZSTD_DEFAULT_LEVEL } from './zstd.js';
import {
  COMPRESSION_DEFLATE,
  COMPRESSION_ZSTD,
  COPIED_HI,
  DEFAULT_CLUSTER_BITS,
  INCOMPAT,
  EXT,
  MAX_CLUSTER_BITS,
  MAX_L1_BYTES,
  MAX_REFTABLE_BYTES,
  MIN_CLUSTER_BITS,
  QCOW2_MAGIC,
  V3_HEADER_LENGTH,
  encodeCompressed,
  encodeEntry,
  encodeFeatureTable,
  encodeHeaderArea,
  encodeL2,
  geometry,
  l1EntriesFor,
  type ExtensionRecord,
} from './structs.js';

export interface CompressedWriteResult {
  /** bytes of the file */
  size: number;
  compressed: number;
  /** clusters stored uncompressed because compressing did not shrink them */
  stored: number;
}

/** 16-bit refcounts (refcount_order 4, as qemu-img create) */
const REFCOUNT_ORDER = 4;
const MAX_REFCOUNT = 0xffff;
/** bytes read per compression job (at least one cluster) */
const JOB_BYTES = 1024 * 1024;
/** contiguous writes gathered into one writev up to this size */
const GATHER = 4 * 1024 * 1024;

/** Per host cluster counts, grown as the file grows. */
class Refcounts {
  counts = new Uint32Array(1024);
  inc(cluster: number): void {
    if (cluster >= this.counts.length) {
      const bigger = new Uint32Array(Math.max(cluster + 1, this.counts.length * 2));
      bigger.set(this.counts);
      this.counts = bigger;
    }
    this.counts[cluster]!++;
  }
  get(cluster: number): number {
    return cluster < this.counts.length ? this.counts[cluster]! : 0;
  }
}

/** Writes that continue one another are gathered into one writev. */
class Gatherer {
  private at = -1;
  private bufs: Buffer[] = [];
  private length = 0;
  constructor(private readonly store: ByteStore) {}
  async write(offset: number, buf: Buffer): Promise<void> {
    if (buf.length === 0) return;
    if (this.at >= 0 && offset === this.at + this.length && this.length + buf.length <= GATHER) {
      this.bufs.push(buf);
      this.length += buf.length;
      return;
    }
    await this.flush();
    this.at = offset;
    this.bufs = [buf];
    this.length = buf.length;
  }
  /** after this the caller may reuse every buffer it handed over */
  async flush(): Promise<void> {
    if (this.at < 0) return;
    const [at, bufs] = [this.at, this.bufs];
    this.at = -1;
    this.bufs = [];
    this.length = 0;
    await this.store.writev(at, bufs);
  }
}

/**
 * Write `src` as a qcow2 image with compressed clusters into the empty store `store`; the caller
 * flushes and closes it. `type`: v3 (default) or v2, as create spells them; the level defaults
 * to 6, zlib's default, which QEMU uses.
 */
export async function writeCompressedQcow2(src: StreamSource, store: ByteStore, opts: CompressedWriteOptions = {}): Promise<CompressedWriteResult> {
  const path = store.name;
  const capacity = src.capacity;
  if (!Number.isSafeInteger(capacity) || capacity < 0 || capacity % 512 !== 0) {
    throw new DiskError('INVAL', 'capacity must be a whole number of 512-byte sectors', { path, field: 'capacity', found: capacity });
  }
  const cs = opts.clusterSize ?? 2 ** DEFAULT_CLUSTER_BITS;
  if (!isPowerOfTwo(cs) || cs < 2 ** MIN_CLUSTER_BITS || cs > 2 ** MAX_CLUSTER_BITS) {
    throw new DiskError('INVAL', 'cluster size must be a power of two from 512 bytes to 2 MiB', { path, field: 'clusterSize', expected: '512..2097152', found: cs });
  }
  const zstd = opts.compressionType === 'zstd';
  if (opts.compressionType !== undefined && !zstd && opts.compressionType !== 'zlib') {
    throw new DiskError('INVAL', `unknown compression type ${JSON.stringify(opts.compressionType)}`, { path, field: 'compressionType', expected: 'zlib or zstd', found: opts.compressionType });
  }
  const level = opts.compressionLevel ?? (zstd ? ZSTD_DEFAULT_LEVEL : 6);
  const maxLevel = zstd ? 19 : 9;
  if (!Number.isInteger(level) || level < 1 || level > maxLevel) {
    throw new DiskError('INVAL', `compression level must be 1 to ${maxLevel}`, { path, field: 'compressionLevel', found: level });
  }
  const version = opts.type === undefined ? 3 : TYPES[opts.type.toLowerCase()];
  if (version === undefined) {
    throw new DiskError('INVAL', `unknown qcow2 type ${JSON.stringify(opts.type)}`, { path, field: 'type', expected: 'v3 (compat 1.1, default) or v2 (compat 0.10)', found: opts.type });
  }
  if (zstd && version < 3) throw new DiskError('INVAL', 'zstd compression needs version 3 (compat 1.1)', { path, field: 'compressionType', found: 'zstd' });
  const clusterBits = Math.log2(cs);
  const g = geometry(clusterBits, false);
  const l1Entries = l1EntriesFor(capacity, g);
  if (l1Entries * 8 > MAX_L1_BYTES) {
    throw new DiskError('INVAL', `capacity too large for ${cs}-byte clusters (the L1 table would exceed QEMU's 32 MiB)`, { path, field: 'capacity', found: capacity });
  }

  const refs = new Refcounts();
  const l1Clusters = Math.max(1, ceilDiv(l1Entries * 8, cs));
  const l1 = Buffer.alloc(l1Clusters * cs);
  for (let c = 0; c <= l1Clusters; c++) refs.inc(c); // header and L1
  let nextCluster = 1 + l1Clusters;
  /** where the next compressed cluster may start (0: at a fresh cluster) */
  let freeByte = 0;
  const out = new Gatherer(store);

  const allocCluster = (): number => {
    refs.inc(nextCluster);
    return nextCluster++ * cs;
  };
  const allocBytes = (n: number): number => {
    let off = nextCluster * cs;
    if (freeByte !== 0) {
      const fits = cs - (freeByte % cs) >= n;
      const runsOn = Math.floor(freeByte / cs) + 1 === nextCluster;
      if (fits || runsOn) off = freeByte;
    }
    const first = Math.floor(off / cs);
    const last = Math.floor((off + n - 1) / cs);
    for (let c = first; c <= last; c++) {
      refs.inc(c);
      if (refs.get(c) > MAX_REFCOUNT) throw new DiskError('INTERNAL', 'a host cluster would hold more compressed clusters than a 16-bit refcount counts', { path, field: 'refcount' });
    }
    nextCluster = Math.max(nextCluster, last + 1);
    freeByte = (off + n) % cs === 0 ? 0 : off + n;
    return off;
  };

  // the L2 table being filled, kept in memory until the writer leaves its range
  let l2: { index: number; offset: number; buf: Buffer } | undefined;
  const closeL2 = async () => {
    if (l2) await out.write(l2.offset, l2.buf);
    l2 = undefined;
  };
  const l2For = async (guestCluster: number) => {
    const index = Math.floor(guestCluster / g.l2Entries);
    if (l2?.index !== index) {
      await closeL2();
      l2 = { index, offset: allocCluster(), buf: Buffer.alloc(cs) };
      encodeEntry(l1, index * 8, l2.offset, COPIED_HI);
    }
    return l2;
  };

  let compressed = 0;
  let stored = 0;
  const place = async (first: number, r: ClusterResult) => {
    const data = Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength);
    const packed = Buffer.from(r.out.buffer, r.out.byteOffset, r.out.byteLength);
    let at = 0;
    for (let i = 0; i < r.sizes.length; i++) {
      const size = r.sizes[i]!;
      if (size === ZERO_CLUSTER) continue;
      const guest = first + i;
      const table = await l2For(guest);
      const entry = guest % g.l2Entries;
      if (size === STORED_CLUSTER) {
        const host = allocCluster();
        await out.write(host, data.subarray(i * cs, (i + 1) * cs));
        encodeL2(table.buf, entry, g, host, { copied: true });
        stored++;
      } else {
        const host = allocBytes(size);
        await out.write(host, packed.subarray(at, at + size));
        table.buf.writeBigUInt64BE(encodeCompressed(host, size, clusterBits), entry * 8);
        at += size;
        compressed++;
      }
    }
    // the job's buffers go back to the pool of free buffers after this
    await out.flush();
  };

  const workers = Math.max(1, opts.workers ?? Math.min(availableParallelism(), 4));
  // zstd runs on this thread (its WebAssembly would be loaded again in every worker)
  const z = zstd ? await loadZstd() : undefined;
  const squeeze: Squeeze | undefined = z && ((cluster, lvl) => z.compress(cluster, lvl));
  const pool = z ? undefined : new DeflatePool<ClusterJob, ClusterResult>(new URL('./compress-worker.js', import.meta.url), workers);
  const run = (job: ClusterJob, transfer: ArrayBuffer[]): Promise<ClusterResult> => (pool ? pool.run(job, transfer) : Promise.resolve().then(() => compressClusters(job, squeeze)));
  const maxInFlight = workers * 3;
  const jobBytes = Math.max(cs, JOB_BYTES);
  const free: ArrayBuffer[] = [];
  let nextId = 0;
  let lastEnd = 0; // spans widened to whole clusters may overlap the last job
  const emit = async (job: PoolJob<ClusterResult>) => {
    const r = await job.result;
    await place(job.offset / cs, r);
    free.push(r.data.buffer as ArrayBuffer);
    opts.onProgress?.(job.end, nextCluster * cs);
  };
  const jobs = new InOrder<ClusterResult>(maxInFlight, emit);
  try {
    for await (const span of src.spans()) {
      let from = Math.max(lastEnd, Math.floor(span.offset / cs) * cs);
      const to = Math.min(capacity, ceilDiv(span.offset + span.length, cs) * cs);
      while (from < to) {
        if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path }, { cause: opts.signal.reason });
        const end = Math.min(to, from + jobBytes);
        const bytes = ceilDiv(end - from, cs) * cs;
        const ab = free.pop() ?? new ArrayBuffer(jobBytes);
        // the last cluster may reach past the capacity
        await readJobInput(src, ab, bytes, from, end, capacity);
        await jobs.add(from, end, run({ id: nextId++, data: new Uint8Array(ab, 0, bytes), clusterSize: cs, level }, [ab]));
        from = lastEnd = end;
      }
    }
    await jobs.drain();
  } finally {
    await jobs.settle();
    await pool?.close();
  }
  await closeL2();
  await out.flush();

  // refcount blocks then the table, covering every cluster including themselves
  const perBlock = (cs * 8) >> REFCOUNT_ORDER;
  let blocks = 0;
  let tableClusters = 0;
  for (;;) {
    const total = nextCluster + blocks + tableClusters;
    const b = ceilDiv(total, perBlock);
    const t = ceilDiv(b * 8, cs);
    if (b === blocks && t === tableClusters) break;
    [blocks, tableClusters] = [b, t];
  }
  if (tableClusters * cs > MAX_REFTABLE_BYTES) throw new DiskError('NOSPACE', 'the refcount table would exceed QEMU\'s 8 MiB', { path, field: 'refcount_table_clusters' });
  const blocksAt = nextCluster;
  const tableAt = blocksAt + blocks;
  for (let c = blocksAt; c < tableAt + tableClusters; c++) refs.inc(c);
  const end = tableAt + tableClusters;
  const blockBuf = Buffer.alloc(blocks * cs);
  for (let c = 0; c < end; c++) blockBuf.writeUInt16BE(refs.get(c), c * 2);
  const table = Buffer.alloc(tableClusters * cs);
  for (let b = 0; b < blocks; b++) table.writeBigUInt64BE(BigInt((blocksAt + b) * cs), b * 8);
  await store.write(blocksAt * cs, blockBuf);
  await store.write(tableAt * cs, table);
  await store.write(cs, l1);

  const exts: ExtensionRecord[] = version === 3 && cs > 4096 ? [{ type: EXT.FEATURE_TABLE, data: encodeFeatureTable() }] : [];
  const header = encodeHeaderArea(
    {
      magic: QCOW2_MAGIC,
      version,
      backing_file_offset: 0n,
      backing_file_size: 0,
      cluster_bits: clusterBits,
      size: BigInt(capacity),
      crypt_method: 0,
      l1_size: l1Entries,
      l1_table_offset: BigInt(cs),
      refcount_table_offset: BigInt(tableAt * cs),
      refcount_table_clusters: tableClusters,
      nb_snapshots: 0,
      snapshots_offset: 0n,
      incompatible_features: zstd ? 1n << BigInt(INCOMPAT.COMPRESSION) : 0n,
      compatible_features: 0n,
      autoclear_features: 0n,
      refcount_order: REFCOUNT_ORDER,
      header_length: version === 3 ? V3_HEADER_LENGTH : 0,
      compression_type: zstd ? COMPRESSION_ZSTD : COMPRESSION_DEFLATE,
    },
    Buffer.alloc(0),
    exts,
  );
  await store.write(0, header);
  return { size: end * cs, compressed, stored };
}
