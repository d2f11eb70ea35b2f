/**
 * VHD conformance: create (fixed, dynamic; exact size and CHS rounding on request), the file
 * layout read back with plain fs at the offsets of vhd.md, read-after-write at sector and block
 * boundaries (incl. sub-sector writes), persistence, block status honesty per sector run,
 * metadata round trip with checksums, differencing chains of depth 1-5 made with createChild
 * against a flattened model, how a parent is found (W2ru, W2ku, the unicode name beside the
 * child), a wrong parent (CID_MISMATCH), the chain operations that re-link VHDs (rebase, merge,
 * commit), and a writer killed mid-write.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Disk, DiskError, detectFormat } from '../../src/index.js';
import { openLink } from '../../src/disk.js';
import { createChild } from '../../src/ops/child.js';
import { commit, mergeIntoTop } from '../../src/ops/commit.js';
import { rebase } from '../../src/ops/rebase.js';
import { vhdChecksum } from '../../src/formats/vhd/structs.js';
import { chunkFor } from '../helpers/crash-pattern.js';
import { runKilledWhen } from '../helpers/spawn-lines.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { tmpDir } from '../helpers/tools.js';
import { readAt as bytesAt } from '../helpers/bytes.js';

const MiB = 2 ** 20;
const BLOCK = 2 * MiB;
/** 10 blocks and 7 sectors: the last block is partial, and no CHS geometry gives this size */
const CAPACITY = 5 * BLOCK * 2 + 7 * 512;

async function poke(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

/** footer facts straight from the last 512 bytes (vhd.md §2) */
async function rawFooter(path: string) {
  const size = (await stat(path)).size;
  const b = await bytesAt(path, size - 512, 512);
  return {
    bytes: b,
    size,
    cookie: b.toString('latin1', 0, 8),
    dataOffset: b.readBigUInt64BE(16),
    creator: b.toString('latin1', 28, 32),
    creatorVersion: b.readUInt32BE(32),
    hostOS: b.toString('latin1', 36, 40),
    originalSize: Number(b.readBigUInt64BE(40)),
    currentSize: Number(b.readBigUInt64BE(48)),
    geometry: `${b.readUInt16BE(56)}/${b[58]}/${b[59]}`,
    diskType: b.readUInt32BE(60),
    checksumOk: vhdChecksum(b, 64) === b.readUInt32BE(64),
    uniqueId: b.subarray(68, 84).toString('hex'),
  };
}

/** dynamic header facts (vhd.md §4) */
async function rawHeader(path: string) {
  const b = await bytesAt(path, 512, 1024);
  const locators = [];
  for (let i = 0; i < 8; i++) {
    const e = b.subarray(576 + i * 24, 600 + i * 24);
    if (e.readUInt32BE(0) !== 0) locators.push({ code: e.toString('latin1', 0, 4), space: e.readUInt32BE(4), length: e.readUInt32BE(8), offset: Number(e.readBigUInt64BE(16)) });
  }
  const name = Buffer.from(b.subarray(64, 576));
  name.swap16();
  return {
    bytes: b,
    cookie: b.toString('latin1', 0, 8),
    tableOffset: Number(b.readBigUInt64BE(16)),
    maxTableEntries: b.readUInt32BE(28),
    blockSize: b.readUInt32BE(32),
    checksumOk: vhdChecksum(b, 36) === b.readUInt32BE(36),
    parentUniqueId: b.subarray(40, 56).toString('hex'),
    parentTimestamp: b.readUInt32BE(56),
    parentName: name.toString('utf16le').replace(/\0+$/, ''),
    locators,
  };
}

const dashed = (hex: string) => `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;

/** The writes every read-after-write case makes: sector, block and end-of-disk boundaries, sub-sector pieces. */
function boundaryWrites(capacity: number): [number, Buffer][] {
  return [
    [0, xorshiftBytes(4096, 1)],
    [511, xorshiftBytes(2, 2)], // across a sector boundary, 1 byte each side
    [1000, xorshiftBytes(3, 3)], // inside one sector
    [1001, xorshiftBytes(1, 4)], // again inside the same (now stored) sector
    [12 * 512 + 300, xorshiftBytes(10, 21)], // sector 12 stored (bytes 300..309)
    [10 * 512 + 100, xorshiftBytes(2 * 512 + 100, 22)], // from a partial sector not stored (10) to a partial stored one (12)
    [16 * 512 + 50, xorshiftBytes(10, 23)], // sector 16 stored (bytes 50..59)
    [16 * 512 + 200, xorshiftBytes(2 * 512, 24)], // from a partial stored sector (16) to a partial one not stored (18)
    [BLOCK - 700, xorshiftBytes(1400, 5)], // across a block boundary, partial sectors at both ends
    [3 * BLOCK - 512, xorshiftBytes(BLOCK + 1024, 6)], // three blocks, whole sectors
    [5 * BLOCK + 5, xorshiftBytes(512, 7)], // a sector's worth straddling two sectors
    [7 * BLOCK, Buffer.alloc(65536)], // zeros into a fresh block: stored, read back as zeros
    [capacity - 512, xorshiftBytes(512, 8)], // last sector
    [capacity - 1, xorshiftBytes(1, 9)], // last byte
    [BLOCK - 700, xorshiftBytes(100, 10)], // rewrite inside an allocated block
  ];
}

async function assertReadsAs(d: Disk, model: Buffer, label: string): Promise<void> {
  const got = await d.read(0, model.length);
  if (!got.equals(model)) {
    let i = 0;
    while (got[i] === model[i]) i++;
    assert.fail(`${label}: differs from the model at byte ${i} (disk ${got[i]}, model ${model[i]})`);
  }
}

/** block status covers the range in order, and every non-data range reads as zeros in `model` */
async function assertHonestStatus(d: Disk, model: Buffer, label: string): Promise<void> {
  let at = 0;
  for (const r of await d.blockStatus()) {
    assert.equal(r.offset, at, `${label}: contiguous`);
    if (r.state !== 'data') assert.ok(model.subarray(r.offset, r.offset + r.length).every((b) => b === 0), `${label}: ${r.state} range ${r.offset}+${r.length} holds written bytes`);
    at += r.length;
  }
  assert.equal(at, d.capacity, `${label}: covers the disk`);
}

for (const type of ['dynamic', 'fixed'] as const) {
  test(`${type}: exact size, QEMU's layout, read-after-write at sector and block boundaries, reopen, honest block status`, async (t) => {
    const dir = (await tmpDir(t)).path;
    const path = join(dir, `${type}.vhd`);
    const d = await Disk.create(path, { format: 'vhd', type, capacity: CAPACITY });
    assert.equal(d.capacity, CAPACITY);
    assert.equal(d.type, type);
    const f = await rawFooter(path);
    assert.equal(f.cookie, 'conectix');
    assert.ok(f.checksumOk, 'footer checksum');
    assert.equal(f.creator, 'vdkt');
    assert.equal(f.hostOS, 'Wi2k');
    assert.equal(f.currentSize, CAPACITY);
    assert.equal(f.originalSize, CAPACITY);
    assert.equal(f.geometry, '65535/16/255', 'no geometry describes this size: the current-size marker');
    assert.equal(f.diskType, type === 'fixed' ? 2 : 3);
    if (type === 'fixed') {
      assert.equal(f.dataOffset, 0xffffffffffffffffn);
      assert.equal(f.size, CAPACITY + 512);
      assert.ok((await stat(path)).blocks * 512 < MiB, 'created sparse');
    } else {
      assert.equal(f.dataOffset, 512n);
      const h = await rawHeader(path);
      assert.equal(h.cookie, 'cxsparse');
      assert.ok(h.checksumOk, 'header checksum');
      assert.equal(h.tableOffset, 1536);
      assert.equal(h.blockSize, BLOCK);
      assert.equal(h.maxTableEntries, 11, 'ceil(size / block)');
      assert.equal(f.size, 1536 + 512 + 512, 'BAT padded to a sector, then the footer');
      assert.deepEqual(await bytesAt(path, 1536, 44), Buffer.alloc(44, 0xff), 'every BAT entry unused');
      assert.deepEqual(await bytesAt(path, 0, 512), f.bytes, 'footer copy at offset 0');
    }

    const model = Buffer.alloc(CAPACITY);
    for (const [o, b] of boundaryWrites(CAPACITY)) {
      await d.write(o, b);
      b.copy(model, o);
      assert.deepEqual(await d.read(o, b.length), b, `read after write at ${o}`);
    }
    await assertReadsAs(d, model, 'before reopen');
    await d.close();

    const after = await rawFooter(path);
    assert.ok(after.checksumOk);
    assert.deepEqual(after.bytes, f.bytes, 'writes change neither the unique id nor the timestamp');
    if (type === 'dynamic') assert.deepEqual(await bytesAt(path, 0, 512), after.bytes, 'footer copy identical to the end footer');

    const r = await Disk.open(path, { readOnly: true });
    assert.equal(await (await detectFormat(path)).name, 'vhd');
    await assertReadsAs(r, model, 'after reopen');
    await assertHonestStatus(r, model, 'after reopen');
    const status = await r.blockStatus();
    if (type === 'fixed') assert.deepEqual(status, [{ offset: 0, length: CAPACITY, state: 'data' }]);
    else {
      // per-sector honesty: the sector of the 3-byte write at 1000 is data, the ones around it are not
      const at = (x: number) => status.find((e) => e.offset <= x && x < e.offset + e.length)!.state;
      assert.equal(at(4095), 'data');
      assert.equal(at(4096), 'unallocated', 'sector 8 was never written');
      assert.equal(at(10 * 512), 'data', 'a partly written sector is stored whole');
      assert.equal(at(13 * 512 - 1), 'data');
      assert.equal(at(13 * 512), 'unallocated');
      assert.equal(at(19 * 512 - 1), 'data');
      assert.equal(at(5 * BLOCK - 1), 'unallocated', 'the rest of a block a write ended in');
      assert.equal(at(5 * BLOCK + 4), 'data', 'a partly written sector is stored whole');
      assert.equal(at(5 * BLOCK + 5 + 511), 'data', 'a 512-byte write straddling two sectors stores both');
      assert.equal(at(5 * BLOCK + 1024), 'unallocated');
      assert.equal(at(9 * BLOCK + 100), 'unallocated', 'a block never written');
      assert.equal(at(7 * BLOCK), 'data', 'written zeros are stored (a parent must not show through)');
      const data = status.filter((s) => s.state === 'data').reduce((a, s) => a + s.length, 0);
      assert.ok(data < BLOCK + 20 * 512 + 4096 + 65536, `only written sectors are data (${data})`);
      // untouched sectors of allocated blocks are holes in the file
      assert.ok((await stat(path)).blocks * 512 < 8 * MiB, `sparse file (${(await stat(path)).blocks * 512} bytes on disk)`);
    }
    const info = await r.info();
    assert.equal(info.format, 'vhd');
    assert.equal(info.capacity, CAPACITY);
    assert.equal(info.numLinks, 1);
    assert.equal(info.uuid, dashed(f.uniqueId));
    await r.close();
  });

  test(`${type}: chsRounding rounds up to a CHS size as qemu-img does; capacities must be whole sectors and at most 2040 GiB`, async (t) => {
    const dir = (await tmpDir(t)).path;
    const d = await Disk.create(join(dir, 'chs.vhd'), { format: 'vhd', type, capacity: 100 * MiB, chsRounding: true });
    assert.equal(d.capacity, 104865792);
    assert.equal(d.readMetadata('geometry'), '1004/12/17');
    await d.close();
    const f = await rawFooter(join(dir, 'chs.vhd'));
    assert.equal(f.currentSize, 104865792);
    assert.equal(f.geometry, '1004/12/17');
    // an exact size that a geometry describes keeps that geometry
    const e = await Disk.create(join(dir, 'exact.vhd'), { format: 'vhd', type, capacity: 104865792 });
    assert.equal(e.readMetadata('geometry'), '1004/12/17');
    await e.close();
    for (const capacity of [1000, 0, -512, 2041 * 2 ** 30, 1.5]) {
      await assert.rejects(Disk.create(join(dir, `bad-${capacity}.vhd`), { format: 'vhd', type, capacity }), (err: DiskError) => err.code === 'INVAL' && err.details.field === 'capacity');
    }
    await assert.rejects(Disk.create(join(dir, 'x.vhd'), { format: 'vhd', type: 'qcow', capacity: MiB }), (err: DiskError) => err.code === 'INVAL' && err.details.field === 'type');
  });
}

test('metadata: keys, round trip with checksums and both footers, read-only keys refused, size-changing values refused', async (t) => {
  const dir = (await tmpDir(t)).path;
  const path = join(dir, 'm.vhd');
  const d = await Disk.create(path, { format: 'vhd', capacity: 100 * MiB, chsRounding: true });
  assert.deepEqual(d.metadataKeys(), ['creatorApplication', 'creatorVersion', 'creatorHostOS', 'uuid', 'geometry', 'diskType', 'savedState', 'timestamp', 'originalSize', 'currentSize']);
  assert.equal(d.readMetadata('creatorApplication'), 'vdkt');
  assert.equal(d.readMetadata('creatorVersion'), '0.1');
  assert.equal(d.readMetadata('diskType'), 'dynamic');
  assert.equal(d.readMetadata('savedState'), '0');
  assert.ok(Math.abs(Date.parse(d.readMetadata('timestamp')!) - Date.now()) < 60_000, 'timestamp is now');
  const uuid = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';
  await d.writeMetadata('uuid', uuid);
  await d.writeMetadata('creatorVersion', '6.3');
  await d.writeMetadata('creatorHostOS', 'Mac ');
  await d.writeMetadata('creatorApplication', 'vpc '); // the geometry is exact: same size under the CHS rule
  await d.write(0, Buffer.alloc(512, 1));
  for (const [key, value] of [
    ['diskType', 'fixed'],
    ['currentSize', '1'],
    ['parentUuid', uuid],
    ['savedState', '1'],
    ['comment', 'free text'],
  ]) {
    await assert.rejects(d.writeMetadata(key!, value!), (e: DiskError) => e.code === 'NOTSUPPORTED' && e.details.field === key && e.details.path === path, key);
  }
  await assert.rejects(d.writeMetadata('geometry', '1003/12/17'), (e: DiskError) => e.code === 'INVAL' && e.details.field === 'geometry' && /change the disk size/.test(e.message));
  await assert.rejects(d.writeMetadata('uuid', 'nope'), (e: DiskError) => e.code === 'INVAL' && e.details.field === 'uuid');
  await assert.rejects(d.writeMetadata('creatorVersion', '1.2.3'), (e: DiskError) => e.code === 'INVAL');
  await d.close();

  const f = await rawFooter(path);
  assert.ok(f.checksumOk, 'footer checksum recomputed');
  assert.equal(f.creator, 'vpc ');
  assert.equal(f.creatorVersion, 0x00060003);
  assert.equal(f.hostOS, 'Mac ');
  assert.equal(dashed(f.uniqueId), uuid);
  assert.deepEqual(await bytesAt(path, 0, 512), f.bytes, 'the copy at offset 0 follows');
  const r = await Disk.open(path, { readOnly: true });
  assert.equal(r.capacity, 104865792);
  assert.equal(r.readMetadata('uuid'), uuid);
  assert.equal(r.readMetadata('creatorApplication'), 'vpc ');
  assert.equal(r.readMetadata('creatorVersion'), '6.3');
  assert.equal(r.image.identity(), uuid);
  await r.close();
});

test('differencing chains of depth 1 to 5 made with createChild read like a flattened model, before and after reopen', async (t) => {
  const dir = (await tmpDir(t)).path;
  const capacity = 3 * BLOCK + 5 * 512;
  const base = join(dir, 'base.vhd');
  const model = Buffer.alloc(capacity);
  const b = await Disk.create(base, { format: 'vhd', capacity });
  for (const [o, data] of [
    [0, xorshiftBytes(BLOCK + 4096, 11)],
    [2 * BLOCK + 999, xorshiftBytes(5000, 12)],
  ] as [number, Buffer][]) {
    await b.write(o, data);
    data.copy(model, o);
  }
  await b.close();
  let top = base;
  const ids: string[] = [];
  for (let depth = 1; depth <= 5; depth++) {
    const parentId = (await rawFooter(top)).uniqueId;
    const c = await createChild(top);
    assert.equal(c.path, join(dir, `base-${String(depth).padStart(6, '0')}.vhd`));
    assert.equal(c.type, 'differencing');
    await assertReadsAs(c, model, `empty child at depth ${depth}`);
    // sub-sector, cross-sector, cross-block writes over data the parents hold and over holes
    const writes: [number, Buffer][] = [
      [depth * 37, xorshiftBytes(depth * 3, 100 + depth)],
      [BLOCK - 300 + depth, xorshiftBytes(700, 200 + depth)],
      [2 * BLOCK + 1000 + depth * 512, xorshiftBytes(10, 300 + depth)],
      [capacity - 1 - depth, xorshiftBytes(1, 400 + depth)],
    ];
    for (const [o, data] of writes) {
      await c.write(o, data);
      data.copy(model, o);
    }
    await assertReadsAs(c, model, `depth ${depth} after writes`);
    const info = await c.info();
    assert.equal(info.numLinks, depth + 1);
    assert.equal(info.parentCid, dashed(parentId));
    assert.equal(info.parent, `base${depth === 1 ? '' : `-${String(depth - 1).padStart(6, '0')}`}.vhd`);
    const st = await c.blockStatus();
    const at = (x: number) => st.find((e) => e.offset <= x && x < e.offset + e.length)!;
    assert.equal(at(depth * 37).depth, 0, 'the written sector is in the top');
    assert.equal(at(1024 * 1024).depth, depth, 'an untouched sector still comes from the base');
    await c.close();
    top = c.path;
    ids.push((await rawFooter(top)).uniqueId);
    const h = await rawHeader(top);
    assert.equal(h.parentUniqueId, parentId, 'parent unique id: raw copy of the parent footer');
    assert.deepEqual(h.locators.map((l) => l.code), ['W2ku', 'W2ru']);
  }
  assert.equal(new Set(ids).size, 5, 'every link has its own unique id');
  const r = await Disk.open(top, { readOnly: true });
  await assertReadsAs(r, model, 'depth 5 after reopen');
  assert.equal((await r.info()).numLinks, 6);
  await r.close();
  // the base's bytes did not change under its children
  const lone = await Disk.open(base, { readOnly: true });
  assert.deepEqual(await lone.read(0, 4096), xorshiftBytes(BLOCK + 4096, 11).subarray(0, 4096));
  await lone.close();
});

test('parent link fields: name, timestamp, W2ku/W2ru locators; found via W2ru, W2ku, and the unicode name beside the child', async (t) => {
  const root = (await tmpDir(t)).path;
  await mkdir(join(root, 'a', 'sub'), { recursive: true });
  await mkdir(join(root, 'b'));
  const base = join(root, 'b', 'base.vhd');
  const p = await Disk.create(base, { format: 'vhd', capacity: 4 * MiB });
  await p.write(0, Buffer.alloc(512, 0x5a));
  await p.close();
  const child = join(root, 'a', 'child.vhd');
  await (await createChild(base, child)).close();

  const h = await rawHeader(child);
  const pf = await rawFooter(base);
  assert.equal(h.parentName, 'base.vhd');
  assert.equal(h.parentTimestamp, pf.bytes.readUInt32BE(24), 'parent timestamp = the parent footer timestamp');
  const text = async (l: { offset: number; length: number }) => (await bytesAt(child, l.offset, l.length)).toString('utf16le');
  const [ku, ru] = h.locators;
  assert.equal(await text(ku!), base, 'W2ku: the absolute path, UTF-16LE');
  assert.equal(await text(ru!), '..\\b\\base.vhd', 'W2ru: relative to the child, Windows separators');
  for (const l of h.locators) {
    assert.equal(l.offset % 512, 0);
    assert.ok(l.space >= l.length && l.space >= 4096, 'data space reserved in bytes');
    assert.ok(l.offset >= 1536 + 512 && l.offset + l.space <= (await stat(child)).size - 512, 'between the BAT and the footer');
  }
  const c = await Disk.open(child, { readOnly: true });
  assert.deepEqual(c.image.backing(), { hint: '../b/base.vhd', hints: [base, 'base.vhd'], format: 'vhd', parentId: dashed(pf.uniqueId) });
  assert.equal(c.readMetadata('parentName'), 'base.vhd');
  assert.equal(c.readMetadata('parentUuid'), dashed(pf.uniqueId));
  assert.deepEqual(await c.read(0, 512), Buffer.alloc(512, 0x5a), 'found through W2ru');
  await c.close();

  // moved one folder down: W2ru leads nowhere, W2ku still does
  const moved = join(root, 'a', 'sub', 'child.vhd');
  await rename(child, moved);
  const m = await Disk.open(moved, { readOnly: true });
  assert.equal((await m.info()).chain?.[1], base, 'found through W2ku');
  await m.close();

  // no locators at all, the parent beside the child: found by the unicode name
  const hdr = await bytesAt(moved, 512, 1024);
  hdr.fill(0, 576, 768);
  hdr.writeUInt32BE(vhdChecksum(hdr, 36), 36);
  await poke(moved, 512, hdr);
  await rename(base, join(root, 'a', 'sub', 'base.vhd'));
  const n = await Disk.open(moved, { readOnly: true });
  assert.deepEqual(n.image.backing(), { hint: '', hints: ['base.vhd'], format: 'vhd', parentId: dashed(pf.uniqueId) });
  assert.equal((await n.info()).chain?.[1], join(root, 'a', 'sub', 'base.vhd'));
  assert.deepEqual(await n.read(0, 512), Buffer.alloc(512, 0x5a));
  await n.close();

  // a lone child opened read-write: refused (only the chain does its copy-on-write)
  await assert.rejects(Disk.open(moved, { singleLink: true }), (e: DiskError) => e.code === 'PARTIALCHAIN' && e.details.field === 'diskType');
  const single = await Disk.open(moved, { singleLink: true, readOnly: true });
  assert.deepEqual(await single.read(0, 512), Buffer.alloc(512), 'alone, what the parent holds reads as zeros');
  await single.close();
});

test('a parent whose unique id changed: CID_MISMATCH naming both ids; a missing parent: OPENPARENT', async (t) => {
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'base.vhd');
  await (await Disk.create(base, { format: 'vhd', capacity: 4 * MiB })).close();
  const c = await createChild(base);
  await c.close();
  await assert.rejects(Disk.open(base), (e: DiskError) => e.code === 'RDONLY' && e.message.includes('base-000001.vhd'), 'a parent with a child is protected');
  const old = (await rawFooter(base)).uniqueId;
  const p = await Disk.open(base, { force: true });
  await p.writeMetadata('uuid', '11111111-2222-3333-4444-555555555555');
  await p.close();
  await assert.rejects(Disk.open(c.path, { readOnly: true }), (e: DiskError) => e.code === 'CID_MISMATCH' && e.details.expected === dashed(old) && e.details.found === '11111111-2222-3333-4444-555555555555');
  await rename(base, join(dir, 'gone.bin'));
  await assert.rejects(Disk.open(c.path, { readOnly: true }), (e: DiskError) => e.code === 'OPENPARENT');
});

test('rebase, merge and commit re-link VHD chains and keep what they read', async (t) => {
  const dir = (await tmpDir(t)).path;
  const capacity = 2 * BLOCK;
  const base = join(dir, 'base.vhd');
  const model = Buffer.alloc(capacity);
  const b = await Disk.create(base, { format: 'vhd', capacity });
  await b.write(0, xorshiftBytes(BLOCK + 777, 1));
  xorshiftBytes(BLOCK + 777, 1).copy(model, 0);
  await b.close();
  const mid = await createChild(base, join(dir, 'mid.vhd'));
  await mid.write(100, Buffer.alloc(10, 0xaa));
  Buffer.alloc(10, 0xaa).copy(model, 100);
  await mid.close();
  const top = await createChild(join(dir, 'mid.vhd'), join(dir, 'top.vhd'));
  await top.write(BLOCK + 3, Buffer.alloc(3, 0xbb));
  Buffer.alloc(3, 0xbb).copy(model, BLOCK + 3);
  await top.close();

  // safe rebase of the top onto the base: what mid held is copied into the top
  await rebase(join(dir, 'top.vhd'), base);
  let r = await Disk.open(join(dir, 'top.vhd'), { readOnly: true });
  assert.equal((await r.info()).numLinks, 2);
  await assertReadsAs(r, model, 'after rebase onto the base');
  await r.close();
  assert.equal((await rawHeader(join(dir, 'top.vhd'))).parentName, 'base.vhd');

  // commit the top into the base (mid, no longer used, goes first: the base must have no other
  // child): the base holds everything, the top is an empty child again
  await rm(join(dir, 'mid.vhd'));
  await commit(join(dir, 'top.vhd'));
  r = await Disk.open(join(dir, 'top.vhd'), { readOnly: true });
  await assertReadsAs(r, model, 'after commit');
  assert.equal((await r.info()).allocatedBytes, 0, 'the top was emptied');
  await r.close();
  assert.equal((await stat(join(dir, 'top.vhd'))).size, 1536 + 512 + 2 * 4096 + 512, 'emptied: cut back to header, BAT, locators, footer');
  const f = await rawFooter(join(dir, 'top.vhd'));
  assert.ok(f.checksumOk);
  assert.deepEqual(await bytesAt(join(dir, 'top.vhd'), 0, 512), f.bytes);

  // merge everything into the top: it becomes a plain dynamic disk that reads the same
  await mergeIntoTop(join(dir, 'top.vhd'), { all: true });
  r = await Disk.open(join(dir, 'top.vhd'), { readOnly: true });
  assert.equal(r.type, 'dynamic');
  assert.equal(r.image.backing(), undefined);
  await assertReadsAs(r, model, 'after merging everything into the top');
  await r.close();
  assert.equal((await rawFooter(join(dir, 'top.vhd'))).diskType, 3);
  assert.ok((await rawHeader(join(dir, 'top.vhd'))).checksumOk);

  assert.equal(await stat(base).catch(() => undefined), undefined, 'the merged base, used by no one, was removed');

  // and a standalone dynamic disk can become a child again (the link only): over an empty
  // parent it reads the same, since it holds every sector that is not zero
  const empty = await Disk.create(join(dir, 'empty.vhd'), { format: 'vhd', capacity });
  const emptyId = empty.image.identity()!;
  await empty.close();
  const link = await openLink(join(dir, 'top.vhd'), { cowByCaller: true });
  await link.setBacking({ hint: 'empty.vhd', parentId: emptyId });
  await link.close();
  r = await Disk.open(join(dir, 'top.vhd'), { readOnly: true });
  assert.equal(r.type, 'differencing');
  assert.equal((await r.info()).numLinks, 2);
  await assertReadsAs(r, model, 'made a child of an empty disk');
  await r.close();
  assert.equal((await rawHeader(join(dir, 'top.vhd'))).parentName, 'empty.vhd');

  // a fixed disk cannot have a parent
  const fixed = await Disk.create(join(dir, 'f.vhd'), { format: 'vhd', type: 'fixed', capacity: MiB });
  await assert.rejects(fixed.image.setBacking({ hint: 'base.vhd', parentId: '11111111-2222-3333-4444-555555555555' }), (e: DiskError) => e.code === 'NOTSUPPORTED' && e.details.field === 'diskType');
  await assert.rejects(fixed.image.makeEmpty(), (e: DiskError) => e.code === 'NOTSUPPORTED');
  await fixed.close();
});

test('a longer parent path than the reserved locator space is appended; the chain still opens', async (t) => {
  const dir = (await tmpDir(t)).path;
  const deep = join(dir, 'x'.repeat(200), 'y'.repeat(200), 'z'.repeat(200), 'w'.repeat(200), 'v'.repeat(200), 'u'.repeat(200), 't'.repeat(200), 's'.repeat(200), 'r'.repeat(200), 'q'.repeat(200), 'p'.repeat(200));
  await mkdir(deep, { recursive: true });
  const base = join(dir, 'base.vhd');
  await (await Disk.create(base, { format: 'vhd', capacity: 4 * MiB })).close();
  const c = await createChild(base, join(dir, 'c.vhd'));
  await c.write(0, Buffer.alloc(4096, 1));
  await c.close();
  const before = (await stat(join(dir, 'c.vhd'))).size;
  const farBase = join(deep, 'base.vhd');
  await rename(base, farBase);
  await rebase(join(dir, 'c.vhd'), farBase, { unsafe: true });
  const h = await rawHeader(join(dir, 'c.vhd'));
  assert.ok(h.locators[0]!.length > 4096, 'W2ku longer than the 4 KiB reserved');
  assert.ok(h.locators[0]!.offset >= before - 512, 'appended where the footer was');
  const r = await Disk.open(join(dir, 'c.vhd'), { readOnly: true });
  assert.equal((await r.info()).chain?.[1], farBase);
  assert.deepEqual(await r.read(0, 4096), Buffer.alloc(4096, 1));
  await r.close();
  const f = await rawFooter(join(dir, 'c.vhd'));
  assert.ok(f.checksumOk && f.cookie === 'conectix', 'the file still ends with a footer');
});

const WRITER = join(dirname(fileURLToPath(import.meta.url)), '../helpers/crash-writer.js');

test('dynamic: a writer killed mid-write loses no acknowledged write and leaves a valid footer', async (t) => {
  const dir = (await tmpDir(t)).path;
  const path = join(dir, 'c.vhd');
  const capacity = 48 * MiB;
  await (await Disk.create(path, { format: 'vhd', capacity })).close();
  const r = await runKilledWhen(WRITER, [path], (line) => Number(line.slice(4)) >= 120);
  assert.ok(r.killed);
  const last = Number(r.lines.at(-1)!.slice(4));
  const model = Buffer.alloc(capacity);
  for (let i = 0; i <= last; i++) {
    const { offset, data } = chunkFor(i, capacity);
    data.copy(model, offset);
  }
  const inflight = chunkFor(last + 1, capacity);
  const f = await rawFooter(path);
  assert.equal(f.cookie, 'conectix', 'the file ends with a footer');
  assert.ok(f.checksumOk);
  const d = await Disk.open(path);
  const got = await d.read(0, capacity);
  await d.close();
  inflight.data.fill(0);
  model.fill(0, inflight.offset, inflight.offset + inflight.data.length);
  got.fill(0, inflight.offset, inflight.offset + inflight.data.length);
  assert.ok(got.equals(model), 'every acknowledged write reads back');
});

test('a fixed VHD named .img is detected by its footer; a raw file merely containing the cookie is not', async (t) => {
  const dir = (await tmpDir(t)).path;
  const img = join(dir, 'disk.img');
  await (await Disk.create(img, { format: 'vhd', type: 'fixed', capacity: MiB })).close();
  assert.equal((await detectFormat(img)).name, 'vhd');
  const d = await Disk.open(img, { readOnly: true });
  assert.equal(d.format, 'vhd');
  assert.equal(d.capacity, MiB);
  await d.close();
  const raw = join(dir, 'raw.img');
  const bytes = Buffer.alloc(MiB);
  bytes.write('conectix', 4096, 'latin1');
  bytes.write('conectix', MiB - 512 + 1, 'latin1');
  const fh = await open(raw, 'w');
  await fh.write(bytes, 0, bytes.length, 0);
  await fh.close();
  assert.equal((await detectFormat(raw)).name, 'raw');
  // a raw disk whose last sector starts with the cookie but is no footer
  const tail = Buffer.alloc(512);
  tail.write('conectix', 0, 'latin1');
  await poke(raw, MiB - 512, tail);
  assert.equal((await detectFormat(raw)).name, 'raw');
});
