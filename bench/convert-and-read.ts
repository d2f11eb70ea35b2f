/**
 * Benchmark: `vdkit convert -O vmdk` against `qemu-img convert -O vmdk`, and random 4 KiB reads
 * through the Disk API on the converted VMDK against the same reads on the raw file.
 *
 *   npm run bench                       (build, then run with the defaults below)
 *   node dist/bench/convert-and-read.js [--json[=FILE]] [--size 1G] [--rounds 5] [--reads 20000]
 *                                       [--read-reps 3] [--seed 1] [--keep] [--vdkit-bin PATH]
 *                                       [--baseline-bin PATH]
 *
 * --json prints the result as JSON on stdout (the table then goes to stderr); --json=FILE writes
 * it to FILE instead. --vdkit-bin times another build's bin/vdkit.js (say, an older checkout) on the
 * same image. --baseline-bin adds another build (say, a checkout from before a redesign) to the
 * same run: its convert takes turns with this build's and qemu-img's, and its Disk API (loaded from
 * that checkout's dist/src/disk.js) reads the same VMDK in the read turns; the ratios
 * this/baseline are printed (convert: above 1 is slower; reads: below 1 is slower). Everything lives in a temporary folder under os.tmpdir(), removed at the end (unless
 * --keep). See BENCHMARKS.md for what is measured and the figures of the last run.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Disk } from '../src/disk.js';
import { buildMixedRaw, mulberry32, type MixStats } from './mixed-image.js';

// ---------------------------------------------------------------- options

interface Options {
  size: number;
  rounds: number;
  reads: number;
  readReps: number;
  seed: number;
  keep: boolean;
  json: boolean | string;
  /** the vdkit entry point to time (default: this repository's bin/vdkit.js) */
  vdkitBin: string;
  /** another build's bin/vdkit.js timed in the same turns (regression check) */
  baselineBin?: string;
}

function parseSize(s: string): number {
  const m = /^(\d+)([KMG]?)$/i.exec(s);
  if (!m) throw new Error(`bad size ${s}`);
  const mult = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  return Number(m[1]) * mult;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { size: 1024 ** 3, rounds: 5, reads: 20000, readReps: 3, seed: 1, keep: false, json: false, vdkitBin: VDKIT };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--json') o.json = true;
    else if (a.startsWith('--json=')) o.json = a.slice('--json='.length);
    else if (a === '--size') o.size = parseSize(val());
    else if (a === '--rounds') o.rounds = Number(val());
    else if (a === '--reads') o.reads = Number(val());
    else if (a === '--read-reps') o.readReps = Number(val());
    else if (a === '--seed') o.seed = Number(val());
    else if (a === '--keep') o.keep = true;
    else if (a === '--vdkit-bin') o.vdkitBin = resolve(val());
    else if (a === '--baseline-bin') o.baselineBin = resolve(val());
    else throw new Error(`unknown argument ${a}`);
  }
  if (o.size % (2 * 1024 * 1024) !== 0) throw new Error('--size must be a multiple of 2 MiB');
  return o;
}

// ---------------------------------------------------------------- helpers

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..');
const VDKIT = join(ROOT, 'bin', 'vdkit.js');

interface RunResult {
  code: number | null;
  ms: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[]): Promise<RunResult> {
  return new Promise((resolveRun, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolveRun({ code, ms: performance.now() - t0, stdout, stderr }));
  });
}

/** /usr/bin/time, when present, gives each timed child's CPU time (user + system) */
const TIME = '/usr/bin/time';

/** Run a timed command: wall time, and CPU time when /usr/bin/time is there (else NaN). */
async function timed(cmd: string, args: string[], dir: string): Promise<{ ms: number; cpuMs: number }> {
  if (!existsSync(TIME)) return { ms: (await mustRun(cmd, args)).ms, cpuMs: NaN };
  const out = join(dir, 'time.out');
  const r = await mustRun(TIME, ['-f', '%U %S', '-o', out, cmd, ...args]);
  const [user, sys] = (await readFile(out, 'utf8')).trim().split(/\s+/).map(Number);
  return { ms: r.ms, cpuMs: Math.round((user! + sys!) * 1000) };
}

async function mustRun(cmd: string, args: string[]): Promise<RunResult> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stdout}${r.stderr}`);
  return r;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const MiB = 1024 * 1024;
const fmtMs = (ms: number) => `${ms.toFixed(0)} ms`;
const fmtMiB = (b: number) => `${(b / MiB).toFixed(1)} MiB`;

async function fileSizes(path: string): Promise<{ apparent: number; allocated: number }> {
  const st = await stat(path);
  return { apparent: st.size, allocated: st.blocks * 512 };
}

// ---------------------------------------------------------------- convert

interface ConvertFigures {
  rounds: number;
  vdkitMs: number[];
  qemuMs: number[];
  vdkitMedianMs: number;
  qemuMedianMs: number;
  /** vdkit / qemu-img median wall time */
  ratio: number;
  /** CPU time (user + system) of each timed run, from /usr/bin/time (empty without it) */
  vdkitCpuMs: number[];
  qemuCpuMs: number[];
  vdkitMedianCpuMs: number;
  qemuMedianCpuMs: number;
  cpuRatio: number;
  vdkitOutput: { apparent: number; allocated: number };
  qemuOutput: { apparent: number; allocated: number };
  compareExit: number | null;
  checkExit: number | null;
  /** with --baseline-bin: the baseline's times and this build's median over the baseline's */
  baseline?: { ms: number[]; medianMs: number; ratio: number };
}

async function benchConvert(dir: string, raw: string, opts: Options, log: (s: string) => void): Promise<ConvertFigures> {
  const rounds = opts.rounds;
  const outV = join(dir, 'out-vdkit.vmdk');
  const outQ = join(dir, 'out-qemu.vmdk');
  // Before each timed run: remove the old output and let the file system settle (untimed), so
  // one tool's write-back and freed blocks are not charged to the next run.
  const settle = async (out: string) => {
    await rm(out, { force: true });
    await mustRun('sync', []);
  };
  const vdkitMs: number[] = [];
  const qemuMs: number[] = [];
  const vdkitCpuMs: number[] = [];
  const qemuCpuMs: number[] = [];
  const baseMs: number[] = [];
  const outB = join(dir, 'out-baseline.vmdk');
  const base = async (record: boolean) => {
    if (!opts.baselineBin) return 0;
    await settle(outB);
    const r = await timed(process.execPath, [opts.baselineBin, 'convert', '-f', 'raw', '-O', 'vmdk', raw, outB], dir);
    if (record) baseMs.push(r.ms);
    return r.ms;
  };
  const vdkit = async (record: boolean) => {
    await settle(outV);
    const r = await timed(process.execPath, [opts.vdkitBin, 'convert', '-f', 'raw', '-O', 'vmdk', raw, outV], dir);
    if (record) {
      vdkitMs.push(r.ms);
      vdkitCpuMs.push(r.cpuMs);
    }
    return r.ms;
  };
  const qemu = async (record: boolean) => {
    await settle(outQ);
    const r = await timed('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', raw, outQ], dir);
    if (record) {
      qemuMs.push(r.ms);
      qemuCpuMs.push(r.cpuMs);
    }
    return r.ms;
  };
  log(`convert: warm-up (vdkit ${fmtMs(await vdkit(false))}, qemu-img ${fmtMs(await qemu(false))}${opts.baselineBin ? `, baseline ${fmtMs(await base(false))}` : ''})`);
  for (let i = 0; i < rounds; i++) {
    // alternate the order, so slow drift of the machine hits every tool alike
    const turn = [vdkit, qemu, base];
    for (const tool of i % 2 === 0 ? turn : turn.reverse()) await tool(true);
    log(`convert: round ${i + 1}/${rounds}: vdkit ${fmtMs(vdkitMs[i]!)} (cpu ${fmtMs(vdkitCpuMs[i]!)}), qemu-img ${fmtMs(qemuMs[i]!)} (cpu ${fmtMs(qemuCpuMs[i]!)})` +
      (opts.baselineBin ? `, baseline ${fmtMs(baseMs[i]!)}` : ''));
  }
  await rm(outB, { force: true });
  // Both outputs of the last round are kept for the checks and the read benchmark.
  const cmp = await run('qemu-img', ['compare', '-f', 'vmdk', '-F', 'raw', outV, raw]);
  if (cmp.code !== 0) log(`qemu-img compare FAILED (exit ${cmp.code}): ${cmp.stdout}${cmp.stderr}`);
  const chk = await run('qemu-img', ['check', '-f', 'vmdk', outV]);
  if (chk.code !== 0) log(`qemu-img check FAILED (exit ${chk.code}): ${chk.stdout}${chk.stderr}`);
  const vdkitMedianMs = median(vdkitMs);
  const qemuMedianMs = median(qemuMs);
  return {
    rounds,
    vdkitMs,
    qemuMs,
    vdkitMedianMs,
    qemuMedianMs,
    ratio: vdkitMedianMs / qemuMedianMs,
    vdkitCpuMs,
    qemuCpuMs,
    vdkitMedianCpuMs: median(vdkitCpuMs),
    qemuMedianCpuMs: median(qemuCpuMs),
    cpuRatio: median(vdkitCpuMs) / median(qemuCpuMs),
    vdkitOutput: await fileSizes(outV),
    qemuOutput: await fileSizes(outQ),
    compareExit: cmp.code,
    checkExit: chk.code,
    ...(opts.baselineBin ? { baseline: { ms: baseMs, medianMs: median(baseMs), ratio: vdkitMedianMs / median(baseMs) } } : {}),
  };
}

// ---------------------------------------------------------------- random reads

type ReadMode = 'vmdk' | 'raw' | 'fs' | 'baseline';

/** what the read loop needs of a Disk class: this build's, or the baseline build's */
interface DiskLike {
  open(path: string, opts: { readOnly: boolean; format?: string }): Promise<{ readInto(b: Buffer, o: number): Promise<unknown>; close(): Promise<void> }>;
}
let baselineDisk: DiskLike | undefined;

interface ReadFigures {
  reads: number;
  reps: number;
  ms: Record<ReadMode, number[]>;
  medianMs: Record<ReadMode, number>;
  readsPerSec: Record<ReadMode, number>;
  /** vmdk reads/s over raw reads/s, all offsets */
  ratio: number;
  /** the same, counting only the offsets that land in allocated VMDK grains (real file reads) */
  allocated: { reads: number; ms: Record<'vmdk' | 'raw', number[]>; medianMs: Record<'vmdk' | 'raw', number>; readsPerSec: Record<'vmdk' | 'raw', number>; ratio: number };
  verified: number;
}

async function timeReads(mode: ReadMode, path: string, offsets: Float64Array): Promise<number> {
  const buf = Buffer.allocUnsafe(4096);
  if (mode === 'fs') {
    const fh = await open(path, 'r');
    try {
      const t0 = performance.now();
      for (let i = 0; i < offsets.length; i++) await fh.read(buf, 0, 4096, offsets[i]!);
      return performance.now() - t0;
    } finally {
      await fh.close();
    }
  }
  // A fresh open per repetition: the VMDK grain-table cache starts cold each time.
  const cls: DiskLike = mode === 'baseline' ? baselineDisk! : Disk;
  const disk = await cls.open(path, mode === 'raw' ? { readOnly: true, format: 'raw' } : { readOnly: true });
  try {
    const t0 = performance.now();
    for (let i = 0; i < offsets.length; i++) await disk.readInto(buf, offsets[i]!);
    return performance.now() - t0;
  } finally {
    await disk.close();
  }
}

async function withDisk<T>(path: string, fn: (d: Disk) => Promise<T>): Promise<T> {
  const d = await Disk.open(path, { readOnly: true });
  try {
    return await fn(d);
  } finally {
    await d.close();
  }
}

/** Untimed: the VMDK must read back what the raw file holds at every benchmark offset. */
async function verifyReads(vmdk: string, raw: string, offsets: Float64Array): Promise<number> {
  const a = await Disk.open(vmdk, { readOnly: true });
  const b = await Disk.open(raw, { readOnly: true, format: 'raw' });
  try {
    for (let i = 0; i < offsets.length; i++) {
      const [x, y] = await Promise.all([a.read(offsets[i]!, 4096), b.read(offsets[i]!, 4096)]);
      if (!x.equals(y)) throw new Error(`VMDK and raw differ at offset ${offsets[i]}`);
    }
    return offsets.length;
  } finally {
    await a.close();
    await b.close();
  }
}

async function benchReads(vmdk: string, raw: string, opts: Options, log: (s: string) => void): Promise<ReadFigures> {
  const rnd = mulberry32(opts.seed ^ 0x5eed4b1d);
  const blocks = opts.size / 4096;
  const offsets = new Float64Array(opts.reads);
  for (let i = 0; i < offsets.length; i++) offsets[i] = Math.floor(rnd() * blocks) * 4096;
  const verified = await verifyReads(vmdk, raw, offsets);
  // The offsets that hit allocated grains: there the VMDK reads the file; elsewhere it returns zeros.
  const status = await withDisk(vmdk, (d) => d.blockStatus());
  const data = status.filter((r) => r.state === 'data');
  const inData = (o: number) => {
    let lo = 0;
    let hi = data.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = data[mid]!;
      if (o < r.offset) hi = mid - 1;
      else if (o >= r.offset + r.length) lo = mid + 1;
      else return true;
    }
    return false;
  };
  const allocatedOffsets = offsets.filter(inData);
  const paths: Record<ReadMode, string> = { vmdk, raw, fs: raw, baseline: vmdk };
  const modes: ReadMode[] = baselineDisk ? ['vmdk', 'raw', 'fs', 'baseline'] : ['vmdk', 'raw', 'fs'];
  // warm-up: page cache and JIT
  for (const m of modes) await timeReads(m, paths[m], offsets.subarray(0, Math.min(2000, offsets.length)));
  const ms: Record<ReadMode, number[]> = { vmdk: [], raw: [], fs: [], baseline: [] };
  const allocMs: Record<'vmdk' | 'raw', number[]> = { vmdk: [], raw: [] };
  for (let r = 0; r < opts.readReps; r++) {
    const order = r % 2 === 0 ? modes : [...modes].reverse();
    for (const m of order) ms[m].push(await timeReads(m, paths[m], offsets));
    for (const m of order) if (m === 'vmdk' || m === 'raw') allocMs[m].push(await timeReads(m, paths[m], allocatedOffsets));
    log(`reads: rep ${r + 1}/${opts.readReps}: ${modes.map((m) => `${m} ${fmtMs(ms[m][r]!)}`).join(', ')}; allocated grains only (${allocatedOffsets.length}): vmdk ${fmtMs(allocMs.vmdk[r]!)}, raw ${fmtMs(allocMs.raw[r]!)}`);
  }
  const medianMs = { vmdk: median(ms.vmdk), raw: median(ms.raw), fs: median(ms.fs), baseline: baselineDisk ? median(ms.baseline) : NaN };
  const rate = (m: ReadMode) => (opts.reads / medianMs[m]) * 1000;
  const readsPerSec = { vmdk: rate('vmdk'), raw: rate('raw'), fs: rate('fs'), baseline: rate('baseline') };
  const allocMedian = { vmdk: median(allocMs.vmdk), raw: median(allocMs.raw) };
  const allocRate = { vmdk: (allocatedOffsets.length / allocMedian.vmdk) * 1000, raw: (allocatedOffsets.length / allocMedian.raw) * 1000 };
  const allocated = { reads: allocatedOffsets.length, ms: allocMs, medianMs: allocMedian, readsPerSec: allocRate, ratio: allocRate.vmdk / allocRate.raw };
  return { reads: opts.reads, reps: opts.readReps, ms, medianMs, readsPerSec, ratio: readsPerSec.vmdk / readsPerSec.raw, allocated, verified };
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  const toStdout = opts.json === true ? false : true;
  const print = (s: string) => (toStdout ? process.stdout.write(s + '\n') : process.stderr.write(s + '\n'));
  const log = (s: string) => process.stderr.write(`# ${s}\n`);

  const qemuVersion = (await mustRun('qemu-img', ['--version'])).stdout.split('\n')[0]!;
  const dir = await mkdtemp(join(tmpdir(), 'vdkit-bench-'));
  const raw = join(dir, 'raw.img');
  let failed = false;
  try {
    const t0 = performance.now();
    const mix: MixStats = await buildMixedRaw(raw, opts.size, opts.seed);
    const genMs = performance.now() - t0;
    log(`raw image: ${fmtMiB(opts.size)} in ${fmtMs(genMs)}: random ${fmtMiB(mix.randomBytes)}, zeros ${fmtMiB(mix.zeroBytes)}, holes ${fmtMiB(mix.holeBytes)}; ` +
      `${mix.runs} runs; 64 KiB grains: ${mix.dataGrains} with data (${mix.partialGrains} partly), ${mix.zeroGrains} all zero`);

    if (opts.baselineBin) {
      const url = pathToFileURL(join(dirname(opts.baselineBin), '..', 'dist', 'src', 'disk.js')).href;
      baselineDisk = ((await import(url)) as { Disk: DiskLike }).Disk;
    }
    const conv = await benchConvert(dir, raw, opts, log);
    const reads = await benchReads(join(dir, 'out-vdkit.vmdk'), raw, opts, log);
    failed = conv.compareExit !== 0 || conv.checkExit !== 0;

    const result = {
      date: new Date().toISOString(),
      machine: { nproc: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version, qemuImg: qemuVersion },
      image: { size: opts.size, seed: opts.seed, generateMs: Math.round(genMs), ...mix },
      convert: conv,
      reads,
    };

    const rows: [string, string, string][] = [
      ['convert raw -> vmdk (median of ' + conv.rounds + ')', '', ''],
      ['  vdkit convert', fmtMs(conv.vdkitMedianMs), `cpu ${fmtMs(conv.vdkitMedianCpuMs)}, output ${fmtMiB(conv.vdkitOutput.apparent)} (${fmtMiB(conv.vdkitOutput.allocated)} allocated)`],
      ...(conv.baseline ? [['  baseline vdkit convert', fmtMs(conv.baseline.medianMs), ''] as [string, string, string]] : []),
      ['  qemu-img convert', fmtMs(conv.qemuMedianMs), `cpu ${fmtMs(conv.qemuMedianCpuMs)}, output ${fmtMiB(conv.qemuOutput.apparent)} (${fmtMiB(conv.qemuOutput.allocated)} allocated)`],
      [`random 4 KiB reads x ${reads.reads} (median of ${reads.reps})`, '', ''],
      ['  Disk API, vmdk', fmtMs(reads.medianMs.vmdk), `${reads.readsPerSec.vmdk.toFixed(0)} reads/s`],
      ['  Disk API, raw', fmtMs(reads.medianMs.raw), `${reads.readsPerSec.raw.toFixed(0)} reads/s`],
      ['  fs FileHandle.read, raw', fmtMs(reads.medianMs.fs), `${reads.readsPerSec.fs.toFixed(0)} reads/s`],
      ...(baselineDisk ? [['  baseline Disk API, vmdk', fmtMs(reads.medianMs.baseline), `${reads.readsPerSec.baseline.toFixed(0)} reads/s`] as [string, string, string]] : []),
      [`  of which in allocated grains (${reads.allocated.reads}):`, '', ''],
      ['    Disk API, vmdk', fmtMs(reads.allocated.medianMs.vmdk), `${reads.allocated.readsPerSec.vmdk.toFixed(0)} reads/s`],
      ['    Disk API, raw', fmtMs(reads.allocated.medianMs.raw), `${reads.allocated.readsPerSec.raw.toFixed(0)} reads/s`],
    ];
    const w0 = Math.max(...rows.map((r) => r[0].length));
    const w1 = Math.max(...rows.map((r) => r[1].length));
    print('');
    for (const [a, b, c] of rows) print(`${a.padEnd(w0)}  ${b.padStart(w1)}  ${c}`.trimEnd());
    print('');
    print(`convert ratio vdkit/qemu-img:      ${conv.ratio.toFixed(2)}  (lower is better; aim <= 1.00)` + (Number.isNaN(conv.cpuRatio) ? '' : `; CPU time ratio ${conv.cpuRatio.toFixed(2)}`));
    print(`read ratio vmdk rate / raw rate:   ${reads.ratio.toFixed(2)}  (higher is better; aim >= 0.70); allocated grains only ${reads.allocated.ratio.toFixed(2)}`);
    if (conv.baseline) print(`this build / baseline:             convert time ${conv.baseline.ratio.toFixed(2)} (above 1: slower), vmdk read rate ${(reads.readsPerSec.vmdk / reads.readsPerSec.baseline).toFixed(2)} (below 1: slower)`);
    print(`checks: qemu-img compare ${conv.compareExit === 0 ? 'ok' : 'FAILED'}, qemu-img check ${conv.checkExit === 0 ? 'ok' : 'FAILED'}, ${reads.verified} reads verified against raw`);

    if (opts.json === true) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    else if (typeof opts.json === 'string') await writeFile(opts.json, JSON.stringify(result, null, 2) + '\n');
  } finally {
    if (opts.keep) log(`kept ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => (process.exitCode = code),
  (err) => {
    process.stderr.write(`bench: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
