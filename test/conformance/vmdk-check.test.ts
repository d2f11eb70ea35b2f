import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, checkDisk, resize } from '../../src/index.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;

async function image(dir: string, type = 'monolithicSparse'): Promise<string> {
  const p = join(dir, 'c.vmdk');
  const d = await Disk.create(p, { type, capacity: 64 * MiB });
  for (let i = 0; i < 6; i++) await d.write(i * 3 * 65536 + 100, Buffer.alloc(5000, i + 1));
  await d.close();
  return p;
}

async function header(p: string): Promise<{ gd: number; rgd: number }> {
  const fh = await open(p, 'r');
  const b = Buffer.alloc(512);
  await fh.read(b, 0, 512, 0);
  await fh.close();
  return { gd: Number(b.readBigUInt64LE(56)), rgd: Number(b.readBigUInt64LE(48)) };
}

async function u32At(p: string, at: number): Promise<number> {
  const fh = await open(p, 'r');
  const b = Buffer.alloc(4);
  await fh.read(b, 0, 4, at);
  await fh.close();
  return b.readUInt32LE(0);
}

async function poke(p: string, at: number, data: Buffer): Promise<void> {
  const fh = await open(p, 'r+');
  await fh.write(data, 0, data.length, at);
  await fh.close();
}

async function check(p: string, repair = false) {
  const d = await Disk.open(p, { readOnly: !repair, singleLink: true, cowByCaller: true });
  try {
    return await d.image.maintenance().check!({ repair });
  } finally {
    await d.close();
  }
}

test('vmdk check: a clean image has no findings', async (t) => {
  const p = await image((await tmpDir(t)).path);
  const r = await check(p);
  assert.deepEqual(r.findings, []);
  assert.equal(r.leakedBytes, 0);
});

test('vmdk check: a redundant grain table that differs is a corruption, repaired from the primary', async (t) => {
  const p = await image((await tmpDir(t)).path);
  const { rgd } = await header(p);
  const rgt0 = await u32At(p, rgd * 512);
  await poke(p, rgt0 * 512 + 8, Buffer.from([9, 9, 9, 9]));
  const r = await check(p);
  assert.equal(r.findings.length, 1);
  assert.equal(r.findings[0]!.kind, 'corruption');
  assert.equal(r.findings[0]!.field, 'RGT[0]');
  const fixed = await check(p, true);
  assert.equal(fixed.findings[0]!.repaired, true);
  assert.deepEqual((await check(p)).findings, []);
});

test('vmdk check -r: a primary grain table of garbage beside an intact redundant copy is restored from the copy, not copied over it', async (t) => {
  const p = await image((await tmpDir(t)).path);
  const d0 = await Disk.open(p, { readOnly: true });
  const before = await d0.read(0, 2 * MiB);
  await d0.close();
  const { gd } = await header(p);
  const gt0 = await u32At(p, gd * 512);
  // the first 64 entries (grains 0..63, all the data) overwritten with junk past the end of the file
  await poke(p, gt0 * 512, Buffer.alloc(256, 0x7f));
  const r = await checkDisk(p, { repair: false });
  assert.ok(r.findings.some((f) => f.kind === 'corruption' && /outside the grain area/.test(f.message)), JSON.stringify(r.findings));
  const fixed = await checkDisk(p, { repair: true });
  assert.ok(fixed.findings.some((f) => f.field === 'GT[0]' && f.repaired), JSON.stringify(fixed.findings));
  assert.deepEqual((await checkDisk(p, { repair: false })).findings, [], 'clean after the repair');
  const d = await Disk.open(p, { readOnly: true });
  assert.ok((await d.read(0, 2 * MiB)).equals(before), 'every grain reads as before the damage');
  await d.close();
});

test('vmdk check: a redundant table that only lags the primary (a write killed between the two) is a warning, synced by repair', async (t) => {
  const p = await image((await tmpDir(t)).path);
  const { rgd } = await header(p);
  const rgt0 = await u32At(p, rgd * 512);
  assert.notEqual(await u32At(p, rgt0 * 512), 0, 'grain 0 is allocated');
  await poke(p, rgt0 * 512, Buffer.alloc(4)); // the copy never got grain 0's entry
  const r = await check(p);
  assert.deepEqual(r.findings.map((f) => [f.kind, f.field]), [['warning', 'RGT[0]']]);
  const fixed = await check(p, true);
  assert.equal(fixed.findings[0]!.repaired, true);
  assert.deepEqual((await check(p)).findings, []);
});

test('vmdk check: leaked grains at the end are reported and cut off by repair; data stays', async (t) => {
  const p = await image((await tmpDir(t)).path);
  const before = await Disk.open(p, { readOnly: true }).then(async (d) => { const b = await d.read(0, 2 * MiB); await d.close(); return b; });
  const size = (await stat(p)).size;
  await poke(p, size, Buffer.alloc(3 * 65536, 0x77));
  const r = await check(p);
  assert.equal(r.findings.length, 1);
  assert.equal(r.findings[0]!.kind, 'leak');
  assert.equal(r.leakedBytes, 3 * 65536);
  const fixed = await check(p, true);
  assert.equal(fixed.leakedBytes, 0);
  assert.equal((await stat(p)).size, size);
  const after = await Disk.open(p, { readOnly: true }).then(async (d) => { const b = await d.read(0, 2 * MiB); await d.close(); return b; });
  assert.ok(after.equals(before));
});

test('vmdk check: grains past the end of the file or shared by two entries are corruptions', async (t) => {
  const p = await image((await tmpDir(t)).path);
  const { gd } = await header(p);
  const gt0 = await u32At(p, gd * 512);
  const first = await u32At(p, gt0 * 512);
  await poke(p, gt0 * 512 + 4 * 3, Buffer.from(new Uint32Array([first]).buffer)); // grain 3 -> grain 0's sector
  await poke(p, gt0 * 512 + 4 * 9, Buffer.from(new Uint32Array([0x7fffffff]).buffer));
  const r = await check(p);
  const fields = r.findings.filter((f) => f.kind === 'corruption').map((f) => f.field).sort();
  // the redundant table still holds the old entries, so it differs too
  assert.deepEqual(fields, ['GTE[3]', 'GTE[9]', 'RGT[0]']);
});

test('vdkit check exit codes follow qemu-img (0 clean, 2 corruption, 3 leaks), and qemu-img agrees on the repaired image', async (t) => {
  const dir = (await tmpDir(t)).path;
  const p = await image(dir, 'twoGbMaxExtentSparse');
  const vdkit = (args: string[]) => run(process.execPath, [new URL('../../../bin/vdkit.js', import.meta.url).pathname, ...args]);
  assert.equal((await vdkit(['check', p])).code, 0);
  const extent = join(dir, 'c-s001.vmdk');
  await poke(extent, (await stat(extent)).size, Buffer.alloc(65536, 1));
  const leak = await vdkit(['check', p]);
  assert.equal(leak.code, 3, leak.stdout + leak.stderr);
  assert.match(leak.stdout, /Leaked:/);
  const json = JSON.parse((await vdkit(['check', '--json', p])).stdout);
  assert.equal(json.leakedBytes, 65536);
  const fixed = await vdkit(['check', '--repair', p]);
  assert.equal(fixed.code, 0, fixed.stdout + fixed.stderr);
  const { rgd } = await header(extent);
  await poke(extent, (await u32At(extent, rgd * 512)) * 512, Buffer.from([1, 2, 3, 4]));
  assert.equal((await vdkit(['check', p])).code, 2);
  await vdkit(['check', '-r', p]);
  assert.equal((await vdkit(['check', p])).code, 0);
  if (!skipUnless(t, 'qemu-img')) return;
  const q = await run('qemu-img', ['check', '-f', 'vmdk', p]);
  assert.equal(q.code, 0, q.stdout + q.stderr);
});

// A resize of a monolithicSparse extent moves its directories past the metadata area when it
// adds directory entries: 8 -> 544 MiB adds 16 (32 MiB each), whose 16 tables and 16 redundant
// ones fill one 64 KiB grain slot exactly, so the new directories open a slot of their own.
// That slot is metadata, not a leak, and a repair must not cut it off. 8 -> 32 MiB adds no
// entry: only the header's capacity changes (the file does not grow).
for (const [to, grows] of [[544 * MiB, true], [32 * MiB, false]] as const) {
  test(`vmdk check: after a resize to ${to / MiB} MiB no leak is reported; a repair keeps the directories`, async (t) => {
    if (!skipUnless(t, 'qemu-img')) return;
    const dir = (await tmpDir(t)).path;
    const p = join(dir, 'g.vmdk');
    assert.equal((await run('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicSparse', p, '8M'])).code, 0);
    const data = Buffer.alloc(70000, 0x5a);
    let d = await Disk.open(p);
    await d.write(3 * MiB + 7, data);
    await d.close();
    const sizeBefore = (await stat(p)).size;
    await resize(p, to);
    const sizeAfter = (await stat(p)).size;
    assert.equal(sizeAfter > sizeBefore, grows, `file ${sizeBefore} -> ${sizeAfter} bytes`);
    const before = await check(p);
    assert.deepEqual(before.findings, []);
    assert.equal((await run('qemu-img', ['check', '-q', '-f', 'vmdk', p])).code, 0);
    const fixed = await check(p, true);
    assert.deepEqual(fixed.findings, []);
    assert.equal((await stat(p)).size, sizeAfter, 'a repair changes nothing');
    assert.equal((await run('qemu-img', ['check', '-q', '-f', 'vmdk', p])).code, 0);
    d = await Disk.open(p, { readOnly: true });
    assert.equal(d.capacity, to);
    assert.ok((await d.read(3 * MiB + 7, data.length)).equals(data));
    assert.ok((await d.read(to - MiB, MiB)).equals(Buffer.alloc(MiB)));
    await d.close();
  });
}

test('vmdk check: a garbage grain table gives one finding per problem with a count, not one per entry', async (t) => {
  const p = await image((await tmpDir(t)).path);
  const { gd, rgd } = await header(p);
  for (const g of [0, 1]) {
    const gt = await u32At(p, gd * 512 + g * 4);
    assert.notEqual(gt, 0, `grain table ${g} exists`);
    await poke(p, gt * 512, Buffer.alloc(512 * 4, 0x7f)); // 512 entries naming sector 0x7f7f7f7f, far past the end
  }
  assert.notEqual(await u32At(p, rgd * 512), 0);
  const r = await check(p);
  const gte = r.findings.filter((f) => f.field?.startsWith('GTE'));
  assert.equal(gte.length, 1, JSON.stringify(r.findings.slice(0, 3)));
  assert.equal(gte[0]!.count, 1024);
  assert.equal(gte[0]!.field, 'GTE[0..1023]');
  assert.match(gte[0]!.message, /^1024 GTE entries \(0-1023\) point outside the grain area/);
  const rgt = r.findings.filter((f) => f.field?.startsWith('RGT'));
  // table 0's copy names other grains (differs); table 1 had none, so its copy only lags
  assert.deepEqual(rgt.map((f) => [f.kind, f.field, f.count]), [['corruption', 'RGT[0]', undefined], ['warning', 'RGT[1]', undefined]]);
});
