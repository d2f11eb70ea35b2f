/**
 * VDI conformance: create (dynamic, fixed), read-after-write at block boundaries, persistence,
 * block status, zero blocks, the modification UUID, metadata, differencing chains of depth 1-5
 * made with createChild against a flattened model, how a parent is found (folder search,
 * caller-given parentPaths) and what a wrong parent gives (CID_MISMATCH), and the chain
 * operations that re-link VDI images (commit, merge, rebase). On-disk facts are read with plain
 * fs at the offsets of vdi.md, not through vdkit's codec.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, open, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, DiskError, detectFormat } from '../../src/index.js';
import { chainFormats, openLink } from '../../src/disk.js';
import { backingTo } from '../../src/chain/chain.js';
import { hostFiles } from '../../src/storage/file.js';
import { createChild } from '../../src/ops/child.js';
import { commit, mergeIntoTop } from '../../src/ops/commit.js';
import { rebase } from '../../src/ops/rebase.js';
import { tmpDir } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';

const MiB = 2 ** 20;
const BLOCK = MiB;

/** header facts straight from the bytes (vdi.md §2-3) */
async function rawHeader(path: string) {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(0x200);
    await fh.read(b, 0, 0x200, 0);
    const uuid = (at: number) => b.subarray(at, at + 16);
    return {
      signature: b.readUInt32LE(0x40),
      version: b.readUInt32LE(0x44),
      cbHeader: b.readUInt32LE(0x48),
      type: b.readUInt32LE(0x4c),
      flags: b.readUInt32LE(0x50),
      offBlocks: b.readUInt32LE(0x154),
      offData: b.readUInt32LE(0x158),
      legacySectorSize: b.readUInt32LE(0x168),
      cbDisk: Number(b.readBigUInt64LE(0x170)),
      cbBlock: b.readUInt32LE(0x178),
      cbBlockExtra: b.readUInt32LE(0x17c),
      cBlocks: b.readUInt32LE(0x180),
      cBlocksAllocated: b.readUInt32LE(0x184),
      uuidCreate: Buffer.from(uuid(0x188)),
      uuidModify: Buffer.from(uuid(0x198)),
      uuidLinkage: Buffer.from(uuid(0x1a8)),
      uuidParentModify: Buffer.from(uuid(0x1b8)),
      lchs: [b.readUInt32LE(0x1c8), b.readUInt32LE(0x1cc), b.readUInt32LE(0x1d0), b.readUInt32LE(0x1d4)],
    };
  } finally {
    await fh.close();
  }
}

async function mapEntries(path: string): Promise<number[]> {
  const h = await rawHeader(path);
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(h.cBlocks * 4);
    await fh.read(b, 0, b.length, h.offBlocks);
    return Array.from({ length: h.cBlocks }, (_, i) => b.readUInt32LE(i * 4));
  } finally {
    await fh.close();
  }
}

/** RFC-4122 text of stored UUID bytes (first three groups little-endian), written out independently */
function uuidText(b: Buffer): string {
  const h = (s: Buffer) => s.toString('hex');
  const r = (s: Buffer) => Buffer.from(s).reverse().toString('hex');
  return `${r(b.subarray(0, 4))}-${r(b.subarray(4, 6))}-${r(b.subarray(6, 8))}-${h(b.subarray(8, 10))}-${h(b.subarray(10, 16))}`;
}

function stateAt(status: { offset: number; length: number; state: string; depth?: number }[], x: number) {
  return status.find((e) => e.offset <= x && x < e.offset + e.length)!;
}

for (const type of ['dynamic', 'fixed'] as const) {
  test(`${type}: VirtualBox layout, write at block boundaries, read back, reopen, block status`, async (t) => {
    const dir = (await tmpDir(t)).path;
    const path = join(dir, `${type}.vdi`);
    const capacity = 5 * MiB + 3 * 512; // last block partial
    const d = await Disk.create(path, { format: 'vdi', type, capacity });
    assert.equal(d.capacity, capacity);
    assert.equal(d.format, 'vdi');
    assert.equal(d.type, type);

    const h = await rawHeader(path);
    assert.equal(h.signature, 0xbeda107f);
    assert.equal(h.version, 0x00010001);
    assert.equal(h.cbHeader, 0x190, 'v1+ header, as VirtualBox writes');
    assert.equal(h.type, type === 'fixed' ? 2 : 1);
    assert.equal(h.flags, 0);
    assert.equal(h.offBlocks, 0x100000);
    assert.equal(h.offData, 0x200000);
    assert.equal(h.legacySectorSize, 512);
    assert.equal(h.cbDisk, capacity);
    assert.equal(h.cbBlock, BLOCK);
    assert.equal(h.cbBlockExtra, 0);
    assert.equal(h.cBlocks, 6);
    assert.equal(h.cBlocksAllocated, type === 'fixed' ? 6 : 0);
    assert.deepEqual(h.lchs, [0, 0, 0, 512], 'LCHS not set, sector size 512');
    assert.ok(!h.uuidCreate.equals(Buffer.alloc(16)) && !h.uuidModify.equals(Buffer.alloc(16)));
    assert.ok(h.uuidLinkage.equals(Buffer.alloc(16)) && h.uuidParentModify.equals(Buffer.alloc(16)), 'a base has null link UUIDs');
    assert.deepEqual(await mapEntries(path), type === 'fixed' ? [0, 1, 2, 3, 4, 5] : Array(6).fill(0xffffffff));
    assert.equal((await stat(path)).size, type === 'fixed' ? 0x200000 + 6 * BLOCK : 0x200000);
    assert.equal((await d.info()).uuid, uuidText(h.uuidCreate));

    const writes: [number, Buffer][] = [
      [0, xorshiftBytes(4096, 1)],
      [BLOCK - 100, xorshiftBytes(300, 2)], // across blocks 0 and 1
      [2 * BLOCK - 1, xorshiftBytes(2, 3)], // last byte of block 1, first of block 2
      [3 * BLOCK, xorshiftBytes(BLOCK, 4)], // exactly block 3
      [capacity - 512, xorshiftBytes(512, 5)], // last sector (partial last block)
    ];
    for (const [o, b] of writes) await d.write(o, b);
    for (const [o, b] of writes) assert.deepEqual(await d.read(o, b.length), b, `read-after-write at ${o}`);
    await d.close();

    const r = await Disk.open(path, { readOnly: true });
    assert.equal(r.capacity, capacity);
    for (const [o, b] of writes) assert.deepEqual(await r.read(o, b.length), b, `after reopen at ${o}`);
    assert.deepEqual(await r.read(4096, BLOCK - 4096 - 100), Buffer.alloc(BLOCK - 4096 - 100), 'untouched bytes of a written block are zeros');
    assert.deepEqual(await r.read(4 * BLOCK, 4096), Buffer.alloc(4096));
    const status = await r.blockStatus();
    let at = 0;
    for (const s of status) {
      assert.equal(s.offset, at, 'block status is contiguous');
      at += s.length;
    }
    assert.equal(at, capacity);
    for (const [o, b] of writes) for (const x of [o, o + b.length - 1]) assert.equal(stateAt(status, x).state, 'data', `byte ${x} is data`);
    if (type === 'dynamic') {
      assert.equal(stateAt(status, 4 * BLOCK).state, 'unallocated', 'block 4 was never written');
      const info = await r.info();
      assert.equal(info.allocatedBytes, 4 * BLOCK + (capacity - 5 * BLOCK), 'blocks 0-3 and the partial last block');
      const raw = await rawHeader(path);
      assert.equal(raw.cBlocksAllocated, 5);
      const map = await mapEntries(path);
      assert.deepEqual([...map].filter((e) => e < 0xfffffffe).sort(), [0, 1, 2, 3, 4], 'allocated blocks are dense, in data order');
      assert.equal((await stat(path)).size, 0x200000 + 5 * BLOCK);
    } else {
      assert.deepEqual(status, [{ offset: 0, length: capacity, state: 'data' }]);
      assert.deepEqual(await mapEntries(path), [0, 1, 2, 3, 4, 5], 'a fixed image keeps its identity map');
    }
    const info = await r.info();
    assert.equal(info.format, 'vdi');
    assert.equal(info.type, type);
    assert.equal(info.numLinks, 1);
    assert.equal(info.extents.length, 1);
    assert.equal(info.extents[0]!.path, path);
    assert.equal(info.fileSize, (await stat(path)).size);
    assert.equal(info.parent, undefined);
    assert.equal(info.warnings, undefined);
    assert.equal(r.image.clusterSize, BLOCK);
    await r.close();
  });
}

test('zero blocks: an all-zero block write to an unallocated block is a ZERO entry (no data); fixed images keep data', async (t) => {
  const dir = (await tmpDir(t)).path;
  const path = join(dir, 'z.vdi');
  const d = await Disk.create(path, { format: 'vdi', capacity: 4 * MiB });
  await d.write(0, Buffer.alloc(BLOCK)); // whole block of zeros
  await d.write(BLOCK + 10, Buffer.alloc(100)); // partial zeros over FREE: the block reads zero anyway
  await d.write(2 * BLOCK, xorshiftBytes(BLOCK, 9));
  await d.write(2 * BLOCK, Buffer.alloc(BLOCK)); // zeros over data stay data (overwritten in place)
  await d.close();
  assert.deepEqual(await mapEntries(path), [0xfffffffe, 0xfffffffe, 0, 0xffffffff]);
  assert.equal((await rawHeader(path)).cBlocksAllocated, 1);
  assert.equal((await stat(path)).size, 0x200000 + BLOCK, 'zero blocks take no space');
  const r = await Disk.open(path, { readOnly: true });
  assert.deepEqual(await r.blockStatus(), [
    { offset: 0, length: 2 * BLOCK, state: 'zero' },
    { offset: 2 * BLOCK, length: BLOCK, state: 'data' },
    { offset: 3 * BLOCK, length: BLOCK, state: 'unallocated' },
  ]);
  assert.deepEqual(await r.read(0, 4 * MiB), Buffer.alloc(4 * MiB));
  await r.close();
  // data into a ZERO block allocates it; the rest of the block reads zeros
  const w = await Disk.open(path);
  await w.write(BLOCK + 5, Buffer.from([1, 2, 3]));
  assert.deepEqual(await w.read(BLOCK, 10), Buffer.from([0, 0, 0, 0, 0, 1, 2, 3, 0, 0]));
  assert.equal(stateAt(await w.blockStatus(), BLOCK).state, 'data');
  await w.close();
  assert.equal((await mapEntries(path))[1], 1);

  const f = join(dir, 'f.vdi');
  const fd = await Disk.create(f, { format: 'vdi', type: 'fixed', capacity: 2 * MiB });
  await fd.write(0, Buffer.alloc(BLOCK));
  await fd.close();
  assert.deepEqual(await mapEntries(f), [0, 1], 'a fixed image never gets ZERO entries');
});

test('modification UUID: renewed on the first write of a session only; not by reads or preserveIdentity', async (t) => {
  const dir = (await tmpDir(t)).path;
  const path = join(dir, 'm.vdi');
  const d = await Disk.create(path, { format: 'vdi', capacity: 2 * MiB });
  await d.close();
  const m0 = (await rawHeader(path)).uuidModify;
  const c0 = (await rawHeader(path)).uuidCreate;
  const ro = await Disk.open(path);
  await ro.read(0, 100);
  await ro.close();
  assert.ok((await rawHeader(path)).uuidModify.equals(m0), 'opening read-write and reading changes nothing');
  const w = await Disk.open(path);
  await w.write(0, Buffer.from('a'));
  const m1 = (await rawHeader(path)).uuidModify;
  await w.write(BLOCK, Buffer.from('b'));
  await w.close();
  assert.ok(!m1.equals(m0), 'first write renews uuidModify');
  assert.ok((await rawHeader(path)).uuidModify.equals(m1), 'second write of the session keeps it');
  assert.ok((await rawHeader(path)).uuidCreate.equals(c0), 'the creation UUID (identity) never changes by writing');
  const p = await openLink(path, { preserveIdentity: true });
  await p.write(Buffer.from('c'), 2);
  await p.close();
  assert.ok((await rawHeader(path)).uuidModify.equals(m1), 'preserveIdentity keeps it');
});

test('metadata: comment, UUIDs, LCHS geometry round trip; type is read-only; bad values refused', async (t) => {
  const dir = (await tmpDir(t)).path;
  const path = join(dir, 'meta.vdi');
  const d = await Disk.create(path, { format: 'vdi', capacity: 3 * MiB });
  assert.deepEqual(d.metadataKeys(), ['comment', 'uuid', 'modificationUuid', 'geometry.cylinders', 'geometry.heads', 'geometry.sectors', 'type']);
  assert.equal(d.readMetadata('comment'), '');
  assert.equal(d.readMetadata('type'), 'dynamic');
  assert.equal(d.readMetadata('parentUuid'), undefined);
  const comment = 'Überraschung — ' + 'x'.repeat(200);
  await d.writeMetadata('comment', comment);
  const newId = '01234567-89ab-cdef-0123-456789abcdef';
  await d.writeMetadata('uuid', newId.toUpperCase());
  await d.writeMetadata('modificationUuid', '{11111111-2222-3333-4444-555555555555}');
  await d.writeMetadata('geometry.cylinders', '6');
  await d.writeMetadata('geometry.heads', '16');
  await d.writeMetadata('geometry.sectors', '63');
  const refuse = async (key: string, value: string, code: string) =>
    assert.rejects(d.writeMetadata(key, value), (e: DiskError) => e instanceof DiskError && e.code === code && e.details.field === key && e.details.path === path && e.message.includes(key), `${key}=${value}`);
  await refuse('type', 'fixed', 'NOTSUPPORTED');
  await refuse('comment', 'y'.repeat(256), 'INVAL');
  await refuse('comment', 'ü'.repeat(128), 'INVAL'); // 256 bytes of UTF-8
  await refuse('uuid', 'not-a-uuid', 'INVAL');
  await refuse('uuid', '00000000-0000-0000-0000-000000000000', 'INVAL');
  await refuse('parentUuid', newId, 'NOTSUPPORTED');
  await refuse('geometry.heads', '256', 'INVAL');
  await refuse('geometry.sectors', '-1', 'INVAL');
  await refuse('nonsense', '1', 'INVAL');
  await d.close();

  const h = await rawHeader(path);
  assert.equal(uuidText(h.uuidCreate), newId);
  assert.equal(uuidText(h.uuidModify), '11111111-2222-3333-4444-555555555555');
  assert.deepEqual(h.lchs, [6, 16, 63, 512]);
  const r = await Disk.open(path, { readOnly: true });
  assert.equal(r.readMetadata('comment'), comment);
  assert.equal(r.readMetadata('uuid'), newId);
  assert.equal(r.image.identity(), newId);
  assert.deepEqual((await r.info()).geometry, { cylinders: 6, heads: 16, sectors: 63 });
  await assert.rejects(r.writeMetadata('comment', 'x'), (e: DiskError) => e.code === 'RDONLY');
  await r.close();
});

test('differencing chains of depth 1-5 (createChild) read like a flattened model; reopen; block status names the link', async (t) => {
  const dir = (await tmpDir(t)).path;
  const capacity = 6 * MiB + 1024;
  let path = join(dir, 'base.vdi');
  const base = await Disk.create(path, { format: 'vdi', capacity });
  const model = Buffer.alloc(capacity);
  const put = async (d: Disk, o: number, b: Buffer) => {
    await d.write(o, b);
    b.copy(model, o);
  };
  await put(base, 0, xorshiftBytes(3 * BLOCK, 1));
  await put(base, 5 * BLOCK + 7, xorshiftBytes(1000, 2));
  await base.writeMetadata('geometry.cylinders', '12');
  await base.close();
  const baseHeader = await rawHeader(path);
  const paths = [path];
  for (let depth = 1; depth <= 5; depth++) {
    const parentHeader = await rawHeader(path);
    const c = await createChild(path);
    assert.equal(c.path, join(dir, `base-${String(depth).padStart(6, '0')}.vdi`));
    const h = await rawHeader(c.path);
    assert.equal(h.type, 4, 'differencing');
    assert.ok(h.uuidLinkage.equals(parentHeader.uuidCreate), 'uuidLinkage = parent creation UUID');
    assert.ok(h.uuidParentModify.equals(parentHeader.uuidModify), 'uuidParentModify = parent modification UUID');
    assert.ok(!h.uuidCreate.equals(parentHeader.uuidCreate), 'a child has its own UUID');
    assert.equal(h.cbDisk, capacity);
    assert.equal(h.cbBlock, BLOCK);
    assert.equal(h.lchs[0], 12, 'LCHS inherited');
    assert.deepEqual((await mapEntries(c.path)).filter((e) => e !== 0xffffffff), [], 'an empty child');
    const info = await c.info();
    assert.equal(info.type, 'differencing');
    assert.equal(info.numLinks, depth + 1);
    assert.equal(info.parent, uuidText(parentHeader.uuidCreate));
    assert.ok((await c.read(0, capacity)).equals(model), `an empty child at depth ${depth} reads as its parent`);
    // partial writes (copy-on-write from the chain), a whole block, zeros over parent data, the last bytes
    await put(c, depth * 1000 + 17, xorshiftBytes(777, 10 + depth));
    await put(c, depth * BLOCK - 3, xorshiftBytes(9, 20 + depth));
    await put(c, [0, 1, 5, 0, 1, 2][depth]! * BLOCK, depth === 2 ? Buffer.alloc(BLOCK) : xorshiftBytes(BLOCK, 30 + depth));
    await put(c, capacity - 10, xorshiftBytes(10, 40 + depth));
    assert.ok((await c.read(0, capacity)).equals(model), `depth ${depth} after writes`);
    await c.close();
    path = c.path;
    paths.push(path);
  }
  const r = await Disk.open(path, { readOnly: true });
  assert.ok((await r.read(0, capacity)).equals(model), 'the top of a 6-link chain after reopen');
  const info = await r.info();
  assert.deepEqual(info.chain, [...paths].reverse());
  const st = await r.blockStatus();
  assert.equal(stateAt(st, capacity - 1).depth, 0, 'the last bytes were written last by the top');
  assert.equal(stateAt(st, 2 * BLOCK + 100).depth, 0);
  assert.equal(stateAt(st, 5 * BLOCK + 7).depth, 0, 'block 5 of the top (written at depth 5)');
  assert.equal(stateAt(st, 3 * BLOCK + 5).depth, 1, 'block 3 last written at depth 4: the link below the top');
  assert.equal(stateAt(st, BLOCK + 5).depth, 1, 'block 1 last written at depth 4');
  await r.close();
  // the zero block written at depth 2 over the base's data is a ZERO entry in that link
  assert.equal((await mapEntries(paths[2]!))[5], 0xfffffffe);
  assert.ok((await rawHeader(paths[0]!)).uuidCreate.equals(baseHeader.uuidCreate));
});

test('parent lookup: by identity in the child folder, by caller-given parentPaths, else OPENPARENT; a wrong parent is CID_MISMATCH', async (t) => {
  const dir = (await tmpDir(t)).path;
  const b = join(dir, 'disk.vdi');
  const d = await Disk.create(b, { format: 'vdi', capacity: 2 * MiB });
  await d.write(0, Buffer.from('parent data'));
  await d.close();
  const c = await createChild(b, join(dir, 'snap.vdi'));
  await c.write(BLOCK, Buffer.from('child data'));
  await c.close();
  const parentId = uuidText((await rawHeader(b)).uuidCreate);

  // found by identity among the VDIs of the folder, whatever its name
  await rename(b, join(dir, 'renamed.vdi'));
  let r = await Disk.open(join(dir, 'snap.vdi'), { readOnly: true });
  assert.deepEqual(await r.read(0, 11), Buffer.from('parent data'));
  assert.deepEqual((await r.info()).chain, [join(dir, 'snap.vdi'), join(dir, 'renamed.vdi')]);
  await r.close();

  // moved to another folder: not found unless the caller says where
  const elsewhere = join(dir, 'other');
  await mkdir(elsewhere);
  await rename(join(dir, 'renamed.vdi'), join(elsewhere, 'p.vdi'));
  await assert.rejects(Disk.open(join(dir, 'snap.vdi'), { readOnly: true }), (e: DiskError) => e.code === 'OPENPARENT' && e.message.includes(parentId) && e.details.path === join(dir, 'snap.vdi'));
  r = await Disk.open(join(dir, 'snap.vdi'), { readOnly: true, parentPaths: [join(elsewhere, 'p.vdi')] });
  assert.deepEqual(await r.read(0, 11), Buffer.from('parent data'));
  assert.deepEqual(await r.read(BLOCK, 10), Buffer.from('child data'));
  await r.close();

  // a VDI with another creation UUID where the parent was expected
  const impostor = join(elsewhere, 'impostor.vdi');
  await (await Disk.create(impostor, { format: 'vdi', capacity: 2 * MiB })).close();
  const impostorId = uuidText((await rawHeader(impostor)).uuidCreate);
  await assert.rejects(
    Disk.open(join(dir, 'snap.vdi'), { readOnly: true, parentPaths: [impostor] }),
    (e: DiskError) => e.code === 'CID_MISMATCH' && e.details.expected === parentId && e.details.found === impostorId && e.details.path === join(dir, 'snap.vdi'),
  );
  // the same, in the child's own folder: identity search skips it, so it is just not found
  await copyFile(impostor, join(dir, 'impostor.vdi'));
  await assert.rejects(Disk.open(join(dir, 'snap.vdi'), { readOnly: true }), (e: DiskError) => e.code === 'OPENPARENT');
  // ...and the parent's creation UUID changed in place (sethduuid): CID_MISMATCH when named
  const p = await Disk.open(join(elsewhere, 'p.vdi'));
  await p.writeMetadata('uuid', '00112233-4455-6677-8899-aabbccddeeff');
  await p.close();
  await assert.rejects(Disk.open(join(dir, 'snap.vdi'), { readOnly: true, parentPaths: [join(elsewhere, 'p.vdi')] }), (e: DiskError) => e.code === 'CID_MISMATCH' && e.details.found === '00112233-4455-6677-8899-aabbccddeeff');
});

test('a differencing image alone is read-only (PARTIALCHAIN); its parent refuses read-write opens while it exists', async (t) => {
  const dir = (await tmpDir(t)).path;
  const b = join(dir, 'b.vdi');
  await (await Disk.create(b, { format: 'vdi', capacity: 2 * MiB })).close();
  const c = await createChild(b);
  await c.close();
  await assert.rejects(Disk.open(c.path, { singleLink: true }), (e: DiskError) => e.code === 'PARTIALCHAIN' && e.details.path === c.path);
  const alone = await Disk.open(c.path, { singleLink: true, readOnly: true });
  assert.equal(alone.image.backing()?.parentId, uuidText((await rawHeader(b)).uuidCreate));
  assert.equal(alone.image.backing()?.searchByIdentity, true);
  assert.equal(alone.image.backing()?.hint, '');
  await alone.close();
  await assert.rejects(Disk.open(b), (e: DiskError) => e.code === 'RDONLY' && e.message.includes(c.path));
  await assert.rejects(Disk.create(join(dir, 'x.vdi'), { format: 'vdi', type: 'differencing', capacity: MiB }), (e: DiskError) => e.code === 'INVAL' && e.details.field === 'type');
  await assert.rejects(Disk.create(join(dir, 'y.vdi'), { format: 'vdi', type: 'weird', capacity: MiB }), (e: DiskError) => e.code === 'INVAL' && e.details.field === 'type');
});

test('chain operations on VDI: commit into the base, merge everything into the top (a base again), safe rebase; makeEmpty and setBacking', async (t) => {
  const dir = (await tmpDir(t)).path;
  const capacity = 4 * MiB;
  const b = join(dir, 'b.vdi');
  const model = Buffer.alloc(capacity);
  const base = await Disk.create(b, { format: 'vdi', capacity });
  await base.write(0, xorshiftBytes(2 * BLOCK, 1));
  xorshiftBytes(2 * BLOCK, 1).copy(model);
  await base.close();
  const c1 = await createChild(b);
  await c1.write(BLOCK + 5, Buffer.from('one'));
  Buffer.from('one').copy(model, BLOCK + 5);
  await c1.close();
  const c2 = await createChild(c1.path);
  await c2.write(3 * BLOCK, Buffer.from('two'));
  Buffer.from('two').copy(model, 3 * BLOCK);
  await c2.close();

  // commit the top into its parent: the parent gets a new UUID, the top is emptied and re-linked
  await commit(c2.path);
  let r = await Disk.open(c2.path, { readOnly: true });
  assert.ok((await r.read(0, capacity)).equals(model), 'after commit');
  await r.close();
  const h1 = await rawHeader(c1.path);
  const h2 = await rawHeader(c2.path);
  assert.ok(h2.uuidLinkage.equals(h1.uuidCreate), 'the top links to the committed base by its new UUID');
  assert.ok(h2.uuidParentModify.equals(h1.uuidModify), 'and records its modification UUID');
  assert.equal(h2.cBlocksAllocated, 0, 'the top is empty');
  assert.equal((await stat(c2.path)).size, h2.offData, 'makeEmpty cut the file back to the data area');

  // a second child of the base, kept for the rebase below (it also keeps the base from being removed)
  const c3 = await createChild(b, join(dir, 'c3.vdi'));
  await c3.write(2 * BLOCK, Buffer.from('three'));
  const expect3 = await c3.read(0, capacity);
  await c3.close();

  // merge everything into the top: it becomes a normal dynamic base that reads the same
  await mergeIntoTop(c2.path, { all: true });
  const h = await rawHeader(c2.path);
  assert.equal(h.type, 1, 'setBacking(undefined): type 1 (normal)');
  assert.ok(h.uuidLinkage.equals(Buffer.alloc(16)) && h.uuidParentModify.equals(Buffer.alloc(16)), 'null link UUIDs');
  r = await Disk.open(c2.path, { readOnly: true });
  assert.equal((await r.info()).numLinks, 1);
  assert.ok((await r.read(0, capacity)).equals(model), 'after merge');
  await r.close();

  // safe rebase of the other child of b onto the merged disk
  await rebase(join(dir, 'c3.vdi'), c2.path);
  const h3 = await rawHeader(join(dir, 'c3.vdi'));
  assert.ok(h3.uuidLinkage.equals(h.uuidCreate));
  r = await Disk.open(join(dir, 'c3.vdi'), { readOnly: true });
  assert.ok((await r.read(0, capacity)).equals(expect3), 'after rebase');
  await r.close();
});

test('setBacking: a dynamic base becomes a differencing child (UUIDs from the parent); a fixed image refuses; undefined makes a base', async (t) => {
  const dir = (await tmpDir(t)).path;
  const parent = join(dir, 'p.vdi');
  const pd = await Disk.create(parent, { format: 'vdi', capacity: 2 * MiB });
  await pd.write(0, Buffer.from('from the parent'));
  await pd.close();
  const ph = await rawHeader(parent);
  const lone = join(dir, 'lone.vdi');
  await (await Disk.create(lone, { format: 'vdi', capacity: 2 * MiB })).close();
  const img = await openLink(lone, { cowByCaller: true });
  // the chain layer reads the parent (the driver never opens it) and hands over its facts
  await img.setBacking(await backingTo(hostFiles(), lone, parent, uuidText(ph.uuidCreate), chainFormats));
  await img.close();
  let h = await rawHeader(lone);
  assert.equal(h.type, 4);
  assert.ok(h.uuidLinkage.equals(ph.uuidCreate));
  assert.ok(h.uuidParentModify.equals(ph.uuidModify), 'the parent modification UUID read from the parent');
  const r = await Disk.open(lone, { readOnly: true });
  assert.deepEqual(await r.read(0, 15), Buffer.from('from the parent'));
  await r.close();
  // a parent that cannot be read at the hint: the link is still set, the parent-modify UUID is unknown (null)
  const img2 = await openLink(lone, { cowByCaller: true });
  await img2.setBacking({ hint: 'missing.vdi', parentId: '01234567-89ab-cdef-0123-456789abcdef' });
  h = await rawHeader(lone);
  assert.equal(uuidText(h.uuidLinkage), '01234567-89ab-cdef-0123-456789abcdef');
  assert.ok(h.uuidParentModify.equals(Buffer.alloc(16)));
  await assert.rejects(img2.setBacking({ hint: 'p.vdi', parentId: 'zzz' }), (e: DiskError) => e.code === 'INVAL' && e.details.field === 'uuidLinkage');
  await img2.setBacking(undefined);
  await img2.close();
  h = await rawHeader(lone);
  assert.equal(h.type, 1);
  assert.ok(h.uuidLinkage.equals(Buffer.alloc(16)) && h.uuidParentModify.equals(Buffer.alloc(16)));
  const f = join(dir, 'f.vdi');
  await (await Disk.create(f, { format: 'vdi', type: 'fixed', capacity: MiB })).close();
  const fi = await openLink(f, {});
  await assert.rejects(fi.setBacking({ hint: 'p.vdi', parentId: uuidText(ph.uuidCreate) }), (e: DiskError) => e.code === 'NOTSUPPORTED' && e.details.field === 'type');
  await assert.rejects(fi.makeEmpty(), (e: DiskError) => e.code === 'NOTSUPPORTED');
  await fi.close();
});

test('detection by content: a VDI named .img is found as vdi', async (t) => {
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'disk.img');
  const d = await Disk.create(join(dir, 'disk.vdi'), { format: 'vdi', capacity: MiB });
  await d.write(0, Buffer.from('hello'));
  await d.close();
  await rename(join(dir, 'disk.vdi'), p);
  assert.equal((await detectFormat(p)).name, 'vdi');
  const r = await Disk.open(p, { readOnly: true });
  assert.equal(r.format, 'vdi');
  assert.deepEqual(await r.read(0, 5), Buffer.from('hello'));
  await r.close();
});
