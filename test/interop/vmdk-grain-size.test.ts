/**
 * VMDK grain size as a create option (issue 15 item 5): CreateOptions.grainSize (bytes),
 * `-o grain_size=N` (sectors) and `--grain-size`. The grain is written into every sparse header,
 * and what vdkit writes, checks, compacts, defragments and grows with it reads the same in
 * qemu-img (compare against a raw model, check) and opens in vmdkinfo (libvmdk refuses grains of
 * 8 sectors or less, hence the 16-sector floor).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, checkDisk, compact, convert, defragment, resize } from '../../src/index.js';
import { describeRun, run, runVdkit, skipUnless, tmpDir } from '../helpers/tools.js';
import { expectFailure as expectDiskError } from '../corpus/support.js';
import { KiB, MiB, RawModel, Rng } from './support.js';

/** grainSize (u64 at byte 20) of the sparse header of `path`, in sectors */
async function headerGrain(path: string): Promise<number> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(32);
    await fh.read(b, 0, 32, 0);
    assert.equal(b.toString('latin1', 0, 4), 'KDMV', path);
    return Number(b.readBigUInt64LE(20));
  } finally {
    await fh.close();
  }
}

async function qemuSame(t: TestContext, image: string, raw: string, label: string): Promise<void> {
  if (!skipUnless(t, 'qemu-img')) return;
  const args = ['compare', '-f', 'vmdk', '-F', 'raw', image, raw];
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, `${label}: ${describeRun('qemu-img', args, r)}`);
  const c = await run('qemu-img', ['check', '-f', 'vmdk', image]);
  assert.equal(c.code, 0, `${label}: qemu-img check\n${c.stdout}${c.stderr}`);
}

async function vmdkinfoOpens(t: TestContext, image: string): Promise<void> {
  if (!skipUnless(t, 'vmdkinfo')) return;
  const r = await run('vmdkinfo', [image]);
  assert.equal(r.code, 0, describeRun('vmdkinfo', [image], r));
  assert.match(r.stdout, /Media size/);
}

/** writes straddling grains and grain tables of a `grain`-byte grain, mirrored in `model` */
async function writeSome(d: Disk, model: RawModel, grain: number, seed: number): Promise<void> {
  const rng = new Rng(seed);
  const span = grain * 512; // one grain table
  const spots = [0, grain - 7, 3 * grain + 512, span - 100, span + grain, d.capacity - 4097];
  for (const at of spots.filter((x) => x >= 0 && x < d.capacity)) {
    const len = Math.min(rng.int(1, 3 * grain), d.capacity - at);
    const data = rng.bytes(len);
    await d.write(at, data);
    await model.write(at, data);
  }
}

for (const [type, grainSectors, capacity] of [
  ['monolithicSparse', 16, 24 * MiB],
  ['monolithicSparse', 2048, 40 * MiB],
  ['twoGbMaxExtentSparse', 16, 4192256 * 512 + 8 * MiB],
] as const) {
  test(`${type} with ${grainSectors}-sector grains: qemu-img compare and check, vmdkinfo, vdkit check, compact, defragment`, async (t) => {
    const dir = (await tmpDir(t, 'vdkit-grain-')).path;
    const p = join(dir, 'g.vmdk');
    const grain = grainSectors * 512;
    const model = await RawModel.create(join(dir, 'model.raw'), capacity);
    t.after(() => model.close());
    const d = await Disk.create(p, { format: 'vmdk', type, capacity, grainSize: grain });
    assert.equal(d.image.clusterSize, grain);
    await writeSome(d, model, grain, grainSectors);
    // a grain that becomes zeros again: compact drops it
    await d.write(3 * grain, Buffer.alloc(grain));
    await model.write(3 * grain, Buffer.alloc(grain));
    await d.close();
    const extent = type === 'monolithicSparse' ? p : join(dir, 'g-s001.vmdk');
    assert.equal(await headerGrain(extent), grainSectors, 'header grainSize');
    if (type !== 'monolithicSparse') assert.equal(await headerGrain(join(dir, 'g-s002.vmdk')), grainSectors, 'every extent');
    await qemuSame(t, p, model.path, 'written');
    await vmdkinfoOpens(t, p);
    if (skipUnless(t, 'qemu-img')) {
      const info = JSON.parse((await run('qemu-img', ['info', '--output=json', p])).stdout);
      assert.equal(info['cluster-size'], grain, 'qemu-img sees the grain');
    }

    const r = await checkDisk(p, { repair: false });
    assert.deepEqual(r.findings.filter((f) => f.kind !== 'warning'), [], JSON.stringify(r.findings));
    await compact(p);
    await qemuSame(t, p, model.path, 'compacted');
    await defragment(p);
    await qemuSame(t, p, model.path, 'defragmented');
    const after = await checkDisk(p, { repair: false });
    assert.deepEqual(after.findings.filter((f) => f.kind !== 'warning'), [], JSON.stringify(after.findings));
    const back = await Disk.open(p, { readOnly: true });
    try {
      assert.ok((await back.read(0, 64 * KiB)).equals(await model.read(0, 64 * KiB)));
    } finally {
      await back.close();
    }
  });
}

test('growing a split disk gives the new extents the disk\'s grain, not the default', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-grain-')).path;
  const p = join(dir, 's.vmdk');
  const d = await Disk.create(p, { format: 'vmdk', type: 'twoGbMaxExtentSparse', capacity: 8 * MiB, grainSize: 32 * 512 });
  await d.write(MiB, Buffer.alloc(5000, 0x44));
  await d.close();
  await resize(p, 4192256 * 512 + 16 * MiB);
  assert.equal(await headerGrain(join(dir, 's-s002.vmdk')), 32);
  assert.equal(await headerGrain(join(dir, 's-s003.vmdk')), 32);
  const e = await Disk.open(p);
  assert.equal(e.image.clusterSize, 32 * 512);
  await e.write(4192256 * 512 + MiB, Buffer.alloc(3000, 0x55));
  await e.close();
  if (skipUnless(t, 'qemu-img')) {
    const c = await run('qemu-img', ['check', p]);
    assert.equal(c.code, 0, c.stdout + c.stderr);
  }
});

test('grain size: refused when not a power of two from 16 to 65536 sectors, for flat types, and for streamOptimized', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-grain-')).path;
  for (const grainSize of [8 * 512, 4096 * 3, 1000, 131072 * 512]) {
    const path = join(dir, `bad${grainSize}.vmdk`);
    await expectDiskError(() => Disk.create(path, { format: 'vmdk', capacity: MiB, grainSize }), { code: 'INVAL', path, field: 'grainSize' });
  }
  const flat = join(dir, 'flat.vmdk');
  await expectDiskError(() => Disk.create(flat, { format: 'vmdk', type: 'monolithicFlat', capacity: MiB, grainSize: 8192 }), { code: 'INVAL', path: flat, field: 'grainSize' });
  const src = join(dir, 'src.vmdk');
  await (await Disk.create(src, { format: 'vmdk', capacity: MiB })).close();
  const s = await Disk.open(src, { readOnly: true });
  try {
    const st = join(dir, 'st.vmdk');
    await expectDiskError(() => convert(s, st, { format: 'vmdk', type: 'streamOptimized', grainSize: 8192 }), { code: 'NOTSUPPORTED', path: st, field: 'grainSize' });
  } finally {
    await s.close();
  }
});

test('CLI: create -o grain_size=N (sectors) and --grain-size (sectors, or bytes with a suffix); convert -o grain_size', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-grain-')).path;
  const cases: [string[], number][] = [
    [['create', '-o', 'grain_size=16', 'a.vmdk', '8M'], 16],
    [['create', '--grain-size', '256', 'b.vmdk', '8M'], 256],
    [['create', '--grain-size', '32K', 'c.vmdk', '8M'], 64],
  ];
  for (const [args, sectors] of cases) {
    const r = await runVdkit(args, dir);
    assert.equal(r.code, 0, describeRun('vdkit', args, r));
    assert.equal(await headerGrain(join(dir, args[args.length - 2]!)), sectors, args.join(' '));
  }
  const bad = await runVdkit(['create', '-o', 'grain_size=12', 'd.vmdk', '8M'], dir);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /grain/i);

  const fill = ['fill', '--start', '2047', '--count', '300', '--value', '0x6a', 'a.vmdk'];
  assert.equal((await runVdkit(fill, dir)).code, 0);
  const conv = ['convert', '-O', 'vmdk', '-o', 'grain_size=1024', 'a.vmdk', 'e.vmdk'];
  const c = await runVdkit(conv, dir);
  assert.equal(c.code, 0, describeRun('vdkit', conv, c));
  assert.equal(await headerGrain(join(dir, 'e.vmdk')), 1024);
  if (skipUnless(t, 'qemu-img')) {
    const q = await run('qemu-img', ['compare', join(dir, 'a.vmdk'), join(dir, 'e.vmdk')]);
    assert.equal(q.code, 0, q.stdout + q.stderr);
  }
});

test('measure follows the grain size: its empty-disk bytes are the file create writes, its unit the grain', async (t) => {
  const { measureVmdk } = await import('../../src/formats/vmdk/measure.js');
  const { stat } = await import('node:fs/promises');
  const dir = (await tmpDir(t, 'vdkit-grain-')).path;
  for (const grainSectors of [16, 128, 2048]) {
    const capacity = 1024 * MiB;
    const grainSize = grainSectors * 512;
    const m = measureVmdk({ capacity, grainSize });
    assert.equal(m.unit, grainSize);
    const p = join(dir, `m${grainSectors}.vmdk`);
    await (await Disk.create(p, { format: 'vmdk', capacity, grainSize })).close();
    assert.equal(m.required([]), (await stat(p)).size, `${grainSectors}-sector grains: measure's empty disk is the created file`);
    assert.equal(m.fullyAllocated, m.required([]) + capacity);
  }
});
