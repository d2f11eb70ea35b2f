/**
 * Benchmark: `vdkit convert` against `qemu-img convert` (and, for streamOptimized VMDK, VMware's
 * open-vmdk `vmdk-convert`) on one generated raw image of mixed content, each case timed in the
 * same run with the tools taking turns. This is the yardstick of issue 6's targets.
 *
 *   npm run bench:convert               (build, then run with the defaults below)
 *   node dist/bench/convert-matrix.js [--json[=FILE]] [--size 4G] [--rounds 3] [--seed 1] [--keep]
 *                                     [--only CASE[,CASE...]] [--dir DIR] [--vdkit-bin PATH]
 *                                     [--no-sync-peer] [--no-unsafe] [--baseline-bin PATH]
 *
 * --baseline-bin times a second vdkit build (say, a checkout from before a redesign) in the same
 * turns as this one, as the tool "vdkit (baseline)"; the table then gives this build's time over
 * the baseline's for each case (above 1 means this build is slower).
 *
 * Cases: vmdk, vdi, vhd, qcow2 (raw -> that format), vmdk-raw, vdi-raw, vhd-raw, qcow2-raw (that
 * format -> raw, from the image qemu-img made, so both tools read the same file), stream (raw ->
 * streamOptimized VMDK). Besides the peers of the targets, each case but stream also times "qemu-img+sync":
 * qemu-img and then `sync -d` of its output, timed as one (qemu-img never fdatasyncs, vdkit does
 * before it exits), for context; --no-sync-peer leaves it out. They also time "vdkit --cache
 * unsafe" (no fdatasync either): against qemu-img that is like for like; --no-unsafe leaves it
 * out. Each timed run is a child process (start-up counts for every tool alike);
 * before it, the old output is deleted and `sync` runs, untimed. Peak RSS comes from
 * /usr/bin/time (`%M`) when it is installed, else from polling /proc/PID/status (VmHWM).
 * After the rounds every vdkit output is compared with its source by `qemu-img compare` (untimed);
 * a mismatch fails the run (exit 1). See BENCHMARKS.md for the figures of the last run.
 *
 * Design notes: the order of tools alternates per round so slow drift of a shared machine hits
 * every tool alike, and the figure is the median. The source is read once before each case
 * (untimed) so every tool starts from a warm page cache; the outputs are not dropped from the
 * cache, but the sync before each run means no tool pays for another's write-back. A tool that
 * cannot do a case (vdkit before its streamOptimized writer, vmdk-convert when it is not built)
 * is probed on a tiny image first and reported, not timed.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildMixedRaw, type MixStats } from './mixed-image.js';

// ---------------------------------------------------------------- options

const CASES = ['vmdk', 'vdi', 'vhd', 'qcow2', 'vmdk-raw', 'vdi-raw', 'vhd-raw', 'qcow2-raw', 'stream'] as const;
type CaseName = (typeof CASES)[number];

interface Options {
  size: number;
  rounds: number;
  seed: number;
  keep: boolean;
  json: boolean | string;
  only: CaseName[];
  dir: string;
  vdkitBin: string;
  /** another build's bin/vdkit.js, timed in the same turns (regression check) */
  baselineBin?: string;
  /** also time qemu-img followed by an fdatasync of its output (for context) */
  durablePeer: boolean;
  /** also time vdkit --cache unsafe (no fdatasync, like qemu-img) against qemu-img */
  unsafeVdkit: boolean;
}

function parseSize(s: string): number {
  const m = /^(\d+)([KMG]?)$/i.exec(s);
  if (!m) throw new Error(`bad size ${s}`);
  const mult = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  return Number(m[1]) * mult;
}

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..');
const VDKIT = join(ROOT, 'bin', 'vdkit.js');
const BASELINE = 'vdkit (baseline)';

function parseArgs(argv: string[]): Options {
  const o: Options = { size: 4 * 1024 ** 3, rounds: 3, seed: 1, keep: false, json: false, only: [...CASES], dir: tmpdir(), vdkitBin: VDKIT, durablePeer: true, unsafeVdkit: true };
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
    else if (a === '--seed') o.seed = Number(val());
    else if (a === '--keep') o.keep = true;
    else if (a === '--no-sync-peer') o.durablePeer = false;
    else if (a === '--no-unsafe') o.unsafeVdkit = false;
    else if (a === '--dir') o.dir = resolve(val());
    else if (a === '--vdkit-bin') o.vdkitBin = resolve(val());
    else if (a === '--baseline-bin') o.baselineBin = resolve(val());
    else if (a === '--only') {
      o.only = val().split(',').map((c) => {
        if (!(CASES as readonly string[]).includes(c)) throw new Error(`unknown case ${c} (cases: ${CASES.join(', ')})`);
        return c as CaseName;
      });
    } else throw new Error(`unknown argument ${a}`);
  }
  if (o.size % (2 * 1024 * 1024) !== 0) throw new Error('--size must be a multiple of 2 MiB');
  if (!Number.isInteger(o.rounds) || o.rounds < 1) throw new Error('--rounds must be a positive integer');
  return o;
}

// ---------------------------------------------------------------- running tools

interface RunResult {
  code: number | null;
  ms: number;
  stdout: string;
  stderr: string;
  /** peak resident set size in bytes (NaN if it could not be measured) */
  peakRss: number;
}

/** /usr/bin/time gives the peak RSS of a child exactly (getrusage ru_maxrss) */
const TIME = '/usr/bin/time';
const HAVE_TIME = existsSync(TIME);

/** Peak RSS without /usr/bin/time: poll VmHWM while the child runs (misses a last-moment peak). */
function pollHwm(pid: number, into: { kb: number }): () => void {
  const t = setInterval(() => {
    readFile(`/proc/${pid}/status`, 'utf8').then(
      (s) => {
        const m = /VmHWM:\s+(\d+) kB/.exec(s);
        if (m) into.kb = Math.max(into.kb, Number(m[1]));
      },
      () => {},
    );
  }, 20);
  return () => clearInterval(t);
}

/** Run a command; when `measure`, wall time includes only the child (and /usr/bin/time's exec). */
async function run(cmd: string, args: string[], dir: string, measure = false): Promise<RunResult> {
  const timeOut = join(dir, 'time.out');
  const viaTime = measure && HAVE_TIME;
  const [c, a] = viaTime ? [TIME, ['-f', '%M', '-o', timeOut, cmd, ...args]] : [cmd, args];
  const hwm = { kb: 0 };
  const r = await new Promise<Omit<RunResult, 'peakRss'>>((resolveRun, reject) => {
    const t0 = performance.now();
    const child = spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'] });
    const stop = measure && !viaTime && child.pid !== undefined ? pollHwm(child.pid, hwm) : () => {};
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', (e) => {
      stop();
      reject(e);
    });
    child.on('close', (code) => {
      stop();
      resolveRun({ code, ms: performance.now() - t0, stdout, stderr });
    });
  });
  let peakRss = NaN;
  if (viaTime) {
    const kb = Number((await readFile(timeOut, 'utf8').catch(() => '')).trim().split('\n').pop());
    if (Number.isFinite(kb)) peakRss = kb * 1024;
  } else if (measure && hwm.kb > 0) peakRss = hwm.kb * 1024;
  return { ...r, peakRss };
}

async function mustRun(cmd: string, args: string[], dir: string, measure = false): Promise<RunResult> {
  const r = await run(cmd, args, dir, measure);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stdout}${r.stderr}`);
  return r;
}

function which(name: string): string | undefined {
  for (const d of (process.env['PATH'] ?? '').split(delimiter)) {
    const p = join(d, name);
    if (d && existsSync(p)) return p;
  }
  return undefined;
}

function median(xs: number[]): number {
  const s = [...xs].filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const MiB = 1024 * 1024;
const fmtMs = (ms: number) => (Number.isNaN(ms) ? '-' : `${ms.toFixed(0)} ms`);
const fmtMiB = (b: number) => (Number.isNaN(b) ? '-' : `${(b / MiB).toFixed(0)} MiB`);

/** Read a file once (untimed), so every tool starts from the same warm page cache. */
async function warm(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(8 * MiB);
    for (let at = 0; ; ) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, at);
      if (bytesRead === 0) break;
      at += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------- cases

/** qemu-img's name of a vdkit format */
const QEMU_FMT: Record<string, string> = { vmdk: 'vmdk', vdi: 'vdi', vhd: 'vpc', qcow2: 'qcow2', raw: 'raw' };

interface Tool {
  name: string;
  /** command line converting src into dst */
  argv: (src: string, dst: string) => [string, string[]];
  /** output file name (extension matters to vmdk-convert) */
  out: string;
  /** why this tool cannot run at all here (not installed) */
  unavailable?: string;
}

interface CaseSpec {
  name: CaseName;
  title: string;
  srcFormat: string;
  dstFormat: string;
  /** vdkit -t */
  type?: string;
  /** target: vdkit / peer at most this */
  targets: Record<string, number>;
}

function caseSpec(name: CaseName): CaseSpec {
  if (name === 'stream') {
    return { name, title: 'raw -> vmdk streamOptimized', srcFormat: 'raw', dstFormat: 'vmdk', type: 'streamOptimized', targets: { 'qemu-img': 0.5, 'vmdk-convert': 1.0 } };
  }
  if (name.endsWith('-raw')) {
    const f = name.slice(0, -4);
    return { name, title: `${f} -> raw`, srcFormat: f, dstFormat: 'raw', targets: { 'qemu-img': 1.0 } };
  }
  const title = name === 'vmdk' ? 'raw -> vmdk monolithicSparse' : `raw -> ${name} ${name === 'qcow2' ? '' : 'dynamic'}`.trimEnd();
  return { name, title, srcFormat: 'raw', dstFormat: name, type: name === 'vmdk' ? 'monolithicSparse' : name === 'qcow2' ? undefined : 'dynamic', targets: { 'qemu-img': 0.7 } };
}

function vdkitTool(spec: CaseSpec, bin: string, name = 'vdkit'): Tool {
  return {
    name,
    out: `out-${name.replace(/\W/g, '')}.${spec.dstFormat === 'raw' ? 'img' : spec.dstFormat}`,
    argv: (src, dst) => [process.execPath, [bin, 'convert', '-f', spec.srcFormat, '-O', spec.dstFormat, ...(spec.type ? ['-t', spec.type] : []), src, dst]],
  };
}

/**
 * vdkit with `--cache unsafe`: no fdatasync, as qemu-img convert runs by default. Against
 * qemu-img this is the like-for-like comparison (same durability); vdkit's default stays durable.
 */
function vdkitUnsafeTool(spec: CaseSpec, bin: string): Tool {
  const v = vdkitTool(spec, bin);
  return {
    name: 'vdkit --cache unsafe',
    out: v.out.replace('out-vdkit', 'out-vdkitunsafe'),
    argv: (src, dst) => {
      const [cmd, args] = v.argv(src, dst);
      return [cmd, [...args.slice(0, 2), '--cache', 'unsafe', ...args.slice(2)]];
    },
  };
}

function qemuTool(spec: CaseSpec): Tool {
  const opts = spec.type === 'streamOptimized' ? ['-o', 'subformat=streamOptimized'] : [];
  return {
    name: 'qemu-img',
    out: `out-qemu.${spec.dstFormat === 'raw' ? 'img' : spec.dstFormat}`,
    argv: (src, dst) => ['qemu-img', ['convert', '-f', QEMU_FMT[spec.srcFormat]!, '-O', QEMU_FMT[spec.dstFormat]!, ...opts, src, dst]],
  };
}

/**
 * qemu-img followed by an fdatasync of its output (`sync -d`, coreutils), timed as one: what
 * qemu-img costs when its result must be on the disk, as vdkit's is when it exits. For context
 * only; the targets are against plain qemu-img.
 */
function qemuDurableTool(spec: CaseSpec): Tool {
  const q = qemuTool(spec);
  return {
    name: 'qemu-img+sync',
    out: q.out.replace('out-qemu', 'out-qemusync'),
    argv: (src, dst) => {
      const [cmd, args] = q.argv(src, dst);
      return ['sh', ['-c', 'dst=$1; shift; "$@" && sync -d "$dst"', 'sh', dst, cmd, ...args]];
    },
  };
}

function vmdkConvertTool(bin: string): Tool {
  // vmdk-convert picks its output kind by the name: *.vmdk is streamOptimized. Its defaults
  // (deflate level 9, one thread per CPU) are what an OVA build gets, so they are kept.
  return { name: 'vmdk-convert', out: 'out-vmdkconvert.vmdk', argv: (src, dst) => [bin, [src, dst]] };
}

interface ToolFigures {
  tool: string;
  supported: boolean;
  /** why not, when not supported */
  note?: string;
  ms: number[];
  medianMs: number;
  peakRss: number[];
  maxPeakRss: number;
  outputBytes: { apparent: number; allocated: number } | undefined;
}

interface CaseFigures {
  name: CaseName;
  title: string;
  source: string;
  tools: ToolFigures[];
  /** vdkit / peer median wall time, and the target, per peer */
  ratios: { subject: string; peer: string; ratio: number; target: number | undefined; met: boolean | undefined }[];
  /** qemu-img compare of vdkit's output with the source */
  compare: 'ok' | 'MISMATCH' | 'skipped';
  peakRssLimit: number;
  rssMet: boolean | undefined;
}

const RSS_LIMIT = 256 * MiB;

/** Whether `tool` can do this case at all: convert a tiny image (untimed), and say why not. */
async function probe(tool: Tool, spec: CaseSpec, dir: string): Promise<string | undefined> {
  const tiny = join(dir, `probe-src.${spec.srcFormat}`);
  const rawTiny = join(dir, 'probe.img');
  await rm(tiny, { force: true });
  await writeFile(rawTiny, Buffer.alloc(4 * MiB, 1));
  if (spec.srcFormat !== 'raw') await mustRun('qemu-img', ['convert', '-f', 'raw', '-O', QEMU_FMT[spec.srcFormat]!, rawTiny, tiny], dir);
  const src = spec.srcFormat === 'raw' ? rawTiny : tiny;
  const dst = join(dir, `probe-out-${tool.out}`);
  await rm(dst, { force: true });
  const [cmd, args] = tool.argv(src, dst);
  const r = await run(cmd, args, dir);
  await rm(dst, { force: true });
  if (r.code === 0) return undefined;
  return (r.stderr.trim() || r.stdout.trim()).split('\n')[0] ?? `exit ${r.code}`;
}

async function sizes(path: string): Promise<{ apparent: number; allocated: number } | undefined> {
  const st = await stat(path).catch(() => undefined);
  return st && { apparent: st.size, allocated: st.blocks * 512 };
}

async function benchCase(spec: CaseSpec, src: string, tools: Tool[], dir: string, opts: Options, log: (s: string) => void): Promise<CaseFigures> {
  const figures: ToolFigures[] = [];
  const live: { tool: Tool; fig: ToolFigures }[] = [];
  for (const tool of tools) {
    const why = tool.unavailable ?? (await probe(tool, spec, dir));
    const fig: ToolFigures = { tool: tool.name, supported: why === undefined, ms: [], medianMs: NaN, peakRss: [], maxPeakRss: NaN, outputBytes: undefined };
    if (why !== undefined) {
      fig.note = tool.name === 'vdkit' ? `not supported by this build (${why})` : why;
      log(`${spec.name}: ${tool.name}: ${fig.note}`);
    } else live.push({ tool, fig });
    figures.push(fig);
  }
  await warm(src);
  for (let round = 0; round < opts.rounds; round++) {
    const order = round % 2 === 0 ? live : [...live].reverse();
    for (const { tool, fig } of order) {
      const dst = join(dir, tool.out);
      await rm(dst, { force: true });
      await mustRun('sync', [], dir);
      const [cmd, args] = tool.argv(src, dst);
      const r = await mustRun(cmd, args, dir, true);
      fig.ms.push(r.ms);
      fig.peakRss.push(r.peakRss);
    }
    log(`${spec.name}: round ${round + 1}/${opts.rounds}: ${live.map(({ fig }) => `${fig.tool} ${fmtMs(fig.ms[round]!)} (${fmtMiB(fig.peakRss[round]!)})`).join(', ')}`);
  }
  for (const { tool, fig } of live) {
    fig.medianMs = median(fig.ms);
    fig.maxPeakRss = Math.max(...fig.peakRss);
    fig.outputBytes = await sizes(join(dir, tool.out));
  }

  // untimed: vdkit's output must hold exactly what the source holds
  let compare: CaseFigures['compare'] = 'skipped';
  const v = live.find((l) => l.tool.name === 'vdkit');
  if (v) {
    const out = join(dir, v.tool.out);
    const r = await run('qemu-img', ['compare', '-f', QEMU_FMT[spec.dstFormat]!, '-F', QEMU_FMT[spec.srcFormat]!, out, src], dir);
    compare = r.code === 0 ? 'ok' : 'MISMATCH';
    if (r.code !== 0) log(`${spec.name}: qemu-img compare FAILED (exit ${r.code}): ${r.stdout}${r.stderr}`);
  }

  const vd = figures.find((f) => f.tool === 'vdkit')!;
  const ratioOf = (subject: ToolFigures, p: ToolFigures) => {
    const target = spec.targets[p.tool];
    const ratio = subject.supported && p.supported ? subject.medianMs / p.medianMs : NaN;
    return { subject: subject.tool, peer: p.tool, ratio, target, met: Number.isNaN(ratio) || target === undefined ? undefined : ratio <= target };
  };
  const ratios = figures.filter((p) => !p.tool.startsWith('vdkit')).map((p) => ratioOf(vd, p));
  const unsafe = figures.find((f) => f.tool === 'vdkit --cache unsafe');
  const qemu = figures.find((f) => f.tool === 'qemu-img');
  if (unsafe && qemu) ratios.push(ratioOf(unsafe, qemu));
  const baseline = figures.find((f) => f.tool === BASELINE);
  if (baseline) ratios.push(ratioOf(vd, baseline));
  const rssMet = vd.supported ? vd.maxPeakRss < RSS_LIMIT : undefined;
  if (!opts.keep) for (const { tool } of live) await rm(join(dir, tool.out), { force: true });
  return { name: spec.name, title: spec.title, source: src, tools: figures, ratios, compare, peakRssLimit: RSS_LIMIT, rssMet };
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  const print = (s: string) => (opts.json === true ? process.stderr : process.stdout).write(s + '\n');
  const log = (s: string) => process.stderr.write(`# ${s}\n`);

  const qemuVersion = (await mustRun('qemu-img', ['--version'], tmpdir())).stdout.split('\n')[0]!;
  const vmdkConvert = ['/work/scratch/bin/vmdk-convert'].find((p) => existsSync(p)) ?? which('vmdk-convert');
  const dir = await mkdtemp(join(opts.dir, 'vdkit-bench-matrix-'));
  const raw = join(dir, 'raw.img');
  let failed = false;
  try {
    const t0 = performance.now();
    const mix: MixStats = await buildMixedRaw(raw, opts.size, opts.seed, { compressible: true });
    const genMs = performance.now() - t0;
    log(
      `raw image: ${fmtMiB(opts.size)} in ${fmtMs(genMs)}: random ${fmtMiB(mix.randomBytes)}, text ${fmtMiB(mix.compressibleBytes)}, zeros ${fmtMiB(mix.zeroBytes)}, ` +
        `holes ${fmtMiB(mix.holeBytes)}; ${mix.runs} runs; 64 KiB grains: ${mix.dataGrains} with data (${mix.partialGrains} partly), ${mix.zeroGrains} without`,
    );

    const results: CaseFigures[] = [];
    for (const name of opts.only) {
      const spec = caseSpec(name);
      let src = raw;
      if (spec.srcFormat !== 'raw') {
        // the common source of the "-> raw" cases: the image qemu-img makes of the raw file
        src = join(dir, `src.${spec.srcFormat}`);
        if (!existsSync(src)) await mustRun('qemu-img', ['convert', '-f', 'raw', '-O', QEMU_FMT[spec.srcFormat]!, raw, src], dir);
      }
      const tools = [vdkitTool(spec, opts.vdkitBin), qemuTool(spec)];
      if (opts.unsafeVdkit && name !== 'stream') tools.splice(1, 0, vdkitUnsafeTool(spec, opts.vdkitBin));
      // not for streamOptimized: there compression, not the write-back, sets the pace (and one
      // more qemu-img run costs minutes at 4 GiB)
      if (opts.durablePeer && name !== 'stream') tools.push(qemuDurableTool(spec));
      if (opts.baselineBin) tools.splice(1, 0, vdkitTool(spec, opts.baselineBin, BASELINE));
      if (name === 'stream') {
        tools.push(vmdkConvert ? vmdkConvertTool(vmdkConvert) : { ...vmdkConvertTool('vmdk-convert'), unavailable: 'not found (/work/scratch/bin or PATH)' });
      }
      const fig = await benchCase(spec, src, tools, dir, opts, log);
      if (fig.compare === 'MISMATCH') failed = true;
      results.push(fig);
    }

    const result = {
      date: new Date().toISOString(),
      command: `node dist/bench/convert-matrix.js ${process.argv.slice(2).join(' ')}`.trim(),
      machine: { nproc: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', memory: totalmem(), node: process.version, qemuImg: qemuVersion, vmdkConvert: vmdkConvert ?? null, peakRssFrom: HAVE_TIME ? '/usr/bin/time %M' : '/proc/PID/status VmHWM (polled)' },
      image: { size: opts.size, seed: opts.seed, generateMs: Math.round(genMs), ...mix },
      rounds: opts.rounds,
      cases: results,
    };

    const rows: string[][] = [['case', 'tool', 'median', 'peak RSS', 'output', 'vdkit/peer', 'target', '']];
    for (const c of results) {
      for (const t of c.tools) {
        // a peer's row shows vdkit / that peer; the unsafe vdkit's row shows it / qemu-img
        const r = t.tool === 'vdkit --cache unsafe' ? c.ratios.find((x) => x.subject === t.tool) : c.ratios.find((x) => x.subject === 'vdkit' && x.peer === t.tool);
        const vd = t.tool === 'vdkit';
        rows.push([
          t === c.tools[0] ? c.title : '',
          t.tool,
          t.supported ? fmtMs(t.medianMs) : vd ? 'not supported by this build' : (t.note ?? 'not supported'),
          t.supported ? fmtMiB(t.maxPeakRss) + (vd ? (c.rssMet ? ' ok' : ' OVER') : '') : '',
          t.outputBytes ? `${fmtMiB(t.outputBytes.allocated)}` : '',
          r ? (Number.isNaN(r.ratio) ? '-' : r.ratio.toFixed(2)) : vd ? `compare ${c.compare}` : '',
          r?.target !== undefined ? `<= ${r.target.toFixed(1)}` : r ? '(info)' : '',
          r?.target !== undefined ? (r.met === undefined ? 'n/a' : r.met ? 'met' : 'MISSED') : '',
        ]);
      }
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    print('');
    print(`${fmtMiB(opts.size)} mixed image (seed ${opts.seed}), median of ${opts.rounds}; peak RSS limit ${fmtMiB(RSS_LIMIT)}; ${qemuVersion}`);
    for (const r of rows) print(r.map((x, i) => (i === 2 || i === 3 || i === 4 || i === 5 ? x.padStart(widths[i]!) : x.padEnd(widths[i]!))).join('  ').trimEnd());
    const mism = results.filter((c) => c.compare === 'MISMATCH').map((c) => c.name);
    print(mism.length ? `checks: qemu-img compare MISMATCH in ${mism.join(', ')}` : 'checks: every vdkit output matches its source (qemu-img compare)');

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
