/**
 * QEMU writes, vdkit reads (and writes back): images of every subformat qemu-img creates are
 * filled with qemu-io patterns (streamOptimized by qemu-img convert from a patterned raw file),
 * then every byte vdkit reads must equal `qemu-img convert -O raw`, vdkit's block status must
 * match `qemu-img map` on sparse extents, and Disk.info must report QEMU's size and type.
 * Then vdkit writes into the QEMU images (mirrored into the raw conversion) and qemu-img
 * compare/check must still be happy.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk } from '../../src/index.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';
import {
  GiB,
  GRAIN,
  KiB,
  MiB,
  RawModel,
  Rng,
  SECTOR,
  assertRangeEqual,
  assertWholeDiskEqual,
  cidOf,
  descriptorText,
  extentFiles,
  grainTableEntry,
  mapToStatus,
  mergeStatus,
  planWrites,
  qemuInfo,
  qemuMap,
  runOk,
  seedOf,
  sparseHeader,
  statesOver,
} from './support.js';

type Op = { kind: 'P'; pattern: number; offset: number; length: number } | { kind: 'z'; offset: number; length: number };

interface Case {
  subformat: 'monolithicSparse' | 'monolithicFlat' | 'twoGbMaxExtentSparse' | 'twoGbMaxExtentFlat' | 'streamOptimized';
  label: string;
  /** extra -o options */
  options: string[];
  size: number;
  sparse: boolean;
  zeroedGrain?: boolean;
  extents: number;
}

const CASES: Case[] = [
  { subformat: 'monolithicSparse', label: 'monolithicSparse', options: [], size: 96 * MiB, sparse: true, extents: 1 },
  { subformat: 'monolithicSparse', label: 'monolithicSparse zeroed_grain=on', options: ['zeroed_grain=on'], size: 96 * MiB, sparse: true, zeroedGrain: true, extents: 1 },
  { subformat: 'monolithicFlat', label: 'monolithicFlat', options: [], size: 96 * MiB, sparse: false, extents: 1 },
  { subformat: 'twoGbMaxExtentSparse', label: 'twoGbMaxExtentSparse', options: [], size: 3 * GiB, sparse: true, extents: 2 },
  { subformat: 'twoGbMaxExtentFlat', label: 'twoGbMaxExtentFlat', options: [], size: 3 * GiB, sparse: false, extents: 2 },
  { subformat: 'streamOptimized', label: 'streamOptimized', options: [], size: 96 * MiB, sparse: true, extents: 1 },
];

/** QEMU splits at exactly 2 GiB (4194304 sectors), not VMware's 2047 MiB. */
const QEMU_SPLIT = 2 * GiB;

/** The qemu-io program for an image of `size` bytes: patterns at grain, grain-table and extent edges. */
function opsFor(size: number): { ops: Op[]; data: [number, number][]; wholeGrainZeros: [number, number][] } {
  const ops: Op[] = [
    { kind: 'P', pattern: 0xab, offset: 0, length: 64 * KiB },
    { kind: 'P', pattern: 0x5a, offset: 1 * MiB, length: 4 * KiB },
    { kind: 'z', offset: 2 * MiB, length: 128 * KiB }, // zeroes over nothing
    { kind: 'P', pattern: 0x11, offset: GRAIN - SECTOR, length: 1 * KiB }, // straddles grains 0 and 1
    { kind: 'P', pattern: 0x22, offset: 4 * MiB, length: GRAIN }, // a whole grain...
    { kind: 'z', offset: 4 * MiB, length: GRAIN }, // ...zeroed again (zeroed_grain: GTE = 1)
    { kind: 'P', pattern: 0x66, offset: 10 * MiB, length: 320 * KiB },
    { kind: 'z', offset: 10 * MiB + GRAIN, length: GRAIN }, // a whole grain zeroed inside written data
    { kind: 'z', offset: 12 * MiB + 512, length: 1 * KiB }, // a partial zero write over nothing
    { kind: 'P', pattern: 0x33, offset: 32 * MiB - SECTOR, length: 1 * KiB }, // straddles grain tables 0 and 1
    { kind: 'P', pattern: 0x44, offset: size - 4 * KiB, length: 4 * KiB }, // the last sectors
  ];
  const data: [number, number][] = [
    [0, 64 * KiB],
    [1 * MiB, 4 * KiB],
    [GRAIN - SECTOR, 1 * KiB],
    [10 * MiB, GRAIN],
    [10 * MiB + 2 * GRAIN, 320 * KiB - 2 * GRAIN],
    [32 * MiB - SECTOR, 1 * KiB],
    [size - 4 * KiB, 4 * KiB],
  ];
  if (size > QEMU_SPLIT) {
    ops.push({ kind: 'P', pattern: 0x77, offset: QEMU_SPLIT - SECTOR, length: 1 * KiB }); // straddles the two extents
    ops.push({ kind: 'P', pattern: 0x78, offset: QEMU_SPLIT + 1 * MiB, length: 192 * KiB });
    ops.push({ kind: 'z', offset: QEMU_SPLIT + 1 * MiB + GRAIN, length: GRAIN });
    data.push([QEMU_SPLIT - SECTOR, 1 * KiB], [QEMU_SPLIT + 1 * MiB, GRAIN], [QEMU_SPLIT + 1 * MiB + 2 * GRAIN, GRAIN]);
  }
  const wholeGrainZeros: [number, number][] = [
    [2 * MiB, 128 * KiB],
    [4 * MiB, GRAIN],
    [10 * MiB + GRAIN, GRAIN],
  ];
  if (size > QEMU_SPLIT) wholeGrainZeros.push([QEMU_SPLIT + 1 * MiB + GRAIN, GRAIN]);
  return { ops, data, wholeGrainZeros };
}

function qemuIoArgs(ops: readonly Op[]): string[] {
  return ops.flatMap((o) => ['-c', o.kind === 'P' ? `write -P 0x${o.pattern.toString(16)} ${o.offset} ${o.length}` : `write -z ${o.offset} ${o.length}`]);
}

/** Create the image with qemu-img (streamOptimized: convert from a patterned raw file) and run the qemu-io program. */
async function makeQemuImage(dir: string, c: Case): Promise<{ img: string; ops: ReturnType<typeof opsFor> }> {
  const img = join(dir, 'qemu.vmdk');
  const ops = opsFor(c.size);
  if (c.subformat === 'streamOptimized') {
    const src = join(dir, 'source.raw');
    await runOk('qemu-img', ['create', '-f', 'raw', src, String(c.size)], 'qemu-img create raw');
    await runOk('qemu-io', ['-f', 'raw', ...qemuIoArgs(ops.ops), src], 'qemu-io on the raw source');
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', src, img], 'qemu-img convert to streamOptimized');
    await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', src, img], 'qemu-img compare source vs stream');
  } else {
    const o = [`subformat=${c.subformat}`, ...c.options].join(',');
    await runOk('qemu-img', ['create', '-f', 'vmdk', '-o', o, img, String(c.size)], 'qemu-img create');
    await runOk('qemu-io', ['-f', 'vmdk', ...qemuIoArgs(ops.ops), img], 'qemu-io');
  }
  return { img, ops };
}

async function sparseExtentFiles(dir: string, img: string): Promise<string[]> {
  const lines = extentFiles(await descriptorText(img));
  return lines.filter((l) => l.type === 'SPARSE').map((l) => join(dir, l.file!));
}

for (const c of CASES) {
  const name = `qemu ${c.label} ${c.size} B: vdkit reads what qemu-img convert -O raw reads`;
  test(name, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
    const dir = (await tmpDir(t, 'vdkit-interop-q-')).path;
    const { img, ops } = await makeQemuImage(dir, c);
    const ref = join(dir, 'reference.raw');
    await runOk('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', img, ref], 'qemu-img convert -O raw');

    const qi = await qemuInfo(img);
    assert.equal(qi['virtual-size'], c.size);
    assert.equal(qi['format-specific']?.data['create-type'], c.subformat);

    if (c.zeroedGrain) {
      // the setup really produced GTE = 1 (zeroed grain) where a written grain was zeroed
      const [file] = await sparseExtentFiles(dir, img);
      const h = await sparseHeader(file!);
      assert.equal(h.version, 2, 'zeroed_grain=on writes header version 2');
      assert.equal(h.flags & 0x4, 0x4, 'zeroed-grain flag');
      assert.equal(await grainTableEntry(file!, 4 * MiB), 1, 'GTE of the zeroed 4 MiB grain');
      assert.equal(await grainTableEntry(file!, 10 * MiB + GRAIN), 1, 'GTE of the grain zeroed inside data');
    }

    const disk = await Disk.open(img, { readOnly: true });
    try {
      const info = await disk.info();
      assert.equal(disk.capacity, qi['virtual-size'], 'vdkit capacity vs qemu virtual-size');
      assert.equal(info.capacity, qi['virtual-size']);
      assert.equal(info.type, qi['format-specific']?.data['create-type'], 'vdkit type vs qemu create-type');
      assert.equal(info.extents.length, c.extents);
      assert.equal(info.cid, (qi['format-specific']?.data.cid ?? -1).toString(16).padStart(8, '0'), 'vdkit CID vs qemu cid');
      if (c.subformat === 'streamOptimized') assert.equal(info.compressed, true);
      if (c.zeroedGrain) assert.equal(info.version, 2);

      // every byte, 1 MiB at a time
      await assertWholeDiskEqual(disk, ref, name, { chunk: 1 * MiB });

      // block status
      const status = await disk.blockStatus();
      assert.equal(status[0]!.offset, 0);
      assert.equal(status.reduce((s, r) => s + r.length, 0), c.size, 'block status covers the disk exactly');
      for (const [off, len] of ops.data) {
        assert.deepEqual([...statesOver(status, off, len)], ['data'], `written range ${off}+${len}: ${JSON.stringify(status.filter((r) => r.offset < off + len && off < r.offset + r.length))}`);
      }
      if (c.zeroedGrain) {
        for (const [off, len] of ops.wholeGrainZeros) {
          const states = statesOver(status, off, len);
          assert.ok(!states.has('data'), `write -z range ${off}+${len} with zeroed_grain must be zero or unallocated, got ${[...states]}`);
        }
        assert.deepEqual([...statesOver(status, 4 * MiB, GRAIN)], ['zero'], 'a GTE = 1 grain is "zero"');
      }
      if (c.sparse) {
        // same allocation picture as qemu-img map
        const theirs = mapToStatus(await qemuMap(img));
        assert.deepEqual(mergeStatus(status), theirs, 'vdkit block status vs qemu-img map');
      }
    } finally {
      await disk.close();
    }
  });
}

// ------------------------------------------------------------------ vdkit writes into QEMU's images

for (const c of CASES.filter((x) => x.subformat !== 'streamOptimized')) {
  const name = `qemu ${c.label} ${c.size} B: vdkit writes into it, qemu-img compare and check agree`;
  test(name, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
    const dir = (await tmpDir(t, 'vdkit-interop-qw-')).path;
    const { img } = await makeQemuImage(dir, c);
    const modelPath = join(dir, 'model.raw');
    await runOk('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', img, modelPath], 'qemu-img convert -O raw');
    const cidBefore = cidOf(await descriptorText(img));
    const headersBefore = await Promise.all((await sparseExtentFiles(dir, img)).map((f) => sparseHeader(f)));

    const rng = new Rng(seedOf(name));
    const boundaries = [GRAIN, 32 * MiB, QEMU_SPLIT, 4 * MiB, 10 * MiB + GRAIN];
    const writes = planWrites(rng, c.size, boundaries, 30);
    // partial writes into grains qemu zeroed (GTE = 1 with zeroed_grain): the rest of the new
    // grain must read as zeros, not as the 0x22 / 0x66 bytes of the grain qemu left behind
    writes.push({ offset: 4 * MiB + 1000, data: rng.bytes(100) });
    writes.push({ offset: 10 * MiB + GRAIN + 3 * SECTOR, data: rng.bytes(SECTOR) });
    writes.push({ offset: 2 * MiB + GRAIN, data: rng.bytes(7) });

    const model = await RawModel.open(modelPath);
    try {
      const disk = await Disk.open(img);
      try {
        assert.equal(disk.capacity, c.size);
        for (const w of writes) {
          await disk.write(w.offset, w.data);
          await model.write(w.offset, w.data);
        }
      } finally {
        await disk.close();
      }
    } finally {
      await model.close();
    }

    const cidAfter = cidOf(await descriptorText(img));
    assert.notEqual(cidAfter, cidBefore, 'vdkit gives the image a new CID');
    const headersAfter = await Promise.all((await sparseExtentFiles(dir, img)).map((f) => sparseHeader(f)));
    for (const [i, h] of headersAfter.entries()) {
      assert.equal(h.uncleanShutdown, 0);
      assert.equal(h.version, headersBefore[i]!.version, 'header version kept');
      assert.equal(h.flags, headersBefore[i]!.flags, 'header flags kept');
    }

    await runOk('qemu-img', ['check', '-f', 'vmdk', img], 'qemu-img check after vdkit writes');
    const cmpArgs = ['compare', '-f', 'vmdk', '-F', 'raw', img, modelPath];
    const cmp = await run('qemu-img', cmpArgs);
    assert.equal(cmp.code, 0, `qemu-img compare: image differs from the model after vdkit writes\n${describeRun('qemu-img', cmpArgs, cmp)}`);
    const qi = await qemuInfo(img);
    assert.equal(qi['virtual-size'], c.size);
    assert.equal(qi['format-specific']?.data.cid, parseInt(cidAfter, 16));

    // and vdkit reads its own writes back out of the QEMU image
    const again = await Disk.open(img, { readOnly: true });
    const fh = await RawModel.open(modelPath);
    try {
      for (const w of writes) {
        const from = Math.max(0, w.offset - GRAIN);
        await assertRangeEqual(again, fh, from, Math.min(c.size, w.offset + w.data.length + GRAIN) - from, `${name} @${w.offset}`);
      }
    } finally {
      await fh.close();
      await again.close();
    }
  });
}
