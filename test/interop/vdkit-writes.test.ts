/**
 * vdkit writes, the outside world reads: for every type vdkit creates, at a small odd size and
 * at 5 GiB (three 4192256-sector extents for the split types), a seeded sequence of writes is
 * applied through the Disk API and mirrored into a sparse raw model file. Then qemu-img check,
 * qemu-img compare against the model, qemu-img info, vmdkinfo and a reopen through vdkit must
 * all agree; the sparse extents must be marked clean and the CID must have changed.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk, SPLIT_EXTENT_SECTORS } from '../../src/index.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';
import {
  GiB,
  GRAIN,
  MiB,
  RawModel,
  Rng,
  SECTOR,
  assertWholeDiskEqual,
  cidOf,
  descriptorText,
  extentFiles,
  planWrites,
  qemuInfo,
  runOk,
  seedOf,
  sparseHeader,
  vmdkinfoMediaSize,
} from './support.js';

interface Kind {
  label: string;
  type: string;
  thin?: boolean;
  sparse: boolean;
}

const KINDS: Kind[] = [
  { label: 'monolithicSparse', type: 'monolithicSparse', sparse: true },
  { label: 'monolithicFlat', type: 'monolithicFlat', sparse: false },
  { label: 'twoGbMaxExtentSparse', type: 'twoGbMaxExtentSparse', sparse: true },
  { label: 'twoGbMaxExtentFlat', type: 'twoGbMaxExtentFlat', sparse: false },
  { label: 'vmfs', type: 'vmfs', sparse: false },
  { label: 'vmfs thin', type: 'vmfs', thin: true, sparse: false },
];

/** how libvmdk's vmdkinfo names each createType */
const LIBVMDK_TYPE: Record<string, string> = {
  monolithicSparse: 'Monolithic sparse',
  monolithicFlat: 'Monolithic flat',
  twoGbMaxExtentSparse: '2GB extent sparse',
  twoGbMaxExtentFlat: '2GB extent flat',
  vmfs: 'VMFS flat',
};

const CAPACITIES = [64 * MiB + SECTOR, 5 * GiB];

const SPLIT_BYTES = SPLIT_EXTENT_SECTORS * SECTOR;

for (const kind of KINDS) {
  for (const capacity of CAPACITIES) {
    const name = `vdkit ${kind.label} ${capacity} B: qemu-img check/compare/info, vmdkinfo and a reopen agree with the raw model`;
    test(name, async (t) => {
      if (!skipUnless(t, 'qemu-img')) return;
      const dir = (await tmpDir(t, 'vdkit-interop-w-')).path;
      const img = join(dir, 'disk.vmdk');
      const modelPath = join(dir, 'model.raw');

      const disk = await Disk.create(img, { type: kind.type, capacity, thin: kind.thin });
      let closed = false;
      let model: RawModel | undefined;
      try {
        model = await RawModel.create(modelPath, capacity);
        assert.equal(disk.capacity, capacity);
        const cidBefore = cidOf(await descriptorText(img));

        const rng = new Rng(seedOf(name));
        const boundaries = [GRAIN, 2 * GRAIN, 32 * MiB /* one grain table's reach */, SPLIT_BYTES, 2 * SPLIT_BYTES, 2 * GiB, 4 * GiB];
        const writes = planWrites(rng, capacity, boundaries, 40);
        for (const w of writes) {
          await disk.write(w.offset, w.data);
          await model.write(w.offset, w.data);
        }

        const desc = await descriptorText(img);
        const lines = extentFiles(desc);
        const expectedExtents = kind.type.startsWith('twoGb') ? Math.ceil(capacity / SPLIT_BYTES) : 1;
        assert.equal(lines.length, expectedExtents, `extent lines in\n${desc}`);
        assert.equal(lines.reduce((s, l) => s + l.sectors, 0) * SECTOR, capacity);
        const sparseFiles = kind.sparse ? lines.map((l) => join(dir, l.file!)) : [];
        for (const f of sparseFiles) {
          assert.equal((await sparseHeader(f)).uncleanShutdown, 1, `${f}: uncleanShutdown while open read-write`);
        }

        await disk.close();
        closed = true;
        await model.close();
        model = undefined;

        // --- what vdkit left on disk
        const cidAfter = cidOf(await descriptorText(img));
        assert.notEqual(cidAfter, cidBefore, 'CID must change after a write session');
        for (const f of sparseFiles) {
          const h = await sparseHeader(f);
          assert.equal(h.magic, 'KDMV');
          assert.equal(h.uncleanShutdown, 0, `${f}: uncleanShutdown (byte 72) after close`);
        }

        // --- qemu-img check
        await runOk('qemu-img', ['check', '-f', 'vmdk', img], 'qemu-img check');

        // --- qemu-img compare against the model
        const cmpArgs = ['compare', '-f', 'vmdk', '-F', 'raw', img, modelPath];
        const cmp = await run('qemu-img', cmpArgs);
        assert.equal(cmp.code, 0, `qemu-img compare says the image differs from the model\n${describeRun('qemu-img', cmpArgs, cmp)}`);

        // --- qemu-img info
        const info = await qemuInfo(img);
        assert.equal(info['virtual-size'], capacity, 'qemu-img info virtual-size');
        assert.equal(info.format, 'vmdk');
        const fs = info['format-specific']!.data;
        assert.equal(fs['create-type'], kind.type, 'qemu-img info create-type');
        assert.equal(fs.cid, parseInt(cidAfter, 16), 'qemu-img info cid (decimal) vs descriptor CID');
        assert.equal(fs.extents?.length, expectedExtents, 'qemu-img info extents');

        // --- vmdkinfo (libvmdk), its own subtest so a missing libvmdk skips only this part
        await t.test('vmdkinfo', async (st) => {
          if (!skipUnless(st, 'vmdkinfo')) return;
          const vi = await runOk('vmdkinfo', [img], 'vmdkinfo');
          assert.equal(vmdkinfoMediaSize(vi.stdout), capacity, `vmdkinfo media size\n${vi.stdout}`);
          assert.match(vi.stdout, new RegExp(`Disk type:\\s+${LIBVMDK_TYPE[kind.type]}\n`), `vmdkinfo disk type\n${vi.stdout}`);
          assert.match(vi.stdout, new RegExp(`Content identifier:\\s+0x${cidAfter.padStart(8, '0')}`, 'i'), `vmdkinfo CID\n${vi.stdout}`);
          assert.match(vi.stdout, new RegExp(`Number of extents:\\s+${expectedExtents}\\b`), `vmdkinfo extents\n${vi.stdout}`);
        });

        // --- reopen through vdkit and compare its reads with the model
        const again = await Disk.open(img, { readOnly: true });
        try {
          assert.equal(again.capacity, capacity);
          const di = await again.info();
          assert.equal(di.type, kind.type);
          assert.equal(di.cid, cidAfter.padStart(8, '0'));
          assert.equal(di.extents.length, expectedExtents);
          if (kind.thin) assert.equal(again.readMetadata('thinProvisioned'), '1');
          if (kind.sparse) {
            // every written byte lies in a data range; unwritten grains stay unallocated
            const status = await again.blockStatus();
            for (const w of writes) {
              if (w.data.every((b) => b === 0)) continue;
              const covered = status.some((r) => r.state === 'data' && r.offset <= w.offset && w.offset + w.data.length <= r.offset + r.length);
              const pieces = status.filter((r) => r.offset < w.offset + w.data.length && w.offset < r.offset + r.length);
              assert.ok(covered || pieces.every((r) => r.state === 'data'), `write ${w.offset}+${w.data.length} not reported as data: ${JSON.stringify(pieces)}`);
            }
            assert.ok(status.some((r) => r.state === 'unallocated'), 'a sparse disk this empty has unallocated ranges');
          }
          // All of it for sparse extents and the small size; for multi-GiB flat files, every chunk
          // the model has data in and one in 16 of the rest (qemu-img compare saw every byte).
          await assertWholeDiskEqual(again, modelPath, name, { holeEvery: kind.sparse || capacity < GiB ? 1 : 16 });
        } finally {
          await again.close();
        }
        assert.equal(cidOf(await descriptorText(img)), cidAfter, 'a read-only session leaves the CID alone');
        for (const f of sparseFiles) assert.equal((await sparseHeader(f)).uncleanShutdown, 0);
      } finally {
        if (!closed) await disk.close().catch(() => {});
        await model?.close().catch(() => {});
      }
    });
  }
}
