/**
 * Refused I/O on healthy disks: out-of-range requests, writes to read-only or closed disks,
 * writes into ZERO extents. Each is a DiskError naming the disk, and a failed write never
 * disturbs data an earlier write acknowledged (checked after close and reopen).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Disk, DiskError } from '../../src/index.js';
import { SparseExtentHeader } from '../../src/formats/vmdk/structs.js';
import { expectFailure, readAt, removeTempDirs, sha, tempDir } from './support.js';
import { xorshiftBytes } from '../helpers/prng.js';

const MiB = 2 ** 20;
const TYPES = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'vmfs'] as const;

after(() => removeTempDirs());

function writeFileAt(path: string, at: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, data, 0, data.length, at);
  } finally {
    closeSync(fd);
  }
}

const pattern = (len: number, seed: number): Buffer => xorshiftBytes(len, seed);

for (const type of TYPES) {
  test(`${type}: OUTOFRANGE past the capacity, INVAL for bad numbers; earlier data intact`, async () => {
    const dir = tempDir('corpus-io');
    const path = join(dir, 'disk.vmdk');
    const cap = 3 * MiB;
    const d = await Disk.create(path, { type, capacity: cap });
    const data = pattern(100000, 1);
    await d.write(cap - data.length, data);
    await d.write(12345, data);
    const oor = { code: 'OUTOFRANGE' as const, path };
    await expectFailure(() => d.read(cap - 1, 2), oor);
    await expectFailure(() => d.read(cap, 1), oor);
    await expectFailure(() => d.read(cap + 512, 0), oor);
    await expectFailure(() => d.write(cap - 10, Buffer.alloc(11)), oor);
    await expectFailure(() => d.write(cap, Buffer.alloc(1)), oor);
    await expectFailure(() => d.write(2 ** 52, Buffer.alloc(1)), oor);
    await expectFailure(() => d.readSectors(cap / 512, 1), oor);
    await expectFailure(() => d.writeSectors(cap / 512 - 1, Buffer.alloc(1024)), oor);
    await expectFailure(() => d.blockStatus(0, cap + 1), oor);
    await expectFailure(() => d.read(-1, 1), { code: 'INVAL', path });
    await expectFailure(() => d.read(0.5, 1), { code: 'INVAL', path });
    await expectFailure(() => d.writeSectors(0, Buffer.alloc(100)), { code: 'INVAL', path });
    // zero-length at the very end is fine
    assert.equal((await d.read(cap, 0)).length, 0);
    await d.close();

    const r = await Disk.open(path);
    assert.equal(r.capacity, cap);
    assert.ok((await r.read(cap - data.length, data.length)).equals(data));
    assert.ok((await r.read(12345, data.length)).equals(data));
    await r.close();
  });
}

test('write to a disk opened readOnly -> RDONLY; the files are not modified', async () => {
  const dir = tempDir('corpus-ro');
  const path = join(dir, 'ro.vmdk');
  const d = await Disk.create(path, { type: 'monolithicSparse', capacity: 4 * MiB });
  const data = pattern(70000, 2);
  await d.write(1000, data);
  await d.close();
  const digest = sha(path);
  const r = await Disk.open(path, { readOnly: true });
  assert.equal(r.readOnly, true);
  await expectFailure(() => r.write(0, Buffer.alloc(512)), { code: 'RDONLY', path });
  await expectFailure(() => r.writeSectors(0, Buffer.alloc(512)), { code: 'RDONLY', path });
  await expectFailure(() => r.writeMetadata('adapterType', 'ide'), { code: 'RDONLY', path });
  assert.ok((await r.read(1000, data.length)).equals(data));
  await r.close();
  assert.equal(sha(path), digest, 'read-only open and close leave the file byte-identical');

  const fdir = tempDir('corpus-ro-flat');
  const fpath = join(fdir, 'rof.vmdk');
  const f = await Disk.create(fpath, { type: 'twoGbMaxExtentFlat', capacity: 2 * MiB });
  await f.close();
  const rf = await Disk.open(fpath, { readOnly: true });
  await expectFailure(() => rf.write(MiB, Buffer.alloc(1)), { code: 'RDONLY', path: fpath });
  await rf.close();
});

test('RDONLY extents in a read-write disk refuse writes, naming the extent', async () => {
  const dir = tempDir('corpus-rdonly-extent');
  writeFileSync(join(dir, 'a-flat.vmdk'), Buffer.alloc(MiB));
  writeFileSync(join(dir, 'b-flat.vmdk'), Buffer.alloc(MiB));
  const path = join(dir, 'mixed.vmdk');
  writeFileSync(
    path,
    ['# Disk DescriptorFile', 'version=1', 'CID=00000001', 'parentCID=ffffffff', 'createType="twoGbMaxExtentFlat"', 'RW 2048 FLAT "a-flat.vmdk" 0', 'RDONLY 2048 FLAT "b-flat.vmdk" 0', ''].join('\n'),
  );
  const d = await Disk.open(path);
  const data = pattern(5000, 3);
  await d.write(0, data);
  await expectFailure(() => d.write(MiB + 10, Buffer.alloc(10)), { code: 'RDONLY', path: join(dir, 'b-flat.vmdk') });
  await d.close();
  const r = await Disk.open(path, { readOnly: true });
  assert.ok((await r.read(0, data.length)).equals(data));
  await r.close();
});

test('a write into a ZERO extent fails with PERMISSIONS; acknowledged data survives reopen', async () => {
  const dir = tempDir('corpus-zero');
  writeFileSync(join(dir, 'z-flat.vmdk'), Buffer.alloc(MiB));
  const path = join(dir, 'z.vmdk');
  writeFileSync(
    path,
    [
      '# Disk DescriptorFile',
      'version=1',
      'CID=00000001',
      'parentCID=ffffffff',
      'createType="custom"',
      '',
      'RW 2048 FLAT "z-flat.vmdk" 0',
      'RW 2048 ZERO',
      '',
      'ddb.adapterType = "ide"',
      '',
    ].join('\n'),
  );
  const d = await Disk.open(path);
  assert.equal(d.capacity, 2 * MiB);
  const first = pattern(300000, 4);
  await d.write(4096, first);
  await assert.rejects(d.write(MiB + 512, Buffer.alloc(512, 1)), (e: unknown) => e instanceof DiskError && e.code === 'PERMISSIONS' && /ZERO/.test(e.message));
  // a write straddling the FLAT/ZERO boundary fails too
  await assert.rejects(d.write(MiB - 512, Buffer.alloc(1024, 2)), (e: unknown) => e instanceof DiskError && e.code === 'PERMISSIONS');
  // and the zero extent still reads zeros, the status says so
  assert.ok((await d.read(MiB, MiB)).every((b) => b === 0));
  assert.deepEqual(await d.blockStatus(MiB, MiB), [{ offset: MiB, length: MiB, state: 'zero' }]);
  await d.close();
  const r = await Disk.open(path, { readOnly: true });
  assert.ok((await r.read(4096, first.length)).equals(first));
  await r.close();
});

test(
  'the PERMISSIONS error of a ZERO-extent write names the disk',
  async () => {
    const dir = tempDir('corpus-zero-name');
    const path = join(dir, 'z.vmdk');
    writeFileSync(path, ['# Disk DescriptorFile', 'version=1', 'CID=00000001', 'parentCID=ffffffff', 'createType="custom"', 'RW 2048 ZERO', ''].join('\n'));
    const d = await Disk.open(path);
    try {
      await expectFailure(() => d.write(0, Buffer.alloc(512)), { code: 'PERMISSIONS', path });
    } finally {
      await d.close();
    }
  },
);

for (const type of TYPES) {
  test(`${type}: calls on a closed disk -> CLOSED; data written before close survives reopen`, async () => {
    const dir = tempDir('corpus-closed');
    const path = join(dir, 'c.vmdk');
    const d = await Disk.create(path, { type, capacity: 2 * MiB });
    const data = pattern(200000, 5);
    await d.write(777, data);
    await d.close();
    await d.close(); // idempotent
    await expectFailure(() => d.write(0, Buffer.alloc(512)), { code: 'CLOSED', path });
    await expectFailure(() => d.read(0, 512), { code: 'CLOSED', path });
    await expectFailure(() => d.flush(), { code: 'CLOSED', path });
    await expectFailure(() => d.blockStatus(), { code: 'CLOSED', path });
    await expectFailure(() => d.info(), { code: 'CLOSED', path });
    const r = await Disk.open(path);
    assert.ok((await r.read(777, data.length)).equals(data));
    assert.ok((await r.read(0, 777)).every((b) => b === 0));
    await r.close();
  });
}

test('sparse extents are marked unclean while open read-write and clean after close', async () => {
  const dir = tempDir('corpus-clean');
  const path = join(dir, 'u.vmdk');
  const at = SparseExtentHeader.offsetOf('uncleanShutdown');
  const d = await Disk.create(path, { type: 'monolithicSparse', capacity: MiB });
  assert.equal((await readAt(path, at, 1))[0], 1, 'unclean while open');
  await d.write(0, Buffer.alloc(512, 7));
  await d.close();
  assert.equal((await readAt(path, at, 1))[0], 0, 'clean after close');
  const r = await Disk.open(path, { readOnly: true });
  assert.equal((await readAt(path, at, 1))[0], 0, 'a read-only open does not mark it');
  await r.close();
});

test(
  'a failed writeMetadata (descriptor too big for its 20 sectors) is rolled back',
  async () => {
    const dir = tempDir('corpus-meta');
    const path = join(dir, 'm.vmdk');
    const d = await Disk.create(path, { type: 'monolithicSparse', capacity: MiB });
    await d.close();
    const r = await Disk.open(path);
    try {
      await assert.rejects(r.writeMetadata('big', 'x'.repeat(11000)), (e: unknown) => e instanceof DiskError && e.code === 'NOSPACE');
      assert.ok(r.readMetadata('big') === undefined, `the refused key is still visible (${r.readMetadata('big')?.length} chars)`);
      await r.write(0, Buffer.alloc(512, 1)); // first data write of the session renews the CID
      await r.writeMetadata('small', 'y');
    } finally {
      await r.close();
    }
    const again = await Disk.open(path, { readOnly: true });
    assert.equal(again.readMetadata('small'), 'y');
    assert.equal((await again.read(0, 1))[0], 1);
    await again.close();
  },
);

test(
  'a monolithicSparse whose embedded extent line is RDONLY opens read-only; a refused write changes nothing',
  async () => {
    const dir = tempDir('corpus-rdonly-mono');
    const path = join(dir, 'r.vmdk');
    const d = await Disk.create(path, { type: 'monolithicSparse', capacity: MiB });
    await d.close();
    const text = (await readAt(path, 512, 20 * 512)).toString('latin1').replace(/^RW /m, 'RDONLY ');
    writeFileAt(path, 512, Buffer.from(text, 'latin1'));
    const digest = sha(path);
    const r = await Disk.open(path);
    try {
      assert.equal(r.readOnly, true);
      await assert.rejects(r.write(0, Buffer.alloc(512)), (e: unknown) => e instanceof DiskError && e.code === 'RDONLY');
    } finally {
      await r.close();
    }
    assert.equal(sha(path), digest);
  },
);
