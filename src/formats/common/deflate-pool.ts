/**
 * A few worker threads that compress for the sequential writers (streamOptimized VMDK grains,
 * qcow2 compressed clusters): each writer names its worker script by URL, relative to its own
 * module, because scripts/bundle-cli.mjs bundles every worker as a file of its own beside the
 * CLI's bundle (dist/cli/main.cjs, whose import.meta.url is its own), where such a URL still
 * resolves. Jobs are answered in any order, by id; the
 * writer awaits them in its own order, so the output does not depend on the thread count.
 */
import { Worker } from '../../core/platform.js';

export class DeflatePool<J extends { id: number }, R extends { id: number }> {
  private readonly workers: Worker[] = [];
  private readonly waiting = new Map<number, { resolve: (r: R) => void; reject: (e: unknown) => void }>();
  private next = 0;
  private failed: unknown;

  constructor(script: URL, count: number) {
    for (let i = 0; i < count; i++) {
      // small heaps: each job makes a little garbage, and a worker's default young generation
      // would let tens of MiB of it pile up per thread before collecting
      const w = new Worker(script, { resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 48 } });
      w.on('message', (r: R) => {
        const p = this.waiting.get(r.id);
        this.waiting.delete(r.id);
        p?.resolve(r);
      });
      w.on('error', (err) => this.fail(err));
      w.on('exit', (code) => {
        if (code !== 0) this.fail(new Error(`compression worker exited with code ${code}`));
      });
      this.workers.push(w);
    }
  }

  private fail(err: unknown): void {
    this.failed ??= err;
    for (const p of this.waiting.values()) p.reject(err);
    this.waiting.clear();
  }

  /** `transfer`: the job's buffers, moved to the worker (the result hands them back) */
  run(job: J, transfer: ArrayBuffer[]): Promise<R> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.waiting.set(job.id, { resolve, reject });
      this.workers[this.next++ % this.workers.length]!.postMessage(job, transfer);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/** a job given to the pool: the guest bytes [offset, end) it covers and its answer */
export interface PoolJob<R> {
  offset: number;
  end: number;
  result: Promise<R>;
}

/**
 * The writers' side of the pool: jobs taken (`take`) in the order they were given, with at most
 * `max` given and not yet taken, so the output is the same for any thread count and the memory
 * in flight is bounded.
 */
export class InOrder<R> {
  private readonly queue: PoolJob<R>[] = [];
  constructor(
    private readonly max: number,
    private readonly take: (job: PoolJob<R>) => Promise<void>,
  ) {}

  async add(offset: number, end: number, result: Promise<R>): Promise<void> {
    result.catch(() => {}); // awaited in order by take; this keeps a later failure from being "unhandled"
    this.queue.push({ offset, end, result });
    while (this.queue.length >= this.max) await this.take(this.queue.shift()!);
  }

  async drain(): Promise<void> {
    while (this.queue.length > 0) await this.take(this.queue.shift()!);
  }

  /** after a failure: every job still in a worker has ended (before the pool is closed) */
  async settle(): Promise<void> {
    await Promise.allSettled(this.queue.map((j) => j.result));
  }
}

/**
 * A job's input: [from, end) of `src` read into `ab` as whole units (`bytes` long); what lies
 * past the capacity reads as zeros, as a reader of the new image sees it.
 */
export async function readJobInput(src: { readInto(into: Buffer, offset: number): Promise<void> }, ab: ArrayBuffer, bytes: number, from: number, end: number, capacity: number): Promise<Buffer> {
  const buf = Buffer.from(ab, 0, bytes);
  const readable = Math.min(end, capacity) - from;
  await src.readInto(buf.subarray(0, readable), from);
  buf.fill(0, readable);
  return buf;
}
