/**
 * Measure layout of a qcow2 image as createQcow2 and the allocator (refcounts.ts, QEMU's order)
 * grow it: cluster 0 header, 1 refcount table, 2 first refcount block, then the L1 table; each
 * data cluster written needs its L2 table (one per l2Entries clusters touched) and every
 * 2^(cluster_bits + 3 - refcount_order) clusters of file one more refcount block. A refcount
 * table that outgrows its one cluster is rewritten larger at the end of the file (counted here
 * at its new size; the old cluster is freed and reused, so this is an upper bound by a cluster).
 */
import { DiskError } from '../../core/errors.js';
import { ceilDiv, isPowerOfTwo } from '../../core/ints.js';
import { groupsTouched, unitCount } from '../common/measure.js';
import type { CreateOptions, MeasureLayout } from '../types.js';
import { DEFAULT_CLUSTER_BITS, MAX_CLUSTER_BITS, MAX_L1_BYTES, MIN_CLUSTER_BITS, TYPES, geometry, l1EntriesFor } from './structs.js';

/** refcount_order vdkit and QEMU write: 16-bit refcounts */
const REFCOUNT_ORDER = 4;

export function measureQcow2(opts: CreateOptions): MeasureLayout {
  if (opts.type !== undefined && TYPES[opts.type.toLowerCase()] === undefined) {
    throw new DiskError('INVAL', `unknown qcow2 type ${JSON.stringify(opts.type)}`, { field: 'type', expected: 'v3 (compat 1.1, default) or v2 (compat 0.10)' });
  }
  const cs = opts.clusterSize ?? 2 ** DEFAULT_CLUSTER_BITS;
  if (!isPowerOfTwo(cs) || cs < 2 ** MIN_CLUSTER_BITS || cs > 2 ** MAX_CLUSTER_BITS) {
    throw new DiskError('INVAL', 'cluster size must be a power of two from 512 bytes to 2 MiB', { field: 'clusterSize', expected: '512..2097152', found: cs });
  }
  if (!Number.isSafeInteger(opts.capacity) || opts.capacity < 0) throw new DiskError('INVAL', 'capacity must be a whole number of bytes', { field: 'capacity', found: opts.capacity });
  const capacity = ceilDiv(opts.capacity, 512) * 512;
  const g = geometry(Math.log2(cs), false);
  const l1Bytes = l1EntriesFor(capacity, g) * 8;
  if (l1Bytes > MAX_L1_BYTES) throw new DiskError('INVAL', `capacity too large for ${cs}-byte clusters`, { field: 'capacity', found: capacity });
  const l1Clusters = ceilDiv(l1Bytes, cs);
  const perRefblock = (cs * 8) / 2 ** REFCOUNT_ORDER;
  const perTableCluster = cs / 8;
  /** clusters of a file holding `clusters` clusters of header, L1, L2 and data, with its refcount metadata */
  const withRefcounts = (clusters: number) => {
    let blocks = 1;
    let table = 1;
    for (;;) {
      const nextBlocks = ceilDiv(clusters + blocks - 1 + (table > 1 ? table : 0), perRefblock);
      const nextTable = ceilDiv(nextBlocks, perTableCluster);
      if (nextBlocks <= blocks && nextTable <= table) break;
      blocks = Math.max(blocks, nextBlocks);
      table = Math.max(table, nextTable);
    }
    // the first table is cluster 1 (in `clusters`); a larger one is an addition
    return clusters + blocks - 1 + (table > 1 ? table : 0);
  };
  const required = (runs: readonly { first: number; count: number }[]) => {
    const data = unitCount(runs);
    // a fresh image ends right after its L1 table, not at a cluster boundary
    if (data === 0) return 3 * cs + l1Bytes;
    return withRefcounts(3 + l1Clusters + groupsTouched(runs, g.l2Entries) + data) * cs;
  };
  const all = ceilDiv(capacity, cs);
  return {
    capacity,
    unit: cs,
    required,
    fullyAllocated: all === 0 ? 3 * cs + l1Bytes : withRefcounts(3 + l1Clusters + ceilDiv(all, g.l2Entries) + all) * cs,
    notes: [],
  };
}
