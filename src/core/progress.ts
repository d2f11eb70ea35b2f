/**
 * Progress reports thinned at the source. The ops report per chunk (a 2 GiB convert in 2 MiB
 * chunks: ~1,000 calls), which is far more than a person, a log or the VixDiskLib progress
 * function needs, and each call costs the caller a redraw or a line. Every op that takes an
 * `onProgress` passes it through here once, at its entry, so callers of the library and of
 * the CLI see the same rate: the first report (0 %), then one when at least `intervalMs` have
 * passed AND the work has advanced by at least `minFraction` of the total since the last one
 * passed (whichever comes later), and the final report (done = total) always, once. Only the
 * reports are thinned: cancellation is the op's AbortSignal, which it checks on its own.
 */

export interface ProgressThrottleOptions {
  /** at least this long between two reports, but for the first and the final (default 100 ms) */
  intervalMs?: number;
  /** and at least this share of the total more done (default 0.01: one per cent) */
  minFraction?: number;
  /** the clock, in ms (default performance.now; tests give their own) */
  now?: () => number;
}

/** whether each report goes out; one gate per run of an op */
export class ProgressGate {
  private readonly intervalMs: number;
  private readonly minFraction: number;
  private readonly now: () => number;
  private lastAt = 0;
  private lastDone = 0;
  private lastKey: string | undefined;

  constructor(opts: ProgressThrottleOptions = {}) {
    this.intervalMs = opts.intervalMs ?? 100;
    this.minFraction = opts.minFraction ?? 0.01;
    this.now = opts.now ?? (() => performance.now());
  }

  /**
   * `done` of `total`; `key` tells reports at the same `done` apart (a convert's final count of
   * bytes written after its last chunk), so the final report goes out once per distinct key
   */
  pass(done: number, total: number, key = ''): boolean {
    const first = this.lastKey === undefined;
    const thisKey = `${done}/${total}/${key}`;
    let go: boolean;
    if (first) go = true;
    else if (done >= total) go = thisKey !== this.lastKey;
    else go = this.now() - this.lastAt >= this.intervalMs && done - this.lastDone >= this.minFraction * total;
    if (!go) return false;
    this.lastAt = this.now();
    this.lastDone = done;
    this.lastKey = thisKey;
    return true;
  }
}

/** the ops' progress object (ops/convert.ts Progress) */
interface CountedProgress {
  readonly done: number;
  readonly total: number;
  readonly written?: number;
}

/** `fn` (undefined stays undefined) called only for the reports the gate passes */
export function throttleProgress<P extends CountedProgress>(fn: ((p: P) => void) | undefined, opts?: ProgressThrottleOptions): ((p: P) => void) | undefined {
  if (!fn) return undefined;
  const gate = new ProgressGate(opts);
  return (p) => {
    if (gate.pass(p.done, p.total, p.written === undefined ? '' : String(p.written))) fn(p);
  };
}

/** the same for the (done, total) form of the in-place operations (compact, defragment, discard) */
export function throttleCounts(fn: ((done: number, total: number) => void) | undefined, opts?: ProgressThrottleOptions): ((done: number, total: number) => void) | undefined {
  if (!fn) return undefined;
  const gate = new ProgressGate(opts);
  return (done, total) => {
    if (gate.pass(done, total)) fn(done, total);
  };
}
