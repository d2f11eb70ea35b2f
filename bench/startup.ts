/**
 * Benchmark: start-up of the `vdkit` command. Times `node bin/vdkit.js --version` and
 * `node bin/vdkit.js info <small image>` against `node -e 0` (Node's own start), taking turns in
 * one run so that the load of a shared machine falls on all of them alike.
 *
 *   npm run bench:startup
 *   node dist/bench/startup.js [--rounds 20] [--json] [--vdkit-bin PATH]...
 *
 * --vdkit-bin (repeatable) times other builds' bin/vdkit.js in the same turns, e.g. an older
 * checkout against this one; without it, this repository's bin/vdkit.js is timed. The images are a
 * 64 MiB VMDK and qcow2 with one written sector each, in a temporary folder removed at the end.
 * Besides wall time it reports each process's CPU time, which a loaded machine distorts less.
 * Target (issue 16): at most 60 ms above `node -e 0` for --version and info. See BENCHMARKS.md.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Disk } from '../src/disk.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..');
const VDKIT = join(ROOT, 'bin', 'vdkit.js');

interface Options {
  rounds: number;
  json: boolean;
  bins: string[];
}

function parseArgs(argv: string[]): Options {
  const o: Options = { rounds: 20, json: false, bins: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--rounds') o.rounds = Number(val());
    else if (a === '--json') o.json = true;
    else if (a === '--vdkit-bin') o.bins.push(resolve(val()));
    else throw new Error(`unknown argument ${a}`);
  }
  if (!Number.isInteger(o.rounds) || o.rounds < 1) throw new Error('--rounds: expected a whole number >= 1');
  if (o.bins.length === 0) o.bins.push(VDKIT);
  return o;
}

/**
 * Preloaded into every timed process (`node -r`): at exit it writes the process's CPU time (user +
 * system, all threads, since it started) to fd 3. On a loaded machine wall times mostly measure the
 * wait for a core; CPU time does not.
 */
const CPU_PRELOAD = `process.on('exit', () => { const u = process.cpuUsage(); require('fs').writeSync(3, String((u.user + u.system) / 1000)); });\n`;

/** Run `node -r preload args` to the end, its output discarded; resolves to its wall and CPU time in ms. */
function time(preload: string, args: string[]): Promise<{ ms: number; cpuMs: number }> {
  return new Promise((done, fail) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, ['-r', preload, ...args], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let cpu = '';
    child.stderr!.on('data', (d) => (stderr += d));
    child.stdio[3]!.on('data', (d) => (cpu += d));
    child.on('error', fail);
    child.on('close', (code) => {
      const ms = performance.now() - t0;
      if (code !== 0) fail(new Error(`node ${args.join(' ')} exited ${code}\n${stderr}`));
      else done({ ms, cpuMs: Number(cpu) });
    });
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

interface Case {
  label: string;
  args: string[];
  ms: number[];
  cpuMs: number[];
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const dir = await mkdtemp(join(tmpdir(), 'vdkit-startup-'));
  try {
    const images: string[] = [];
    for (const format of ['vmdk', 'qcow2']) {
      const path = join(dir, `small.${format}`);
      const d = await Disk.create(path, { format, capacity: 64 * 1024 * 1024 });
      await d.write(1024 * 1024, Buffer.alloc(512, 0x5a));
      await d.close();
      images.push(path);
    }
    const preload = join(dir, 'cpu-preload.cjs');
    await writeFile(preload, CPU_PRELOAD);
    const cases: Case[] = [{ label: 'node -e 0', args: ['-e', '0'], ms: [], cpuMs: [] }];
    o.bins.forEach((bin, i) => {
      const name = o.bins.length > 1 ? `[${i + 1}] ` : '';
      cases.push({ label: `${name}vdkit --version`, args: [bin, '--version'], ms: [], cpuMs: [] });
      for (const image of images) cases.push({ label: `${name}vdkit info ${image.slice(dir.length + 1)}`, args: [bin, 'info', image], ms: [], cpuMs: [] });
    });
    // one warm-up of each (the page cache), then rounds that take turns, each starting one further on
    for (const c of cases) await time(preload, c.args);
    for (let r = 0; r < o.rounds; r++) {
      for (let k = 0; k < cases.length; k++) {
        const c = cases[(k + r) % cases.length]!;
        const t = await time(preload, c.args);
        c.ms.push(t.ms);
        c.cpuMs.push(t.cpuMs);
      }
    }
    const base = cases[0]!;
    const rows = cases.map((c) => ({
      label: c.label,
      medianMs: median(c.ms),
      minMs: Math.min(...c.ms),
      aboveNodeMedianMs: median(c.ms) - median(base.ms),
      aboveNodeMinMs: Math.min(...c.ms) - Math.min(...base.ms),
      cpuMedianMs: median(c.cpuMs),
      cpuAboveNodeMedianMs: median(c.cpuMs) - median(base.cpuMs),
    }));
    if (o.json) {
      process.stdout.write(JSON.stringify({ rounds: o.rounds, node: process.version, bins: o.bins, rows }, null, 2) + '\n');
      return;
    }
    const f = (ms: number) => ms.toFixed(1).padStart(7);
    const width = Math.max(...rows.map((r) => r.label.length));
    o.bins.forEach((bin, i) => o.bins.length > 1 && process.stdout.write(`[${i + 1}] ${bin}\n`));
    process.stdout.write(`${o.rounds} rounds, Node ${process.version}, load average ${loadavg()[0]!.toFixed(1)} at the end; ms\n`);
    process.stdout.write(`${''.padEnd(width)}  ${'wall:'.padEnd(34)}  cpu:\n`);
    process.stdout.write(`${''.padEnd(width)}  ${'median'.padStart(7)}  ${'min'.padStart(7)}  ${'+median'.padStart(7)}  ${'+min'.padStart(7)}  ${'median'.padStart(7)}  ${'+median'.padStart(7)}\n`);
    for (const r of rows) {
      const first = r === rows[0];
      const blank = ''.padStart(7);
      const above = first ? `${blank}  ${blank}` : `${f(r.aboveNodeMedianMs)}  ${f(r.aboveNodeMinMs)}`;
      process.stdout.write(`${r.label.padEnd(width)}  ${f(r.medianMs)}  ${f(r.minMs)}  ${above}  ${f(r.cpuMedianMs)}  ${first ? blank : f(r.cpuAboveNodeMedianMs)}\n`);
    }
    process.stdout.write('(+median, +min: above node -e 0; cpu: user + system time of the process, all threads)\n');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
