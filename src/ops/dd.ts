/**
 * `dd` as qemu-img dd does it: copy `count` blocks of `blockSize` bytes, starting `skip` blocks
 * into the source disk, into a new image of exactly that size. One difference: qemu-img dd writes
 * every block, zeros too, so its output is fully allocated; a new image already reads zeros, so
 * vdkit writes only what is not zero and the output stays sparse (same content, less space).
 */
import { DiskError } from '../core/errors.js';
import { isZero } from '../binary/zeros.js';
import { Disk, type DiskCreateOptions } from '../disk.js';
import type { Progress } from './convert.js';
import { throttleProgress } from '../core/progress.js';
import { unlink } from './rename.js';

export interface DdOptions {
  /** bytes per block (qemu-img dd's bs=; default 512) */
  blockSize?: number;
  /** blocks to copy (count=); default: to the end of the source */
  count?: number;
  /** blocks of the source to skip first (skip=) */
  skip?: number;
  /** the source's format (detected when absent) */
  inputFormat?: string;
  /** the new image: format and create options (capacity is the copied length) */
  output: Omit<DiskCreateOptions, 'capacity'>;
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

export interface DdResult {
  /** bytes copied (the new image's size) */
  bytes: number;
  /** bytes written to the new image (the rest read as zeros) */
  written: number;
}

const PIECE = 1024 * 1024;

export async function dd(input: string, output: string, opts: DdOptions): Promise<DdResult> {
  opts = { ...opts, onProgress: throttleProgress(opts.onProgress) };
  const bs = opts.blockSize ?? 512;
  const skip = opts.skip ?? 0;
  for (const [field, v, min] of [['bs', bs, 1], ['skip', skip, 0], ['count', opts.count ?? 0, 0]] as const) {
    if (!Number.isSafeInteger(v) || v < min) throw new DiskError('INVAL', `${field}=${v} must be a whole number of at least ${min}`, { field });
  }
  const src = await Disk.open(input, { readOnly: true, format: opts.inputFormat });
  try {
    const start = skip * bs;
    if (!Number.isSafeInteger(start) || start > src.capacity) {
      throw new DiskError('INVAL', `cannot skip ${skip} blocks of ${bs} bytes: the disk holds ${src.capacity} bytes`, { path: input, field: 'skip' });
    }
    const wanted = opts.count === undefined ? Infinity : opts.count * bs;
    const length = Math.min(src.capacity - start, wanted);
    const dst = await Disk.create(output, { ...opts.output, capacity: length });
    let written = 0;
    let done = false;
    try {
      // block status first: holes and zero ranges of the source are not even read
      const status = length === 0 ? [] : await src.blockStatus(start, length);
      const buf = Buffer.allocUnsafe(PIECE);
      for (const e of status) {
        if (e.state !== 'data') continue;
        for (let at = e.offset; at < e.offset + e.length; at += PIECE) {
          if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: input }, { cause: opts.signal.reason });
          const piece = buf.subarray(0, Math.min(PIECE, e.offset + e.length - at));
          await src.readInto(piece, at);
          if (!isZero(piece)) {
            await dst.write(at - start, piece);
            written += piece.length;
          }
          opts.onProgress?.({ done: at + piece.length - start, total: length, written });
        }
      }
      await dst.flush();
      done = true;
    } finally {
      await dst.close();
      // a copy that did not finish is not left behind as if it were one
      if (!done) await unlink(output, { force: true }).catch(() => undefined);
    }
    opts.onProgress?.({ done: length, total: length, written });
    return { bytes: length, written };
  } finally {
    await src.close();
  }
}
