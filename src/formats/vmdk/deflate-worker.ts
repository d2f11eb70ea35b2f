/**
 * Worker thread of the streamOptimized writer: turns a run of whole grains into the bytes of
 * their grain markers (vmdk.md §4.2), so that compression, the costly part of writing a stream,
 * runs on every core while the main thread only reads the source and appends to the output.
 *
 * Per grain: all-zero grains are left out (the stream leaves them unallocated); the rest become
 * a 12-byte marker head (LBA in sectors, compressed length), one zlib stream (RFC 1950, which
 * every reader expects; not raw deflate) and zero padding to the next sector.
 *
 * Incompressible data (already-compressed or encrypted content) costs zlib as much time as it
 * does at any level and gains nothing, so a grain whose byte histogram looks random is
 * test-compressed on an 8 KiB sample; if that sample does not shrink, the grain is stored with
 * zlib level 0 (a valid zlib stream of stored blocks, 16 bytes larger than the data, which is
 * what a real compressor would have produced anyway).
 */
import { parentPort } from 'node:worker_threads';
import { deflateSync } from 'node:zlib';

export interface DeflateJob {
  id: number;
  /** whole grains, the first starting at sector `lba` */
  data: Uint8Array;
  lba: number;
  grainBytes: number;
  level: number;
}

export interface DeflateResult {
  id: number;
  /** marker bytes of the non-zero grains, in order */
  out: Uint8Array;
  /** per non-zero grain: [grain index within the job, sectors its marker occupies] */
  grains: number[];
  /** the job's input, handed back for reuse */
  data: Uint8Array;
}

const SECTOR = 512;
const ZERO = Buffer.alloc(64 * 1024);

function isZero(b: Buffer): boolean {
  for (let at = 0; at < b.length; at += ZERO.length) {
    const n = Math.min(ZERO.length, b.length - at);
    if (b.compare(ZERO, 0, n, at, at + n) !== 0) return false;
  }
  return true;
}

/** Shannon entropy of a byte sample, bits per byte (8 for uniform random data). */
function sampledEntropy(b: Buffer): number {
  const hist = new Uint32Array(256);
  let n = 0;
  for (let i = 0; i < b.length; i += 7) {
    hist[b[i]!]!++;
    n++;
  }
  let e = 0;
  for (let i = 0; i < 256; i++) {
    const c = hist[i]!;
    if (c > 0) {
      const p = c / n;
      e -= p * Math.log2(p);
    }
  }
  return e;
}

function looksIncompressible(grain: Buffer): boolean {
  if (sampledEntropy(grain) < 7.8) return false;
  const mid = grain.length >> 1;
  const sample = grain.subarray(Math.max(0, mid - 4096), Math.min(grain.length, mid + 4096));
  return deflateSync(sample, { level: 1 }).length >= sample.length * 0.97;
}

export function compressGrains(job: DeflateJob): DeflateResult {
  const data = Buffer.from(job.data.buffer, job.data.byteOffset, job.data.byteLength);
  const parts: Buffer[] = [];
  const grains: number[] = [];
  let total = 0;
  const count = Math.ceil(data.length / job.grainBytes);
  const grainSectors = job.grainBytes / SECTOR;
  for (let g = 0; g < count; g++) {
    const grain = data.subarray(g * job.grainBytes, (g + 1) * job.grainBytes);
    if (isZero(grain)) continue;
    const level = job.level > 0 && looksIncompressible(grain) ? 0 : job.level;
    const z = deflateSync(grain, { level });
    const sectors = Math.ceil((12 + z.length) / SECTOR);
    parts.push(z);
    grains.push(g, sectors);
    total += sectors * SECTOR;
  }
  // not from Buffer's shared pool: this memory is transferred to the main thread
  const out = Buffer.allocUnsafeSlow(total);
  let at = 0;
  for (let i = 0; i < parts.length; i++) {
    const z = parts[i]!;
    const end = at + grains[2 * i + 1]! * SECTOR;
    out.writeBigUInt64LE(BigInt(job.lba + grains[2 * i]! * grainSectors), at);
    out.writeUInt32LE(z.length, at + 8);
    z.copy(out, at + 12);
    out.fill(0, at + 12 + z.length, end);
    at = end;
  }
  return { id: job.id, out, grains, data: job.data };
}

parentPort?.on('message', (job: DeflateJob) => {
  const r = compressGrains(job);
  parentPort!.postMessage(r, [r.out.buffer as ArrayBuffer, r.data.buffer as ArrayBuffer]);
});
