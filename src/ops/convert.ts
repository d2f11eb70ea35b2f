/**
 * Copy one disk into a new image of any format/type, driven by block status: only ranges the
 * source reports as data are read, and blocks that read as all zeros are not written, so the
 * target stays sparse. Reading the next chunks overlaps writing the current one.
 */
import { basename, dirname, extname, join } from 'node:path';
import { DiskError } from '../core/errors.js';
import { fsx } from '../storage/file.js';
import type { ByteSink } from '../storage/sink.js';
import { Disk, type DiskCreateOptions } from '../disk.js';
import { normaliseCreateType } from '../formats/vmdk/create.js';
import { convertToRawSink, convertToStream } from './convert-stream.js';

export interface Progress {
  /** virtual bytes processed so far */
  done: number;
  total: number;
  /** bytes actually written to the target */
  written: number;
}

export interface ConvertOptions extends Omit<DiskCreateOptions, 'capacity'> {
  /** target capacity (default: the source's) */
  capacity?: number;
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
  /** bytes per read (default 2 MiB) */
  chunkSize?: number;
  /** zero-detection granularity in bytes (default 64 KiB, the VMDK grain) */
  zeroBlockSize?: number;
  /** streamOptimized: zlib level 1-9 (default 1, as VMware writes) */
  compressionLevel?: number;
  /** streamOptimized: compression threads (default one per core) */
  workers?: number;
  /**
   * streamOptimized or raw: append the output to this sink (e.g. stdout) instead of creating
   * `dstPath`; `dstPath` then only supplies the name recorded in a stream's descriptor
   */
  sink?: ByteSink;
}

export interface ConvertResult {
  bytesWritten: number;
  bytesSkipped: number;
}

const ZERO = Buffer.alloc(1024 * 1024);

/** whether buf[from, to) is all zeros (memcmp against a zero buffer, no allocation) */
function isZero(buf: Buffer, from: number, to: number): boolean {
  for (let at = from; at < to; at += ZERO.length) {
    const n = Math.min(ZERO.length, to - at);
    if (buf.compare(ZERO, 0, n, at, at + n) !== 0) return false;
  }
  return true;
}

/**
 * Chunks in the pipeline, each with its own buffer, reused: at most this many reads are in
 * flight, which leaves one of libuv's four threads free for the (serial) writes.
 */
const READ_AHEAD = 3;

/**
 * Start a flush (fdatasync) in the background after every this many bytes written, so the
 * target's data goes to the disk while the copy goes on instead of all at the final flush.
 */
const FLUSH_EVERY = 32 * 1024 * 1024;

/**
 * Remove what converts to `dstPath` left behind when they were killed: hidden partial files
 * (and their extents) whose process no longer runs.
 */
export async function removeStalePartials(dstPath: string): Promise<void> {
  const dir = dirname(dstPath);
  const prefix = `.${basename(dstPath, extname(dstPath))}.vdkit-partial-`;
  for (const name of await fsx.list(dir)) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(/^(\d+)/.exec(name.slice(prefix.length))?.[1]);
    if (!Number.isSafeInteger(pid) || pid === process.pid || processRuns(pid)) continue;
    await fsx.remove(join(dir, name));
  }
}

/** The hidden name a convert to `dstPath` builds its target under. */
export function partialPathFor(dstPath: string): string {
  const ext = extname(dstPath);
  return join(dirname(dstPath), `.${basename(dstPath, ext)}.vdkit-partial-${process.pid}${ext}`);
}

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function convert(src: Disk, dstPath: string, opts: ConvertOptions = {}): Promise<ConvertResult> {
  const format = opts.format ?? 'vmdk';
  if (format === 'vmdk' && normaliseCreateType(opts.type) === 'streamOptimized') return convertToStream(src, dstPath, opts);
  if (opts.sink) {
    if (format !== 'raw') throw new DiskError('NOTSUPPORTED', 'only raw and streamOptimized VMDK can be written to a pipe', { path: opts.sink.name, field: 'format', found: format });
    return convertToRawSink(src, opts.sink, opts);
  }
  const capacity = opts.capacity ?? src.capacity;
  const chunk = opts.chunkSize ?? 2 * 1024 * 1024;
  const block = opts.zeroBlockSize ?? 64 * 1024;
  if (!opts.overwrite && (await fsx.exists(dstPath))) throw new DiskError('FILEEXISTS', undefined, { path: dstPath });
  // The target is built under a hidden temporary name in the same folder and moved to its name
  // only when complete, so a killed convert never leaves something at `dstPath` that looks whole.
  const partial = partialPathFor(dstPath);
  await removeStalePartials(dstPath);
  const dst = await Disk.create(partial, { ...opts, capacity, overwrite: true });
  // A target that allocates whole units bigger than the zero-detection block (VDI: 1 MiB blocks)
  // stores the zeros around data in a unit anyway: looking for zeros per unit gives one write per
  // unit instead of one per run of data, with the same result. Not above a chunk; not for targets
  // that keep unwritten sectors of a block as holes (VHD, VHDX report one sector).
  const zeroBlock = opts.zeroBlockSize ?? Math.min(chunk, Math.max(block, dst.image.clusterSize));
  let written = 0;
  let done = 0;
  const total = Math.min(capacity, src.capacity);
  // Pipeline: up to READ_AHEAD chunks are read into their own buffers while earlier chunks are
  // written. The writes form one chain, issued in order and each started only after the one
  // before it has finished (Disk.write serialises them too), so the target sees exactly the
  // write sequence of a plain loop; the first failing write stops the rest of the chain.
  let chain: Promise<void> = Promise.resolve();
  let writeError: { err: unknown } | undefined;
  let unflushed = 0;
  let flushing: Promise<void> | undefined;
  const flushNow = () => {
    unflushed = 0;
    flushing = dst.flush().then(
      () => {
        flushing = undefined;
      },
      (err) => {
        flushing = undefined;
        writeError ??= { err };
      },
    );
  };
  const reads = new Map<number, Promise<Buffer>>(); // chunk index -> its read, until taken
  try {
    const report = () => opts.onProgress?.({ done, total, written });
    report();
    // An emulated block status would read the whole source once more: copy everything instead
    // and let the zero detection below find the holes.
    const ranges =
      src.image.capabilities.blockStatus === 'emulate' ? [{ offset: 0, length: total }] : (await src.blockStatus(0, total)).filter((r) => r.state === 'data');
    // chunk list over the data ranges
    const chunks: { offset: number; length: number }[] = [];
    for (const r of ranges) for (let at = r.offset; at < r.offset + r.length; at += chunk) chunks.push({ offset: at, length: Math.min(chunk, r.offset + r.length - at) });
    const slots = Math.min(READ_AHEAD, chunks.length);
    const buffers: Buffer[] = [];
    // per buffer: settles once no pending write refers to it any more (never rejects)
    const free: Promise<void>[] = new Array<Promise<void>>(slots).fill(Promise.resolve());
    const startRead = (i: number): void => {
      const slot = i % slots;
      const c = chunks[i]!;
      const p = free[slot]!.then(async () => {
        const buf = (buffers[slot] ??= Buffer.allocUnsafe(chunk)).subarray(0, c.length);
        await src.readInto(buf, c.offset);
        return buf;
      });
      p.catch(() => {}); // awaited below; this only keeps an abandoned read from being "unhandled"
      reads.set(i, p);
    };
    for (let i = 0; i < slots; i++) startRead(i);
    for (let i = 0; i < chunks.length; i++) {
      if (writeError) throw writeError.err;
      if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: dstPath }, { cause: opts.signal.reason });
      const c = chunks[i]!;
      const read = reads.get(i)!;
      reads.delete(i);
      const buf = await read;
      // write runs of non-zero blocks (aligned to the block size in virtual offsets)
      const runs: [number, number][] = [];
      let runStart = -1;
      let pos = 0;
      while (pos < buf.length) {
        const abs = c.offset + pos;
        const n = Math.min(zeroBlock - (abs % zeroBlock), buf.length - pos);
        const zero = isZero(buf, pos, pos + n);
        if (!zero && runStart < 0) runStart = pos;
        if (zero && runStart >= 0) {
          runs.push([runStart, pos]);
          runStart = -1;
        }
        pos += n;
      }
      if (runStart >= 0) runs.push([runStart, buf.length]);
      for (const [from, to] of runs) {
        chain = chain.then(async () => {
          await dst.write(c.offset + from, buf.subarray(from, to));
          written += to - from;
          unflushed += to - from;
          if (unflushed >= FLUSH_EVERY && flushing === undefined) flushNow();
        });
      }
      chain = chain.then(() => {
        done = c.offset + c.length;
        report();
      });
      chain.catch((err) => (writeError ??= { err }));
      free[i % slots] = chain.catch(() => {});
      if (i + slots < chunks.length) startRead(i + slots);
    }
    await chain;
    await flushing;
    if (writeError) throw writeError.err;
    done = total;
    report();
    await dst.flush();
    // move into place: one rename, or for multi-file VMDKs extents first and the descriptor last
    if (dst.image.renameTo) {
      const files = (await dst.info()).files;
      if (files.length > 1 || dst.format === 'vmdk') {
        await dst.image.renameTo(dstPath);
        await dst.close().catch(() => {});
        return { bytesWritten: written, bytesSkipped: total - written };
      }
    }
    await dst.close();
    await fsx.rename(partial, dstPath);
  } catch (err) {
    // let the reads and writes still in flight finish before the target is closed and removed
    await chain.catch(() => {});
    await Promise.allSettled(reads.values());
    await flushing;
    // only the temporary files go: whatever was at dstPath before is untouched
    const files = await dst.info().then((i) => i.files).catch(() => [partial]);
    await dst.close().catch(() => {});
    for (const f of files) if (basename(f).includes('.vdkit-partial-')) await fsx.remove(f).catch(() => {});
    throw err;
  }
  return { bytesWritten: written, bytesSkipped: total - written };
}
