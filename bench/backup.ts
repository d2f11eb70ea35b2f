/**
 * Benchmark (issue 23): an incremental backup of 1 % changed data on a 4 GiB disk, against the
 * full backup (a full copy). A qcow2 source of `--gib` GiB virtual holds `--data-gib` GiB of
 * incompressible data; after its full backup, `--percent` % of the virtual size is rewritten in
 * 64 KiB pieces at random places (Disk API, so an enabled dirty bitmap records them); then one
 * incremental point by content compare and one by the bitmap. Time and the bytes the process
 * read and wrote (/proc/self/io rchar/wchar: every read and write, page cache included) for each.
 *
 *   npm run bench:backup   (or: npm run build && node dist/bench/backup.js [--gib 4] [--data-gib 1] [--percent 1])
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Disk, backup, bitmap } from '../src/index.js';
import { mulberry32 } from '../test/helpers/prng.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}

async function io(): Promise<{ read: number; written: number }> {
  const t = await readFile('/proc/self/io', 'utf8');
  return { read: Number(/rchar: (\d+)/.exec(t)![1]), written: Number(/wchar: (\d+)/.exec(t)![1]) };
}

async function measured<T>(what: string, fn: () => Promise<T>): Promise<{ what: string; seconds: number; readMiB: number; writtenMiB: number; result: T }> {
  const a = await io();
  const t0 = process.hrtime.bigint();
  const result = await fn();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const b = await io();
  return { what, seconds: Number(seconds.toFixed(2)), readMiB: Number(((b.read - a.read) / MiB).toFixed(1)), writtenMiB: Number(((b.written - a.written) / MiB).toFixed(1)), result };
}

const gib = arg('gib', 4);
const dataGib = arg('data-gib', 1);
const percent = arg('percent', 1);
const dir = await mkdtemp(join(tmpdir(), 'vdkit-bench-backup-'));
try {
  const src = join(dir, 'src.qcow2');
  const capacity = gib * GiB;
  const d = await Disk.create(src, { format: 'qcow2', capacity });
  // the data in 4 MiB runs spread evenly over the disk
  const run = 4 * MiB;
  const runs = Math.floor((dataGib * GiB) / run);
  const stride = Math.floor(capacity / runs / run) * run;
  for (let i = 0; i < runs; i++) await d.write(i * stride, randomBytes(run));
  await d.close();
  await bitmap(src, 'backup', [{ op: 'add' }]);
  const byContent = join(dir, 'bk-content');
  const byBitmap = join(dir, 'bk-bitmap');
  await mkdir(byContent);
  await mkdir(byBitmap);
  const rows = [];
  rows.push(await measured('full backup (the full copy)', () => backup(src, byContent)));
  await backup(src, byBitmap, { changes: { bitmap: 'backup' } });
  await bitmap(src, 'backup', [{ op: 'clear' }]);
  // percent % of the disk rewritten in 64 KiB pieces at random 64 KiB-aligned places
  const rnd = mulberry32(23);
  const piece = 64 * 1024;
  const w = await Disk.open(src);
  const pieces = Math.round((capacity * percent) / 100 / piece);
  for (let i = 0; i < pieces; i++) await w.write(Math.floor(rnd() * (capacity / piece)) * piece, randomBytes(piece));
  await w.close();
  rows.push(await measured(`incremental, content compare (${percent} % changed)`, () => backup(src, byContent)));
  rows.push(await measured(`incremental, --bitmap (${percent} % changed)`, () => backup(src, byBitmap, { changes: { bitmap: 'backup' } })));
  for (const r of rows) {
    const m = r.result.manifest;
    console.log(JSON.stringify({ what: r.what, gib, dataGib, seconds: r.seconds, readMiB: r.readMiB, writtenMiB: r.writtenMiB, changedMiB: Number((m.bytes.changed / MiB).toFixed(1)), pointWrittenMiB: Number((m.bytes.written / MiB).toFixed(1)) }));
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
