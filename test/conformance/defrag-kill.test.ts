/**
 * defragment killed (SIGKILL) at random moments, 20 runs per kind, from a fragmented template
 * (units written in a shuffled or reversed virtual order, some left unallocated): afterwards the
 * image opens read-only and reads exactly what it did, vdkit's check finds no corruption (leaks
 * allowed: a half-done defragment leaves unused slots) and qemu-img check exits 0 or 3 where it
 * knows the format; every fifth run, a repair then an uninterrupted defragment leave the units
 * in virtual order (parsed from the file by the row's own `inOrder`, not by vdkit), the same
 * content and the size of an uninterrupted run. The shared runs are test/helpers/in-place-kill.ts.
 *
 * VDI: every step re-points one map entry, so cBlocksAllocated never leaves the entries (QEMU
 * calls that corruption); a kill inside a permutation cycle leaves a hole and the scratch slot
 * in use (a leak that the repair closes). Both layouts: the map at 1 MiB (VirtualBox's and
 * vdkit's) and right after the header (QEMU's, written by qemu-io in reverse order).
 * VHD: blocks parked past the final area and moved in; the file always ends in a valid footer.
 * VHDX: BAT changes go through the log and a session's log is marked applied only when the
 * file is cut or closed, so a kill leaves a log that the next read-write open replays (check
 * reports it on field `logGuid`; QEMU refuses such an image without `check -r all`): allowed,
 * as in compact-kill, and replayed by the repair.
 * qcow2: the 512-byte-cluster kind needs new refcount blocks for the room past the end of the
 * file (each covers 128 KiB), which the end of the run drops again.
 *
 * Rows are self-contained (how to make the template, how to tell virtual order) so more formats
 * can be added as rows.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk } from '../../src/index.js';
import { vdiBlockOrder, vhdBlockOrder } from '../helpers/block-order.js';
import { qcow2InOrder, vhdxInOrder } from '../helpers/defrag-layout.js';
import { killRuns, readAll, type KillKind } from '../helpers/in-place-kill.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';
import { describeRun, run, skipUnless } from '../helpers/tools.js';

const MiB = 2 ** 20;
const KiB = 1024;

interface DefragKind extends KillKind {
  /** allocation unit (cluster, block) of the template */
  unit: number;
  /** units of virtual size; every fourth one (u % 4 === 2) stays unallocated */
  units: number;
  /** Disk.create options of a vdkit-made template */
  create: Record<string, unknown>;
  /** made by `qemu-img create -f <format> <opts>` and written by qemu-io in reverse order instead */
  qemuMade?: { format: string; opts: string[] };
  /** the seed of the shuffled order vdkit writes the units in (default: from the label) */
  randomSeed?: number;
  /** the data units of the file at `path` are in virtual order (parsed from the file, not by vdkit) */
  inOrder: (path: string) => Promise<boolean>;
}

const KINDS: DefragKind[] = [
  { label: 'vdi', format: 'vdi', ext: 'vdi', unit: MiB, units: 16, create: {}, qemuCheck: true, tolerated: [], inOrder: async (p) => (await vdiBlockOrder(p)).inOrder },
  {
    label: 'vdi qemu-made',
    format: 'vdi',
    ext: 'vdi',
    unit: MiB,
    units: 16,
    create: {},
    qemuCheck: true,
    tolerated: [],
    qemuMade: { format: 'vdi', opts: [] },
    inOrder: async (p) => (await vdiBlockOrder(p)).inOrder,
  },
  { label: 'vhd', format: 'vhd', ext: 'vhd', unit: 2 * MiB, units: 8, create: {}, qemuCheck: false, tolerated: [], inOrder: async (p) => (await vhdBlockOrder(p)).inOrder },
  { label: 'qcow2 qemu reverse', format: 'qcow2', ext: 'qcow2', unit: 64 * KiB, units: 96, create: {}, qemuCheck: true, tolerated: [], qemuMade: { format: 'qcow2', opts: [] }, inOrder: qcow2InOrder },
  { label: 'qcow2 512-byte clusters', format: 'qcow2', ext: 'qcow2', unit: 512, units: 256, create: { clusterSize: 512 }, qemuCheck: true, tolerated: [], randomSeed: 21, inOrder: qcow2InOrder },
  { label: 'vhdx', format: 'vhdx', ext: 'vhdx', unit: MiB, units: 32, create: { blockSize: MiB }, qemuCheck: true, tolerated: ['logGuid'], randomSeed: 22, inOrder: (p) => vhdxInOrder(p) },
];

async function ok(cmd: string, args: string[]): Promise<void> {
  const r = await run(cmd, args);
  assert.equal(r.code, 0, describeRun(cmd, args, r));
}

/** the allocated units of a kind, in the order they are written (reversed for qemu, shuffled for vdkit) */
function writeOrder(k: DefragKind): number[] {
  const units = [...Array(k.units).keys()].filter((u) => u % 4 !== 2);
  if (k.qemuMade) return units.reverse();
  const rnd = mulberry32(k.randomSeed ?? k.label.length * 31 + 7);
  for (let i = units.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [units[i], units[j]] = [units[j]!, units[i]!];
  }
  // never the identity: the template must start out of order
  if (units.every((u, i, a) => i === 0 || a[i - 1]! < u)) units.reverse();
  return units;
}

async function fragmented(dir: string, k: DefragKind): Promise<{ path: string; expected: Buffer }> {
  const path = join(dir, `tpl.${k.ext}`);
  const capacity = k.units * k.unit;
  if (k.qemuMade) {
    await ok('qemu-img', ['create', '-q', '-f', k.qemuMade.format, ...k.qemuMade.opts, path, String(capacity)]);
    await ok('qemu-io', ['-f', k.qemuMade.format, ...writeOrder(k).flatMap((u) => ['-c', `write -P ${(u % 250) + 1} ${u * k.unit} ${k.unit}`]), path]);
  } else {
    const d = await Disk.create(path, { format: k.format, capacity, ...k.create });
    for (const u of writeOrder(k)) await d.write(u * k.unit, xorshiftBytes(k.unit, u + 1));
    await d.close();
  }
  assert.equal(await k.inOrder(path), false, `${k.label}: the template starts out of virtual order`);
  return { path, expected: await readAll(path) };
}

test('defragment killed at random moments keeps the content and adds no corruption', { concurrency: true }, async (t) => {
  await Promise.all(KINDS.map((k) => t.test(k.label, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
    await killRuns(t, k, {
      op: 'defragment',
      template: (dir) => fragmented(dir, k),
      finished: async (path, what) => assert.equal(await k.inOrder(path), true, `${what}: units in virtual order`),
    });
  })));
});
