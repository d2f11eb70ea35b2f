/**
 * A few worker threads that compress for the sequential writers (streamOptimized VMDK grains,
 * qcow2 compressed clusters): each writer names its worker script by URL, relative to its own
 * module, because scripts/bundle-cli.mjs bundles every worker as its own entry point beside the
 * CLI chunks, where such a URL still resolves. Jobs are answered in any order, by id; the
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
