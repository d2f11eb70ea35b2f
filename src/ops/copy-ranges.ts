/**
 * The copy engine of convert and the chain clone: read ranges of a source in chunks, find the
 * blocks that need writing, and write them into a target, with a bounded number of chunks in
 * flight (qemu-img convert -m) and writes either in order or out of order (-W).
 */
import { DiskError } from '../core/errors.js';
import type { Disk } from '../disk.js';
import { isZero } from '../binary/zeros.js';

/**
 * Chunks in flight by default, each with its own buffer, reused: at most this many reads are in
 * flight, which leaves one of libuv's four threads free for the writes.
 */
export const DEFAULT_IN_FLIGHT = 3;
/** qemu-img convert -m's range */
export const MAX_IN_FLIGHT = 16;

/**
 * Start a flush (fdatasync) in the background after every this many bytes written, so the
 * target's data goes to the disk while the copy goes on instead of all at the final flush.
 */
const FLUSH_EVERY = 32 * 1024 * 1024;

export interface CopyRangesOptions {
  /** bytes per read */
  chunkSize: number;
  /** zero-detection granularity in bytes (-S, rounded to what the target can leave unallocated) */
  zeroBlockSize: number;
  signal?: AbortSignal;
  /** named in a CANCELLED error */
  label: string;
  /**
   * Blocks that read as all zeros are not written where this says the target already reads
   * zeros: undefined = everywhere (a fresh image); otherwise the image below a new child, or
   * the existing target itself (convert -n), whose block status tells where its zeros are
   * (past its end reads as zeros too).
   */
  below?: Disk;
  /**
   * The target already reads as this disk (a new child's parent: convert -B): a block is
   * written only where its bytes differ from this disk's (past its end: from zeros), zeros
   * included. Takes the place of the zero test.
   */
  sameAs?: Disk;
  /** write every block, zeros too (convert -S 0: a fully allocated target) */
  allocateAll?: boolean;
  /** chunks read (and, out of order, written) at once: 1..16 (default 3) */
  inFlight?: number;
  /**
   * Writes may reach the target in any order (convert -W): each chunk is written as soon as it
   * is read, beside the other chunks in flight. Default: one chain of writes in virtual order.
   */
  outOfOrder?: boolean;
  /** after each chunk: its range and the bytes written for it (out of order: in completion order) */
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
 * `sameAs`'s bytes at [offset, offset+into.length) into `into` (zeros past its end); false when
 * its block status says they are all zeros, so nothing was read and `into` was left as it was.
 */
async function readOld(sameAs: Disk, into: Buffer, offset: number): Promise<boolean> {
  if (await readsZero(sameAs, offset, into.length)) return false;
  const inside = Math.max(0, Math.min(into.length, sameAs.capacity - offset));
  await sameAs.readInto(into.subarray(0, inside), offset);
  into.fill(0, inside);
  return true;
}

interface Slot {
  buf?: Buffer;
  old?: Buffer;
}

/**
 * Copy `ranges` of `read` into `dst`. In order (the default), up to `inFlight` chunks are read
 * into their own buffers while earlier chunks are written; the writes form one chain, issued
 * in order and each started only after the one before it has finished (Disk.write serialises
 * them too), so the target sees exactly the write sequence of a plain loop. Out of order, each
 * of `inFlight` workers reads a chunk and writes it at once. Either way the first failing write
 * stops the rest, and on failure every read and write still in flight has settled before the
 * error is thrown, so the caller may close and remove the target at once.
 */
export async function copyRanges(read: (into: Buffer, offset: number) => Promise<void>, dst: Disk, ranges: readonly { offset: number; length: number }[], opts: CopyRangesOptions): Promise<number> {
  const chunk = opts.chunkSize;
  const block = opts.zeroBlockSize;
  const inFlight = opts.inFlight ?? DEFAULT_IN_FLIGHT;
  if (!Number.isInteger(inFlight) || inFlight < 1 || inFlight > MAX_IN_FLIGHT) {
    throw new DiskError('INVAL', `chunks in flight must be 1 to ${MAX_IN_FLIGHT}`, { path: opts.label, field: 'inFlight', found: inFlight });
  }
  let written = 0;
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
  const chunks: { offset: number; length: number }[] = [];
  for (const r of ranges) for (let at = r.offset; at < r.offset + r.length; at += chunk) chunks.push({ offset: at, length: Math.min(chunk, r.offset + r.length - at) });
  const slots: Slot[] = Array.from({ length: Math.min(inFlight, chunks.length) }, () => ({}));

  /** read chunk `i` into `slot`'s buffers: the new bytes, and with sameAs the old ones */
  const fetch = async (i: number, slot: Slot): Promise<{ buf: Buffer; old: Buffer | undefined }> => {
    const c = chunks[i]!;
    const buf = (slot.buf ??= Buffer.allocUnsafe(chunk)).subarray(0, c.length);
    await read(buf, c.offset);
    if (!opts.sameAs) return { buf, old: undefined };
    const old = (slot.old ??= Buffer.allocUnsafe(chunk)).subarray(0, c.length);
    return { buf, old: (await readOld(opts.sameAs, old, c.offset)) ? old : undefined };
  };

  /**
   * The runs of `buf` to write, as [from, to) in it: blocks aligned to the block size in
   * virtual offsets. A zero block over something that does not read as zeros is written too
   * (it hides it); with sameAs a block equal to what the target reads already is not.
   */
  const runsOf = async (offset: number, buf: Buffer, old: Buffer | undefined): Promise<[number, number][]> => {
    if (opts.allocateAll) return [[0, buf.length]];
    const runs: [number, number][] = [];
    let runStart = -1;
    for (let pos = 0; pos < buf.length; ) {
      const abs = offset + pos;
      const n = Math.min(block - (abs % block), buf.length - pos);
      let skip: boolean;
      if (opts.sameAs) skip = old ? buf.subarray(pos, pos + n).equals(old.subarray(pos, pos + n)) : isZero(buf, pos, pos + n);
      else skip = isZero(buf, pos, pos + n) && (opts.below === undefined || (await readsZero(opts.below, abs, n)));
      if (!skip && runStart < 0) runStart = pos;
      if (skip && runStart >= 0) {
        runs.push([runStart, pos]);
        runStart = -1;
      }
      pos += n;
    }
    if (runStart >= 0) runs.push([runStart, buf.length]);
    return runs;
  };

  const writeRun = async (at: number, data: Buffer): Promise<void> => {
    await dst.write(at, data);
    written += data.length;
    unflushed += data.length;
    if (unflushed >= FLUSH_EVERY && flushing === undefined) flushNow();
  };

  const cancelled = () => new DiskError('CANCELLED', undefined, { path: opts.label }, { cause: opts.signal?.reason });

  if (opts.outOfOrder) {
    let next = 0;
    const worker = async (slot: Slot): Promise<void> => {
      for (;;) {
        if (writeError) return;
        if (opts.signal?.aborted) throw cancelled();
        const i = next++;
        if (i >= chunks.length) return;
        const c = chunks[i]!;
        const { buf, old } = await fetch(i, slot);
        let chunkWritten = 0;
        for (const [from, to] of await runsOf(c.offset, buf, old)) {
          if (writeError) return;
          await writeRun(c.offset + from, buf.subarray(from, to));
          chunkWritten += to - from;
        }
        opts.onChunk?.(c, chunkWritten);
      }
    };
    const results = await Promise.allSettled(
      slots.map((s) =>
        worker(s).catch((err) => {
          writeError ??= { err };
          throw err;
        }),
      ),
    );
    await flushing;
    if (writeError) throw writeError.err;
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return written;
  }

  let chain: Promise<void> = Promise.resolve();
  const reads = new Map<number, Promise<{ buf: Buffer; old: Buffer | undefined }>>(); // chunk index -> its read, until taken
  try {
    // per slot: settles once no pending write refers to its buffers any more (never rejects)
    const free: Promise<void>[] = new Array<Promise<void>>(slots.length).fill(Promise.resolve());
    const startRead = (i: number): void => {
      const slot = i % slots.length;
      const p = free[slot]!.then(() => fetch(i, slots[slot]!));
      p.catch(() => {}); // awaited below; this only keeps an abandoned read from being "unhandled"
      reads.set(i, p);
    };
    for (let i = 0; i < slots.length; i++) startRead(i);
    for (let i = 0; i < chunks.length; i++) {
      if (writeError) throw writeError.err;
      if (opts.signal?.aborted) throw cancelled();
      const c = chunks[i]!;
      const readDone = reads.get(i)!;
      reads.delete(i);
      const { buf, old } = await readDone;
      let chunkWritten = 0;
      for (const [from, to] of await runsOf(c.offset, buf, old)) {
        chain = chain.then(async () => {
          await writeRun(c.offset + from, buf.subarray(from, to));
          chunkWritten += to - from;
        });
      }
      chain = chain.then(() => opts.onChunk?.(c, chunkWritten));
      chain.catch((err) => (writeError ??= { err }));
      free[i % slots.length] = chain.catch(() => {});
      if (i + slots.length < chunks.length) startRead(i + slots.length);
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
