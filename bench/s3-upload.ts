/**
 * Benchmark: `vdkit convert SRC s3://... -O vmdk -o subformat=streamOptimized` of a large sparse
 * disk (default 5 GiB virtual, 64 MiB of incompressible data in 16 places) into a local S3
 * (s3rver behind test/helpers/s3.ts's front server), with the CLI's peak RSS (VmHWM from
 * /proc/PID/status) and the parts uploaded. Issue 18's target: memory at most 256 MiB whatever
 * the image size. The 1 GiB version runs in npm test (test/interop/s3.test.ts).
 *
 *   npm run build && node dist/bench/s3-upload.js [--gib 5] [--data-mib 64]
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startLocalS3 } from '../test/helpers/s3.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..');
const MiB = 1024 * 1024;

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}

const gib = arg('gib', 5);
const dataMiB = arg('data-mib', 64);
const dir = await mkdtemp(join(tmpdir(), 'vdkit-bench-s3-'));
const s3 = await startLocalS3(['bench']);
try {
  const src = join(dir, 'sparse.raw');
  const fh = await open(src, 'w');
  const pieces = 16;
  const piece = Math.max(1, Math.floor(dataMiB / pieces)) * MiB;
  const capacity = gib * 1024 * MiB;
  await fh.truncate(capacity);
  for (let i = 0; i < pieces; i++) await fh.write(randomBytes(piece), 0, piece, Math.floor((capacity / pieces) * i));
  await fh.close();
  const started = process.hrtime.bigint();
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'vdkit.js'), 'convert', src, 's3://bench/sparse.vmdk', '-O', 'vmdk', '-o', 'subformat=streamOptimized'], { env: { ...process.env, ...s3.env }, stdio: ['ignore', 'inherit', 'inherit'] });
  let peak = 0;
  const poll = setInterval(async () => {
    const st = await readFile(`/proc/${child.pid}/status`, 'utf8').catch(() => '');
    peak = Math.max(peak, Number(/VmHWM:\s+(\d+) kB/.exec(st)?.[1] ?? 0) * 1024);
  }, 20);
  const code = await new Promise<number | null>((r) => child.on('exit', r));
  clearInterval(poll);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const parts = s3.log.filter((l) => l.includes('x-id=UploadPart')).length;
  const line = { gib, dataMiB: (piece * pieces) / MiB, exit: code, seconds: Number(seconds.toFixed(1)), parts, peakRssMiB: Number((peak / MiB).toFixed(1)), targetMiB: 256, ok: code === 0 && peak < 256 * MiB };
  console.log(JSON.stringify(line));
  if (!line.ok) process.exitCode = 1;
} finally {
  await s3.stop();
  await rm(dir, { recursive: true, force: true });
}
