/**
 * `vdkit backup` / `vdkit restore` (issue 23 items 3-4) against qemu-img:
 * - a scripted week: a full backup of a qcow2 and of a VMDK source, then 5 rounds of random
 *   writes (Disk API) each followed by an incremental backup (content compare; and, for the
 *   qcow2, --bitmap with an enabled bitmap from `vdkit bitmap --add`); every point is clean for
 *   qemu-img check, holds only what changed (qemu-img map of the point's own file), has the
 *   source's checksum of that round, and restores into qcow2, vmdk and vhdx equal (qemu-img
 *   compare) to a copy of the source taken at that round;
 * - backups SIGKILLed at random moments, rerun: the folder ends with the same disk, no leftovers;
 * - leftovers of a kill between rename and manifest are removed; --in-place restore writes only
 *   what changed; a manifest checksum that does not match makes restore exit 1;
 * - differential points are backed by the full one; --chain takes the links above the last top.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, backup, restore, listBackupPoints, type BackupManifest } from '../../src/index.js';
import { checksum } from '../../src/ops/checksum.js';
import { createChild } from '../../src/ops/child.js';
import { repoRoot, run, skipUnless, tmpDir } from '../helpers/tools.js';
import { Rng } from '../helpers/prng.js';

const MiB = 1024 * 1024;
const UNIT = 64 * 1024;
const vdkitBin = () => join(repoRoot(), 'bin', 'vdkit.js');

async function ok(cmd: string, args: readonly string[], cwd?: string): Promise<string> {
  const r = await run(cmd, args, { cwd });
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')} failed (${r.code}): ${r.stdout}${r.stderr}`);
  return r.stdout;
}
const vdkit = (args: readonly string[], cwd?: string) => ok(process.execPath, [vdkitBin(), ...args], cwd);

async function sumOf(path: string): Promise<string> {
  const d = await Disk.open(path, { readOnly: true });
  try {
    return await checksum(d);
  } finally {
    await d.close();
  }
}

/** a round of random writes: data runs and zero runs, some across cluster edges; the 64 KiB units touched */
async function writeRound(path: string, rng: Rng, count: number): Promise<Set<number>> {
  const d = await Disk.open(path);
  const touched = new Set<number>();
  try {
    for (let i = 0; i < count; i++) {
      const len = rng.int(1, 96) * 1024;
      const at = rng.int(0, (d.capacity - len) / 512) * 512;
      const buf = rng.int(0, 4) === 0 ? Buffer.alloc(len) : Buffer.alloc(len, rng.int(1, 255));
      await d.write(at, buf);
      for (let u = Math.floor(at / UNIT); u <= Math.floor((at + len - 1) / UNIT); u++) touched.add(u);
    }
    await d.flush();
  } finally {
    await d.close();
  }
  return touched;
}

interface MapRow {
  start: number;
  length: number;
  depth: number;
  data: boolean;
  zero: boolean;
}
/** bytes the point's own file stores (data or zero clusters) */
async function ownBytes(point: string): Promise<number> {
  const rows = JSON.parse(await ok('qemu-img', ['map', '--output=json', point])) as MapRow[];
  return rows.filter((r) => r.depth === 0 && (r.data || r.zero)).reduce((n, r) => n + r.length, 0);
}

test('a scripted week: full + 5 incremental backups of qcow2 (content and --bitmap) and vmdk sources, every point checked and restored', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const rng = new Rng(2323);
  const q = join(dir, 'src.qcow2');
  const v = join(dir, 'src.vmdk');
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', q, '24M']);
  await ok('qemu-img', ['create', '-q', '-f', 'vmdk', v, '24M']);
  await vdkit(['bitmap', '--add', q, 'daily']);
  const sources = [
    { name: 'qcow2-content', src: q, folder: join(dir, 'bk-qc'), bitmap: undefined as string | undefined },
    { name: 'qcow2-bitmap', src: q, folder: join(dir, 'bk-qb'), bitmap: 'daily' },
    { name: 'vmdk-content', src: v, folder: join(dir, 'bk-v'), bitmap: undefined },
  ];
  /** per folder, per round: the source copy and its checksum */
  for (const s of sources) await mkdir(s.folder);
  const copies = new Map<string, { copy: string; sum: string }[]>(sources.map((s) => [s.name, []]));
  for (let round = 0; round <= 5; round++) {
    const touched = new Map<string, Set<number>>();
    // round 0 fills the disks before the full backup; later rounds change about 3 %
    for (const src of [q, v]) touched.set(src, await writeRound(src, rng, round === 0 ? 40 : 8));
    for (const s of sources) {
      const before = copies.get(s.name)!;
      const copy = join(dir, `${s.name}-r${round}${s.src.endsWith('.vmdk') ? '.vmdk' : '.qcow2'}`);
      if (s.bitmap === undefined) await copyFile(s.src, copy);
      const sum = await sumOf(s.src);
      let m: BackupManifest;
      if (s.bitmap !== undefined) {
        // the CLI, whose bitmap clear needs the source closed
        await vdkit(['backup', s.src, s.folder, '--bitmap', s.bitmap, '--json']);
        const all = await listBackupPoints((await import('../../src/storage/file.js')).hostFiles(), s.folder);
        m = all[all.length - 1]!;
        // the bitmap was cleared once the point was committed
        assert.equal((await vdkit(['changed', '--bitmap', s.bitmap, s.src])).trim(), '# 0 range(s), 0 bytes', `${s.name} round ${round}: bitmap cleared`);
      } else m = (await backup(s.src, s.folder)).manifest;
      before.push({ copy: s.bitmap === undefined ? copy : join(dir, `qcow2-content-r${round}.qcow2`), sum });
      assert.equal(m.point, round, `${s.name}: point number`);
      assert.equal(m.kind, round === 0 ? 'full' : 'incr');
      assert.equal(m.checksum, sum, `${s.name} round ${round}: the point's checksum is the source's`);
      assert.equal(m.source.size, 24 * MiB);
      const pointFile = join(s.folder, m.file);
      const check = await run('qemu-img', ['check', pointFile]);
      assert.equal(check.code, 0, `qemu-img check ${m.file} (${s.name}): ${check.stdout}${check.stderr}`);
      if (round > 0) {
        const own = await ownBytes(pointFile);
        const units = touched.get(s.src)!.size * UNIT;
        // the point stores whole clusters that differ from the point below: no more than the
        // units the round wrote, and for content mode exactly what the compare found
        assert.ok(own <= units, `${s.name} round ${round}: the increment stores ${own} bytes, the round touched ${units}`);
        assert.ok(own > 0, `${s.name} round ${round}: the increment stores the changes`);
        if (s.bitmap === undefined) assert.equal(own, m.bytes.changed, `${s.name} round ${round}: stored = changed`);
        else assert.ok(m.bytes.changed >= own && m.bytes.changed <= units, `${s.name} round ${round}: the bitmap marks ${m.bytes.changed}, stored ${own}, touched ${units}`);
        const info = JSON.parse(await ok('qemu-img', ['info', '--output=json', pointFile])) as { 'backing-filename'?: string };
        assert.equal(info['backing-filename'], `${String(round - 1).padStart(4, '0')}-${round === 1 ? 'full' : 'incr'}.qcow2`);
      }
    }
  }
  // every point of every folder, into every format, equals the source as it was
  for (const s of sources) {
    const rounds = copies.get(s.name)!;
    for (let p = 0; p <= 5; p++) {
      for (const fmt of ['qcow2', 'vmdk', 'vhdx']) {
        const out = join(dir, `restore-${s.name}-${p}.${fmt}`);
        const r = await restore(s.folder, out, { point: p, format: fmt });
        assert.equal(r.checksum, rounds[p]!.sum);
        const cmp = await run('qemu-img', ['compare', '-f', fmt, out, rounds[p]!.copy]);
        assert.equal(cmp.code, 0, `${s.name} point ${p} as ${fmt}: ${cmp.stdout}${cmp.stderr}`);
      }
    }
  }
  // the CLI: by time, and the default (last) point into a vmdk
  const pts = await listBackupPoints((await import('../../src/storage/file.js')).hostFiles(), join(dir, 'bk-qc'));
  const byTime = join(dir, 'by-time.qcow2');
  await vdkit(['restore', join(dir, 'bk-qc'), '--point', pts[3]!.time, byTime]);
  assert.equal(await sumOf(byTime), copies.get('qcow2-content')![3]!.sum);
  const last = join(dir, 'last.vmdk');
  const said = await vdkit(['restore', join(dir, 'bk-v'), last, '-O', 'vmdk']);
  assert.match(said, /restored point 5 .*checksum verified/);
  await ok('qemu-img', ['compare', last, v]);
});

/** start `vdkit backup`, SIGKILL it after `ms`; whether it was killed before it finished */
function killedAfter(args: readonly string[], ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [vdkitBin(), ...args], { stdio: 'ignore' });
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(signal === 'SIGKILL');
    });
  });
}

test('a backup SIGKILLed at random moments and rerun ends with the same points as one never killed, and no leftovers', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const rng = new Rng(777);
  const src = join(dir, 'src.qcow2');
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', src, '64M']);
  await ok('qemu-io', ['-c', 'write -P 7 0 40M', src]);
  const folder = join(dir, 'bk');
  let kills = 0;
  for (let trial = 0; trial < 4; trial++) {
    // new content in most of the disk, so the increment takes a while to compare and copy
    await ok('qemu-io', ['-c', `write -P ${20 + trial} ${trial}M 24M`, src]);
    const want = await sumOf(src);
    const before = (await listBackupPoints((await import('../../src/storage/file.js')).hostFiles(), folder).catch(() => [])).length;
    if (await killedAfter(['backup', src, folder], rng.int(150, 1500))) kills++;
    // the rerun finishes what was killed (or, when the kill came too late, adds an empty point)
    await vdkit(['backup', src, folder]);
    const points = await listBackupPoints((await import('../../src/storage/file.js')).hostFiles(), folder);
    assert.ok(points.length === before + 1 || points.length === before + 2, `trial ${trial}: ${points.length} points after ${before}`);
    const top = points[points.length - 1]!;
    assert.equal(top.checksum, want, `trial ${trial}: the last point is the source`);
    for (const p of points) {
      const c = await run('qemu-img', ['check', join(folder, p.file)]);
      assert.equal(c.code, 0, `trial ${trial}: qemu-img check ${p.file}: ${c.stdout}${c.stderr}`);
    }
    const names = await readdir(folder);
    const stray = names.filter((n) => !/^\d{4}-(full|incr)\.(qcow2|json|sums)$/.test(n));
    assert.deepEqual(stray, [], `trial ${trial}: leftovers`);
    assert.equal(names.length, points.length * 3, `trial ${trial}: every file belongs to a committed point`);
    const out = join(dir, `r${trial}.qcow2`);
    await restore(folder, out);
    await ok('qemu-img', ['compare', out, src]);
  }
  t.diagnostic(`${kills} of 4 backups were killed before they finished`);
  assert.ok(kills > 0, 'no backup was killed midway: the kill delays are too long for this machine');
});

test('leftovers of a kill after the rename but before the manifest are removed and the point redone', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const src = join(dir, 'src.qcow2');
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', src, '8M']);
  await ok('qemu-io', ['-c', 'write -P 1 0 2M', src]);
  const folder = join(dir, 'bk');
  await vdkit(['backup', src, folder]);
  await ok('qemu-io', ['-c', 'write -P 2 1M 2M', src]);
  // what a run killed at each step leaves: the point renamed but no manifest, its sums, the
  // manifest's temporary, a hidden partial of a process that no longer runs, its lock
  const dead = await new Promise<number>((resolve) => {
    const c = spawn(process.execPath, ['-e', '0']);
    c.on('exit', () => resolve(c.pid!));
  });
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', '0000-full.qcow2', '-F', 'qcow2', join(folder, '0001-incr.qcow2')]);
  await writeFile(join(folder, '0001-incr.sums'), 'x');
  await writeFile(join(folder, `0001-incr.json.vdkit-tmp-${dead}`), '{');
  await writeFile(join(folder, `.0001-incr.vdkit-partial-${dead}.qcow2`), 'x');
  await writeFile(join(folder, '.vdkit-backup.lock'), `${dead}\n`);
  const r = await backup(src, folder);
  assert.deepEqual([...r.removed].sort(), [`.0001-incr.vdkit-partial-${dead}.qcow2`, `0001-incr.json.vdkit-tmp-${dead}`, '0001-incr.qcow2', '0001-incr.sums'].sort());
  assert.equal(r.manifest.point, 1);
  assert.equal(r.manifest.checksum, await sumOf(src));
  assert.deepEqual((await readdir(folder)).sort(), ['0000-full.json', '0000-full.qcow2', '0000-full.sums', '0001-incr.json', '0001-incr.qcow2', '0001-incr.sums']);
  // a lock of a running process is respected
  await writeFile(join(folder, '.vdkit-backup.lock'), `${process.pid === 1 ? 2 : 1}\n`);
  await assert.rejects(backup(src, folder), /another backup/);
});

test('restore --in-place writes only what changed since the point the target holds; a checksum mismatch exits 1', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const src = join(dir, 'src.qcow2');
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', src, '16M']);
  await ok('qemu-io', ['-c', 'write -P 1 0 8M', src]);
  const folder = join(dir, 'bk');
  await vdkit(['backup', src, folder]);
  await ok('qemu-io', ['-c', 'write -P 2 1M 128k', '-c', 'write -z 4M 64k', src]);
  await vdkit(['backup', src, folder]);
  await ok('qemu-io', ['-c', 'write -P 3 12M 64k', src]);
  await vdkit(['backup', src, folder]);
  const target = join(dir, 'vm.vmdk');
  await vdkit(['restore', folder, '--point', '0', target, '-O', 'vmdk']);
  const j = JSON.parse(await vdkit(['restore', folder, target, '--in-place', '--json'])) as { point: number; from: number; bytesWritten: number; verified: boolean };
  assert.equal(j.point, 2);
  assert.equal(j.from, 0);
  // 128 KiB of data, 64 KiB zeroed over data, 64 KiB more data
  assert.equal(j.bytesWritten, 256 * 1024);
  await ok('qemu-img', ['compare', target, src]);
  // already there: nothing written
  const again = JSON.parse(await vdkit(['restore', folder, target, '--in-place', '--json'])) as { bytesWritten: number; from: number };
  assert.deepEqual([again.from, again.bytesWritten], [2, 0]);
  // a target that holds no point is refused
  const other = join(dir, 'other.qcow2');
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', other, '16M']);
  const no = await run(process.execPath, [vdkitBin(), 'restore', folder, other, '--in-place']);
  assert.equal(no.code, 1, no.stderr);
  assert.match(no.stderr, /holds none of the backup points/);
  // a manifest whose checksum the point does not have: restore says so and exits 1
  const mf = join(folder, '0001-incr.json');
  const m = JSON.parse(await readFile(mf, 'utf8')) as BackupManifest;
  await writeFile(mf, JSON.stringify({ ...m, checksum: `sha256-1m:${'0'.repeat(64)}` }));
  const bad = await run(process.execPath, [vdkitBin(), 'restore', folder, '--point', '1', join(dir, 'bad.qcow2')]);
  assert.equal(bad.code, 1, bad.stdout + bad.stderr);
  assert.match(bad.stderr, /does not match backup point 1/);
});

test('differential points are backed by the full one; --chain takes what the links above the last top hold', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const src = join(dir, 'src.qcow2');
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', src, '8M']);
  await ok('qemu-io', ['-c', 'write -P 1 0 4M', src]);
  const folder = join(dir, 'bk');
  await mkdir(folder);
  await backup(src, folder, { mode: 'differential' });
  await ok('qemu-io', ['-c', 'write -P 2 0 64k', src]);
  const d1 = (await backup(src, folder, { mode: 'differential' })).manifest;
  await ok('qemu-io', ['-c', 'write -P 3 1M 64k', src]);
  const d2 = (await backup(src, folder, { mode: 'differential' })).manifest;
  assert.deepEqual([d1.kind, d1.parent, d2.kind, d2.parent], ['diff', 0, 'diff', 0]);
  assert.deepEqual(d2.ranges, [{ offset: 0, length: 65536 }, { offset: MiB, length: 65536 }]);
  const info = JSON.parse(await ok('qemu-img', ['info', '--output=json', join(folder, d2.file)])) as { 'backing-filename': string };
  assert.equal(info['backing-filename'], '0000-full.qcow2');
  await restore(folder, join(dir, 'd2.qcow2'));
  await ok('qemu-img', ['compare', join(dir, 'd2.qcow2'), src]);

  // --chain: base <- s1 (top at the full backup), then s2 over it
  const base = join(dir, 'base.vmdk');
  await ok('qemu-img', ['create', '-q', '-f', 'vmdk', base, '8M']);
  await writeRound(base, new Rng(5), 10);
  const s1 = join(dir, 'base-000001.vmdk');
  await (await createChild(base, s1)).close();
  await writeRound(s1, new Rng(6), 4);
  const cf = join(dir, 'bk-chain');
  await vdkit(['backup', s1, cf, '--chain']);
  const s2 = join(dir, 'base-000002.vmdk');
  await (await createChild(s1, s2)).close();
  const touched = await writeRound(s2, new Rng(7), 3);
  const out = JSON.parse(await vdkit(['backup', s2, cf, '--chain', '--json'])) as BackupManifest;
  assert.equal(out.changedBy, 'chain');
  const map = JSON.parse(await ok('qemu-img', ['map', '--output=json', s2])) as MapRow[];
  const own = map.filter((r) => r.depth === 0).reduce((n, r) => n + r.length, 0);
  assert.equal(out.bytes.changed, own, 'the ranges are what the new top link stores');
  assert.ok(own <= touched.size * UNIT);
  assert.equal(out.checksum, await sumOf(s2));
  await restore(cf, join(dir, 'chain.vhdx'), { format: 'vhdx' });
  await ok('qemu-img', ['compare', join(dir, 'chain.vhdx'), s2]);
});

test('a backup of an NBD export (vdkit serve): content increments, the manifest names the URL without its query', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const { startServer, unixUri } = await import('./nbd-support.js');
  const dir = (await tmpDir(t)).path;
  const src = join(dir, 'src.qcow2');
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', src, '8M']);
  await ok('qemu-io', ['-c', 'write -P 1 0 3M', src]);
  const folder = join(dir, 'bk');
  for (let round = 0; round < 2; round++) {
    if (round > 0) await ok('qemu-io', ['-c', 'write -P 9 2M 128k', src]);
    const server = await startServer(t, { images: [src], listen: { socket: join(dir, `s${round}.sock`) }, readOnly: true });
    const uri = unixUri(server);
    const m = JSON.parse(await vdkit(['backup', uri, folder, '--json'])) as BackupManifest;
    await server.close();
    assert.equal(m.source.name, 'nbd+unix:///', 'no ?socket= (a query may name key files)');
    assert.equal(m.source.format, 'raw');
    assert.equal(m.checksum, await sumOf(src));
    if (round > 0) assert.deepEqual(m.ranges, [{ offset: 2 * MiB, length: 128 * 1024 }]);
  }
  await restore(folder, join(dir, 'out.qcow2'));
  await ok('qemu-img', ['compare', join(dir, 'out.qcow2'), src]);
});
