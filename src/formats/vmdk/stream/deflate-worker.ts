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
 * test-compressed on an 8 KiB sample; if that sample does not shrink, the grain is stored: a
 * valid zlib stream of stored blocks, 16 bytes larger than the data, which is what a real
 * compressor would have produced anyway.
 */
import { deflateSync, workerPort } from '../../../core/platform.js';
import { isZero } from '../../../binary/zeros.js';
import { looksIncompressible } from '../../common/incompressible.js';
import { GRAIN_MARKER_HEAD, MarkerHead } from '../structs.js';

export interface DeflateJob {
  id: number;
  /** whole grains, the first starting at sector `lba` */
  data: Uint8Array;
  lba: number;
  grainBytes: number;
  level: number;
  /** a buffer to write the markers into, if big enough (handed back and forth, never garbage) */
  outBuf?: ArrayBuffer;
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

/** Adler-32 (RFC 1950 §8.2), the zlib trailer; reduced every 5552 bytes as zlib does */
export function adler32(b: Buffer): number {
  let a = 1;
  let s = 0;
  const n = b.length;
  let i = 0;
  while (i < n) {
    const end = Math.min(n, i + 5552);
    const end8 = i + ((end - i) & ~7);
    while (i < end8) {
      a += b[i]!;
      s += a;
      a += b[i + 1]!;
      s += a;
      a += b[i + 2]!;
      s += a;
      a += b[i + 3]!;
      s += a;
      a += b[i + 4]!;
      s += a;
      a += b[i + 5]!;
      s += a;
      a += b[i + 6]!;
      s += a;
      a += b[i + 7]!;
      s += a;
      i += 8;
    }
    while (i < end) {
      a += b[i++]!;
      s += a;
    }
    a %= 65521;
    s %= 65521;
  }
  return ((s << 16) | a) >>> 0;
}

/**
 * `grain` as a zlib stream of stored (uncompressed) deflate blocks, written into `out` at `at`;
 * returns its length. Written by hand rather than with zlib level 0 so that an incompressible
 * grain costs no allocation at all: buffers zlib returns are external memory, which V8 only
 * reclaims after tens of MiB of it have piled up in each thread.
 */
export function storedZlib(grain: Buffer, out: Buffer, at: number): number {
  let p = at;
  out[p++] = 0x78; // CMF: deflate, 32 KiB window
  out[p++] = 0x01; // FLG: fastest, no dictionary; (0x78 << 8 | 0x01) % 31 === 0
  for (let i = 0; i < grain.length || i === 0; ) {
    const n = Math.min(0xffff, grain.length - i);
    const last = i + n >= grain.length;
    out[p++] = last ? 1 : 0; // BFINAL, BTYPE 00 (stored)
    out.writeUInt16LE(n, p);
    out.writeUInt16LE(~n & 0xffff, p + 2);
    p += 4;
    grain.copy(out, p, i, i + n);
    p += n;
    i += n;
    if (last) break;
  }
  out.writeUInt32BE(adler32(grain), p);
  return p + 4 - at;
}

/** bytes storedZlib writes for `length` bytes */
export function storedZlibLength(length: number): number {
  return 2 + 5 * Math.max(1, Math.ceil(length / 0xffff)) + length + 4;
}

export function compressGrains(job: DeflateJob): DeflateResult {
  const data = Buffer.from(job.data.buffer, job.data.byteOffset, job.data.byteLength);
  // per non-zero grain: its zlib stream, or undefined for a stored one (written straight into out)
  const parts: (Buffer | undefined)[] = [];
  const grains: number[] = [];
  let total = 0;
  const count = Math.ceil(data.length / job.grainBytes);
  const grainSectors = job.grainBytes / SECTOR;
  for (let g = 0; g < count; g++) {
    const grain = data.subarray(g * job.grainBytes, (g + 1) * job.grainBytes);
    if (isZero(grain)) continue;
    const z = job.level > 0 && !looksIncompressible(grain) ? deflateSync(grain, { level: job.level }) : undefined;
    const size = z ? z.length : storedZlibLength(grain.length);
    const sectors = Math.ceil((GRAIN_MARKER_HEAD + size) / SECTOR);
    parts.push(z);
    grains.push(g, sectors);
    total += sectors * SECTOR;
  }
  // reuse the caller's buffer; otherwise not from Buffer's shared pool, since this memory is
  // transferred to the main thread
  const out = job.outBuf && job.outBuf.byteLength >= total ? Buffer.from(job.outBuf, 0, total) : Buffer.allocUnsafeSlow(total);
  let at = 0;
  for (let i = 0; i < parts.length; i++) {
    const z = parts[i];
    const g = grains[2 * i]!;
    const end = at + grains[2 * i + 1]! * SECTOR;
    const grain = data.subarray(g * job.grainBytes, (g + 1) * job.grainBytes);
    const size = z ? z.length : storedZlibLength(grain.length);
    // the marker's `type` word is the first 4 bytes of the zlib stream, written over it next
    MarkerHead.encode({ val: BigInt(job.lba + g * grainSectors), size, type: 0 }, out, at);
    if (z) z.copy(out, at + GRAIN_MARKER_HEAD);
    else storedZlib(grain, out, at + GRAIN_MARKER_HEAD);
    out.fill(0, at + GRAIN_MARKER_HEAD + size, end);
    at = end;
  }
  return { id: job.id, out, grains, data: job.data };
}

const port = workerPort();
port?.on('message', (job: DeflateJob) => {
  const r = compressGrains(job);
  port!.postMessage(r, [r.out.buffer as ArrayBuffer, r.data.buffer as ArrayBuffer]);
});
