/**
 * compact and discard of VDI, qcow2, VHD and VHDX through the Image methods, with qemu-img as
 * the oracle: images made by qemu-img/qemu-io and by vdkit get data, then real zeros written
 * over half of it (qemu-io `write -P 0`, not `write -z`, so the zeros are stored); after
 * compact the file is at least 40 % smaller, `qemu-img compare` against a raw copy of the
 * expected content finds no difference, and `qemu-img check` is clean (vdkit check for VHD,
 * which qemu cannot check). discard in a base and in a child (the child reads zeros, not its
 * parent), and compact of a parent whose child must read the same afterwards.
 */
import assert from 'node:assert/strict';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk, checkDisk, createChild, openFindings } from '../../src/index.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;
const CAP = 32 * MiB;
const DATA = 16 * MiB;

interface Fmt {
  label: string;
  format: string;
  /** qemu's name of the format */
  qemu: string;
  ext: string;
  /** allocation unit of the images below */
  unit: number;
  /** qemu-img create -o options for the qemu-made image; undefined: qemu cannot make one */
  qemuCreate?: string[];
  /** Disk.create options for the vdkit-made image */
  vdkitCreate: Record<string, unknown>;
  /** qemu-img check knows the format */
  qemuCheck: boolean;
}

export const FORMATS: Fmt[] = [
  { label: 'vdi', format: 'vdi', qemu: 'vdi', ext: 'vdi', unit: MiB, qemuCreate: [], vdkitCreate: {}, qemuCheck: true },
  { label: 'qcow2', format: 'qcow2', qemu: 'qcow2', ext: 'qcow2', unit: 64 * 1024, qemuCreate: [], vdkitCreate: {}, qemuCheck: true },
  // qemu-img check does not know VHD: vdkit check only; qemu makes the images and compares
  { label: 'vhd', format: 'vhd', qemu: 'vpc', ext: 'vhd', unit: 2 * MiB, qemuCreate: ['-o', 'force_size=on'], vdkitCreate: {}, qemuCheck: false },
  // 1 MiB blocks (qemu: block_size), so the 16 MiB of data span 16 blocks
  { label: 'vhdx', format: 'vhdx', qemu: 'vhdx', ext: 'vhdx', unit: MiB, qemuCreate: ['-o', 'block_size=1M'], vdkitCreate: { blockSize: MiB }, qemuCheck: true },
  { label: 'qcow2 v2', format: 'qcow2', qemu: 'qcow2', ext: 'qcow2', unit: 64 * 1024, qemuCreate: ['-o', 'compat=0.10'], vdkitCreate: { type: 'v2' }, qemuCheck: true },
];

async function ok(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  assert.equal(r.code, 0, describeRun(cmd, args, r));
  return r.stdout;
}

/** data over [0, DATA), then every other unit of it zeroed: the expected content */
function content(unit: number, seed: number): { data: Buffer; expected: Buffer } {
  const data = xorshiftBytes(DATA, seed);
  const expected = Buffer.alloc(CAP);
  data.copy(expected);
  for (let at = unit; at < DATA; at += 2 * unit) expected.fill(0, at, at + unit);
  return { data, expected };
}

async function makeQemu(dir: string, f: Fmt, seed: number): Promise<{ path: string; expected: Buffer }> {
  const path = join(dir, `q.${f.ext}`);
  const { data, expected } = content(f.unit, seed);
  const raw = join(dir, 'data.raw');
  await writeFile(raw, data);
  await ok('qemu-img', ['create', '-q', '-f', f.qemu, ...(f.qemuCreate ?? []), path, String(CAP)]);
  // the data through qemu-img convert -n (one pass), then the zeros with qemu-io write -P 0
  await ok('qemu-img', ['convert', '-n', '-f', 'raw', '-O', f.qemu, raw, path]);
  const cmds: string[] = [];
  for (let at = f.unit; at < DATA; at += 2 * f.unit) cmds.push('-c', `write -P 0 ${at} ${f.unit}`);
  await ok('qemu-io', ['-f', f.qemu, ...cmds, path]);
  return { path, expected };
}

async function makeVdkit(dir: string, f: Fmt, seed: number): Promise<{ path: string; expected: Buffer }> {
  const path = join(dir, `v.${f.ext}`);
  const { data, expected } = content(f.unit, seed);
  const d = await Disk.create(path, { format: f.format, capacity: CAP, ...f.vdkitCreate });
  await d.write(0, data);
  await d.write(0, expected.subarray(0, DATA));
  await d.close();
  return { path, expected };
}

/** qemu-img compare against the expected bytes, and vdkit's own read */
async function assertContent(dir: string, path: string, f: Fmt, expected: Buffer, what: string): Promise<void> {
  const ref = join(dir, 'expected.raw');
  await writeFile(ref, expected);
  await ok('qemu-img', ['compare', '-f', 'raw', '-F', f.qemu, ref, path]);
  const d = await Disk.open(path, { readOnly: true, singleLink: true });
  const got = await d.read(0, CAP);
  await d.close();
  assert.ok(got.equals(expected), `${what}: vdkit reads the expected content`);
}

async function assertClean(path: string, f: Fmt): Promise<void> {
  if (f.qemuCheck) await ok('qemu-img', ['check', '-q', '-f', f.qemu, path]);
  const report = await checkDisk(path, { repair: false, chain: false });
  assert.deepEqual(openFindings(report), { corruptions: 0, leaks: 0 }, JSON.stringify(report.findings));
}

async function compactFile(path: string, opts: { force?: boolean } = {}) {
  const d = await Disk.open(path, { singleLink: true, ...opts });
  try {
    assert.equal(d.image.capabilities.compact, 'native');
    return await d.image.maintenance().compact!({});
  } finally {
    await d.close();
  }
}

for (const f of FORMATS) {
  test(`${f.label}: compact of a half-zeroed image (qemu-made and vdkit-made)`, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
    const dir = (await tmpDir(t)).path;
    const made = [await makeVdkit(dir, f, 5)];
    if (f.qemuCreate) made.push(await makeQemu(dir, f, 6));
    for (const { path, expected } of made) {
      const before = (await stat(path)).size;
      let progress = 0;
      const d = await Disk.open(path, { singleLink: true });
      const r = await d.image.maintenance().compact!({ onProgress: (done, total) => (progress = done / total) });
      await d.close();
      const after = (await stat(path)).size;
      assert.equal(r.fileBytesBefore, before);
      assert.equal(r.fileBytesAfter, after);
      assert.equal(progress, 1, 'progress reaches the total');
      assert.ok(after <= before * 0.6, `${path}: ${before} -> ${after} bytes, expected at least 40 % less`);
      await assertContent(dir, path, f, expected, path);
      await assertClean(path, f);
      // a second compact finds nothing more to give back
      const again = await compactFile(path);
      assert.equal(again.fileBytesAfter, after);
      await assertContent(dir, path, f, expected, `${path} (second compact)`);
      // still writable: new data lands after the compacted blocks
      const w = await Disk.open(path, { singleLink: true });
      const fresh = xorshiftBytes(f.unit, 9);
      await w.write(CAP - f.unit, fresh);
      await w.close();
      fresh.copy(expected, CAP - f.unit);
      await assertContent(dir, path, f, expected, `${path} (written after compact)`);
      await assertClean(path, f);
      t.diagnostic(`${path.endsWith(`q.${f.ext}`) ? 'qemu' : 'vdkit'}-made: ${before} -> ${after} bytes`);
    }
  });

  test(`${f.label}: discard in a base gives units back and reads zeros`, async (t) => {
    if (!skipUnless(t, 'qemu-img')) return;
    const dir = (await tmpDir(t)).path;
    const path = join(dir, `b.${f.ext}`);
    const data = xorshiftBytes(DATA, 21);
    const expected = Buffer.alloc(CAP);
    data.copy(expected);
    const d0 = await Disk.create(path, { format: f.format, capacity: CAP, ...f.vdkitCreate });
    await d0.write(0, data);
    await d0.close();
    const before = (await stat(path)).size;
    const d = await Disk.open(path, { singleLink: true });
    assert.equal(d.image.capabilities.discard, 'native');
    // whole units (one run of two and one alone) and a part of a unit
    const ranges: [number, number][] = [
      [2 * f.unit, 2 * f.unit],
      [6 * f.unit, f.unit],
      [9 * f.unit + 512, 1024],
    ];
    for (const [at, len] of ranges) {
      await d.image.discard!(at, len);
      expected.fill(0, at, at + len);
    }
    const st = await d.blockStatus(2 * f.unit, 2 * f.unit);
    assert.ok(st.every((r) => r.state !== 'data'), `discarded units are no data: ${JSON.stringify(st)}`);
    await d.close();
    await assertContent(dir, path, f, expected, 'after discard');
    await assertClean(path, f);
    // the discarded units are free: a compact gives them back (VDI already did)
    await compactFile(path);
    const after = (await stat(path)).size;
    assert.ok(after <= before - 3 * f.unit, `${before} -> ${after}: three units given back`);
    await assertContent(dir, path, f, expected, 'after discard and compact');
    await assertClean(path, f);
  });

  test(`${f.label}: discard in a child reads zeros, not the parent; compact of the parent keeps the child`, async (t) => {
    if (!skipUnless(t, 'qemu-img')) return;
    const dir = (await tmpDir(t)).path;
    const base = join(dir, `base.${f.ext}`);
    const { data, expected } = content(f.unit, 31);
    const p = await Disk.create(base, { format: f.format, capacity: CAP, ...f.vdkitCreate });
    await p.write(0, data);
    await p.write(0, expected.subarray(0, DATA));
    await p.close();
    const childPath = join(dir, `child.${f.ext}`);
    const c = await createChild(base, childPath);
    // the child stores units 4..5 itself; 2..3 and 8 come from the parent
    const own = xorshiftBytes(2 * f.unit, 32);
    await c.write(4 * f.unit, own);
    await c.close();
    own.copy(expected, 4 * f.unit);

    const childOnly = await Disk.open(childPath, { singleLink: true, cowByCaller: true });
    for (const [at, len] of [
      [2 * f.unit, 4 * f.unit],
      [8 * f.unit, f.unit],
    ] as const) {
      await childOnly.image.discard!(at, len);
      expected.fill(0, at, at + len);
    }
    await childOnly.close();
    const chain = await Disk.open(childPath, { readOnly: true });
    assert.ok((await chain.read(0, CAP)).equals(expected), 'the chain reads zeros over the discarded ranges');
    await chain.close();

    // compact the parent (a child depends on it: force); the child reads the same
    const r = await compactFile(base, { force: true });
    assert.ok(r.fileBytesAfter < r.fileBytesBefore, `the parent shrank: ${JSON.stringify(r)}`);
    const again = await Disk.open(childPath, { readOnly: true });
    assert.ok((await again.read(0, CAP)).equals(expected), 'the child reads the same after the parent was compacted');
    await again.close();
    await assertClean(base, f);
    const rep = await checkDisk(childPath, { repair: false, chain: false });
    assert.deepEqual(openFindings(rep), { corruptions: 0, leaks: 0 }, JSON.stringify(rep.findings));
  });
}
