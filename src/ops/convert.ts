/**
 * Copy one disk into a new image of any format/type, driven by block status: only ranges the
 * source reports as data are read, and blocks that read as all zeros are not written, so the
 * target stays sparse. Reading the next chunks overlaps writing the current one.
 */
import { basename } from '../core/names.js';
import { DiskError } from '../core/errors.js';
import { DEFAULT_FORMAT, driverByName } from '../formats/registry.js';
import { hostFiles } from '../storage/file.js';
import { DeferredSyncNamespace } from '../storage/deferred-sync.js';
import type { ByteSink } from '../storage/sink.js';
import { Disk, type DiskCreateOptions } from '../disk.js';
import { convertCompressed, convertToRawSink, convertToStream } from './convert-stream.js';
import type { Image } from '../formats/types.js';
import { namingTargets, partialPath, removeStalePartials } from './partials.js';
import { isZero } from '../binary/zeros.js';
import { throttleProgress } from '../core/progress.js';

export interface Progress {
  /** virtual bytes processed so far */
  done: number;
  total: number;
  /** bytes actually written to the target */
  written: number;
}

export interface ConvertOptions extends Omit<DiskCreateOptions, 'capacity'> {
  /**
   * target capacity (default: the source's), rounded up to whole 512-byte sectors for every
   * format but raw: smaller drops what lies past the new end, larger adds a tail of zeros
   */
  capacity?: number;
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
  /** bytes per read (default 2 MiB) */
  chunkSize?: number;
  /** zero-detection granularity in bytes (default 64 KiB, the VMDK grain) */
  zeroBlockSize?: number;
  /**
   * compressed output (qemu-img convert -c): qcow2 compressed clusters, or for VMDK the
   * streamOptimized type; other formats: NOTSUPPORTED
   */
  compress?: boolean;
  /** streamOptimized: zlib level 1-9 (default 1, as VMware writes); compressed qcow2: default 6, as QEMU */
  compressionLevel?: number;
  /** streamOptimized, compressed qcow2: compression threads (default one per core, at most 4) */
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

const DEFAULT_CHUNK = 2 * 1024 * 1024;
const DEFAULT_ZERO_BLOCK = 64 * 1024;

/**
 * The capacity a new image of `format` gets for a wanted size: every format but raw stores whole
 * 512-byte sectors, so a size in between is rounded up (the added tail reads as zeros), as
 * qemu-img convert does for a raw source of an odd size.
 */
export function targetCapacity(format: string, wanted: number): number {
  if (!Number.isSafeInteger(wanted) || wanted < 0) throw new DiskError('INVAL', 'capacity must be a whole number of bytes', { field: 'capacity', found: wanted });
  const unit = driverByName(format).alignment;
  return Math.ceil(wanted / unit) * unit;
}

export interface CopyRangesOptions {
  /** bytes per read */
  chunkSize: number;
  /** zero-detection granularity in bytes */
  zeroBlockSize: number;
  signal?: AbortSignal;
  /** named in a CANCELLED error */
  label: string;
  /**
   * Blocks that read as all zeros are not written where this says the target already reads
   * zeros: undefined = everywhere (a fresh image); otherwise the image below a new child, whose
   * block status tells where its zeros are (past its end reads as zeros too).
   */
  below?: Disk;
  /** after each chunk: its range and the bytes written for it */
  onChunk?: (c: { offset: number; length: number }, written: number) => void;
  /**
   * the background push of written data to the disk every FLUSH_EVERY bytes (default: the
   * target's flush); convert's hidden target syncs its files without the driver's flush
   */
  sync?: () => Promise<void>;
}

/** whether every byte of [offset, offset+length) of `below` is known to read as zeros */
async function readsZero(below: Disk, offset: number, length: number): Promise<boolean> {
  const inside = Math.max(0, Math.min(length, below.capacity - offset));
  if (inside === 0) return true;
  return (await below.blockStatus(offset, inside)).every((r) => r.state !== 'data');
}

/**
 * The copy engine of convert and the chain clone: copy `ranges` of `read` into `dst`.
 * Up to READ_AHEAD chunks are read into their own buffers while earlier chunks are written.
 * The writes form one chain, issued in order and each started only after the one before it has
 * finished (Disk.write serialises them too), so the target sees exactly the write sequence of
 * a plain loop; the first failing write stops the rest of the chain. On failure every read and
 * write still in flight has settled before the error is thrown, so the caller may close and
 * remove the target at once.
 */
export async function copyRanges(read: (into: Buffer, offset: number) => Promise<void>, dst: Disk, ranges: readonly { offset: number; length: number }[], opts: CopyRangesOptions): Promise<number> {
  const chunk = opts.chunkSize;
  const block = opts.zeroBlockSize;
  let written = 0;
  let chain: Promise<void> = Promise.resolve();
  let writeError: { err: unknown } | undefined;
  let unflushed = 0;
  let flushing: Promise<void> | undefined;
  const flushNow = () => {
    unflushed = 0;
    flushing = (opts.sync ? opts.sync() : dst.flush()).then(
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
        await read(buf, c.offset);
        return buf;
      });
      p.catch(() => {}); // awaited below; this only keeps an abandoned read from being "unhandled"
      reads.set(i, p);
    };
    for (let i = 0; i < slots; i++) startRead(i);
    for (let i = 0; i < chunks.length; i++) {
      if (writeError) throw writeError.err;
      if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: opts.label }, { cause: opts.signal.reason });
      const c = chunks[i]!;
      const readDone = reads.get(i)!;
      reads.delete(i);
      const buf = await readDone;
      // write runs of non-zero blocks (aligned to the block size in virtual offsets); a zero
      // block over something that does not read as zeros is written too (it hides it)
      const runs: [number, number][] = [];
      let runStart = -1;
      let pos = 0;
      while (pos < buf.length) {
        const abs = c.offset + pos;
        const n = Math.min(block - (abs % block), buf.length - pos);
        const skip = isZero(buf, pos, pos + n) && (opts.below === undefined || (await readsZero(opts.below, abs, n)));
        if (!skip && runStart < 0) runStart = pos;
        if (skip && runStart >= 0) {
          runs.push([runStart, pos]);
          runStart = -1;
        }
        pos += n;
      }
      if (runStart >= 0) runs.push([runStart, buf.length]);
      let chunkWritten = 0;
      for (const [from, to] of runs) {
        chain = chain.then(async () => {
          await dst.write(c.offset + from, buf.subarray(from, to));
          written += to - from;
          chunkWritten += to - from;
          unflushed += to - from;
          if (unflushed >= FLUSH_EVERY && flushing === undefined) flushNow();
        });
      }
      chain = chain.then(() => opts.onChunk?.(c, chunkWritten));
      chain.catch((err) => (writeError ??= { err }));
      free[i % slots] = chain.catch(() => {});
      if (i + slots < chunks.length) startRead(i + slots);
    }
    await chain;
    await flushing;
    if (writeError) throw writeError.err;
    return written;
  } catch (err) {
    // let the reads and writes still in flight finish before the caller closes the target
    await chain.catch(() => {});
    await Promise.allSettled(reads.values());
    await flushing;
    throw err;
  }
}

/**
 * Move a finished image from its temporary name to `finalPath` and close it: one rename, or for
 * VMDKs (whose descriptor names its extents, and a monolithic one itself) extents first and
 * the descriptor last.
 */
export async function moveIntoPlace(img: Image, finalPath: string): Promise<void> {
  const m = img.maintenance();
  if (m.renameTo) {
    const files = (await img.info()).files;
    if (files.length > 1 || driverByName(img.format).selfNaming) {
      await m.renameTo(finalPath);
      await img.close().catch(() => {});
      return;
    }
  }
  const from = img.path;
  await img.close();
  await img.namespace.rename(from, finalPath);
}

/**
 * The data ranges of `src` over [0, length), each rounded out to whole `grain`s (the target's
 * zero-detection block) and merged where they then touch, or the whole span when finding them
 * would mean reading it all. A host file's holes come at 4 KiB: copied as they are, the data
 * between them becomes writes that start and end inside a cluster, which the target stores
 * piecewise (a qcow2 allocation ending mid-cluster stats and extends its file) at 1.2x the cost;
 * a rounded range reads the hole's zeros and the zero detection still skips whole zero blocks
 * (as qemu-img convert aligns block status to the target's cluster). The default, 1, keeps the
 * ranges as they are: a chain clone's links hold exactly what their sources hold.
 */
export async function dataRanges(src: Disk, length: number, grain = 1): Promise<{ offset: number; length: number }[]> {
  if (length === 0) return [];
  // An emulated block status would read the whole source once more: copy everything instead
  // and let the zero detection find the holes.
  if (src.image.capabilities.blockStatus === 'emulate') return [{ offset: 0, length }];
  const out: { offset: number; length: number }[] = [];
  for (const r of await src.blockStatus(0, length)) {
    if (r.state !== 'data') continue;
    const from = Math.floor(r.offset / grain) * grain;
    const to = Math.min(length, Math.ceil((r.offset + r.length) / grain) * grain);
    const last = out[out.length - 1];
    if (last && from <= last.offset + last.length) last.length = Math.max(last.length, to - last.offset);
    else out.push({ offset: from, length: to - from });
  }
  return out;
}

export async function convert(src: Disk, dstPath: string, opts: ConvertOptions = {}): Promise<ConvertResult> {
  opts = { ...opts, onProgress: throttleProgress(opts.onProgress) };
  try {
    return await convertTo(src, dstPath, opts);
  } catch (err) {
    throw namingTargets(err, [dstPath]);
  }
}

async function convertTo(src: Disk, dstPath: string, opts: ConvertOptions): Promise<ConvertResult> {
  const format = opts.format ?? DEFAULT_FORMAT;
  const driver = driverByName(format);
  if (opts.compress) {
    if (driver.writeCompressed) return convertCompressed(driver, src, dstPath, opts);
    // a format whose only compressed form is a sequential type (VMDK: streamOptimized)
    const stream = driver.sequentialTypes[0];
    if (stream === undefined) throw new DiskError('NOTSUPPORTED', 'compressed output is written as qcow2 (compressed clusters) or vmdk (streamOptimized)', { path: dstPath, field: 'format', found: format });
    if (opts.type !== undefined && driver.normaliseType(opts.type) !== stream) throw new DiskError('INVAL', `compressed ${format} output is the ${stream} type`, { path: dstPath, field: 'type', expected: stream, found: opts.type });
    return convertToStream(src, dstPath, { ...opts, type: stream });
  }
  if (opts.type !== undefined && driver.sequentialTypes.includes(driver.normaliseType(opts.type))) return convertToStream(src, dstPath, opts);
  if (opts.sink) {
    if (driver.alignment !== 1) throw new DiskError('NOTSUPPORTED', 'only raw and streamOptimized VMDK can be written to a pipe', { path: opts.sink.name, field: 'format', found: format });
    return convertToRawSink(src, opts.sink, opts);
  }
  const capacity = targetCapacity(format, opts.capacity ?? src.capacity);
  const ns = opts.namespace ?? hostFiles();
  if (!opts.overwrite && (await ns.exists(dstPath))) throw new DiskError('FILEEXISTS', undefined, { path: dstPath });
  // The target is built under a hidden temporary name in the same folder and moved to its name
  // only when complete, so a killed convert never leaves something at `dstPath` that looks whole.
  const partial = partialPath(dstPath);
  await removeStalePartials(ns, dstPath);
  // nobody sees the target before its rename: its ordering flushes wait for one sync at the end
  const staging = new DeferredSyncNamespace(ns);
  const dst = await Disk.create(partial, { ...opts, namespace: staging, capacity, overwrite: true });
  let written = 0;
  let done = 0;
  // shrinking drops what lies past the new end; growing leaves the new tail unwritten (zeros)
  const total = Math.min(capacity, src.capacity);
  try {
    const report = () => opts.onProgress?.({ done, total, written });
    report();
    const chunk = opts.chunkSize ?? DEFAULT_CHUNK;
    // A target that allocates whole units bigger than 64 KiB (VDI: 1 MiB blocks) stores the
    // zeros around data in a unit anyway: looking for zeros per unit gives one write per unit
    // instead of one per run of data, with the same result. Not above a chunk; not for targets
    // that keep unwritten sectors of a block as holes (VHD, VHDX report one sector).
    const zeroBlockSize = opts.zeroBlockSize ?? Math.min(chunk, Math.max(DEFAULT_ZERO_BLOCK, dst.image.clusterSize));
    const ranges = await dataRanges(src, total, zeroBlockSize);
    await copyRanges((buf, at) => src.readInto(buf, at), dst, ranges, {
      chunkSize: chunk,
      zeroBlockSize,
      signal: opts.signal,
      label: dstPath,
      sync: () => staging.syncNow(),
      onChunk: (c, n) => {
        written += n;
        done = c.offset + c.length;
        report();
      },
    });
    done = total;
    report();
    // a stop asked for by the last report (a VixDiskLib progress function returning false at 100 %,
    // the only report after 0 % of a fast convert) still stops it: the target is not yet in place
    if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: dstPath }, { cause: opts.signal.reason });
    await dst.flush();
    await staging.seal();
    await moveIntoPlace(dst.image, dstPath);
  } catch (err) {
    // only the temporary files go: whatever was at dstPath before is untouched
    const files = await dst.info().then((i) => i.files).catch(() => [partial]);
    await dst.close().catch(() => {});
    for (const f of files) if (basename(f).includes('.vdkit-partial-')) await ns.remove(f).catch(() => {});
    throw err;
  }
  return { bytesWritten: written, bytesSkipped: total - written };
}
