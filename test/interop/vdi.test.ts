/**
 * VDI against QEMU 7.2 (the oracle here; VirtualBox is not in Debian, see vdi.md §15):
 * - vdkit-made dynamic and fixed images, after seeded random writes mirrored into a raw model,
 *   pass `qemu-img check -f vdi` and `qemu-img compare -f vdi -F raw`, and qemu-img map's data
 *   ranges are exactly vdkit's;
 * - qemu-made images (`qemu-img create -f vdi [-o static=on]`) written by qemu-io read through
 *   vdkit exactly as `qemu-img convert -O raw` says; vdkit writes into them (and sets LCHS
 *   geometry, which upgrades QEMU's v1 header to v1+) and qemu-img check/compare still pass;
 * - a differencing chain flattened by vdkit (merge into the top) is a base QEMU reads;
 * - detection picks vdi for a VDI named .img, for vdkit and for qemu-img.
 */
import assert from 'node:assert/strict';
import { copyFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk, detectFormat } from '../../src/index.js';
import { createChild } from '../../src/ops/child.js';
import { mergeIntoTop } from '../../src/ops/commit.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';
import { MiB, RawModel, Rng, SECTOR, assertWholeDiskEqual, mapToStatus, planWrites, qemuMap, runOk, seedOf } from './support.js';

const BLOCK = MiB;

async function headerWord(path: string, offset: number): Promise<number> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(4);
    await fh.read(b, 0, 4, offset);
    return b.readUInt32LE(0);
  } finally {
    await fh.close();
  }
}

async function qemuCheck(path: string, what: string): Promise<void> {
  const args = ['check', '-f', 'vdi', path];
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, `${what}: qemu-img check\n${describeRun('qemu-img', args, r)}`);
  assert.match(r.stdout, /No errors were found/);
}

async function qemuCompare(path: string, raw: string, what: string): Promise<void> {
  const args = ['compare', '-f', 'vdi', '-F', 'raw', path, raw];
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, `${what}: qemu-img compare\n${describeRun('qemu-img', args, r)}`);
}

/** qemu-img map's data ranges must be exactly the ranges vdkit calls data */
async function assertSameDataRanges(path: string, what: string): Promise<void> {
  const q = mapToStatus(await qemuMap(path, 'vdi')).filter((r) => r.state === 'data');
  const d = await Disk.open(path, { readOnly: true });
  try {
    const ours = (await d.blockStatus()).filter((r) => r.state === 'data').map((r) => ({ offset: r.offset, length: r.length, state: r.state }));
    assert.deepEqual(ours, q, `${what}: data ranges (vdkit vs qemu-img map)`);
  } finally {
    await d.close();
  }
}

for (const type of ['dynamic', 'fixed'] as const) {
  test(`vdkit ${type} VDI after seeded random writes: qemu-img check and compare pass, map agrees`, async (t) => {
    if (!skipUnless(t, 'qemu-img')) return;
    const dir = (await tmpDir(t)).path;
    const capacity = 24 * MiB + 3 * SECTOR; // last block partial
    const path = join(dir, `${type}.vdi`);
    const rawPath = join(dir, `${type}.raw`);
    const model = await RawModel.create(rawPath, capacity);
    const d = await Disk.create(path, { format: 'vdi', type, capacity });
    const rng = new Rng(seedOf(t.name));
    const boundaries = Array.from({ length: 24 }, (_, i) => (i + 1) * BLOCK);
    const writes = planWrites(rng, capacity, boundaries, 40);
    // one whole zero block over nothing (a ZERO entry for dynamic images)
    writes.push({ offset: 20 * BLOCK, data: Buffer.alloc(BLOCK) });
    for (const w of writes) {
      await d.write(w.offset, w.data);
      await model.write(w.offset, w.data);
    }
    await d.close();
    await model.close();
    await qemuCheck(path, type);
    await qemuCompare(path, rawPath, type);
    await assertSameDataRanges(path, type);
    const r = await Disk.open(path, { readOnly: true });
    await assertWholeDiskEqual(r, rawPath, `${type} reopened`);
    await r.close();
    // and qemu-img info sees what we wrote
    const info = JSON.parse((await runOk('qemu-img', ['info', '-f', 'vdi', '--output=json', path], 'qemu-img info')).stdout) as { 'virtual-size': number; 'cluster-size': number; format: string };
    assert.equal(info['virtual-size'], capacity);
    assert.equal(info['cluster-size'], BLOCK);
    assert.equal(info.format, 'vdi');
  });
}

const QEMU_CASES = [
  { label: 'dynamic', options: [] as string[], type: 'dynamic' },
  { label: 'static', options: ['-o', 'static=on'], type: 'fixed' },
];

for (const c of QEMU_CASES) {
  test(`qemu-made ${c.label} VDI written by qemu-io reads identically through vdkit; vdkit writes back, qemu-img still happy`, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
    const dir = (await tmpDir(t)).path;
    const size = 20 * MiB;
    const path = join(dir, `q-${c.label}.vdi`);
    await runOk('qemu-img', ['create', '-f', 'vdi', ...c.options, path, String(size)], 'qemu-img create');
    assert.equal(await headerWord(path, 0x48), 0x180, 'QEMU writes a v1 header');
    const io = [
      'write -P 0xab 0 1M', // a whole block
      'write -P 0x5a 5M 4k', // the start of a block
      'write -P 0x11 1047552 4096', // straddles blocks 0 and 1
      'write -P 0x22 20967424 4096', // the last 4 KiB
      'write -z 8M 1M', // zeros (QEMU allocates and writes them)
    ];
    await runOk('qemu-io', ['-f', 'vdi', ...io.flatMap((x) => ['-c', x]), path], 'qemu-io writes');
    const rawPath = join(dir, 'q.raw');
    await runOk('qemu-img', ['convert', '-f', 'vdi', '-O', 'raw', path, rawPath], 'qemu-img convert');

    const d = await Disk.open(path, { readOnly: true });
    assert.equal(d.format, 'vdi');
    assert.equal(d.type, c.type);
    assert.equal(d.capacity, size);
    await assertWholeDiskEqual(d, rawPath, `qemu ${c.label} read by vdkit`);
    assert.equal((await d.info()).warnings, undefined);
    await d.close();
    await assertSameDataRanges(path, `qemu ${c.label}`);

    // vdkit writes into the QEMU image, mirrored into the raw conversion
    const model = await RawModel.open(rawPath);
    const w = await Disk.open(path);
    const rng = new Rng(seedOf(t.name));
    for (const x of planWrites(rng, size, [BLOCK, 5 * BLOCK, 19 * BLOCK], 20)) {
      await w.write(x.offset, x.data);
      await model.write(x.offset, x.data);
    }
    await w.close();
    await model.close();
    assert.equal(await headerWord(path, 0x48), 0x180, 'vdkit keeps QEMU\'s v1 header when it only writes data');
    await qemuCheck(path, `qemu ${c.label} after vdkit writes`);
    await qemuCompare(path, rawPath, `qemu ${c.label} after vdkit writes`);

    // setting LCHS geometry upgrades the header to v1+ (as VirtualBox does); QEMU still opens it
    const g = await Disk.open(path);
    await g.writeMetadata('geometry.cylinders', '41');
    await g.writeMetadata('geometry.heads', '16');
    await g.writeMetadata('geometry.sectors', '63');
    await g.close();
    assert.equal(await headerWord(path, 0x48), 0x190);
    assert.equal(await headerWord(path, 0x1d4), 512);
    await qemuCheck(path, `qemu ${c.label} with LCHS`);
    await qemuCompare(path, rawPath, `qemu ${c.label} with LCHS`);
    const r = await Disk.open(path, { readOnly: true });
    assert.deepEqual((await r.info()).geometry, { cylinders: 41, heads: 16, sectors: 63 });
    await assertWholeDiskEqual(r, rawPath, `qemu ${c.label} after vdkit writes, read by vdkit`);
    await r.close();
  });
}

test('a VDI chain flattened by vdkit (merge into the top) is a base image QEMU reads and checks', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const capacity = 8 * MiB;
  const rawPath = join(dir, 'model.raw');
  const model = await RawModel.create(rawPath, capacity);
  const base = join(dir, 'base.vdi');
  let d = await Disk.create(base, { format: 'vdi', capacity });
  const rng = new Rng(seedOf(t.name));
  let top = base;
  for (let depth = 0; depth < 3; depth++) {
    for (const w of planWrites(rng, capacity, [BLOCK, 4 * BLOCK], 6)) {
      await d.write(w.offset, w.data);
      await model.write(w.offset, w.data);
    }
    await d.close();
    if (depth < 2) {
      d = await createChild(top);
      top = d.path;
    }
  }
  await model.close();
  // QEMU refuses differencing VDIs (non-NULL link UUID)
  const refused = await run('qemu-img', ['info', '-f', 'vdi', top]);
  assert.notEqual(refused.code, 0, 'qemu-img opens no differencing VDI');
  assert.match(refused.stderr, /link UUID|parent UUID/i);
  await mergeIntoTop(top, { all: true });
  await qemuCheck(top, 'flattened chain');
  await qemuCompare(top, rawPath, 'flattened chain');
});

test('detection: a VDI named .img is vdi for vdkit and for qemu-img', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const vdi = join(dir, 'x.vdi');
  const d = await Disk.create(vdi, { format: 'vdi', capacity: 3 * MiB });
  await d.write(BLOCK, Buffer.alloc(512, 7));
  await d.close();
  const img = join(dir, 'x.img');
  await copyFile(vdi, img);
  assert.equal((await detectFormat(img)).name, 'vdi');
  const info = JSON.parse((await runOk('qemu-img', ['info', '--output=json', img], 'qemu-img info')).stdout) as { format: string };
  assert.equal(info.format, 'vdi');
  // and a qemu-made VDI named .img
  const q = join(dir, 'q.img');
  await runOk('qemu-img', ['create', '-f', 'vdi', q, '1M'], 'qemu-img create');
  assert.equal((await detectFormat(q)).name, 'vdi');
  const r = await Disk.open(q, { readOnly: true });
  assert.equal(r.format, 'vdi');
  await r.close();
});
