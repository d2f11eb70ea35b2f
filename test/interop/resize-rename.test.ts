/**
 * resize, rename and delete, with qemu-img as the oracle. Each resized image is compared with a
 * raw file given the same writes and resized by qemu-img; qemu-img info must report the new
 * size, qemu-img check must pass, and qemu-io must write and read back at the new end. Renamed
 * disks must open under the new name only, and their children must still reach them.
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { Disk, checksum, createChild, describeChain, rename, unlink } from '../../src/index.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';
import { MiB, descriptorText, extentFiles, runOk } from './support.js';

const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;
const vdkit = (args: string[]) => run(process.execPath, [BIN, ...args]);
async function vdkitOk(args: string[]): Promise<void> {
  const r = await vdkit(args);
  assert.equal(r.code, 0, describeRun('vdkit', args, r));
}
async function vdkitFails(args: string[], code: string): Promise<void> {
  const r = await vdkit(args);
  assert.equal(r.code, 1, describeRun('vdkit', args, r));
  assert.match(r.stderr, new RegExp(code), describeRun('vdkit', args, r));
}

interface Case {
  label: string;
  qemuFormat: string;
  ext: string;
  /** qemu-img create -o options; undefined: made by `vdkit create -t vmfs` */
  create?: string[];
  vdkitType?: string;
  check: boolean;
}

const GROW: Case[] = [
  { label: 'raw', qemuFormat: 'raw', ext: 'img', create: [], check: false },
  { label: 'qcow2 v3', qemuFormat: 'qcow2', ext: 'qcow2', create: [], check: true },
  { label: 'qcow2 v2', qemuFormat: 'qcow2', ext: 'qcow2', create: ['-o', 'compat=0.10'], check: true },
  { label: 'vmdk monolithicSparse', qemuFormat: 'vmdk', ext: 'vmdk', create: ['-o', 'subformat=monolithicSparse'], check: true },
  { label: 'vmdk twoGbMaxExtentSparse', qemuFormat: 'vmdk', ext: 'vmdk', create: ['-o', 'subformat=twoGbMaxExtentSparse'], check: true },
  { label: 'vmdk monolithicFlat', qemuFormat: 'vmdk', ext: 'vmdk', create: ['-o', 'subformat=monolithicFlat'], check: true },
  { label: 'vmdk twoGbMaxExtentFlat', qemuFormat: 'vmdk', ext: 'vmdk', create: ['-o', 'subformat=twoGbMaxExtentFlat'], check: true },
  { label: 'vmdk vmfs', qemuFormat: 'vmdk', ext: 'vmdk', vdkitType: 'vmfs', check: true },
];

const OLD = 40 * MiB;
/** split types: crosses a split extent boundary (two new extents); others: adds GD/L1/BAT entries */
const newSize = (c: Case) => (c.label.includes('twoGb') ? 2200 * MiB : 300 * MiB);
const WRITES = [
  ['0x5a', 1 * MiB, MiB],
  ['0xa5', OLD - MiB, MiB],
  ['0x33', 20 * MiB + 4096, 8192],
] as const;

async function makeWithRef(dir: string, c: Case, name: string): Promise<{ img: string; ref: string }> {
  const img = join(dir, `${name}.${c.ext}`);
  const ref = join(dir, `${name}.ref.raw`);
  if (c.create) await runOk('qemu-img', ['create', '-q', '-f', c.qemuFormat, ...c.create, img, String(OLD)], 'qemu-img create');
  else await vdkitOk(['create', '-t', c.vdkitType!, img, String(OLD)]);
  await runOk('qemu-img', ['create', '-q', '-f', 'raw', ref, String(OLD)], 'qemu-img create raw');
  for (const [p, at, n] of WRITES) {
    await runOk('qemu-io', ['-f', c.qemuFormat, '-c', `write -P ${p} ${at} ${n}`, img], 'qemu-io write');
    await runOk('qemu-io', ['-f', 'raw', '-c', `write -P ${p} ${at} ${n}`, ref], 'qemu-io write raw');
  }
  return { img, ref };
}

async function virtualSize(img: string, format: string): Promise<number> {
  const r = await runOk('qemu-img', ['info', '-f', format, '--output=json', img], 'qemu-img info');
  return (JSON.parse(r.stdout) as { 'virtual-size': number })['virtual-size'];
}

async function assertSame(ref: string, img: string, format: string, what: string): Promise<void> {
  const args = ['compare', '-f', 'raw', '-F', format, ref, img];
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, `${what}: ${describeRun('qemu-img', args, r)}`);
}

for (const c of GROW) {
  test(`resize grows ${c.label} in place: qemu-img sees the new size and the old content`, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
    const dir = (await tmpDir(t)).path;
    const { img, ref } = await makeWithRef(dir, c, 'g');
    const NEW = newSize(c);
    await vdkitOk(['resize', img, `+${NEW - OLD}`]);
    await runOk('qemu-img', ['resize', '-q', '-f', 'raw', ref, String(NEW)], 'qemu-img resize raw');
    assert.equal(await virtualSize(img, c.qemuFormat), NEW);
    await assertSame(ref, img, c.qemuFormat, 'after grow');
    if (c.check) await runOk('qemu-img', ['check', '-f', c.qemuFormat, img], 'qemu-img check');
    const io = await runOk('qemu-io', ['-f', c.qemuFormat, '-c', `write -P 0x77 ${NEW - MiB} ${MiB}`, '-c', `read -P 0x77 ${NEW - MiB} ${MiB}`, '-c', `read -P 0 ${OLD} ${MiB}`, img], 'qemu-io at the new end');
    assert.doesNotMatch(io.stdout + io.stderr, /fail|mismatch/i, io.stdout);
    if (c.qemuFormat === 'vmdk') {
      const d = await descriptorText(img);
      assert.equal(extentFiles(d).reduce((a, e) => a + e.sectors, 0) * 512, NEW, d);
      if (c.label.includes('twoGb')) assert.equal(extentFiles(d).length, 3, `two extents added:\n${d}`);
      if (skipUnless(t, 'vmdkinfo')) {
        const v = await runOk('vmdkinfo', [img], 'vmdkinfo');
        assert.match(v.stdout, new RegExp(`\\(${NEW} bytes\\)`), v.stdout);
      }
      await vdkitOk(['check', img]);
    }
  });
}

test('resize shrinks raw and qcow2 only with --shrink, and only over no data unless --force', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  for (const c of GROW.slice(0, 3)) {
    const { img, ref } = await makeWithRef(dir, c, c.label.replace(/ /g, '-'));
    await vdkitFails(['resize', img, String(30 * MiB)], 'CANTSHRINK');
    await vdkitFails(['resize', img, String(30 * MiB), '--shrink'], 'CANTSHRINK'); // 0xa5 at 39 MiB
    assert.equal(await virtualSize(img, c.qemuFormat), OLD, `${c.label}: a refused shrink changes nothing`);
    // the last MiB holds data; 38 MiB cuts only zeros away
    await vdkitOk(['resize', img, String(OLD - 2 * MiB - 64 * 1024), '--shrink', '--force']);
    // now only zeros lie past 20 MiB + 12 KiB: a plain --shrink goes through
    await vdkitOk(['resize', '--shrink', img, '--', `-${MiB}`]);
    const end = OLD - 3 * MiB - 64 * 1024;
    await runOk('qemu-img', ['resize', '-q', '--shrink', '-f', 'raw', ref, String(end)], 'qemu-img resize raw');
    assert.equal(await virtualSize(img, c.qemuFormat), end);
    await assertSame(ref, img, c.qemuFormat, `${c.label} after shrink`);
    if (c.check) await runOk('qemu-img', ['check', '-f', c.qemuFormat, img], 'qemu-img check');
    // grown again, what was cut off reads as zeros
    await vdkitOk(['resize', img, String(OLD)]);
    await runOk('qemu-img', ['resize', '-q', '-f', 'raw', ref, String(OLD)], 'qemu-img resize raw');
    await assertSame(ref, img, c.qemuFormat, `${c.label} grown again`);
  }
  const v = join(dir, 'x.vmdk');
  await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', v, '10M'], 'create');
  await vdkitFails(['resize', v, '5M', '--shrink'], 'CANTSHRINK');
  const s = join(dir, 's.vmdk');
  await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=streamOptimized', s, '10M'], 'create');
  await vdkitFails(['resize', s, '20M'], 'NOTSUPPORTED.*streamOptimized');
});

test('resize respects children: no shrinking a parent, no growing a VMDK parent or child', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'base.qcow2');
  const child = join(dir, 'child.qcow2');
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', base, '32M'], 'create');
  await runOk('qemu-io', ['-c', 'write -P 9 0 1M', base], 'write');
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', child], 'create child');
  await vdkitFails(['resize', base, '16M', '--shrink', '--force'], 'CANTSHRINK.*child');
  // a qcow2 parent may grow under its child; the child grows past its parent and reads zeros there
  await vdkitOk(['resize', base, '48M']);
  await vdkitOk(['resize', child, '64M']);
  const io = await runOk('qemu-io', ['-c', 'read -P 9 0 1M', '-c', 'read -P 0 32M 32M', child], 'qemu-io');
  assert.doesNotMatch(io.stdout + io.stderr, /fail|mismatch/i);
  await runOk('qemu-img', ['check', child], 'check');

  const vb = join(dir, 'vb.vmdk');
  const vc = join(dir, 'vc.vmdk');
  await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', vb, '32M'], 'create');
  await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-b', 'vb.vmdk', '-F', 'vmdk', vc], 'create child');
  await vdkitFails(['resize', vb, '64M'], 'NOTSUPPORTED.*child');
  await vdkitFails(['resize', vc, '64M'], 'NOTSUPPORTED.*parent');
});

test('rename moves every file, rewrites extent names and re-points children', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  for (const [fmt, opts] of [
    ['vmdk', ['-o', 'subformat=monolithicSparse']],
    ['vmdk', ['-o', 'subformat=twoGbMaxExtentSparse']],
    ['vmdk', ['-o', 'subformat=twoGbMaxExtentFlat']],
    ['qcow2', []],
  ] as const) {
    const base = join(dir, `b.${fmt}`);
    const child = join(dir, `c.${fmt}`);
    await runOk('qemu-img', ['create', '-q', '-f', fmt, ...opts, base, '3G'], 'create');
    await runOk('qemu-io', ['-f', fmt, '-c', 'write -P 4 2100M 1M', base], 'write');
    await runOk('qemu-img', ['convert', '-f', fmt, '-O', 'raw', base, join(dir, 'ref.raw')], 'reference');
    await runOk('qemu-img', ['create', '-q', '-f', fmt, '-b', `b.${fmt}`, '-F', fmt, child], 'child');
    await vdkitOk(['rename', base, join(dir, `new-name.${fmt}`)]);
    const names = (await readdir(dir)).sort();
    assert.deepEqual(names.filter((n) => n.startsWith('b.') || n.startsWith('b-')), [], `old names gone: ${names}`);
    const renamed = join(dir, `new-name.${fmt}`);
    await assertSame(join(dir, 'ref.raw'), renamed, fmt, `${opts} renamed`);
    await runOk('qemu-img', ['check', '-f', fmt, renamed], 'check');
    if (fmt === 'vmdk') {
      const d = await descriptorText(renamed);
      for (const e of extentFiles(d)) assert.match(e.file!, /^new-name/, d);
      if (skipUnless(t, 'vmdkinfo')) await runOk('vmdkinfo', [renamed], 'vmdkinfo');
    }
    const chain = await runOk('qemu-img', ['info', '--backing-chain', '--output=json', child], 'qemu-img info --backing-chain');
    const links = JSON.parse(chain.stdout) as { filename: string; 'backing-filename'?: string }[];
    assert.equal(links.length, 2, chain.stdout);
    assert.equal(links[0]!['backing-filename'], `new-name.${fmt}`);
    const io = await runOk('qemu-io', ['-f', fmt, '-c', 'read -P 4 2100M 1M', child], 'read through the child');
    assert.doesNotMatch(io.stdout + io.stderr, /fail|mismatch/i);
    await vdkitFails(['rename', renamed, child], 'FILEEXISTS');
    // delete: refused while the child depends on it, then every file goes
    await vdkitFails(['delete', renamed], 'child');
    await vdkitOk(['delete', child]);
    await unlink(renamed);
    assert.deepEqual((await readdir(dir)).filter((n) => n !== 'ref.raw'), []);
  }
});

test('rename re-points VHD, VHDX and VDI children (parent locators, found by UUID)', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  // the CLI is covered above: the library calls here keep the test fast
  for (const [ext, fmt] of [['vhd', 'vpc'], ['vhdx', 'vhdx'], ['vdi', 'vdi']] as const) {
    const base = join(dir, `b.${ext}`);
    const child = join(dir, `c.${ext}`);
    const renamed = join(dir, `n.${ext}`);
    await runOk('qemu-img', ['create', '-q', '-f', fmt, base, '8M'], 'create');
    await runOk('qemu-io', ['-f', fmt, '-c', 'write -P 6 1M 1M', base], 'write');
    await (await createChild(base, child)).close();
    const r = await rename(base, renamed);
    assert.deepEqual(r.children, [child]);
    assert.deepEqual((await readdir(dir)).sort(), [`c.${ext}`, `n.${ext}`]);
    const c = await describeChain(child);
    assert.equal(c.break, undefined, JSON.stringify(c.break));
    assert.deepEqual(c.links.map((l) => resolve(dirname(child), l.path)), [child, renamed]);
    const a = await Disk.open(child, { readOnly: true });
    const b = await Disk.open(renamed, { readOnly: true });
    assert.equal(await checksum(a), await checksum(b), 'the child reads its parent through the new name');
    assert.ok((await a.read(MiB, MiB)).every((x) => x === 6));
    await a.close();
    await b.close();
    if (ext === 'vhd' && skipUnless(t, 'vhdiinfo')) {
      const v = await runOk('vhdiinfo', [child], 'vhdiinfo');
      assert.match(v.stdout, /Parent filename\s*:\s*n\.vhd/, v.stdout);
    }
    await assert.rejects(unlink(renamed), /child/);
    await unlink(child);
    await unlink(renamed);
    assert.deepEqual(await readdir(dir), []);
  }
});

test('rename refuses to replace another disk\'s file that has a new extent name, before it moves anything', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const a = join(dir, 'a.vmdk');
  const other = join(dir, 'b-flat.vmdk');
  await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', a, '1M'], 'create a');
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', other, '1M'], 'an unrelated disk named like the new extent');
  await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 64k', other], 'its data');
  const before = await readdir(dir);
  await assert.rejects(rename(a, join(dir, 'b.vmdk')), (e: Error & { code?: string }) => e.code === 'FILEEXISTS' && /b-flat\.vmdk/.test(e.message));
  assert.deepEqual((await readdir(dir)).sort(), before.sort(), 'nothing moved, nothing removed');
  await runOk('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x5a 0 64k', other], 'the other disk keeps its data');
  // the disk itself still renames where the way is clear
  await rename(a, join(dir, 'c.vmdk'));
  await runOk('qemu-img', ['check', '-q', join(dir, 'c.vmdk')], 'renamed disk');
});
