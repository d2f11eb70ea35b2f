/**
 * compact killed (SIGKILL) at random moments, 20 runs per format on small images: afterwards the
 * image opens and reads exactly the content it had (compact never changes what a disk reads),
 * vdkit's check finds no corruption (leaks allowed) and qemu-img check agrees where it knows the
 * format; in every fifth run a repair then leaves a clean image with the same content, and a
 * second compact finishes the job.
 *
 * VDI: the header count (cBlocksAllocated) and the dropped map entries change in one write, so
 * no kill leaves the count off the map (QEMU calls that a corruption): both layouts, the map
 * at 1 MiB (VirtualBox's and vdkit's) and right after the header (QEMU's).
 * VHDX: BAT changes go through the log, and a session's log is marked applied only at close, so
 * a kill leaves a log that the next read-write open replays (check reports it on field
 * `logGuid`; QEMU refuses to open such an image without `check -r all`): allowed, and replayed
 * by the repair.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk } from '../../src/index.js';
import { killRuns, readAll, type KillKind } from '../helpers/in-place-kill.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { describeRun, run, skipUnless } from '../helpers/tools.js';

/** qemu-img's word for a VDI count above the map's entries, which a killed compact leaves (a leak) */
const VDI_COUNT_ABOVE = /^ERROR: allocated blocks mismatch, is \d+, should be \d+$/;

const MiB = 2 ** 20;

interface Kind extends KillKind {
  unit: number;
  /** units in the template image (small: 20 copies are made) */
  units: number;
  create: Record<string, unknown>;
  /** the template's empty image made by qemu-img (its layout), not by vdkit */
  qemuMade?: boolean;
}

const KINDS: Kind[] = [
  { label: 'vdi', format: 'vdi', ext: 'vdi', unit: MiB, units: 16, create: {}, qemuCheck: true, tolerated: [], qemuTolerated: VDI_COUNT_ABOVE },
  { label: 'vdi qemu-made', format: 'vdi', ext: 'vdi', unit: MiB, units: 16, create: {}, qemuCheck: true, tolerated: [], qemuTolerated: VDI_COUNT_ABOVE, qemuMade: true },
  { label: 'qcow2', format: 'qcow2', ext: 'qcow2', unit: 64 * 1024, units: 16, create: {}, qemuCheck: true, tolerated: [] },
  { label: 'vhdx', format: 'vhdx', ext: 'vhdx', unit: MiB, units: 16, create: { blockSize: MiB }, qemuCheck: true, tolerated: ['logGuid'] },
  { label: 'vhd', format: 'vhd', ext: 'vhd', unit: 2 * MiB, units: 8, create: {}, qemuCheck: false, tolerated: [] },
];

async function template(dir: string, k: Kind): Promise<{ path: string; expected: Buffer }> {
  const path = join(dir, `tpl.${k.ext}`);
  const units = k.units;
  if (k.qemuMade) {
    const args = ['create', '-q', '-f', k.format, path, String(units * k.unit)];
    const r = await run('qemu-img', args);
    assert.equal(r.code, 0, describeRun('qemu-img', args, r));
  }
  const d = k.qemuMade ? await Disk.open(path) : await Disk.create(path, { format: k.format, capacity: units * k.unit, ...k.create });
  // data everywhere, then zeros written into units 0, 3, 5, 6, 9, 12 and 13 (stored zeros:
  // holes low and high, runs, the first unit)
  await d.write(0, xorshiftBytes(units * k.unit, 3));
  for (const u of [0, 3, 5, 6, 9, 12, 13].filter((x) => x < units - 1)) await d.write(u * k.unit, Buffer.alloc(k.unit));
  await d.close();
  return { path, expected: await readAll(path) };
}

test('compact killed at random moments keeps the content and adds no corruption', { concurrency: true }, async (t) => {
  await Promise.all(KINDS.map((k) => t.test(k.label, async (t) => {
    if (!skipUnless(t, 'qemu-img')) return;
    await killRuns(t, k, { op: 'compact', template: (dir) => template(dir, k) });
  })));
});
