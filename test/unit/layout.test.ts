/**
 * The layout of a fresh hosted sparse extent against vmdk.md §3.7 (QEMU's exact layout,
 * verified with qemu-img 7.2.22), and the bytes writeFreshSparse puts in a store.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryStore } from '../../src/index.js';
import { freshSparseLayout, writeFreshSparse } from '../../src/formats/vmdk/layout.js';
import { SparseExtentHeader } from '../../src/formats/vmdk/structs.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

// virtual size, capacity (sectors), GTs, gdSectors, rgdOffset, gdOffset, overHead, new file bytes
const TABLE: [string, number, number, number, number, number, number, number][] = [
  ['1 MiB', 2048, 1, 1, 21, 26, 128, 65536],
  ['64 MiB', 131072, 2, 1, 21, 30, 128, 65536],
  ['1 GiB', 2097152, 32, 1, 21, 150, 384, 196608],
  ['2 GiB', 4194304, 64, 1, 21, 278, 640, 327680],
  ['5 GiB', 10485760, 160, 2, 21, 663, 1408, 720896],
  ['31 GiB', 65011712, 992, 8, 21, 3997, 8064, 4128768],
  ['100 GiB', 209715200, 3200, 25, 21, 12846, 25728, 13172736],
  ['1 TiB', 2147483648, 32768, 256, 21, 131349, 262784, 134545408],
];

test('freshSparseLayout matches the table of vmdk.md §3.7 (monolithic, 20-sector descriptor)', () => {
  for (const [name, capacity, gts, gdSectors, rgdOffset, gdOffset, overHead, fileBytes] of TABLE) {
    const L = freshSparseLayout(capacity, { embeddedDescriptorSectors: 20 });
    assert.deepEqual(
      { gtCount: L.gtCount, gdSectors: L.gdSectors, rgdOffset: L.rgdOffset, gdOffset: L.gdOffset, overHead: L.overHead, bytes: L.overHead * 512 },
      { gtCount: gts, gdSectors, rgdOffset, gdOffset, overHead, bytes: fileBytes },
      name,
    );
    assert.equal(L.grainSectors, 128);
    assert.equal(L.numGTEs, 512);
    assert.equal(L.gtSectors, 4);
    assert.equal(L.descriptorOffset, 1);
    assert.equal(L.overHead % 128, 0, `${name}: overHead is grain aligned`);
  }
  // sizes from the brief by name
  assert.equal(freshSparseLayout((1 * MiB) / 512, { embeddedDescriptorSectors: 20 }).gdOffset, 26);
  assert.equal(freshSparseLayout((5 * GiB) / 512, { embeddedDescriptorSectors: 20 }).gdOffset, 0x297);
});

test('a split extent (no embedded descriptor) starts its RGD at sector 1: 4192256 sectors -> 1/258/640', () => {
  const L = freshSparseLayout(4192256, { embeddedDescriptorSectors: 0 });
  assert.equal(L.descriptorOffset, 0);
  assert.equal(L.rgdOffset, 1);
  assert.equal(L.gdOffset, 258);
  assert.equal(L.overHead, 640);
  assert.equal(L.gtCount, 64);
});

test('capacities that are not grain multiples round the last GT up', () => {
  const L = freshSparseLayout(65537, { embeddedDescriptorSectors: 20 });
  assert.equal(L.gtCount, 2);
  const M = freshSparseLayout(1, { embeddedDescriptorSectors: 20 });
  assert.equal(M.gtCount, 1);
  assert.equal(M.overHead, 128);
});

test('writeFreshSparse writes the header, descriptor, RGD and GD pointing at their own GTs', async () => {
  const store = new MemoryStore();
  const text = '# Disk DescriptorFile\nversion=1\n';
  await writeFreshSparse(store, 2097152, { descriptor: text, descriptorSectors: 20 });
  assert.equal(await store.size(), 196608, 'file length = overHead * 512');
  const h = SparseExtentHeader.decode(await store.read(0, 512));
  assert.equal(h.version, 1);
  assert.equal(h.flags, 0x3);
  assert.equal(h.capacity, 2097152n);
  assert.equal(h.grainSize, 128n);
  assert.equal(h.descriptorOffset, 1n);
  assert.equal(h.descriptorSize, 20n);
  assert.equal(h.numGTEsPerGT, 512);
  assert.equal(h.rgdOffset, 21n);
  assert.equal(h.gdOffset, 150n);
  assert.equal(h.overHead, 384n);
  assert.equal(h.uncleanShutdown, 0);
  assert.deepEqual([h.singleEndLineChar, h.nonEndLineChar, h.doubleEndLineChar1, h.doubleEndLineChar2], [0x0a, 0x20, 0x0d, 0x0a]);
  assert.equal(h.compressAlgorithm, 0);
  const desc = await store.read(512, 20 * 512);
  assert.equal(desc.subarray(0, text.length).toString(), text);
  assert.ok(desc.subarray(text.length).every((b) => b === 0), 'descriptor area NUL padded');
  const rgd = await store.read(21 * 512, 512);
  const gd = await store.read(150 * 512, 512);
  for (let i = 0; i < 32; i++) {
    assert.equal(rgd.readUInt32LE(i * 4), 21 + 1 + 4 * i, `RGD[${i}]`);
    assert.equal(gd.readUInt32LE(i * 4), 150 + 1 + 4 * i, `GD[${i}]`);
  }
  assert.ok(rgd.subarray(32 * 4).every((b) => b === 0));
  assert.ok(gd.subarray(32 * 4).every((b) => b === 0));
  // every grain table is zero
  const rgts = await store.read(22 * 512, 128 * 512);
  const gts = await store.read(151 * 512, 128 * 512);
  assert.ok(rgts.every((b) => b === 0) && gts.every((b) => b === 0));
});

test('writeFreshSparse of a split extent: no descriptor, RGD at 1', async () => {
  const store = new MemoryStore();
  await writeFreshSparse(store, 4192256, {});
  assert.equal(await store.size(), 640 * 512);
  const h = SparseExtentHeader.decode(await store.read(0, 512));
  assert.equal(h.descriptorOffset, 0n);
  assert.equal(h.descriptorSize, 0n);
  assert.equal(h.rgdOffset, 1n);
  assert.equal(h.gdOffset, 258n);
  assert.equal(h.overHead, 640n);
});

test('writeFreshSparse does not build the tables in memory (1 TiB costs its directories)', async () => {
  const store = new MemoryStore();
  const before = process.memoryUsage().arrayBuffers;
  await writeFreshSparse(store, 2147483648, { descriptor: '# Disk DescriptorFile\n', descriptorSectors: 20 });
  assert.equal(await store.size(), 134545408);
  // pages holding header+descriptor, RGD and GD only (64 KiB pages of the memory store)
  assert.ok(store.allocatedPages() <= 6, `pages: ${store.allocatedPages()}`);
  assert.ok(process.memoryUsage().arrayBuffers - before < 16 * MiB);
});
