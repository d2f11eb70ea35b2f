/**
 * resize for VHD, VDI and VHDX (fixed, dynamic), with qemu-img as the oracle: images
 * made by qemu-img with data near both ends are grown and shrunk by `vdkit resize`; qemu-img
 * info must report the new size, qemu-img compare must find the old content (zeros beyond),
 * qemu-img check (VDI, VHDX) and vdkit check must find nothing, vhdiinfo must report the new
 * media size (VHD, VHDX), and a shrink over data must be refused without --force.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { checkDisk, openFindings } from '../../src/index.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';
import { MiB, runOk } from './support.js';

const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;
const vdkit = (args: string[]) => run(process.execPath, [BIN, ...args]);

interface Case {
  label: string;
  qemuFormat: string;
  ext: string;
  create: string[];
  /**
   * the grown size: VHD dynamic takes its BAT past its first sector (blocks move); VDI dynamic
   * its map past qemu's one sector (the first data block moves, the map goes in its place);
   * VDI fixed stays within that sector (a full image cannot move its map)
   */
  grow: number;
}

const CASES: Case[] = [
  { label: 'vhd dynamic', qemuFormat: 'vpc', ext: 'vhd', create: ['-o', 'subformat=dynamic'], grow: 300 * MiB },
  { label: 'vhd fixed', qemuFormat: 'vpc', ext: 'vhd', create: ['-o', 'subformat=fixed'], grow: 300 * MiB },
  { label: 'vdi dynamic', qemuFormat: 'vdi', ext: 'vdi', create: [], grow: 300 * MiB },
  { label: 'vdi fixed', qemuFormat: 'vdi', ext: 'vdi', create: ['-o', 'static=on'], grow: 100 * MiB },
  // 40 MiB is not a whole number of qemu's blocks: the partial last block moves to full size
  { label: 'vhdx dynamic', qemuFormat: 'vhdx', ext: 'vhdx', create: [], grow: 300 * MiB },
  { label: 'vhdx fixed', qemuFormat: 'vhdx', ext: 'vhdx', create: ['-o', 'subformat=fixed'], grow: 300 * MiB },
];

const OLD = 40 * MiB;
const WRITES = [
  ['0x5a', 1 * MiB, MiB],
  ['0xa5', 38 * MiB, MiB],
  ['0x33', 20 * MiB + 4096, 8192],
] as const;

async function virtualSize(img: string, format: string): Promise<number> {
  const r = await runOk('qemu-img', ['info', '-f', format, '--output=json', img], 'qemu-img info');
  return (JSON.parse(r.stdout) as { 'virtual-size': number })['virtual-size'];
}

async function assertState(c: Case, img: string, ref: string, size: number, what: string): Promise<void> {
  assert.equal(await virtualSize(img, c.qemuFormat), size, `${what}: qemu-img info virtual size`);
  await runOk('truncate', ['-s', String(size), ref], 'truncate ref');
  const args = ['compare', '-f', 'raw', '-F', c.qemuFormat, ref, img];
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, `${what}: ${describeRun('qemu-img', args, r)}`);
  if (c.qemuFormat !== 'vpc') await runOk('qemu-img', ['check', '-q', '-f', c.qemuFormat, img], 'qemu-img check');
  const report = await checkDisk(img, { repair: false });
  assert.equal(openFindings(report).corruptions, 0, `${what}: vdkit check ${JSON.stringify(report.findings)}`);
  if (c.qemuFormat !== 'vdi') {
    const v = await runOk('vhdiinfo', [img], 'vhdiinfo');
    assert.match(v.stdout, new RegExp(`Media size\\s*:.*\\(${size} bytes\\)`), `${what}: vhdiinfo ${v.stdout}`);
  }
}

test('resize VHD, VDI and VHDX: grow, shrink, refuse a shrink over data', { concurrency: true }, async (t) => {
  await Promise.all(CASES.map((c) => t.test(c.label, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io', ...(c.qemuFormat !== 'vdi' ? ['vhdiinfo'] : []))) return;
    const dir = (await tmpDir(t)).path;
    const img = join(dir, `d.${c.ext}`);
    const ref = join(dir, 'ref.raw');
    // force_size keeps qemu's VHD at exactly 40 MiB (without it qemu rounds to CHS)
    const create = c.qemuFormat === 'vpc' ? ['-o', `${c.create[1]},force_size=on`] : c.create;
    await runOk('qemu-img', ['create', '-q', '-f', c.qemuFormat, ...create, img, String(OLD)], 'qemu-img create');
    await runOk('qemu-img', ['create', '-q', '-f', 'raw', ref, String(OLD)], 'qemu-img create raw');
    for (const [p, at, n] of WRITES) {
      await runOk('qemu-io', ['-f', c.qemuFormat, '-c', `write -P ${p} ${at} ${n}`, img], 'qemu-io write');
      await runOk('qemu-io', ['-f', 'raw', '-c', `write -P ${p} ${at} ${n}`, ref], 'qemu-io write raw');
    }
    if (c.label === 'vdi fixed') {
      // more than qemu's map sector holds: refused, nothing changed
      const r = await vdkit(['resize', img, String(300 * MiB)]);
      assert.match(r.stderr, /NOTSUPPORTED/, describeRun('vdkit', ['resize'], r));
      await assertState(c, img, ref, OLD, 'refused grow');
    }
    await runOk(process.execPath, [BIN, 'resize', img, String(c.grow)], 'vdkit resize grow');
    await assertState(c, img, ref, c.grow, 'grown');
    // qemu writes at the new end and reads it back
    await runOk('qemu-io', ['-f', c.qemuFormat, '-c', `write -P 0x77 ${c.grow - MiB} ${MiB}`, '-c', `read -P 0x77 ${c.grow - MiB} ${MiB}`, img], 'qemu-io at the new end');
    await runOk('qemu-io', ['-f', 'raw', '-c', `write -P 0x77 ${c.grow - MiB} ${MiB}`, ref], 'qemu-io raw');
    // a shrink without --shrink, and over data without --force, is refused and changes nothing
    let r = await vdkit(['resize', img, String(OLD)]);
    assert.match(r.stderr, /CANTSHRINK/, describeRun('vdkit', ['resize'], r));
    r = await vdkit(['resize', '--shrink', img, String(OLD)]);
    assert.match(r.stderr, /CANTSHRINK/, describeRun('vdkit', ['resize', '--shrink'], r));
    await assertState(c, img, ref, c.grow, 'after refused shrinks');
    // the data at the new end dropped, so the shrink back is allowed
    await runOk('qemu-io', ['-f', c.qemuFormat, '-c', `write -z ${c.grow - MiB} ${MiB}`, img], 'qemu-io zero');
    await runOk('qemu-io', ['-f', 'raw', '-c', `write -z ${c.grow - MiB} ${MiB}`, ref], 'qemu-io zero raw');
    await runOk(process.execPath, [BIN, 'resize', '--shrink', img, String(OLD)], 'vdkit resize shrink');
    await assertState(c, img, ref, OLD, 'shrunk');
    // cutting into the data at 38 MiB needs --force
    r = await vdkit(['resize', '--shrink', img, String(38 * MiB)]);
    assert.match(r.stderr, /CANTSHRINK/, describeRun('vdkit', ['resize'], r));
    await runOk(process.execPath, [BIN, 'resize', '--shrink', '--force', img, String(38 * MiB)], 'vdkit resize --force');
    await assertState(c, img, ref, 38 * MiB, 'forced shrink');
  })));
});

test('a forced shrink to a size inside a stored block, then a grow: the cut bytes read as zeros (qemu-io)', { concurrency: true }, async (t) => {
  await Promise.all(CASES.map((c) => t.test(c.label, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
    const dir = (await tmpDir(t)).path;
    const img = join(dir, `d.${c.ext}`);
    const create = c.qemuFormat === 'vpc' ? ['-o', `${c.create[1]},force_size=on`] : c.create;
    await runOk('qemu-img', ['create', '-q', '-f', c.qemuFormat, ...create, img, String(10 * MiB)], 'qemu-img create');
    await runOk('qemu-io', ['-f', c.qemuFormat, '-c', `write -P 7 ${9 * MiB} ${MiB}`, img], 'qemu-io write');
    // 9.5 MiB: inside a VDI block (1 MiB), a VHD block (2 MiB) and a VHDX block; the stored
    // block keeps its bytes past the new end unless the resize clears them
    const mid = 9 * MiB + 512 * 1024;
    await runOk(process.execPath, [BIN, 'resize', '--shrink', '--force', img, String(mid)], 'vdkit resize --shrink --force');
    await runOk(process.execPath, [BIN, 'resize', img, String(10 * MiB)], 'vdkit resize grow');
    const io = await runOk('qemu-io', ['-f', c.qemuFormat, '-c', `read -P 7 ${9 * MiB} ${512 * 1024}`, '-c', `read -P 0 ${mid} ${512 * 1024}`, img], 'qemu-io read');
    assert.doesNotMatch(io.stdout + io.stderr, /fail|mismatch/i, io.stdout);
    const report = await checkDisk(img, { repair: false });
    assert.equal(openFindings(report).corruptions, 0, JSON.stringify(report.findings));
  })));
});
