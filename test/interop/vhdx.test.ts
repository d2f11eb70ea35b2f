/**
 * VHDX against the outside tools: qemu-img / qemu-io 7.2 (driver "vhdx") and libvhdi's vhdiinfo.
 *
 * - vdkit-made fixed and dynamic images (1 MiB and default block sizes) after seeded random
 *   writes mirrored into a raw model: qemu-img compare finds them equal to the model, qemu-img
 *   check finds no error, qemu-img info and vhdiinfo show vdkit's size, vhdiinfo's identifier is
 *   vdkit's identity (the DataWriteGuid).
 * - A fresh vdkit image has qemu-img create's structure: same file size, region offsets and
 *   lengths, metadata item ids/offsets/lengths/flags, BAT bytes (block_state_zero=off).
 * - qemu-made images (subformat dynamic/fixed x block_state_zero on/off) after qemu-io writes
 *   read through vdkit exactly as `qemu-img convert -O raw` reads them; vdkit writes into them
 *   keep qemu-img compare and check happy.
 * - The two VHDX files from other producers (Hyper-V, Disk2vhd) open with the README sizes and
 *   read as qemu-img's conversion does.
 * - A vdkit image whose log holds an entry not yet applied: qemu-img check -r all replays it
 *   (our entries are QEMU-readable) and qemu then reads the data.
 * - A vdkit differencing image: vhdiinfo reports its parent identifier and file name. qemu-img
 *   cannot open differencing VHDX files at all ("Operation not supported"): vhdiinfo is the only
 *   outside oracle for them, and it shows the link, not the data.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, detectFormat } from '../../src/index.js';
import { createChild } from '../../src/ops/child.js';
import { vhdxLogHooks } from '../../src/formats/vhdx/log.js';
import { bunzip, describeRun, haveTestdata, run, sharedTestdata, skipUnless, tmpDir } from '../helpers/tools.js';
import { MiB, RawModel, Rng, SECTOR, assertWholeDiskEqual, planWrites, readExact, runOk, seedOf } from './support.js';

async function qemuInfo(path: string): Promise<{ 'virtual-size': number; format: string; 'cluster-size'?: number }> {
  const r = await runOk('qemu-img', ['info', '-f', 'vhdx', '--output=json', path], 'qemu-img info');
  return JSON.parse(r.stdout) as { 'virtual-size': number; format: string };
}

async function qemuCompare(image: string, raw: string, what: string): Promise<void> {
  const args = ['compare', '-f', 'vhdx', '-F', 'raw', image, raw];
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, `${what}: qemu-img compare says they differ\n${describeRun('qemu-img', args, r)}`);
}

async function qemuCheck(image: string, what: string): Promise<void> {
  const args = ['check', '-f', 'vhdx', '--output=json', image];
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, `${what}: qemu-img check\n${describeRun('qemu-img', args, r)}`);
  assert.equal((JSON.parse(r.stdout) as { 'check-errors': number })['check-errors'], 0);
}

/** vhdiinfo's report as key -> value */
async function vhdiinfo(path: string): Promise<Record<string, string>> {
  const r = await runOk('vhdiinfo', [path], 'vhdiinfo');
  const out: Record<string, string> = {};
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*([A-Za-z][A-Za-z ]*?)\s*:\s*(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!.trim();
  }
  return out;
}

const mediaBytes = (v: string | undefined) => Number(/\((\d+) bytes\)/.exec(v ?? '')?.[1]);

async function writeBoth(d: Disk, model: RawModel, seed: string, blockSize: number, count = 40): Promise<void> {
  const boundaries = Array.from({ length: Math.floor(d.capacity / blockSize) }, (_, i) => (i + 1) * blockSize);
  for (const w of planWrites(new Rng(seedOf(seed)), d.capacity, boundaries, count)) {
    await d.write(w.offset, w.data);
    await model.write(w.offset, w.data);
  }
}

const CASES = [
  { name: 'dynamic, 1 MiB blocks', type: 'dynamic', capacity: 40 * MiB + 3 * SECTOR, blockSize: MiB },
  { name: 'fixed, 1 MiB blocks', type: 'fixed', capacity: 40 * MiB + 3 * SECTOR, blockSize: MiB },
  { name: 'dynamic, default (8 MiB) blocks', type: 'dynamic', capacity: 48 * MiB, blockSize: undefined },
  { name: 'fixed, 4 MiB blocks, size not a block multiple', type: 'fixed', capacity: 18 * MiB + 512, blockSize: 4 * MiB },
] as const;

for (const c of CASES) {
  test(`vdkit ${c.name}: qemu-img compare and check agree, vhdiinfo shows the size and identity`, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'vhdiinfo')) return;
    const dir = (await tmpDir(t, 'vdkit-interop-vhdx-')).path;
    const path = join(dir, 'v.vhdx');
    const d = await Disk.create(path, { format: 'vhdx', type: c.type, capacity: c.capacity, blockSize: c.blockSize });
    const model = await RawModel.create(join(dir, 'model.raw'), d.capacity);
    try {
      await writeBoth(d, model, c.name, c.blockSize ?? 8 * MiB);
      await d.close();
    } finally {
      await model.close();
    }
    assert.equal((await qemuInfo(path))['virtual-size'], c.capacity, 'qemu-img info virtual-size');
    await qemuCompare(path, model.path, c.name);
    await qemuCheck(path, c.name);
    const info = await vhdiinfo(path);
    assert.equal(info['Format'], 'VHDX (version 2)');
    assert.equal(info['Disk type'], c.type === 'fixed' ? 'Fixed' : 'Dynamic');
    assert.equal(mediaBytes(info['Media size']), c.capacity, 'vhdiinfo media size');
    const r = await Disk.open(path, { readOnly: true });
    assert.equal(info['Identifier'], r.image.identity(), 'vhdiinfo prints the DataWriteGuid as vdkit does');
    await assertWholeDiskEqual(r, model.path, `${c.name} reopened`);
    await r.close();
    assert.ok((await stat(path)).blocks * 512 < 64 * MiB, 'sparse');
  });
}

/** region table entries and metadata items of a VHDX, read with plain fs */
async function structure(path: string) {
  const fh = await open(path, 'r');
  try {
    const rt = await readExact(fh, 192 * 1024, 65536);
    const regions: [string, number, number][] = [];
    let md = 0;
    let bat = 0;
    for (let i = 0; i < rt.readUInt32LE(8); i++) {
      const e = rt.subarray(16 + i * 32, 48 + i * 32);
      regions.push([e.subarray(0, 16).toString('hex'), Number(e.readBigUInt64LE(16)), e.readUInt32LE(24)]);
      if (e[0] === 0x06) md = Number(e.readBigUInt64LE(16));
      else bat = Number(e.readBigUInt64LE(16));
    }
    const table = await readExact(fh, md, 65536);
    const items: [string, number, number, number][] = [];
    for (let i = 0; i < table.readUInt16LE(10); i++) {
      const e = table.subarray(32 + i * 32, 64 + i * 32);
      items.push([e.subarray(0, 16).toString('hex'), e.readUInt32LE(16), e.readUInt32LE(20), e.readUInt32LE(24)]);
    }
    return { size: (await fh.stat()).size, regions, items, bat: await readExact(fh, bat, MiB) };
  } finally {
    await fh.close();
  }
}

for (const subformat of ['dynamic', 'fixed'] as const) {
  test(`a fresh vdkit ${subformat} image has qemu-img create's structure (block_state_zero=off)`, async (t) => {
    if (!skipUnless(t, 'qemu-img')) return;
    const dir = (await tmpDir(t, 'vdkit-interop-vhdx-')).path;
    await runOk('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', `subformat=${subformat},block_state_zero=off,block_size=2M`, join(dir, 'q.vhdx'), '20M'], 'qemu-img create');
    await (await Disk.create(join(dir, 'v.vhdx'), { format: 'vhdx', type: subformat, capacity: 20 * MiB, blockSize: 2 * MiB })).close();
    const q = await structure(join(dir, 'q.vhdx'));
    const v = await structure(join(dir, 'v.vhdx'));
    assert.equal(v.size, q.size, 'same file size');
    assert.deepEqual(v.regions, q.regions, 'same regions, offsets and lengths');
    assert.deepEqual(
      v.items.map(([id, off, len]) => [id, off, len]),
      q.items.map(([id, off, len]) => [id, off, len]),
      'same metadata items at the same offsets',
    );
    assert.deepEqual(v.items.map((x) => x[3]), q.items.map((x) => x[3]), 'same item flags');
    assert.ok(v.bat.equals(q.bat), 'same BAT');
  });
}

const QEMU_IMAGES = [
  { subformat: 'dynamic', zero: 'on' },
  { subformat: 'dynamic', zero: 'off' },
  { subformat: 'fixed', zero: 'on' },
  { subformat: 'fixed', zero: 'off' },
] as const;

for (const q of QEMU_IMAGES) {
  const label = `qemu-made ${q.subformat} (block_state_zero=${q.zero})`;
  test(`${label}: after qemu-io writes vdkit reads what qemu-img convert reads; vdkit writes keep qemu-img compare and check happy`, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
    const dir = (await tmpDir(t, 'vdkit-interop-vhdx-')).path;
    const img = join(dir, 'q.vhdx');
    const size = 12 * MiB + 5 * SECTOR;
    await runOk('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', `subformat=${q.subformat},block_state_zero=${q.zero},block_size=1M`, img, String(size)], 'qemu-img create');
    await runOk(
      'qemu-io',
      ['-f', 'vhdx', '-c', 'write -P 0x5a 0 4k', '-c', 'write -P 0xa5 3M 64k', '-c', `write -P 0x33 ${MiB - 512} 1k`, '-c', `write -P 0x77 ${size - 512} 512`, img],
      'qemu-io write',
    );
    const raw = join(dir, 'q.raw');
    await runOk('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', img, raw], 'qemu-img convert -O raw');

    assert.equal((await detectFormat(img)).name, 'vhdx');
    const r = await Disk.open(img, { readOnly: true });
    assert.equal(r.capacity, size);
    assert.equal(r.type, q.subformat);
    assert.match(r.readMetadata('creator')!, /^QEMU v/);
    await assertWholeDiskEqual(r, raw, `${label} read by vdkit`);
    if (q.zero === 'on') assert.ok((await r.blockStatus()).some((s) => s.state === 'zero'), 'ZERO blocks report as zero');
    await r.close();

    const d = await Disk.open(img);
    const model = await RawModel.open(raw);
    try {
      await writeBoth(d, model, label, MiB, 25);
      await d.close();
    } finally {
      await model.close();
    }
    await qemuCompare(img, raw, `${label} after vdkit writes`);
    await qemuCheck(img, `${label} after vdkit writes`);
    assert.equal((await qemuInfo(img))['virtual-size'], size);
  });
}

const OUTSIDE = [
  { file: 'iotest-dynamic-1G.vhdx', size: 1073741824, creator: 'Microsoft Windows 6.2.9200.16384', blockSize: 32 * MiB },
  { file: 'test-disk2vhd.vhdx', size: 268435456, creator: 'd2v', blockSize: 2 * MiB },
] as const;

for (const o of OUTSIDE) {
  test(`${o.file}: opens with the README size ${o.size}, reads as qemu-img's conversion, takes vdkit writes qemu-img agrees with`, async (t) => {
    if (!skipUnless(t, 'bunzip2', 'qemu-img', 'vhdiinfo') || !haveTestdata(t, sharedTestdata(`${o.file}.bz2`))) return;
    const dir = (await tmpDir(t, 'vdkit-interop-vhdx-')).path;
    const img = join(dir, o.file);
    await bunzip(sharedTestdata(`${o.file}.bz2`), img);
    assert.equal((await detectFormat(img)).name, 'vhdx');
    const raw = join(dir, 'o.raw');
    await runOk('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', img, raw], 'qemu-img convert -O raw');
    const d = await Disk.open(img, { readOnly: true });
    try {
      assert.equal(d.capacity, o.size);
      assert.equal((await qemuInfo(img))['virtual-size'], o.size, 'qemu-img agrees');
      assert.equal(d.type, 'dynamic');
      assert.equal(d.readMetadata('creator'), o.creator);
      assert.equal(d.readMetadata('blockSize'), String(o.blockSize));
      assert.equal((await vhdiinfo(img))['Identifier'], d.image.identity(), 'vhdiinfo prints the DataWriteGuid');
      await assertWholeDiskEqual(d, raw, o.file);
      assert.deepEqual((await d.image.maintenance().check!({ repair: false })).findings.filter((f) => f.kind !== 'warning'), [], 'vdkit check: no corruption, no leak');
    } finally {
      await d.close();
    }
    // vdkit writes into the producer's layout (Hyper-V: metadata before the BAT, ZERO blocks): qemu agrees
    const w = await Disk.open(img);
    const model = await RawModel.open(raw);
    try {
      await writeBoth(w, model, o.file, o.blockSize, 12);
      await w.close();
    } finally {
      await model.close();
    }
    await qemuCompare(img, raw, `${o.file} after vdkit writes`);
    await qemuCheck(img, `${o.file} after vdkit writes`);
  });
}

test('a vdkit image with a log entry not yet applied: qemu-img check -r all replays it and qemu reads the data', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-interop-vhdx-')).path;
  const img = join(dir, 'l.vhdx');
  const d = await Disk.create(img, { format: 'vhdx', capacity: 16 * MiB, blockSize: MiB });
  await d.write(2 * MiB, Buffer.alloc(4096, 0x77));
  vhdxLogHooks.afterLogFlush = () => {
    throw new Error('stopped after the log flush');
  };
  try {
    await assert.rejects(d.flush(), /stopped/);
  } finally {
    vhdxLogHooks.afterLogFlush = undefined;
  }
  await d.close();
  const ro = await run('qemu-io', ['-r', '-f', 'vhdx', '-c', 'read 0 512', img]);
  assert.notEqual(ro.code, 0, 'qemu refuses a read-only open of a log that needs replay');
  assert.match(ro.stderr + ro.stdout, /log that needs to be replayed/);
  const r = await run('qemu-img', ['check', '-r', 'all', img]);
  assert.equal(r.code, 0, describeRun('qemu-img', ['check', '-r', 'all', img], r));
  assert.match(r.stdout, /1 corruptions/);
  await runOk('qemu-io', ['-r', '-f', 'vhdx', '-c', `read -P 0x77 ${2 * MiB} 4k`, img], 'qemu-io read after the replay');
  const v = await Disk.open(img, { readOnly: true });
  assert.deepEqual(await v.read(2 * MiB, 4096), Buffer.alloc(4096, 0x77));
  await v.close();
});

test('vhdiinfo reports the parent link of a vdkit differencing VHDX (qemu-img cannot open it)', async (t) => {
  if (!skipUnless(t, 'vhdiinfo', 'qemu-img')) return;
  const dir = (await tmpDir(t, 'vdkit-interop-vhdx-')).path;
  const base = join(dir, 'base.vhdx');
  const b = await Disk.create(base, { format: 'vhdx', capacity: 8 * MiB, blockSize: MiB });
  await b.write(0, Buffer.alloc(4096, 1));
  const baseId = b.image.identity()!;
  await b.close();
  const c = await createChild(base, join(dir, 'child.vhdx'));
  await c.write(1000, Buffer.alloc(10, 7));
  const childId = c.image.identity()!;
  await c.close();
  const info = await vhdiinfo(join(dir, 'child.vhdx'));
  assert.equal(info['Disk type'], 'Differential');
  assert.equal(mediaBytes(info['Media size']), 8 * MiB);
  assert.equal(info['Identifier'], childId);
  assert.equal(info['Parent identifier'], baseId, "parent_linkage = the parent's DataWriteGuid");
  assert.equal(info['Parent filename'], base, 'libvhdi shows absolute_win32_path');
  const q = await run('qemu-img', ['info', '-f', 'vhdx', join(dir, 'child.vhdx')]);
  assert.notEqual(q.code, 0, 'qemu-img 7.2 has no differencing VHDX support');
  assert.match(q.stderr, /not supported/i);
  // the parent itself stays a plain image both tools read
  await qemuCheck(base, 'parent');
});
