/**
 * `bench` as qemu-img bench runs it: `count` requests of `bufferSize` bytes, `depth` in flight,
 * at offsets that start at `offset` and advance by `step`, wrapping to stay inside the disk;
 * writes fill the buffer with `pattern` and may flush every `flushInterval` requests. Added for
 * vdkit: `random` offsets (aligned to the buffer size, from a seeded generator, so two runs make
 * the same requests). Goes through the whole image layer (format, chain), as qemu-img's does.
 */
import { DiskError } from '../core/errors.js';
import type { Disk } from '../disk.js';
import type { Progress } from './convert.js';
import { throttleProgress } from '../core/progress.js';

export interface BenchOptions {
  /** requests (default 75000, as qemu-img) */
  count?: number;
  /** requests in flight (default 64) */
  depth?: number;
  /** bytes per request (default 4096) */
  bufferSize?: number;
  /** first offset (default 0) */
  offset?: number;
  /** bytes from one request's offset to the next (default bufferSize) */
  step?: number;
  write?: boolean;
  /** the byte writes fill their buffer with (default 0xa5) */
  pattern?: number;
  /** writes: flush after every N requests (0: never) */
  flushInterval?: number;
  /** writes: no flush after the last request (qemu-img's --no-drain) */
  noDrain?: boolean;
  /** random offsets aligned to bufferSize instead of the stepped sequence */
  random?: boolean;
  seed?: number;
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

export interface BenchResult {
  requests: number;
  bytes: number;
  seconds: number;
}

export async function bench(d: Disk, opts: BenchOptions = {}): Promise<BenchResult> {
  opts = { ...opts, onProgress: throttleProgress(opts.onProgress) };
  const count = opts.count ?? 75000;
  const depth = opts.depth ?? 64;
  const size = opts.bufferSize ?? 4096;
  const step = opts.step ?? size;
  const flushInterval = opts.flushInterval ?? 0;
  const check = (field: string, v: number, min: number, max = Number.MAX_SAFE_INTEGER) => {
    if (!Number.isSafeInteger(v) || v < min || v > max) throw new DiskError('INVAL', `${field} ${v} is out of range (${min}..${max})`, { path: d.path, field });
  };
  check('count', count, 0);
  check('depth', depth, 1, 1024);
  check('buffer size', size, 1, 256 * 1024 * 1024);
  check('step size', step, 0);
  check('offset', opts.offset ?? 0, 0);
  check('flush interval', flushInterval, 0);
  if (flushInterval && !opts.write) throw new DiskError('INVAL', 'a flush interval needs write requests', { path: d.path, field: 'flush interval' });
  if (size > d.capacity) throw new DiskError('INVAL', `requests of ${size} bytes do not fit in the ${d.capacity}-byte disk`, { path: d.path, field: 'buffer size' });
  if (opts.write && d.readOnly) throw new DiskError('NOTSUPPORTED', 'write requests need the disk opened read-write', { path: d.path });
  // the last offset a request can start at; offsets wrap below it as qemu-img's do
  const room = d.capacity - size;
  let next = (opts.offset ?? 0) % (room + 1);
  let rnd = (opts.seed ?? 1) >>> 0 || 1;
  const slots = Math.floor(room / size) + 1;
  const nextOffset = (): number => {
    if (opts.random) {
      // xorshift32: cheap, seeded, good enough to spread requests
      rnd ^= rnd << 13;
      rnd ^= rnd >>> 17;
      rnd ^= rnd << 5;
      rnd >>>= 0;
      return (rnd % slots) * size;
    }
    const at = next;
    next = room === 0 ? 0 : (next + step) % (room + 1);
    return at;
  };
  let issued = 0;
  let done = 0;
  const started = performance.now();
  const worker = async () => {
    const buf = opts.write ? Buffer.alloc(size, opts.pattern ?? 0xa5) : Buffer.allocUnsafe(size);
    while (issued < count) {
      if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: d.path }, { cause: opts.signal.reason });
      issued++;
      const at = nextOffset();
      if (opts.write) await d.write(at, buf);
      else await d.readInto(buf, at);
      done++;
      if (flushInterval && done % flushInterval === 0) await d.flush();
      opts.onProgress?.({ done: done * size, total: count * size, written: opts.write ? done * size : 0 });
    }
  };
  await Promise.all(Array.from({ length: Math.min(depth, Math.max(count, 1)) }, worker));
  if (opts.write && !opts.noDrain) await d.flush();
  return { requests: done, bytes: done * size, seconds: (performance.now() - started) / 1000 };
}
