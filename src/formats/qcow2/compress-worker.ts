/**
 * Worker thread of the compressed qcow2 writer (compressed-writer.ts): turns a run of whole
 * clusters into what QEMU's qcow2_co_compress makes of each (qcow2.md §6): raw deflate (no zlib
 * header or trailer) with a 4 KiB window (windowBits 12, memLevel 9) — QEMU inflates with that
 * window, so a larger one would make streams it cannot read — kept only when it is smaller
 * than the cluster; otherwise the cluster is written as it is, as QEMU does.
 */
import { deflateRawSync, workerPort } from '../../core/platform.js';
import { isZero } from '../../binary/zeros.js';
import { looksIncompressible } from '../common/incompressible.js';

export interface ClusterJob {
  id: number;
  /** whole clusters */
  data: Uint8Array;
  clusterSize: number;
  /** zlib level 1-9 (QEMU: 6, zlib's default) */
  level: number;
}

/** per cluster: 0 = all zeros (left unallocated), -1 = store as it is, n > 0 = compressed bytes */
export const ZERO_CLUSTER = 0;
export const STORED_CLUSTER = -1;

export interface ClusterResult {
  id: number;
  /** the compressed clusters' streams, back to back */
  out: Uint8Array;
  sizes: number[];
  /** the job's input, handed back (stored clusters are written from it) */
  data: Uint8Array;
}

/** one cluster compressed (the result may be longer than the cluster: then it is stored) */
export type Squeeze = (cluster: Buffer, level: number) => Uint8Array;

/** QEMU's deflate: raw, 4 KiB window */
const deflateCluster: Squeeze = (cluster, level) => deflateRawSync(cluster, { level, windowBits: 12, memLevel: 9 });

/** `squeeze`: deflate here; the zstd writer passes its own and runs this on its own thread */
export function compressClusters(job: ClusterJob, squeeze: Squeeze = deflateCluster): ClusterResult {
  const data = Buffer.from(job.data.buffer, job.data.byteOffset, job.data.byteLength);
  const cs = job.clusterSize;
  const sizes: number[] = [];
  const parts: Uint8Array[] = [];
  let total = 0;
  for (let at = 0; at < data.length; at += cs) {
    const cluster = data.subarray(at, at + cs);
    if (isZero(cluster)) {
      sizes.push(ZERO_CLUSTER);
      continue;
    }
    const z = looksIncompressible(cluster) ? undefined : squeeze(cluster, job.level);
    if (z === undefined || z.length >= cs) {
      sizes.push(STORED_CLUSTER);
      continue;
    }
    sizes.push(z.length);
    parts.push(z);
    total += z.length;
  }
  // not from Buffer's shared pool: this memory is transferred to the main thread
  const out = Buffer.allocUnsafeSlow(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return { id: job.id, out, sizes, data: job.data };
}

const port = workerPort();
port?.on('message', (job: ClusterJob) => {
  const r = compressClusters(job);
  port!.postMessage(r, [r.out.buffer as ArrayBuffer, r.data.buffer as ArrayBuffer]);
});
