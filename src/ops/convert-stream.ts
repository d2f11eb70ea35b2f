/**
 * Convert into stream-shaped outputs: a streamOptimized VMDK (to a file or any sink, such as
 * stdout) and raw bytes to a sink. Both only append, so they also work into a pipe. A file
 * target is written under the same hidden temporary name as every convert and renamed when it
 * is complete and flushed. Compressed qcow2 (`convert -c`) is written in one pass too, by the
 * driver's own writer, into a new file it may write anywhere in.
 */
import { basename } from '../core/names.js';
import { DiskError } from '../core/errors.js';
import type { Disk } from '../disk.js';
import { writeStreamOptimized, type StreamSource } from '../formats/vmdk/stream/writer.js';
import { StoreSink, type ByteSink } from '../storage/sink.js';
import type { Namespace } from '../storage/namespace.js';
import { hostFiles } from '../storage/file.js';
import type { Driver } from '../formats/types.js';
import { targetCapacity, type ConvertOptions, type ConvertResult } from './convert.js';
import { partialPath, removeStalePartials } from './partials.js';

/** A Disk seen as a stream source: its data ranges, zeros past its end. */
export function diskSource(src: Disk, capacity: number): StreamSource {
  const readable = Math.min(capacity, src.capacity);
  return {
    capacity,
    async *spans() {
      if (src.image.capabilities.blockStatus === 'emulate') {
        yield { offset: 0, length: readable };
        return;
      }
      for (const r of await src.blockStatus(0, readable)) if (r.state === 'data') yield { offset: r.offset, length: r.length };
    },
    async readInto(buf, offset) {
      const n = Math.max(0, Math.min(buf.length, readable - offset));
      if (n > 0) await src.readInto(buf.subarray(0, n), offset);
      buf.fill(0, n);
    },
  };
}

export async function convertToStream(src: Disk, dstPath: string, opts: ConvertOptions): Promise<ConvertResult> {
  // every stream producer (VMware's exporter, VirtualBox, QEMU, open-vmdk) writes 64 KiB grains,
  // and open-vmdk's reader takes no larger ones: the writer keeps to that
  if (opts.grainSize !== undefined && opts.grainSize !== 65536) {
    throw new DiskError('NOTSUPPORTED', 'streamOptimized disks are written with 64 KiB grains (128 sectors) only', { path: dstPath, field: 'grainSize', expected: 65536, found: opts.grainSize });
  }
  const capacity = opts.capacity ?? src.capacity;
  const total = Math.min(capacity, src.capacity);
  const report = (done: number, written: number) => opts.onProgress?.({ done: Math.min(done, total), total, written });
  const write = async (sink: ByteSink) => {
    report(0, 0);
    const r = await writeStreamOptimized(diskSource(src, capacity), sink, {
      fileName: basename(dstPath),
      adapterType: opts.adapterType,
      hwVersion: opts.hwVersion,
      compressionLevel: opts.compressionLevel,
      workers: opts.workers,
      signal: opts.signal,
      onProgress: report,
    });
    await sink.flush();
    report(total, r.size);
    // as convert: a stop asked for by the last report stops it before the target gets its name
    if (opts.signal?.aborted && !opts.sink) throw new DiskError('CANCELLED', undefined, { path: dstPath }, { cause: opts.signal.reason });
    return { bytesWritten: r.size, bytesSkipped: 0 };
  };
  if (opts.sink) return write(opts.sink);

  const ns: Namespace = opts.namespace ?? hostFiles();
  if (ns.createSequential) return intoSequential(ns, dstPath, opts, capacity, write);
  if (!opts.overwrite && (await ns.exists(dstPath))) throw new DiskError('FILEEXISTS', undefined, { path: dstPath });
  await removeStalePartials(ns, dstPath);
  const partial = partialPath(dstPath);
  const sink = new StoreSink(await ns.create(partial, { overwrite: true }));
  try {
    const r = await write(sink);
    await sink.close();
    await ns.rename(partial, dstPath);
    return r;
  } catch (err) {
    await sink.close();
    await ns.remove(partial).catch(() => {});
    throw err;
  }
}

/**
 * Stream-shaped output into a new name of a namespace that takes it as one sequential upload
 * (S3: a multipart upload, no local copy and no hidden name to rename, since the object appears
 * only when the upload completes). Any failure or cancel aborts the upload, so nothing is left.
 */
export async function intoSequential<T>(ns: Namespace, dstPath: string, opts: ConvertOptions, sizeHint: number, write: (sink: ByteSink) => Promise<T>): Promise<T> {
  const sink = await ns.createSequential!(dstPath, { overwrite: opts.overwrite, sizeHint });
  try {
    const r = await write(sink);
    if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: dstPath }, { cause: opts.signal.reason });
    await sink.close();
    return r;
  } catch (err) {
    // the original failure is what the caller needs; the sink retries its own abort
    await sink.abort(err).catch(() => {});
    throw err;
  }
}

/**
 * A new image with compressed data through the driver's one-pass writer (qcow2 compressed
 * clusters), under the hidden temporary name, flushed, then renamed.
 */
export async function convertCompressed(driver: Driver, src: Disk, dstPath: string, opts: ConvertOptions): Promise<ConvertResult> {
  if (opts.sink) throw new DiskError('NOTSUPPORTED', `compressed ${driver.name} cannot be written to a pipe`, { path: opts.sink.name, field: 'format', found: driver.name });
  if (opts.parent) throw new DiskError('NOTSUPPORTED', 'compressed output is a whole image, not a child of a backing file', { path: dstPath, field: 'parent' });
  if (opts.preallocate) throw new DiskError('INVAL', 'compressed output cannot be preallocated', { path: dstPath, field: 'preallocate' });
  // QEMU refuses compressed writes into an image with an external data file (compressed clusters are in the image file)
  if (opts.dataFile !== undefined) throw new DiskError('NOTSUPPORTED', 'compressed output cannot have an external data file', { path: dstPath, field: 'dataFile', found: opts.dataFile });
  const capacity = targetCapacity(driver.name, opts.capacity ?? src.capacity);
  const total = Math.min(capacity, src.capacity);
  const ns = opts.namespace ?? hostFiles();
  if (!opts.overwrite && (await ns.exists(dstPath))) throw new DiskError('FILEEXISTS', undefined, { path: dstPath });
  await removeStalePartials(ns, dstPath);
  const partial = partialPath(dstPath);
  const store = await ns.create(partial, { overwrite: true });
  try {
    opts.onProgress?.({ done: 0, total, written: 0 });
    const r = await driver.writeCompressed!(diskSource(src, capacity), store, {
      type: opts.type,
      clusterSize: opts.clusterSize,
      compressionLevel: opts.compressionLevel,
      compressionType: opts.compressionType,
      workers: opts.workers,
      signal: opts.signal,
      onProgress: (done, written) => opts.onProgress?.({ done: Math.min(done, total), total, written }),
    });
    await store.flush();
    await store.close();
    await ns.rename(partial, dstPath);
    opts.onProgress?.({ done: total, total, written: r.size });
    return { bytesWritten: r.size, bytesSkipped: 0 };
  } catch (err) {
    await store.close().catch(() => {});
    await ns.remove(partial).catch(() => {});
    throw err;
  }
}

/**
 * Raw bytes of `src` appended to a sink (stdout): every byte, zeros included, since a pipe
 * cannot have holes. Unallocated ranges are not read, only sent as zeros.
 */
export async function convertToRawSink(src: Disk, sink: ByteSink, opts: ConvertOptions): Promise<ConvertResult> {
  const capacity = opts.capacity ?? src.capacity;
  const readable = Math.min(capacity, src.capacity);
  const CHUNK = 2 * 1024 * 1024;
  const zeros = Buffer.alloc(CHUNK);
  const ranges = src.image.capabilities.blockStatus === 'emulate' ? [{ offset: 0, length: readable, state: 'data' as const }] : await src.blockStatus(0, readable);
  let done = 0;
  let written = 0;
  opts.onProgress?.({ done, total: capacity, written });
  const sendZeros = async (length: number) => {
    for (let left = length; left > 0; left -= CHUNK) await sink.append(zeros.subarray(0, Math.min(CHUNK, left)));
  };
  for (const r of ranges) {
    for (let at = r.offset; at < r.offset + r.length; at += CHUNK) {
      if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: sink.name }, { cause: opts.signal.reason });
      const n = Math.min(CHUNK, r.offset + r.length - at);
      if (r.state === 'data') {
        const buf = Buffer.allocUnsafe(n); // the sink may hold on to it until it flushes
        await src.readInto(buf, at);
        await sink.append(buf);
        written += n;
      } else await sendZeros(n);
      done = at + n;
      opts.onProgress?.({ done, total: capacity, written });
    }
  }
  await sendZeros(capacity - readable);
  await sink.flush();
  opts.onProgress?.({ done: capacity, total: capacity, written });
  return { bytesWritten: written, bytesSkipped: capacity - written };
}
