/**
 * Copy one disk into a new image of any format/type, driven by block status: only ranges the
 * source reports as data are read, and blocks that read as all zeros are not written, so the
 * target stays sparse. Reading the next chunk overlaps writing the current one.
 */
import { DiskError } from '../core/errors.js';
import { fsx } from '../storage/file.js';
import { Disk, type DiskCreateOptions } from '../disk.js';

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
  blockSize?: number;
}

export interface ConvertResult {
  bytesWritten: number;
  bytesSkipped: number;
}

const ZERO = Buffer.alloc(1024 * 1024);

function isZero(buf: Buffer): boolean {
  for (let at = 0; at < buf.length; at += ZERO.length) {
    const n = Math.min(ZERO.length, buf.length - at);
    if (!buf.subarray(at, at + n).equals(ZERO.subarray(0, n))) return false;
  }
  return true;
}

export async function convert(src: Disk, dstPath: string, opts: ConvertOptions = {}): Promise<ConvertResult> {
  const capacity = opts.capacity ?? src.capacity;
  const chunk = opts.chunkSize ?? 2 * 1024 * 1024;
  const block = opts.blockSize ?? 64 * 1024;
  const existedBefore = await fsx.exists(dstPath);
  const dst = await Disk.create(dstPath, { ...opts, capacity });
  let written = 0;
  let done = 0;
  const total = Math.min(capacity, src.capacity);
  try {
    const report = () => opts.onProgress?.({ done, total, written });
    report();
    const ranges = (await src.blockStatus(0, total)).filter((r) => r.state === 'data');
    // chunk list over the data ranges
    const chunks: { offset: number; length: number }[] = [];
    for (const r of ranges) for (let at = r.offset; at < r.offset + r.length; at += chunk) chunks.push({ offset: at, length: Math.min(chunk, r.offset + r.length - at) });
    let next = chunks.length > 0 ? src.read(chunks[0]!.offset, chunks[0]!.length) : undefined;
    for (let i = 0; i < chunks.length; i++) {
      if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: dstPath }, { cause: opts.signal.reason });
      const c = chunks[i]!;
      const buf = await next!;
      next = i + 1 < chunks.length ? src.read(chunks[i + 1]!.offset, chunks[i + 1]!.length) : undefined;
      // write runs of non-zero blocks (aligned to the block size in virtual offsets)
      let runStart = -1;
      let pos = 0;
      while (pos < buf.length) {
        const abs = c.offset + pos;
        const n = Math.min(block - (abs % block), buf.length - pos);
        const zero = isZero(buf.subarray(pos, pos + n));
        if (!zero && runStart < 0) runStart = pos;
        if (zero && runStart >= 0) {
          await dst.write(c.offset + runStart, buf.subarray(runStart, pos));
          written += pos - runStart;
          runStart = -1;
        }
        pos += n;
      }
      if (runStart >= 0) {
        await dst.write(c.offset + runStart, buf.subarray(runStart));
        written += buf.length - runStart;
      }
      done = c.offset + c.length;
      report();
    }
    done = total;
    report();
    await dst.flush();
    await dst.close();
  } catch (err) {
    const files = await dst.info().then((i) => i.files).catch(() => [dstPath]);
    await dst.close().catch(() => {});
    if (!existedBefore) for (const f of files) await fsx.remove(f).catch(() => {});
    throw err;
  }
  return { bytesWritten: written, bytesSkipped: total - written };
}
