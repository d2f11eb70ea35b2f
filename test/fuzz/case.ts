/**
 * One fuzz case: write a seed's mutated files into a scratch folder, then exercise vdkit on them
 * the way a user would, and sort what happens into an outcome: fine, a DiskError (any code: bad
 * bytes must give one), or a finding (anything else).
 *
 * Read-only mode: open, info, block status walked over the whole disk (ranges must tile it, a
 * "zero" range must read as zeros), read in full (or sampled when the claimed size is big),
 * check, repair on a copy and check the copy again, convert to raw (must match the read).
 * Read-write mode: check, open read-write, write random data at random offsets, read it back
 * (before and after a close and reopen), check again: an image check called clean before the
 * writes must not be corrupt after them.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Disk, DiskError, checkDisk, convert, openFindings } from '../../src/index.js';
import type { CheckReport } from '../../src/formats/types.js';
import { FileNamespace } from '../../src/storage/file.js';
import { apply, Rng, type Mutation } from './mutate.js';
import { xorshiftBytes } from '../helpers/prng.js';

export interface CaseSpec {
  id: number;
  seedName: string;
  seedDir: string;
  format: string;
  main: string;
  mutations: Mutation[];
  mode: 'ro' | 'rw';
  /** drives offsets and sizes of reads and writes */
  rngSeed: number;
  /** scratch root: the case uses a folder below it and removes it */
  scratch: string;
  /** run qemu-img check before and after a repair (long mode, when installed) */
  qemuCheck?: boolean;
}

export interface Finding {
  kind: string;
  message: string;
  stack?: string;
  step?: string;
}

export interface CaseResult {
  id: number;
  /** 'fine' or 'DiskError:<CODE>' (the first DiskError met) */
  outcome: string;
  finding?: Finding;
  ms: number;
  fdsLeaked?: number;
}

const MiB = 1024 * 1024;
/**
 * Durability is not what the fuzzer tests (the crash-state tests do): host files without an
 * fdatasync per flush. A repair refuses this cache mode, so repairs use the default host files.
 */
export const fast = new FileNamespace({ cacheMode: 'unsafe' });
/** read in full and convert only disks claiming at most this much */
const FULL_READ = 16 * MiB;

class FindingError extends Error {
  constructor(readonly finding: Finding) {
    super(finding.message);
  }
}

/** DiskError texts that show a bug even though the error type is right */
const BAD_TEXT = /\bNaN\b|\bundefined\b|\[object |<= -\d|>= -\d|\bInfinity\b/;

export function countFds(): number {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return 0;
  }
}

const ZERO_BLOCK = Buffer.alloc(4096);

/** write `b` to `path` sparsely: only the 4 KiB blocks that hold something */
function writeSparse(path: string, b: Buffer): void {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, b.length);
    for (let at = 0; at < b.length; at += ZERO_BLOCK.length) {
      const end = Math.min(b.length, at + ZERO_BLOCK.length);
      if (!b.subarray(at, end).equals(ZERO_BLOCK.subarray(0, end - at))) writeSync(fd, b, at, end - at, at);
    }
  } finally {
    closeSync(fd);
  }
}

const pristineCache = new Map<string, Map<string, Buffer>>();
export function pristine(seedDir: string): Map<string, Buffer> {
  let m = pristineCache.get(seedDir);
  if (!m) {
    m = new Map();
    for (const f of readdirSync(seedDir).sort()) m.set(f, readFileSync(join(seedDir, f)));
    pristineCache.set(seedDir, m);
  }
  return m;
}

export function materialise(spec: Pick<CaseSpec, 'seedDir' | 'mutations'>, dir: string): Map<string, Buffer> {
  const files = apply(pristine(spec.seedDir), spec.mutations);
  mkdirSync(dir, { recursive: true });
  for (const [name, b] of files) writeSparse(join(dir, name), b);
  return files;
}

function corruptions(r: CheckReport): number {
  return openFindings(r).corruptions;
}

export async function runCase(spec: CaseSpec): Promise<CaseResult> {
  const t0 = performance.now();
  const dir = join(spec.scratch, `c${spec.id}`);
  rmSync(dir, { recursive: true, force: true });
  const files = materialise(spec, join(dir, 'a'));
  const rng = new Rng(spec.rngSeed);
  let outcome = 'fine';
  const fds0 = countFds();
  let finding: Finding | undefined;
  let step = '';
  /** run one step: a DiskError ends the step (its code noted), anything else is a finding */
  const run = async <T>(name: string, fn: () => Promise<T>): Promise<T | undefined> => {
    step = name;
    try {
      return await fn();
    } catch (e) {
      if (e instanceof FindingError) throw e;
      if (e instanceof DiskError) {
        if (outcome === 'fine') outcome = `DiskError:${e.code}`;
        if (BAD_TEXT.test(e.message)) throw new FindingError({ kind: 'bad-message', message: `${e.code}: ${e.message}`, step: name, stack: e.stack });
        return undefined;
      }
      const err = e as Error;
      throw new FindingError({ kind: 'exception', message: `${err?.name}: ${err?.message}`, stack: err?.stack, step: name });
    }
  };
  const main = join(dir, 'a', spec.main);
  try {
    if (spec.mode === 'ro') await readOnly(spec, main, dir, files, rng, run);
    else await readWrite(main, rng, run);
  } catch (e) {
    if (!(e instanceof FindingError)) throw e;
    finding = e.finding;
  }
  const fds1 = countFds();
  rmSync(dir, { recursive: true, force: true });
  const res: CaseResult = { id: spec.id, outcome, ms: performance.now() - t0 };
  if (finding) res.finding = finding;
  else if (fds1 > fds0) res.finding = { kind: 'fd-leak', message: `${fds1 - fds0} file descriptors left open (last step: ${step})` };
  return res;
}

type Run = <T>(name: string, fn: () => Promise<T>) => Promise<T | undefined>;

async function withDisk<T>(run: Run, name: string, open: () => Promise<Disk>, fn: (d: Disk) => Promise<T>): Promise<T | undefined> {
  const d = await run(`${name}: open`, open);
  if (!d) return undefined;
  try {
    return await run(name, () => fn(d));
  } finally {
    await run(`${name}: close`, () => d.close());
  }
}

async function walkStatus(d: Disk): Promise<{ offset: number; length: number; state: string }[]> {
  const out: { offset: number; length: number; state: string }[] = [];
  let at = 0;
  for (let calls = 0; at < d.capacity; calls++) {
    if (calls > 100_000) throw new FindingError({ kind: 'block-status', message: 'block status walk did not finish in 100000 calls' });
    const ex = await d.blockStatus(at, d.capacity - at);
    if (ex.length === 0) throw new FindingError({ kind: 'block-status', message: `block status at ${at} returned nothing` });
    for (const e of ex) {
      if (e.offset !== at || !(e.length > 0) || e.offset + e.length > d.capacity) {
        throw new FindingError({ kind: 'block-status', message: `block status range ${e.offset}+${e.length} (${e.state}) where ${at} was expected (capacity ${d.capacity})` });
      }
      at += e.length;
      if (out.length < 100_000) out.push(e);
    }
  }
  return out;
}

async function readOnly(spec: CaseSpec, main: string, dir: string, files: Map<string, Buffer>, rng: Rng, run: Run): Promise<void> {
  const untrusted = rng.chance(0.5);
  let digest: string | undefined;
  let capacity = 0;
  await withDisk(run, 'read', () => Disk.open(main, { namespace: fast, readOnly: true, untrusted }), async (d) => {
    capacity = d.capacity;
    await d.info();
    const ranges = await walkStatus(d);
    if (d.capacity <= FULL_READ) {
      const h = createHash('sha256');
      for (let at = 0; at < d.capacity; at += MiB) {
        const len = Math.min(MiB, d.capacity - at);
        const b = await d.read(at, len);
        h.update(b);
        for (const r of ranges) {
          if (r.state !== 'zero' || r.offset + r.length <= at || r.offset >= at + len) continue;
          const from = Math.max(r.offset, at) - at;
          const to = Math.min(r.offset + r.length, at + len) - at;
          for (let i = from; i < to; i++) {
            if (b[i] !== 0) throw new FindingError({ kind: 'block-status', message: `byte ${at + i} of a range block status calls zero reads ${b[i]}` });
          }
        }
      }
      digest = h.digest('hex');
    } else {
      for (let i = 0; i < 24; i++) {
        const len = Math.min(d.capacity, rng.pick([512, 4096, 65536]));
        const at = rng.chance(0.2) ? d.capacity - len : Math.floor((rng.float() * (d.capacity - len)) / 512) * 512;
        await d.read(at, len);
      }
    }
  });
  await run('check', () => checkDisk(main, { namespace: fast, repair: false, untrusted }));
  // repair on a copy
  const copyDir = join(dir, 'r');
  mkdirSync(copyDir, { recursive: true });
  for (const [name, b] of files) writeSparse(join(copyDir, name), b);
  const copyMain = join(copyDir, spec.main);
  const qBefore = spec.qemuCheck ? qemuCheck(copyMain, spec.format) : undefined;
  const repaired = await run('repair', () => checkDisk(copyMain, { repair: true, untrusted }));
  if (repaired) {
    await run('check after repair', () => checkDisk(copyMain, { namespace: fast, repair: false, untrusted }));
    if (qBefore) {
      const qAfter = qemuCheck(copyMain, spec.format);
      if (qAfter && qBefore.ok && (qAfter.corruptions > qBefore.corruptions || !qAfter.ok)) {
        throw new FindingError({ kind: 'repair-worse', message: `qemu-img check before repair: ${JSON.stringify(qBefore)}, after: ${JSON.stringify(qAfter)}` });
      }
    }
  }
  if (capacity > 0 && capacity <= FULL_READ && digest) {
    const out = join(dir, 'out.raw');
    const ok = await withDisk(run, 'convert', () => Disk.open(main, { namespace: fast, readOnly: true, untrusted }), async (d) => {
      await convert(d, out, { format: 'raw', workers: 1 });
      return true;
    });
    if (ok) {
      const got = createHash('sha256').update(readFileSync(out)).digest('hex');
      if (got !== digest) throw new FindingError({ kind: 'convert-differs', message: 'convert to raw gives other bytes than a read of the disk' });
    }
  }
}

/** qemu-img's time is not the case's: its CPU is another process's, and the pool's stall limit allows for two runs */
export const QEMU_MS = 10_000;

/** qemu-img check: whether it could check, and its corruption count */
function qemuCheck(path: string, format: string): { ok: boolean; corruptions: number } | undefined {
  const qf = format === 'vhd' ? 'vpc' : format;
  if (!['qcow2', 'vdi', 'vhdx', 'vmdk', 'vpc'].includes(qf)) return undefined;
  try {
    const out = execFileSync('qemu-img', ['check', '-f', qf, '--output=json', path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: QEMU_MS });
    return { ok: true, corruptions: JSON.parse(out).corruptions ?? 0 };
  } catch (e) {
    const err = e as { status?: number; stdout?: string; signal?: string };
    // qemu-img too slow (a crafted size makes it work too): no verdict, not "cannot check"
    if (err.signal) return undefined;
    if ((err.status === 2 || err.status === 3) && err.stdout) {
      try {
        return { ok: true, corruptions: JSON.parse(err.stdout).corruptions ?? 0 };
      } catch {
        /* fall through */
      }
    }
    return { ok: false, corruptions: 0 };
  }
}

async function readWrite(main: string, rng: Rng, run: Run): Promise<void> {
  const before = await run('check before', () => checkDisk(main, { namespace: fast, repair: false, untrusted: true }));
  const cleanBefore = before !== undefined && corruptions(before) === 0;
  const written: { at: number; data: Buffer }[] = [];
  const verify = async (d: Disk, when: string) => {
    for (const w of written) {
      const got = await d.read(w.at, w.data.length);
      if (!got.equals(w.data)) {
        let i = 0;
        while (got[i] === w.data[i]) i++;
        throw new FindingError({ kind: 'lost-write', message: `${when}: ${w.data.length} bytes written at ${w.at} read back differently from byte ${w.at + i}${cleanBefore ? ' (check called the image clean)' : ''}` });
      }
    }
  };
  const opened = await withDisk(run, 'write', () => Disk.open(main, { namespace: fast, untrusted: true }), async (d) => {
    const n = rng.int(1, 8);
    for (let i = 0; i < n; i++) {
      const len = Math.min(d.capacity, rng.pick([512, 4096, 65536, 1000, 3 * 512 + 7, 200_000]));
      if (len <= 0) break;
      let at = 0;
      let tries = 0;
      do {
        at = Math.floor(rng.float() * (d.capacity - len + 1));
        if (rng.chance(0.6)) at -= at % 512;
      } while (++tries < 20 && written.some((w) => at < w.at + w.data.length && w.at < at + len));
      if (tries >= 20) break;
      const data = xorshiftBytes(len, (rng.float() * 2 ** 32) >>> 0);
      // a refused write (DiskError) ends the writing: the step's outcome
      await d.write(at, data);
      written.push({ at, data });
    }
    await d.flush();
    await verify(d, 'before close');
    return true;
  });
  if (!opened && written.length === 0) return;
  const reopened = await withDisk(run, 'reread', () => Disk.open(main, { namespace: fast, readOnly: true, untrusted: true }), async (d) => {
    await verify(d, 'after reopen');
    return true;
  });
  if (!reopened && cleanBefore && opened) throw new FindingError({ kind: 'unopenable-after-write', message: 'an image check called clean no longer opens after writes' });
  const after = await run('check after', () => checkDisk(main, { namespace: fast, repair: false, untrusted: true }));
  if (cleanBefore && opened && after && corruptions(after) > 0) {
    const f = after.findings.find((x) => x.kind === 'corruption' && !x.repaired);
    throw new FindingError({ kind: 'clean-then-corrupt', message: `check called the image clean before the writes and corrupt after: ${f?.message}` });
  }
}
