/**
 * qcow2 persistent dirty bitmaps against QEMU 7.2, and `vdkit changed` against qemu-img:
 * - bitmaps qemu-img bitmap made and qemu-io writes updated are read exactly (info's bitmap list;
 *   nbdinfo --map=qemu:dirty-bitmap:NAME of `vdkit serve -B` equals that of `qemu-nbd -B`);
 * - bitmaps vdkit makes and updates (add, writes, disable, merge, clear, remove) are read by
 *   qemu-img info and check (clean) and exported by qemu-nbd exactly as by vdkit serve;
 * - a bitmap left in_use (qemu-io killed) is reported inconsistent, as qemu-img info shows it;
 * - `vdkit changed` equals qemu-img map of the child and qemu-img compare's first difference.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot, run, skipUnless, tmpDir } from '../helpers/tools.js';

const vdkitBin = () => join(repoRoot(), 'bin', 'vdkit.js');
const MiB = 1024 * 1024;

async function ok(cmd: string, args: readonly string[], cwd?: string): Promise<string> {
  const r = await run(cmd, args, { cwd });
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}
const vdkit = (args: readonly string[], cwd?: string) => ok(process.execPath, [vdkitBin(), ...args], cwd);

interface BitmapRow {
  name: string;
  granularity: number;
  flags: string[];
}

async function qemuBitmaps(img: string): Promise<BitmapRow[] | undefined> {
  const j = JSON.parse(await ok('qemu-img', ['info', '-U', '--output=json', img])) as { 'format-specific': { data: { bitmaps?: BitmapRow[] } } };
  return j['format-specific'].data.bitmaps;
}
async function vdkitBitmaps(img: string): Promise<BitmapRow[] | undefined> {
  const j = JSON.parse(await vdkit(['info', '--output=json', img])) as { 'format-specific': { data: { bitmaps?: BitmapRow[] } } };
  return j['format-specific'].data.bitmaps;
}

/** nbdinfo --map of a bitmap: through qemu-nbd (socket activation) and through vdkit serve */
async function maps(img: string, name: string): Promise<{ qemu: string; vdkit: string }> {
  const ctx = `--map=qemu:dirty-bitmap:${name}`;
  const qemu = await ok('nbdinfo', [ctx, '--', '[', 'qemu-nbd', '-r', '-B', name, '-f', 'qcow2', img, ']']);
  const mine = await ok('nbdinfo', [ctx, '--', '[', process.execPath, vdkitBin(), 'serve', '-r', '-B', name, img, ']']);
  return { qemu, vdkit: mine };
}

/** the dirty ranges of an nbdinfo --map listing */
function dirtyOf(map: string): { offset: number; length: number }[] {
  const out: { offset: number; length: number }[] = [];
  for (const line of map.trim().split('\n')) {
    const [off, len, status] = line.trim().split(/\s+/).map(Number);
    if (status !== 1) continue;
    const last = out[out.length - 1];
    if (last && last.offset + last.length === off) last.length += len!;
    else out.push({ offset: off!, length: len! });
  }
  return out;
}

async function checkClean(img: string): Promise<void> {
  const r = await run('qemu-img', ['check', img]);
  assert.equal(r.code, 0, `qemu-img check ${img}: ${r.stdout}${r.stderr}`);
  const mine = await run(process.execPath, [vdkitBin(), 'check', img]);
  assert.equal(mine.code, 0, `vdkit check ${img}: ${mine.stdout}${mine.stderr}`);
}

async function sameEverywhere(img: string, names: readonly string[]): Promise<void> {
  assert.deepEqual(await vdkitBitmaps(img), await qemuBitmaps(img), 'info bitmap list');
  for (const n of names) {
    const m = await maps(img, n);
    assert.equal(m.vdkit, m.qemu, `nbdinfo --map of bitmap ${n}`);
    const changed = JSON.parse(await vdkit(['changed', '--json', '--bitmap', n, img])) as unknown;
    assert.deepEqual(changed, dirtyOf(m.qemu), `vdkit changed --bitmap ${n}`);
  }
}

test('bitmaps made by qemu-img bitmap and updated by qemu-io writes are read exactly', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo')) return;
  const dir = (await tmpDir(t)).path;
  const img = join(dir, 'q.qcow2');
  await ok('qemu-img', ['create', '-f', 'qcow2', img, '64M']);
  await ok('qemu-img', ['bitmap', '--add', img, 'b0']);
  await ok('qemu-img', ['bitmap', '--add', '-g', '512', img, 'fine']);
  await ok('qemu-img', ['bitmap', '--add', '-g', '1M', img, 'coarse']);
  await ok('qemu-img', ['bitmap', '--add', img, 'off']);
  await ok('qemu-img', ['bitmap', '--disable', img, 'off']);
  await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 1000 70000', '-c', 'write -P 2 40M 3M', '-c', 'write -z 63M 4096', '-c', 'discard 41M 64k', img]);
  const bm = await qemuBitmaps(img);
  assert.equal(bm?.length, 4);
  await sameEverywhere(img, ['b0', 'fine', 'coarse', 'off']);
  assert.deepEqual(JSON.parse(await vdkit(['changed', '--json', '--bitmap', 'off', img])), [], 'a disabled bitmap records nothing');
  const fine = JSON.parse(await vdkit(['changed', '--json', '--bitmap', 'fine', img])) as { offset: number; length: number }[];
  assert.deepEqual(fine[0], { offset: 512, length: 70656 }, '512-byte granules around bytes 1000..71000');
});

test('bitmaps vdkit makes and updates are read by qemu-img and qemu-nbd as vdkit reads them', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo')) return;
  const dir = (await tmpDir(t)).path;
  const img = join(dir, 'v.qcow2');
  const data = join(dir, 'data.bin');
  const bytes = Buffer.alloc(200_000);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + 3) & 0xff;
  const fh = await openFile(data, 'w');
  await fh.writeFile(bytes);
  await fh.close();
  await vdkit(['create', '-f', 'qcow2', img, '96M']);
  await vdkit(['bitmap', '--add', img, 'b0']);
  await vdkit(['bitmap', '--add', '-g', '4096', img, 'small']);
  await vdkit(['bitmap', '--add', '--disable', img, 'merged']);
  await checkClean(img);
  await sameEverywhere(img, ['b0', 'small', 'merged']);
  assert.deepEqual(await qemuBitmaps(img), [
    { flags: ['auto'], name: 'b0', granularity: 65536 },
    { flags: ['auto'], name: 'small', granularity: 4096 },
    { flags: [], name: 'merged', granularity: 65536 },
  ]);
  // vdkit's own writes are recorded in the enabled bitmaps
  await vdkit(['write', '--offset', '5000', '--input', data, img]);
  await vdkit(['write', '--offset', String(70 * MiB + 123), '--input', data, img]);
  await checkClean(img);
  await sameEverywhere(img, ['b0', 'small', 'merged']);
  assert.deepEqual(JSON.parse(await vdkit(['changed', '--json', '--bitmap', 'small', img])), [
    { offset: 4096, length: 204800 },
    { offset: 70 * MiB, length: 200704 },
  ]);
  await vdkit(['bitmap', '--disable', img, 'b0']);
  await vdkit(['write', '--offset', String(30 * MiB), '--input', data, img]);
  await vdkit(['bitmap', '--merge', 'small', img, 'merged']);
  await checkClean(img);
  await sameEverywhere(img, ['b0', 'small', 'merged']);
  // a merge from another image's bitmap (-b), then qemu-io writes into vdkit's bitmaps
  const other = join(dir, 'o.qcow2');
  await ok('qemu-img', ['create', '-f', 'qcow2', other, '96M']);
  await ok('qemu-img', ['bitmap', '--add', other, 'x']);
  await ok('qemu-io', ['-f', 'qcow2', '-c', 'write 90M 64k', other]);
  await vdkit(['bitmap', '--merge', 'x', '-b', other, img, 'b0']);
  await ok('qemu-io', ['-f', 'qcow2', '-c', 'write 50M 4k', img]);
  await sameEverywhere(img, ['b0', 'small', 'merged']);
  await vdkit(['bitmap', '--clear', img, 'small']);
  await vdkit(['bitmap', '--remove', img, 'b0']);
  await checkClean(img);
  await sameEverywhere(img, ['small', 'merged']);
  await vdkit(['bitmap', '--remove', img, 'small']);
  await vdkit(['bitmap', '--remove', img, 'merged']);
  await checkClean(img);
  assert.equal(await qemuBitmaps(img), undefined, 'the last removal drops the extension');
  // what qemu-img check counts: no leaks after all that
  const c = JSON.parse(await ok('qemu-img', ['check', '--output=json', img])) as { leaks?: number };
  assert.equal(c.leaks ?? 0, 0);
});

test('a bitmap left in_use by a killed writer is reported inconsistent; only remove works', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const img = join(dir, 'k.qcow2');
  await ok('qemu-img', ['create', '-f', 'qcow2', img, '16M']);
  await ok('qemu-img', ['bitmap', '--add', img, 'b0']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write 0 64k', '-c', 'sigraise 9', img]);
  const q = await qemuBitmaps(img);
  assert.deepEqual(q, [{ flags: ['in-use', 'auto'], name: 'b0', granularity: 65536 }]);
  assert.deepEqual(await vdkitBitmaps(img), q);
  const cleared = await run(process.execPath, [vdkitBin(), 'bitmap', '--clear', img, 'b0']);
  assert.notEqual(cleared.code, 0);
  assert.match(cleared.stderr, /inconsistent/);
  const ranges = await run(process.execPath, [vdkitBin(), 'changed', '--bitmap', 'b0', img]);
  assert.notEqual(ranges.code, 0, 'an inconsistent bitmap is not reported as if valid');
  // vdkit writing to the image leaves the inconsistent bitmap as it is
  const small = join(dir, 's.bin');
  await (await openFile(small, 'w')).close();
  await run('truncate', ['-s', '4096', small]);
  await vdkit(['write', '--offset', '0', '--input', small, img]);
  await ok('qemu-io', ['-f', 'qcow2', '-c', 'write 1M 4k', img]);
  assert.deepEqual(await qemuBitmaps(img), q);
  await vdkit(['bitmap', '--remove', img, 'b0']);
  await checkClean(img);
  assert.equal(await qemuBitmaps(img), undefined);
});

test('a vdkit writer killed after its first write leaves the bitmap in_use, as qemu would', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const img = join(dir, 'w.qcow2');
  await vdkit(['create', '-f', 'qcow2', img, '16M']);
  await vdkit(['bitmap', '--add', img, 'b0']);
  const { Disk } = await import('../../src/disk.js');
  const d = await Disk.open(img, {});
  await d.write(0, Buffer.alloc(4096, 1));
  // not closed: what a kill leaves on disk
  assert.deepEqual(await qemuBitmaps(img), [{ flags: ['in-use', 'auto'], name: 'b0', granularity: 65536 }]);
  await d.close();
  assert.deepEqual(await qemuBitmaps(img), [{ flags: ['auto'], name: 'b0', granularity: 65536 }]);
  await checkClean(img);
});

test('a bitmap-unaware writer (autoclear bit 0 cleared) makes the bitmaps ignored, their clusters leaks', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const img = join(dir, 'a.qcow2');
  await ok('qemu-img', ['create', '-f', 'qcow2', img, '16M']);
  await ok('qemu-img', ['bitmap', '--add', img, 'b0']);
  const f = await openFile(img, 'r+');
  const b = Buffer.alloc(8);
  await f.read(b, 0, 8, 88); // autoclear_features
  b[7]! &= ~1;
  await f.write(b, 0, 8, 88);
  await f.close();
  assert.equal(await vdkitBitmaps(img), undefined);
  const r = await run(process.execPath, [vdkitBin(), 'check', '--json', img]);
  assert.equal(r.code, 3, `leaks only: ${r.stdout}`);
  const q = await run('qemu-img', ['check', img]);
  assert.equal(q.code, 3, 'qemu-img check also sees leaks');
});

/** qemu-img map's present ranges (depth below `depth`), merged */
function present(map: { start: number; length: number; depth: number; present: boolean }[], depth = Infinity): { offset: number; length: number }[] {
  const out: { offset: number; length: number }[] = [];
  for (const e of map) {
    if (!e.present || e.depth >= depth) continue;
    const last = out[out.length - 1];
    if (last && last.offset + last.length === e.start) last.length += e.length;
    else out.push({ offset: e.start, length: e.length });
  }
  return out;
}

for (const format of ['qcow2', 'vmdk', 'vhd'] as const) {
  test(`vdkit changed on a ${format} chain equals the child's map and qemu-img compare's differences`, async (t) => {
    if (!skipUnless(t, 'qemu-img')) return;
    const dir = (await tmpDir(t)).path;
    const base = join(dir, `base.${format}`);
    const child = join(dir, `child.${format}`);
    const bytes = Buffer.alloc(300_000, 0x5a);
    const data = join(dir, 'd.bin');
    const f = await openFile(data, 'w');
    await f.writeFile(bytes);
    await f.close();
    await vdkit(['create', '-f', format, base, '32M']);
    await vdkit(['write', '--offset', '0', '--input', data, base]);
    await vdkit(['write', '--offset', String(20 * MiB), '--input', data, base]);
    await vdkit(['child', base, child]);
    await vdkit(['write', '--offset', String(100_000), '--input', data, child]);
    await vdkit(['write', '--offset', String(9 * MiB + 7), '--input', data, child]);
    const sinceLink = JSON.parse(await vdkit(['changed', '--json', '--since-link', '1', child])) as unknown;
    const sinceBase = JSON.parse(await vdkit(['changed', '--json', '--since', base, child])) as unknown;
    assert.deepEqual(sinceBase, sinceLink, 'an older link of the chain: answered from allocation');
    // vdkit's own map (qemu-style output marks a VHD's unallocated ranges present, as qemu-img does)
    const native = JSON.parse(await vdkit(['map', '--json', child])) as { offset: number; length: number; state: string; depth?: number }[];
    const vmap = native.map((e) => ({ start: e.offset, length: e.length, depth: e.depth ?? 0, present: e.state !== 'unallocated' }));
    assert.deepEqual(sinceLink, present(vmap, 1), "what the child's link stores");
    const all = JSON.parse(await vdkit(['changed', '--json', '--since', '*', child])) as unknown;
    assert.deepEqual(all, present(vmap), "'*': every allocated range");
    if (format !== 'vhd') {
      // qemu reads these chains itself (it cannot open differencing VHDs)
      const qmap = JSON.parse(await ok('qemu-img', ['map', '--output=json', child])) as Parameters<typeof present>[0];
      assert.deepEqual(sinceLink, present(qmap, 1), 'qemu-img map of the child');
      assert.deepEqual(all, present(qmap), "'*' equals qemu-img map's allocation");
    }
    // by content against a copy of the base that is not in the chain
    const copy = join(dir, 'base.raw');
    await vdkit(['convert', '-O', 'raw', base, copy]);
    const flat = join(dir, 'child.raw');
    await vdkit(['convert', '-O', 'raw', child, flat]);
    const diff = JSON.parse(await vdkit(['changed', '--json', '--since', copy, child])) as { offset: number; length: number }[];
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', copy, flat]);
    assert.equal(cmp.code, 1);
    const at = Number(/offset (\d+)/.exec(cmp.stdout)![1]);
    assert.equal(diff[0]!.offset, Math.floor(at / 512) * 512, "the first changed sector holds qemu-img compare's first difference");
    // the content differences lie inside what the child stores, and exactly where bytes differ
    assert.deepEqual(diff, [
      { offset: 299_520, length: 100_864 }, // 0x5a over the base's 0x5a up to 300000, zeros after: 300000..400000
      { offset: 9 * MiB, length: 300_032 },
    ]);
    const flatQ = join(dir, 'child2.raw');
    await ok('qemu-img', ['convert', '-O', 'raw', '-f', 'raw', flat, flatQ]);
    assert.deepEqual(JSON.parse(await vdkit(['changed', '--json', '--since', copy, flatQ])), diff, 'two raw images, no chain: the same ranges');
  });
}
