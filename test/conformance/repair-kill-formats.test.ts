/**
 * A repair killed (SIGKILL) at random moments, 20 runs each, for the formats repair-kill.test.ts
 * does not cover: a monolithicSparse VMDK (a redundant grain table that differs from the primary,
 * leaked grains at the end), a qcow2 (leaked clusters: mappings dropped from an L2 table while
 * their refcounts stay, and a refcount one too low) and a VHDX (a log never marked applied, a
 * damaged second header and region table, a leaked MiB at the end). The images are made by
 * qemu-img where it can (VMDK, qcow2), damaged by hand, and judged by test/helpers/repair-kill.ts:
 * no new corruption after a kill, the expected content, a second repair finishes, qemu-img check
 * clean at the end.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, readFile, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk } from '../../src/index.js';
import { repairKillRuns } from '../helpers/repair-kill.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;
const KiB = 1024;
const pattern = (n: number, len: number) => Buffer.alloc(len, (n * 37 + 11) & 0xff);

async function poke(p: string, at: number, data: Buffer): Promise<void> {
  const fh = await open(p, 'r+');
  await fh.write(data, 0, data.length, at);
  await fh.close();
}

async function qemuImg(args: string[]): Promise<void> {
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, describeRun('qemu-img', args, r));
}

/** write pattern(u) into unit u for each of `units`; the expected content of the whole disk */
async function fill(p: string, size: number, unit: number, units: number[]): Promise<Buffer> {
  const expected = Buffer.alloc(size);
  const d = await Disk.open(p);
  for (const u of units) {
    const data = pattern(u, unit);
    await d.write(u * unit, data);
    data.copy(expected, u * unit);
  }
  await d.close();
  return expected;
}

test('vmdk monolithicSparse: a repair killed at random moments (20 runs) never adds corruption; a second repair finishes it', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t, 'vdkit-repair-kill-tpl-')).path;
  const p = join(dir, 'tpl.vmdk');
  const size = 8 * MiB;
  const grain = 64 * KiB;
  await qemuImg(['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicSparse', p, String(size)]);
  const expected = await fill(p, size, grain, [0, 1, 5, 9, 30, 31, 100]);
  const f = await readFile(p);
  const rgd = Number(f.readBigUInt64LE(48)) * 512;
  const rgt = f.readUInt32LE(rgd) * 512;
  const gd = Number(f.readBigUInt64LE(56)) * 512;
  const gt = f.readUInt32LE(gd) * 512;
  // the copy names grain 5's sector for grain 2 (which the primary leaves unallocated) and
  // grain 9's for grain 31: not a lagging copy, a damaged one
  await poke(p, rgt + 4 * 2, f.subarray(gt + 4 * 5, gt + 4 * 6));
  await poke(p, rgt + 4 * 31, f.subarray(gt + 4 * 9, gt + 4 * 10));
  await truncate(p, f.length + 3 * grain); // grains no table uses
  await repairKillRuns(t, 'vmdk', p, expected, 13, 'vmdk');
});

test('qcow2: a repair killed at random moments (20 runs) never adds corruption; a second repair finishes it', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t, 'vdkit-repair-kill-tpl-')).path;
  const p = join(dir, 'tpl.qcow2');
  const size = 4 * MiB;
  const cs = 64 * KiB;
  await qemuImg(['create', '-q', '-f', 'qcow2', p, String(size)]);
  const expected = await fill(p, size, cs, [0, 1, 2, 4, 7, 8, 20, 40, 63]);
  const f = await readFile(p);
  const l1 = Number(f.readBigUInt64BE(40));
  const l2 = Number(f.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  const rt = Number(f.readBigUInt64BE(48));
  const order = f.readUInt32BE(96);
  assert.equal(order, 4, 'qemu-img makes 16-bit refcounts');
  const rb = Number(f.readBigUInt64BE(rt));
  // clusters 2, 8 and 40 dropped from the L2 table (they read as zeros now; their refcounts
  // stay: leaks), and the refcount of cluster 7's data one too low (a corruption)
  for (const u of [2, 8, 40]) {
    await poke(p, l2 + 8 * u, Buffer.alloc(8));
    expected.fill(0, u * cs, (u + 1) * cs);
  }
  const host7 = Number(f.readBigUInt64BE(l2 + 8 * 7) & 0x00fffffffffffe00n) / cs;
  await poke(p, rb + 2 * host7, Buffer.alloc(2));
  await repairKillRuns(t, 'qcow2', p, expected, 17, 'qcow2');
});

test('vhdx: a repair killed at random moments (20 runs) never adds corruption; a second repair finishes it', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t, 'vdkit-repair-kill-tpl-')).path;
  const p = join(dir, 'tpl.vhdx');
  const size = 16 * MiB;
  const d = await Disk.create(p, { format: 'vhdx', capacity: size, blockSize: MiB });
  await d.close();
  const expected = await fill(p, size, MiB, [0, 2, 3, 7]);
  // a writer that stops without closing: its BAT change stays in a log never marked applied
  const script = `import { Disk } from ${JSON.stringify(new URL('../../src/index.js', import.meta.url).href)};
const d = await Disk.open(${JSON.stringify(p)});
await d.write(${11 * MiB}, Buffer.alloc(${MiB}, 0x77));
await d.flush();
process.exit(0);`;
  const w = await run(process.execPath, ['--input-type=module', '-e', script]);
  assert.equal(w.code, 0, describeRun('node', ['-e', script], w));
  expected.fill(0x77, 11 * MiB, 12 * MiB);
  await poke(p, 128 * KiB + 300, Buffer.from([0x55])); // header 2: bad checksum
  await poke(p, 256 * KiB + 100, Buffer.from([0x55])); // region table 2: bad checksum
  await truncate(p, (await stat(p)).size + MiB); // a MiB no block uses
  await repairKillRuns(t, 'vhdx', p, expected, 19, 'vhdx');
});
