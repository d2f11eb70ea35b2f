/**
 * Images no one on this project wrote (QEMU's sample_images, see /work/shared/testdata).
 *
 * iotest-version3.vmdk: the testdata README calls it "monolithicSparse, sparse header version
 * 3"; vmdk.md §9 calls it a VMware streamOptimized stream. The bytes settle it (asserted below):
 * header version 3, flags 0x30001 (valid newline + compressed grains + markers), compression
 * deflate, gdOffset = GD_AT_END with footer and end-of-stream marker, embedded descriptor
 * createType="streamOptimized" with one RDONLY SPARSE extent line — a streamOptimized stream.
 */
import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk, DiskError } from '../../src/index.js';
import { bunzip, haveTestdata, skipUnless, sharedTestdata, tmpDir } from '../helpers/tools.js';
import { MiB, SECTOR, assertWholeDiskEqual, cidOf, descriptorText, extentFiles, qemuInfo, qemuMap, readExact, runOk, sparseHeader, vmdkinfoMediaSize } from './support.js';

const V3_CAPACITY = 17179869184;

/** iotest 059's pattern reads: byte 0x30 + i%10 over 512 bytes at i*655360 + i*512 (vmdk.md §9). */
const PATTERNS = Array.from({ length: 100 }, (_, i) => ({ offset: i * 655360 + i * 512, byte: 0x30 + (i % 10) }));

test('iotest-version3.vmdk (VMware): 16 GiB stream, opens read-only, the 100 iotest-059 patterns read back as qemu reads them', async (t) => {
  if (!skipUnless(t, 'bunzip2', 'qemu-img') || !haveTestdata(t, sharedTestdata('iotest-version3.vmdk.bz2'))) return;
  const dir = (await tmpDir(t, 'vdkit-interop-o-')).path;
  const img = join(dir, 'iotest-version3.vmdk');
  await bunzip(sharedTestdata('iotest-version3.vmdk.bz2'), img);

  // --- what it really is, from the bytes
  const h = await sparseHeader(img);
  assert.equal(h.magic, 'KDMV');
  assert.equal(h.version, 3);
  assert.equal(h.flags, 0x30001, 'valid-newline + compressed + markers: a stream');
  assert.equal(h.gdOffset, 0xffffffffffffffffn, 'grain directory at the end (footer)');
  const desc = await descriptorText(img);
  assert.match(desc, /createType="streamOptimized"/);
  assert.deepEqual(extentFiles(desc), [{ access: 'RDONLY', sectors: V3_CAPACITY / SECTOR, type: 'SPARSE', file: 'generated-stream.vmdk' }]);

  // --- vdkit
  const disk = await Disk.open(img, { readOnly: true });
  try {
    assert.equal(disk.capacity, V3_CAPACITY);
    assert.equal(disk.readOnly, true);
    const info = await disk.info();
    assert.equal(info.capacity, V3_CAPACITY);
    assert.equal(info.type, 'streamOptimized');
    assert.equal(info.compressed, true);
    assert.equal(info.version, 3);
    assert.equal(info.cid, cidOf(desc));
    assert.equal(info.adapterType, 'lsilogic');

    // the documented patterns, straight from vdkit
    for (const { offset, byte } of PATTERNS) {
      const got = await disk.read(offset, 512);
      assert.ok(got.equals(Buffer.alloc(512, byte)), `pattern at ${offset}: expected 512 x 0x${byte.toString(16)}, got ${got.subarray(0, 8).toString('hex')}...`);
    }

    // --- the same against qemu's reading of the image
    const qi = await qemuInfo(img);
    assert.equal(qi['virtual-size'], V3_CAPACITY);
    assert.equal(qi['format-specific']?.data['create-type'], 'streamOptimized');
    assert.equal(qi['format-specific']?.data.extents?.[0]?.compressed, true);
    const raw = join(dir, 'qemu.raw');
    await runOk('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', img, raw], 'qemu-img convert -O raw');
    const fh = await open(raw, 'r');
    try {
      for (const { offset, byte } of PATTERNS) {
        // qemu agrees with the document...
        const want = await readExact(fh, offset, 512);
        assert.ok(want.equals(Buffer.alloc(512, byte)), `qemu's raw conversion at ${offset} is not 512 x 0x${byte.toString(16)}`);
        // ...and with vdkit on the sectors around each pattern too
        const from = Math.max(0, offset - 1024);
        const a = await disk.read(from, 2560);
        const b = await readExact(fh, from, 2560);
        assert.ok(a.equals(b), `vdkit and qemu differ around ${offset}`);
      }
    } finally {
      await fh.close();
    }
    // every byte of the 16 GiB: vdkit reads it all, qemu's holes are zeros
    await assertWholeDiskEqual(disk, raw, 'iotest-version3 vs qemu-img convert', { chunk: 16 * MiB });

    // allocation: exactly the grains qemu-img map sees
    const ours = (await disk.blockStatus()).filter((r) => r.state === 'data').map((r) => [r.offset, r.length]);
    const theirs = (await qemuMap(img)).filter((e) => e.data).map((e) => [e.start, e.length]);
    assert.ok(ours.length > 0, 'the stream has data grains');
    assert.deepEqual(ours, mergeAdjacent(theirs), 'data ranges vs qemu-img map');
  } finally {
    await disk.close();
  }

  await t.test('vmdkinfo', async (st) => {
    if (!skipUnless(st, 'vmdkinfo')) return;
    const vi = await runOk('vmdkinfo', [img], 'vmdkinfo');
    assert.equal(vmdkinfoMediaSize(vi.stdout), V3_CAPACITY);
    assert.match(vi.stdout, /Disk type:\s+Stream optimized/);
  });
});

test('iotest-version3.vmdk: opening read-write fails with CMPRDONLY and leaves the file untouched', async (t) => {
  if (!skipUnless(t, 'bunzip2') || !haveTestdata(t, sharedTestdata('iotest-version3.vmdk.bz2'))) return;
  const dir = (await tmpDir(t, 'vdkit-interop-o-')).path;
  const img = join(dir, 'iotest-version3.vmdk');
  await bunzip(sharedTestdata('iotest-version3.vmdk.bz2'), img);
  const before = await readAll(img);
  await assert.rejects(Disk.open(img), (err: unknown) => {
    assert.ok(err instanceof DiskError, `expected a DiskError, got ${String(err)}`);
    assert.equal(err.code, 'CMPRDONLY');
    return true;
  });
  await assert.rejects(Disk.open(img, { readOnly: false }), (err: unknown) => err instanceof DiskError && err.code === 'CMPRDONLY');
  assert.ok((await readAll(img)).equals(before), 'a refused read-write open must not change a byte');
});

function mergeAdjacent(list: number[][]): number[][] {
  const out: number[][] = [];
  for (const [off, len] of list) {
    const last = out[out.length - 1];
    if (last && last[0]! + last[1]! === off) last[1]! += len!;
    else out.push([off!, len!]);
  }
  return out;
}

async function readAll(path: string): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    return await readExact(fh, 0, size);
  } finally {
    await fh.close();
  }
}
