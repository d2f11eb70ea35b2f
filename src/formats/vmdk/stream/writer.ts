/**
 * streamOptimized VMDK writer (vmdk.md §4; NOTES.md "streamOptimized").
 *
 * Layout: VMware's own exporter's ("true stream", vmdk.md §4.3 A), not QEMU's front-loaded one
 * that ESXi rejects:
 *
 *   sector 0            header: version 3, flags 0x30001 (valid newline test, compressed grains,
 *                       markers), gdOffset = GD_AT_END, rgdOffset 0, compressAlgorithm 1
 *   sector 1..          embedded descriptor, createType "streamOptimized", one extent line
 *                       naming the file itself (libvmdk opens the extent by that name)
 *   ..overHead (128)    zeros: the first grain starts grain-aligned, as in VMware's files
 *   per 32 MiB range    grain markers in ascending LBA (12-byte head, zlib stream, padding to a
 *   with data           sector), then a GT marker and the range's 4-sector grain table whose
 *                       entries point at the grain markers
 *                       (ranges without data get no table: GD entry 0, as VMware and
 *                       VirtualBox write them)
 *   then                GD marker + grain directory, footer marker + footer (the header again
 *                       with the real gdOffset), end-of-stream marker as the last sector.
 *
 * Everything is appended: nothing is written twice and nothing is read back, so the output can
 * be a pipe. All-zero grains are left out. Every grain inflates to the full 64 KiB (the part past
 * the end of the disk is zeros) because VirtualBox insists on whole grains; the capacity itself
 * is kept to the sector, not rounded up.
 *
 * Compression runs on worker threads (deflate-worker.ts), one per core; the main thread reads the
 * source ahead and appends finished grains in order.
 */
import { availableParallelism } from '../../../core/platform.js';
import { DiskError } from '../../../core/errors.js';
import { SECTOR_SIZE, ceilDiv } from '../../../core/ints.js';
import { u32Bytes } from '../../../binary/tables.js';
import type { ByteSink } from '../../../storage/sink.js';
import { DeflatePool, InOrder, readJobInput, type PoolJob } from '../../common/deflate-pool.js';
import type { StreamSource } from '../../common/stream-source.js';
import { Descriptor } from '../descriptor.js';
import { ADAPTER_TYPES, newCid, newDdb } from '../layout.js';
import type { DeflateJob, DeflateResult } from './deflate-worker.js';
import {
  COMPRESSION_DEFLATE,
  FLAG_COMPRESSED,
  FLAG_MARKERS,
  FLAG_VALID_NEWLINE,
  GD_AT_END,
  MARKER_EOS,
  MARKER_FOOTER,
  MARKER_GD,
  MARKER_GT,
  MarkerHead,
  SPARSE_MAGIC,
  SparseExtentHeader,
} from '../structs.js';

const GRAIN_SECTORS = 128;
const GRAIN_BYTES = GRAIN_SECTORS * SECTOR_SIZE;
const GTES = 512;
const GT_SECTORS = (GTES * 4) / SECTOR_SIZE;
const GT_SPAN = GRAIN_BYTES * GTES; // 32 MiB of virtual disk per grain table
/** bytes per compression job: 16 grains; a job never crosses a grain-table range */
const JOB_BYTES = 16 * GRAIN_BYTES;
/** room for a job's markers: a grain that does not compress grows by a few bytes, to 129 sectors */
const JOB_OUT_BYTES = 16 * (GRAIN_SECTORS + 1) * SECTOR_SIZE;
/** grain-marker sectors are u32 in the grain tables */
const MAX_FILE_SECTORS = 0xffffffff;

export type { StreamSource };

export interface StreamWriteOptions {
  /** the file name recorded in the embedded descriptor's extent line: the output's base name */
  fileName: string;
  adapterType?: string;
  hwVersion?: number | string;
  /** zlib level 1-9 (default 1, as VMware's exporter writes: its grains start 78 01) */
  compressionLevel?: number;
  /** compression threads (default: one per core, at most 4: each costs up to ~40 MiB) */
  workers?: number;
  /** extra ddb entries (e.g. a uuid to keep) */
  ddb?: [string, string][];
  signal?: AbortSignal;
  /** after each appended job: virtual bytes done and output bytes so far */
  onProgress?: (done: number, outputBytes: number) => void;
}

export interface StreamWriteResult {
  /** bytes of the stream */
  size: number;
  /** grains written (non-zero) */
  grains: number;
}

/** The embedded descriptor of a stream (exported for tests and `measure`). */
export function streamDescriptor(capacitySectors: number, opts: Pick<StreamWriteOptions, 'fileName' | 'adapterType' | 'hwVersion' | 'ddb'>): string {
  const adapterType = opts.adapterType ?? 'lsilogic';
  if (!(ADAPTER_TYPES as readonly string[]).includes(adapterType)) {
    throw new DiskError('INVAL', `unknown adapter type ${JSON.stringify(adapterType)}`, { path: opts.fileName, field: 'adapterType', expected: ADAPTER_TYPES.join(', ') });
  }
  const hw = String(opts.hwVersion ?? 4);
  if (!/^\d{1,3}$/.test(hw)) throw new DiskError('INVAL', `bad hardware version ${JSON.stringify(hw)}`, { path: opts.fileName, field: 'hwVersion' });
  if (/["\n\r/\\]/.test(opts.fileName) || opts.fileName === '') {
    throw new DiskError('INVAL', 'the stream file name must be a plain base name', { path: opts.fileName, field: 'fileName' });
  }
  const cid = newCid();
  const ddb = new Map<string, string>(newDdb(cid, capacitySectors, { adapterType, hwVersion: hw }));
  for (const [k, v] of opts.ddb ?? []) ddb.set(k, v);
  return Descriptor.build({
    cid,
    createType: 'streamOptimized',
    extents: [{ access: 'RW', sectorCount: capacitySectors, type: 'SPARSE', fileName: opts.fileName, offsetSectors: 0 }],
    ddb: [...ddb],
  }).toString();
}

function header(capacitySectors: number, descriptorSectors: number, overHead: number, gdOffset: bigint): Buffer {
  const b = Buffer.alloc(SECTOR_SIZE);
  SparseExtentHeader.encode(
    {
      magicNumber: SPARSE_MAGIC,
      version: 3,
      flags: FLAG_VALID_NEWLINE | FLAG_COMPRESSED | FLAG_MARKERS,
      capacity: BigInt(capacitySectors),
      grainSize: BigInt(GRAIN_SECTORS),
      descriptorOffset: 1n,
      descriptorSize: BigInt(descriptorSectors),
      numGTEsPerGT: GTES,
      rgdOffset: 0n,
      gdOffset,
      overHead: BigInt(overHead),
      uncleanShutdown: 0,
      singleEndLineChar: 0x0a,
      nonEndLineChar: 0x20,
      doubleEndLineChar1: 0x0d,
      doubleEndLineChar2: 0x0a,
      compressAlgorithm: COMPRESSION_DEFLATE,
    },
    b,
    0,
  );
  return b;
}

function metadataMarker(sectors: number, type: number): Buffer {
  const b = Buffer.alloc(SECTOR_SIZE);
  MarkerHead.encode({ val: BigInt(sectors), size: 0, type }, b, 0);
  return b;
}

/** a table's LE bytes, zero-padded to whole sectors */
function u32le(arr: Uint32Array, sectors: number): Buffer {
  const b = Buffer.alloc(sectors * SECTOR_SIZE);
  u32Bytes(arr, 0, arr.length).copy(b);
  return b;
}

/**
 * Write `src` as a streamOptimized VMDK to `sink`. The caller flushes and closes the sink.
 */
export async function writeStreamOptimized(src: StreamSource, sink: ByteSink, opts: StreamWriteOptions): Promise<StreamWriteResult> {
  if (!Number.isSafeInteger(src.capacity) || src.capacity <= 0) {
    throw new DiskError('INVAL', 'capacity must be a positive whole number of bytes', { path: sink.name, field: 'capacity', found: src.capacity });
  }
  const level = opts.compressionLevel ?? 1;
  if (!Number.isInteger(level) || level < 1 || level > 9) {
    throw new DiskError('INVAL', 'compression level must be 1 to 9', { path: sink.name, field: 'compressionLevel', found: level });
  }
  const capacitySectors = ceilDiv(src.capacity, SECTOR_SIZE);
  const capacity = capacitySectors * SECTOR_SIZE;
  const gtCount = ceilDiv(ceilDiv(capacitySectors, GRAIN_SECTORS), GTES);
  const gdSectors = ceilDiv(gtCount * 4, SECTOR_SIZE);
  if (gtCount * 4 > 64 * 1024 * 1024) throw new DiskError('INVAL', 'disk too large for one streamOptimized extent', { path: sink.name, field: 'capacity', found: src.capacity });
  const text = Buffer.from(streamDescriptor(capacitySectors, opts), 'utf8');
  const descriptorSectors = Math.max(1, ceilDiv(text.length, SECTOR_SIZE));
  const overHead = Math.max(GRAIN_SECTORS, ceilDiv(1 + descriptorSectors, GRAIN_SECTORS) * GRAIN_SECTORS);
  if (sink.position !== 0) throw new DiskError('INTERNAL', 'a stream must start at the beginning of its output', { path: sink.name });

  const head = Buffer.alloc(overHead * SECTOR_SIZE);
  header(capacitySectors, descriptorSectors, overHead, GD_AT_END).copy(head, 0);
  text.copy(head, SECTOR_SIZE);
  await sink.append(head);

  const gd = new Uint32Array(gtCount);
  let gt = new Uint32Array(GTES);
  let gtIndex = -1; // the range whose grains are being written
  let gtUsed = false;
  let grains = 0;
  const sector = () => sink.position / SECTOR_SIZE;
  const closeTable = async () => {
    if (gtIndex < 0 || !gtUsed) return;
    await sink.append(metadataMarker(GT_SECTORS, MARKER_GT));
    gd[gtIndex] = sector();
    await sink.append(u32le(gt, GT_SECTORS));
    gt = new Uint32Array(GTES);
    gtUsed = false;
  };

  const workers = Math.max(1, opts.workers ?? Math.min(availableParallelism(), 4));
  const pool = new DeflatePool<DeflateJob, DeflateResult>(new URL('./deflate-worker.js', import.meta.url), workers);
  const maxInFlight = workers * 3;
  // Input and output buffers travel to a worker and back, and are reused: transferred buffers
  // that became garbage would only be reclaimed by a full collection of the main heap, which
  // stays small, so tens of MiB of them could pile up.
  const free: ArrayBuffer[] = [];
  const freeOut: ArrayBuffer[] = [];
  let nextId = 0;
  let lastEnd = 0; // end of the last job: spans widened to whole grains may overlap it

  const emit = async (job: PoolJob<DeflateResult>) => {
    const r = await job.result;
    free.push(r.data.buffer as ArrayBuffer);
    const out = Buffer.from(r.out.buffer, r.out.byteOffset, r.out.byteLength);
    const first = job.offset / GRAIN_BYTES;
    const range = Math.floor(first / GTES);
    if (r.grains.length > 0 && range !== gtIndex) {
      await closeTable();
      gtIndex = range;
    }
    let at = sector();
    for (let i = 0; i < r.grains.length; i += 2) {
      const g = first + r.grains[i]!;
      gt[g % GTES] = at;
      at += r.grains[i + 1]!;
      grains++;
    }
    if (r.grains.length > 0) gtUsed = true;
    if (at > MAX_FILE_SECTORS) throw new DiskError('INVAL', 'the stream would exceed 2 TiB, the most a grain table can address', { path: sink.name, field: 'capacity' });
    await sink.append(out);
    if (r.out.buffer.byteLength >= JOB_OUT_BYTES) freeOut.push(r.out.buffer as ArrayBuffer);
    opts.onProgress?.(job.end, sink.position);
  };

  const jobs = new InOrder<DeflateResult>(maxInFlight, emit);
  try {
    for await (const span of src.spans()) {
      // whole grains covering the span, cut at grain-table ranges and the job size
      let from = Math.floor(span.offset / GRAIN_BYTES) * GRAIN_BYTES;
      const to = Math.min(capacity, ceilDiv(span.offset + span.length, GRAIN_BYTES) * GRAIN_BYTES);
      from = Math.max(from, lastEnd);
      while (from < to) {
        if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: sink.name }, { cause: opts.signal.reason });
        const end = Math.min(to, from + JOB_BYTES, (Math.floor(from / GT_SPAN) + 1) * GT_SPAN);
        const bytes = ceilDiv(end - from, GRAIN_BYTES) * GRAIN_BYTES;
        const ab = free.pop() ?? new ArrayBuffer(JOB_BYTES);
        await readJobInput(src, ab, bytes, from, end, src.capacity);
        const job: DeflateJob = { id: nextId++, data: new Uint8Array(ab, 0, bytes), lba: from / SECTOR_SIZE, grainBytes: GRAIN_BYTES, level, outBuf: freeOut.pop() ?? new ArrayBuffer(JOB_OUT_BYTES) };
        await jobs.add(from, end, pool.run(job, job.outBuf ? [ab, job.outBuf] : [ab]));
        from = lastEnd = end;
      }
    }
    await jobs.drain();
  } finally {
    await jobs.settle();
    await pool.close();
  }
  await closeTable();

  await sink.append(metadataMarker(gdSectors, MARKER_GD));
  const gdOffset = sector();
  await sink.append(u32le(gd, gdSectors));
  await sink.append(metadataMarker(1, MARKER_FOOTER));
  await sink.append(header(capacitySectors, descriptorSectors, overHead, BigInt(gdOffset)));
  await sink.append(metadataMarker(0, MARKER_EOS));
  return { size: sink.position, grains };
}
