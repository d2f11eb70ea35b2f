/**
 * Benchmark: `vdkit serve` against `qemu-nbd` serving the same image (qcow2 and VMDK made by
 * qemu-img from one mixed raw image), on a Unix socket and on TCP loopback:
 * - `nbdcopy URI out.raw` with 1 and 4 connections (wall time, median of --rounds);
 * - random 4 KiB reads at queue depth 16 through libnbd (nbdsh, aio_pread), requests per second;
 * - the vdkit server's peak RSS over the whole run.
 * It prints each vdkit/qemu-nbd ratio (time: lower is better for vdkit; reads: higher).
 *
 *   npm run bench:nbd
 *   node dist/bench/nbd-serve.js [--size 1G] [--formats qcow2,vmdk] [--rounds 3] [--reads 20000]
 *                                [--seed 1] [--json[=FILE]] [--keep]
 *
 * Needs qemu-img, qemu-nbd, nbdcopy and nbdsh (python3-libnbd) on PATH. Everything lives in a
 * temporary folder under os.tmpdir(), removed at the end unless --keep.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildMixedRaw } from './mixed-image.js';

const VDKIT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'bin', 'vdkit.js');
const ENV = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` };

interface Options {
  size: number;
  formats: string[];
  rounds: number;
  reads: number;
  seed: number;
  json: boolean | string;
  keep: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { size: 1024 ** 3, formats: ['qcow2', 'vmdk'], rounds: 3, reads: 20000, seed: 1, json: false, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = () => argv[++i] ?? '';
    if (a === '--size') {
      const m = /^(\d+)([KMG]?)$/i.exec(val())!;
      o.size = Number(m[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
    } else if (a === '--formats') o.formats = val().split(',');
    else if (a === '--rounds') o.rounds = Number(val());
    else if (a === '--reads') o.reads = Number(val());
    else if (a === '--seed') o.seed = Number(val());
    else if (a === '--json') o.json = true;
    else if (a.startsWith('--json=')) o.json = a.slice(7);
    else if (a === '--keep') o.keep = true;
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

function exec(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const c = spawn(cmd, args, { env: ENV });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    c.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    c.on('close', (code) => res({ code: code ?? 1, stdout, stderr }));
  });
}

async function must(cmd: string, args: string[]): Promise<string> {
  const r = await exec(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
  return r.stdout;
}

async function timed(cmd: string, args: string[]): Promise<number> {
  const t = process.hrtime.bigint();
  await must(cmd, args);
  return Number(process.hrtime.bigint() - t) / 1e9;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function waitFor(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const end = Date.now() + 20_000;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** one server process per transport (qemu-nbd listens on one address at a time) */
async function startPair(kind: 'vdkit' | 'qemu-nbd', image: string, format: string, dir: string, port: number): Promise<{ servers: ChildProcess[]; unix: string; tcp: string }> {
  const sock = join(dir, `${kind}.sock`);
  const args = (listen: string[]) =>
    kind === 'vdkit' ? [VDKIT, 'serve', '-r', '-q', '--persistent', '-e', '8', ...listen, image] : ['-r', '-t', '-e', '8', '-f', format, ...listen, image];
  const cmd = kind === 'vdkit' ? process.execPath : 'qemu-nbd';
  const a = spawn(cmd, args(['-k', sock]), { stdio: 'ignore' });
  const b = spawn(cmd, args(kind === 'vdkit' ? ['-b', '127.0.0.1', '-p', String(port)] : ['-b', '127.0.0.1', '-p', String(port)]), { stdio: 'ignore' });
  const unix = `nbd+unix:///?socket=${sock}`;
  const tcp = `nbd://127.0.0.1:${port}/`;
  await waitFor(async () => (await exec('nbdinfo', ['--size', unix])).code === 0 && (await exec('nbdinfo', ['--size', tcp])).code === 0, `${kind} to listen`);
  return { servers: [a, b], unix, tcp };
}

const READ_SCRIPT = String.raw`
import os, random, time, nbd
h = nbd.NBD()
h.connect_uri(os.environ['URI'])
size, n, depth = h.get_size(), int(os.environ['READS']), 16
rng = random.Random(1)
state = {'done': 0}
def cb(err):
    state['done'] += 1
    return 1
sent = 0
t = time.monotonic()
while state['done'] < n:
    while sent - state['done'] < depth and sent < n:
        h.aio_pread(nbd.Buffer(4096), rng.randrange(size // 4096) * 4096, completion=cb)
        sent += 1
    h.poll(-1)
print(n / (time.monotonic() - t))
`;

async function peakRss(pid: number): Promise<number> {
  try {
    return Number(/VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
  } catch {
    return 0;
  }
}

interface Row {
  format: string;
  transport: 'unix' | 'tcp';
  test: string;
  vdkit: number;
  qemu: number;
  /** vdkit / qemu-nbd */
  ratio: number;
  unit: string;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const log = (s: string) => (o.json === true ? process.stderr : process.stdout).write(s);
  const dir = await mkdtemp(join(tmpdir(), 'vdkit-bench-nbd-'));
  const rows: Row[] = [];
  const rss: Record<string, number> = {};
  try {
    log(`building a ${o.size / 1024 ** 2} MiB mixed image (seed ${o.seed})...\n`);
    const raw = join(dir, 'mixed.raw');
    await buildMixedRaw(raw, o.size, o.seed);
    let port = 20000 + Math.floor(Math.random() * 20000);
    for (const format of o.formats) {
      const image = join(dir, `mixed.${format}`);
      await must('qemu-img', ['convert', '-f', 'raw', '-O', format, raw, image]);
      const vd = await startPair('vdkit', image, format, dir, port++);
      const qn = await startPair('qemu-nbd', image, format, dir, port++);
      try {
        for (const transport of ['unix', 'tcp'] as const) {
          for (const conns of [1, 4]) {
            const times: Record<string, number[]> = { vdkit: [], qemu: [] };
            for (let r = 0; r < o.rounds; r++) {
              for (const [who, s] of [['vdkit', vd], ['qemu', qn]] as const) {
                const out = join(dir, 'out.raw');
                times[who]!.push(await timed('nbdcopy', [`--connections=${conns}`, s[transport], out]));
                await rm(out, { force: true });
              }
            }
            const v = median(times.vdkit!);
            const q = median(times.qemu!);
            rows.push({ format, transport, test: `nbdcopy -C ${conns}`, vdkit: v, qemu: q, ratio: v / q, unit: 's' });
            log(`${format} ${transport} nbdcopy -C ${conns}: vdkit ${v.toFixed(2)} s, qemu-nbd ${q.toFixed(2)} s, ratio ${(v / q).toFixed(2)}\n`);
          }
          const reads: Record<string, number> = {};
          for (const [who, s] of [['vdkit', vd], ['qemu', qn]] as const) {
            const env = { URI: s[transport], READS: String(o.reads) };
            const r = await new Promise<string>((res, rej) => {
              const c = spawn('nbdsh', ['-c', READ_SCRIPT], { env: { ...ENV, ...env } });
              let out = '';
              c.stdout.on('data', (b: Buffer) => (out += b.toString()));
              c.on('close', (code) => (code === 0 ? res(out) : rej(new Error(`nbdsh exit ${code}`))));
            });
            reads[who] = Number(r.trim());
          }
          rows.push({ format, transport, test: 'random 4K reads QD16', vdkit: reads.vdkit!, qemu: reads.qemu!, ratio: reads.vdkit! / reads.qemu!, unit: 'req/s' });
          log(`${format} ${transport} random 4K QD16: vdkit ${reads.vdkit!.toFixed(0)}/s, qemu-nbd ${reads.qemu!.toFixed(0)}/s, ratio ${(reads.vdkit! / reads.qemu!).toFixed(2)}\n`);
        }
        rss[format] = Math.max(...(await Promise.all(vd.servers.map((s) => peakRss(s.pid!)))));
        log(`${format}: vdkit serve peak RSS ${(rss[format]! / 1024 ** 2).toFixed(0)} MiB\n`);
      } finally {
        for (const s of [...vd.servers, ...qn.servers]) s.kill('SIGTERM');
      }
    }
    const result = { date: new Date().toISOString(), cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version, size: o.size, rounds: o.rounds, reads: o.reads, rows, vdkitPeakRss: rss };
    log('\nformat transport test                  vdkit      qemu-nbd   ratio\n');
    for (const r of rows) log(`${r.format.padEnd(6)} ${r.transport.padEnd(9)} ${r.test.padEnd(21)} ${r.vdkit.toFixed(r.unit === 's' ? 2 : 0).padStart(9)} ${r.qemu.toFixed(r.unit === 's' ? 2 : 0).padStart(9)} ${r.unit.padEnd(5)} ${r.ratio.toFixed(2)}\n`);
    if (o.json === true) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    else if (typeof o.json === 'string') await writeFile(o.json, JSON.stringify(result, null, 2) + '\n');
  } finally {
    if (!o.keep) await rm(dir, { recursive: true, force: true });
    else log(`kept ${dir}\n`);
  }
  void existsSync;
}

await main();
