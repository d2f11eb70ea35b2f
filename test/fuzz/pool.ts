/**
 * Worker processes for fuzz cases, with the limits a case must keep: a time limit (a case past it
 * is killed with its worker: finding "hang"), a memory limit (resident-set growth past it: finding
 * "memory"; the parent also watches each worker's RSS and kills one that runs away), and a crash
 * of the worker (finding "crash"). A killed worker is replaced by a fresh one.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { QEMU_MS, type CaseResult, type CaseSpec } from './case.js';

export interface PoolOptions {
  jobs: number;
  /** per case, after start-up (default 1000 ms) */
  timeoutMs?: number;
  /** resident-set growth per case (default 256 MiB) */
  memoryBytes?: number;
}

interface Slot {
  child: ChildProcess;
  ready: Promise<void>;
  busy?: { spec: CaseSpec; resolve: (r: CaseResult) => void; timer: NodeJS.Timeout; rss0: number; cpu0: number; t0: number; limit: number };
  stderr: string;
}

const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));
const MiB = 1024 * 1024;

/** CPU time (user + system) a process has used, ms (/proc/<pid>/stat, 100 ticks a second) */
function cpuOf(pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return 0;
  }
}

/**
 * Time the process's main thread spent runnable but waiting for a CPU, ms (/proc/<pid>/schedstat).
 * A niced run beside other work waits for the CPU for long stretches; that is not a stall.
 */
function queuedOf(pid: number | undefined): number {
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e6 || 0;
  } catch {
    return 0;
  }
}

/** a case that waits this long (wall clock less time queued for a CPU) without using its CPU time is a stall */
const STALL_MS = 30_000;

function rssOf(pid: number | undefined): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

export class Pool {
  private readonly slots: Slot[] = [];
  private readonly waiting: (() => void)[] = [];
  private readonly watch: NodeJS.Timeout;
  private closed = false;
  readonly timeoutMs: number;
  readonly memoryBytes: number;

  constructor(opts: PoolOptions) {
    this.timeoutMs = opts.timeoutMs ?? 1000;
    this.memoryBytes = opts.memoryBytes ?? 256 * MiB;
    for (let i = 0; i < Math.max(1, opts.jobs); i++) this.slots.push(this.spawn());
    this.watch = setInterval(() => this.watchMemory(), 100);
    this.watch.unref();
  }

  private spawn(): Slot {
    const child = fork(WORKER, [], { execArgv: ['--max-old-space-size=2048'], stdio: ['ignore', 'ignore', 'pipe', 'ipc'], serialization: 'advanced' });
    const slot: Slot = { child, stderr: '', ready: undefined as unknown as Promise<void> };
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      slot.stderr = (slot.stderr + s).slice(-4000);
    });
    slot.ready = new Promise<void>((resolve, reject) => {
      const onMsg = (m: { type: string }) => {
        if (m.type === 'ready') {
          child.off('message', onMsg);
          resolve();
        }
      };
      child.on('message', onMsg);
      child.once('exit', () => reject(new Error(`fuzz worker exited at start-up: ${slot.stderr}`)));
    });
    slot.ready.catch(() => {});
    child.on('message', (m: { type: string; result: CaseResult; rssGrowth: number }) => {
      if (m.type !== 'result' || !slot.busy) return;
      const { resolve, timer } = slot.busy;
      clearTimeout(timer);
      slot.busy = undefined;
      const r = m.result;
      if (!r.finding && m.rssGrowth > this.memoryBytes) r.finding = { kind: 'memory', message: `resident set grew by ${Math.round(m.rssGrowth / MiB)} MiB` };
      resolve(r);
      this.release();
    });
    child.on('exit', (code, signal) => {
      if (!slot.busy || this.closed) return;
      const { spec, resolve, timer } = slot.busy;
      clearTimeout(timer);
      slot.busy = undefined;
      const oom = /heap out of memory|Allocation failed/i.test(slot.stderr);
      resolve({ id: spec.id, outcome: 'fine', ms: 0, finding: { kind: oom ? 'memory' : 'crash', message: `worker died (code ${code}, signal ${signal}): ${slot.stderr.slice(-600)}` } });
      this.replace(slot);
    });
    return slot;
  }

  private replace(slot: Slot): void {
    const i = this.slots.indexOf(slot);
    if (i >= 0 && !this.closed) this.slots[i] = this.spawn();
    this.release();
  }

  private kill(slot: Slot, kind: string, message: string): void {
    if (!slot.busy) return;
    const { spec, resolve, timer } = slot.busy;
    clearTimeout(timer);
    slot.busy = undefined;
    slot.child.removeAllListeners('exit');
    slot.child.kill('SIGKILL');
    resolve({ id: spec.id, outcome: 'fine', ms: this.timeoutMs, finding: { kind, message } });
    this.replace(slot);
  }

  private watchMemory(): void {
    for (const s of this.slots) {
      if (!s.busy) continue;
      const grown = rssOf(s.child.pid) - s.busy.rss0;
      if (grown > 2 * this.memoryBytes) this.kill(s, 'memory', `resident set grew by more than ${Math.round(grown / MiB)} MiB (killed)`);
    }
  }

  private release(): void {
    const w = this.waiting.shift();
    if (w) w();
  }

  async run(spec: CaseSpec, timeoutMs = this.timeoutMs): Promise<CaseResult> {
    for (;;) {
      const free = this.slots.find((s) => !s.busy);
      if (free) {
        const slot = free;
        slot.busy = { spec, resolve: () => {}, timer: undefined as unknown as NodeJS.Timeout, rss0: 0, cpu0: 0, t0: 0, limit: timeoutMs };
        await slot.ready;
        if (slot !== this.slots[this.slots.indexOf(slot)] || this.closed) throw new Error('pool closed');
        return new Promise<CaseResult>((resolve) => {
          // The limit is on CPU time: on a loaded machine wall time says little. A case that
          // neither finishes nor uses its CPU time for STALL_MS (a promise never settled) stalls.
          const pid = slot.child.pid;
          const cpu0 = cpuOf(pid);
          const queued0 = queuedOf(pid);
          const t0 = performance.now();
          const tick = () => {
            if (slot.busy?.spec !== spec) return;
            const cpu = cpuOf(pid) - cpu0;
            const wall = performance.now() - t0;
            const waited = wall - (queuedOf(pid) - queued0);
            if (cpu > timeoutMs) this.kill(slot, 'hang', `over ${timeoutMs} ms of CPU time (${Math.round(wall)} ms wall)`);
            else if (waited > Math.max(STALL_MS + (spec.qemuCheck ? 2 * QEMU_MS : 0), timeoutMs)) this.kill(slot, 'hang', `no answer in ${Math.round(wall)} ms (${Math.round(wall - waited)} ms of it queued for a CPU, ${cpu} ms of CPU time: stalled)`);
            else slot.busy.timer = setTimeout(tick, 100);
          };
          slot.busy = { spec, resolve, rss0: rssOf(pid), cpu0, t0, limit: timeoutMs, timer: setTimeout(tick, Math.min(timeoutMs, 100)) };
          slot.child.send({ type: 'case', spec });
        });
      }
      await new Promise<void>((r) => this.waiting.push(r));
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.watch);
    for (const s of this.slots) {
      s.child.removeAllListeners('exit');
      s.child.kill('SIGKILL');
    }
  }
}
