/**
 * VHDX conformance: create (fixed, dynamic), the file layout read back with plain fs at the
 * offsets of vhd.md §16-§17 (headers, region tables, metadata items, BAT), read-after-write at
 * sector and block boundaries (incl. sub-sector writes), persistence, block status honesty and
 * the states of §16.4 (ZERO, UNMAPPED, in a lone image and in a chain), a 4096-byte logical
 * sector image, the session rules for headers (sequence+1 and a new FileWriteGuid on a
 * read-write open, a new DataWriteGuid on the first write, none with preserveIdentity, nothing
 * on a read-only open), metadata, differencing chains of depth 1-5 made with createChild
 * against a flattened model, how a parent is found (relative_path, absolute_win32_path, the name
 * beside the child), a written parent (new DataWriteGuid: CID_MISMATCH), the chain operations
 * that re-link VHDX images (rebase, merge, commit), the log (a pending entry left by a writer
 * stopped after the log flush: a read-only open reads the replayed data without touching the
 * file, a read-write open replays it), and check/repair.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, DiskError, detectFormat } from '../../src/index.js';
import { openLink } from '../../src/disk.js';
import { crc32c } from '../../src/binary/crc32c.js';
import { createChild } from '../../src/ops/child.js';
import { commit, mergeIntoTop } from '../../src/ops/commit.js';
import { rebase } from '../../src/ops/rebase.js';
import { vhdxLogHooks } from '../../src/formats/vhdx/log.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { tmpDir } from '../helpers/tools.js';
import { readAt as bytesAt } from '../helpers/bytes.js';

const MiB = 2 ** 20;
const BLOCK = MiB;
/** 10 blocks and 7 sectors: the last block is partial */
const CAPACITY = 10 * BLOCK + 7 * 512;

async function poke(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

const sha = async (p: string) => createHash('sha256').update(await readFile(p)).digest('hex');

/** Microsoft GUID text of 16 bytes (u32 LE, u16 LE, u16 LE, 8 bytes) */
function msGuid(b: Buffer): string {
  const r = (x: Buffer) => Buffer.from(x).reverse().toString('hex');
  return `${r(b.subarray(0, 4))}-${r(b.subarray(4, 6))}-${r(b.subarray(6, 8))}-${b.subarray(8, 10).toString('hex')}-${b.subarray(10, 16).toString('hex')}`;
}

/** CRC-32C of a structure with its checksum field (offset 4) zeroed */
function crcOk(b: Buffer): boolean {
  const z = Buffer.from(b);
  z.fill(0, 4, 8);
  return crc32c(z) === b.readUInt32LE(4);
}

/** both headers, straight from the bytes (vhd.md §16.1), and which one is current */
async function rawHeaders(path: string) {
  const hs = [];
  for (const off of [64 * 1024, 128 * 1024]) {
    const b = await bytesAt(path, off, 4096);
    hs.push({
      signature: b.toString('latin1', 0, 4),
      valid: b.toString('latin1', 0, 4) === 'head' && crcOk(b) && b.readUInt16LE(66) === 1,
      seq: b.readBigUInt64LE(8),
      fileWrite: msGuid(b.subarray(16, 32)),
      dataWrite: msGuid(b.subarray(32, 48)),
      logGuidZero: b.subarray(48, 64).every((x) => x === 0),
      logLength: b.readUInt32LE(68),
      logOffset: Number(b.readBigUInt64LE(72)),
    });
  }
  const cur = hs[0]!.valid && (!hs[1]!.valid || hs[0]!.seq >= hs[1]!.seq) ? hs[0]! : hs[1]!;
  return { hs, cur };
}

/** the region table (§16.2) and the metadata items (§16.3) */
async function rawLayout(path: string) {
  const rt = await bytesAt(path, 192 * 1024, 65536);
  const regions = new Map<string, { offset: number; length: number; flags: number }>();
  for (let i = 0; i < rt.readUInt32LE(8); i++) regions.set(msGuid(rt.subarray(16 + i * 32, 32 + i * 32)), { offset: Number(rt.readBigUInt64LE(32 + i * 32)), length: rt.readUInt32LE(40 + i * 32), flags: rt.readUInt32LE(44 + i * 32) });
  const md = regions.get('8b7ca206-4790-4b9a-b8fe-575f050f886e')!;
  const table = await bytesAt(path, md.offset, 65536);
  const items = new Map<string, { offset: number; length: number; flags: number; data: Buffer }>();
  for (let i = 0; i < table.readUInt16LE(10); i++) {
    const e = table.subarray(32 + i * 32, 64 + i * 32);
    const offset = e.readUInt32LE(16);
    const length = e.readUInt32LE(20);
    items.set(msGuid(e.subarray(0, 16)), { offset, length, flags: e.readUInt32LE(24), data: await bytesAt(path, md.offset + offset, length) });
  }
  return { rt, regions, bat: regions.get('2dc27766-f623-4200-9d64-115e9bfd4a08')!, md, mdSignature: table.toString('latin1', 0, 8), items };
}

const ITEM = {
  fileParameters: 'caa16737-fa36-4d43-b3b6-33f0aa44e76b',
  size: '2fa54224-cd1b-4876-b211-5dbed83bf4b8',
  page83: 'beca12ab-b2e6-4523-93ef-c309e000c746',
  logical: '8141bf1d-a96f-4709-ba47-f233a8faab5f',
  physical: 'cda348c7-445d-4471-9cc9-e9885251c556',
  locator: 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c',
};

/** a BAT entry straight from the file: [state, file offset] */
async function batEntry(path: string, index: number): Promise<[number, number]> {
  const { bat } = await rawLayout(path);
  const v = (await bytesAt(path, bat.offset + index * 8, 8)).readBigUInt64LE(0);
  return [Number(v & 7n), Number(v & ~0xfffffn)];
}

async function setBatEntry(path: string, index: number, state: number, offset = 0): Promise<void> {
  const { bat } = await rawLayout(path);
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(offset) | BigInt(state));
  await poke(path, bat.offset + index * 8, b);
}

/** the parent locator's key/value pairs (§16.6) */
function locatorPairs(item: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < item.readUInt16LE(18); i++) {
    const e = item.subarray(20 + i * 12);
    out.set(item.toString('utf16le', e.readUInt32LE(0), e.readUInt32LE(0) + e.readUInt16LE(8)), item.toString('utf16le', e.readUInt32LE(4), e.readUInt32LE(4) + e.readUInt16LE(10)));
  }
  return out;
}

/** sector, block and end-of-disk boundaries, sub-sector pieces */
function boundaryWrites(capacity: number): [number, Buffer][] {
  return [
    [0, xorshiftBytes(4096, 1)],
    [511, xorshiftBytes(2, 2)],
    [1000, xorshiftBytes(3, 3)],
    [1001, xorshiftBytes(1, 4)],
    [BLOCK + 12 * 512 + 300, xorshiftBytes(10, 21)],
    [BLOCK + 10 * 512 + 100, xorshiftBytes(2 * 512 + 100, 22)],
    [BLOCK - 700, xorshiftBytes(1400, 5)], // across a block boundary, partial sectors at both ends
    [3 * BLOCK - 512, xorshiftBytes(BLOCK + 1024, 6)], // three blocks, whole sectors
    [5 * BLOCK + 5, xorshiftBytes(512, 7)],
    [7 * BLOCK, Buffer.alloc(65536)], // zeros into a fresh block: stored, read back as zeros
    [capacity - 512, xorshiftBytes(512, 8)], // last sector (in the partial last block)
    [capacity - 1, xorshiftBytes(1, 9)],
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
  test(`${type}: QEMU's layout, read-after-write at sector and block boundaries, reopen, honest block status`, async (t) => {
    const dir = (await tmpDir(t)).path;
    const path = join(dir, `${type}.vhdx`);
    const d = await Disk.create(path, { format: 'vhdx', type, capacity: CAPACITY, blockSize: BLOCK });
    assert.equal(d.capacity, CAPACITY);
    assert.equal(d.type, type);
    assert.equal(d.image.clusterSize, 512);
    assert.equal((await bytesAt(path, 0, 8)).toString('latin1'), 'vhdxfile');
    assert.equal((await bytesAt(path, 8, 22)).toString('utf16le'), 'vdkit 0.1.0');
    const { hs, cur } = await rawHeaders(path);
    assert.ok(hs[0]!.valid && hs[1]!.valid, 'both headers valid (CRC-32C over 4 KiB)');
    assert.ok(cur.logGuidZero);
    assert.equal(cur.logOffset, MiB);
    assert.equal(cur.logLength, MiB);
    const L = await rawLayout(path);
    assert.ok(crcOk(L.rt), 'region table checksum');
    assert.deepEqual(await bytesAt(path, 256 * 1024, 65536), L.rt, 'the two region tables are identical');
    assert.deepEqual(L.bat, { offset: 2 * MiB, length: MiB, flags: 1 });
    assert.deepEqual(L.md, { offset: 3 * MiB, length: MiB, flags: 1 });
    assert.equal(L.mdSignature, 'metadata');
    const fp = L.items.get(ITEM.fileParameters)!;
    assert.deepEqual([fp.offset, fp.length, fp.flags], [65536, 8, 4], "QEMU's offsets and flags");
    assert.equal(fp.data.readUInt32LE(0), BLOCK);
    assert.equal(fp.data.readUInt32LE(4), type === 'fixed' ? 1 : 0, 'LeaveBlocksAllocated');
    assert.equal(Number(L.items.get(ITEM.size)!.data.readBigUInt64LE(0)), CAPACITY);
    assert.equal(L.items.get(ITEM.size)!.flags, 6);
    assert.equal(L.items.get(ITEM.page83)!.length, 16);
    assert.equal(L.items.get(ITEM.logical)!.data.readUInt32LE(0), 512);
    assert.equal(L.items.get(ITEM.physical)!.data.readUInt32LE(0), 4096);
    const size = (await stat(path)).size;
    if (type === 'fixed') {
      assert.equal(size, 8 * MiB + CAPACITY, 'data start + size');
      for (let n = 0; n < 11; n++) assert.deepEqual(await batEntry(path, n), [6, 8 * MiB + n * BLOCK], `block ${n} FULLY_PRESENT`);
      assert.ok((await stat(path)).blocks * 512 < 2 * MiB, 'created sparse');
    } else {
      assert.equal(size, 8 * MiB, 'a dynamic file ends at the data area');
      for (let n = 0; n < 11; n++) assert.deepEqual(await batEntry(path, n), [0, 0]);
    }

    const model = Buffer.alloc(CAPACITY);
    for (const [o, b] of boundaryWrites(CAPACITY)) {
      await d.write(o, b);
      b.copy(model, o);
      assert.deepEqual(await d.read(o, b.length), b, `read after write at ${o}`);
    }
    await assertReadsAs(d, model, 'before reopen');
    await d.close();
    assert.ok((await rawHeaders(path)).cur.logGuidZero, 'a clean close leaves an empty log');

    const r = await Disk.open(path, { readOnly: true });
    assert.equal((await detectFormat(path)).name, 'vhdx');
    await assertReadsAs(r, model, 'after reopen');
    await assertHonestStatus(r, model, 'after reopen');
    const status = await r.blockStatus();
    const at = (x: number) => status.find((e) => e.offset <= x && x < e.offset + e.length)!.state;
    if (type === 'fixed') assert.deepEqual(status, [{ offset: 0, length: CAPACITY, state: 'data' }]);
    else {
      assert.equal(at(0), 'data');
      assert.equal(at(2 * BLOCK), 'data');
      assert.equal(at(6 * BLOCK + 100), 'unallocated', 'a block never written');
      assert.equal(at(7 * BLOCK), 'data', 'written zeros are stored');
      assert.equal(at(8 * BLOCK), 'unallocated');
      // blocks were allocated at the end, 1 MiB aligned, from the data area on
      const [state, off] = await batEntry(path, 0);
      assert.equal(state, 6);
      assert.ok(off >= 8 * MiB && off % MiB === 0);
      assert.ok((await stat(path)).blocks * 512 < 10 * MiB, 'sparse file');
    }
    const info = await r.info();
    assert.equal(info.format, 'vhdx');
    assert.equal(info.type, type);
    assert.equal(info.capacity, CAPACITY);
    assert.equal(info.cid, (await rawHeaders(path)).cur.dataWrite, 'identity = the DataWriteGuid');
    assert.equal(info.uuid, msGuid(L.items.get(ITEM.page83)!.data), 'uuid = the Virtual Disk ID');
    await r.close();
  });
}

test('create: options and limits (type, capacity, blockSize, existing files)', async (t) => {
  const dir = (await tmpDir(t)).path;
  const bad = async (opts: Record<string, unknown>, field: string) =>
    assert.rejects(Disk.create(join(dir, `x${Math.random()}.vhdx`), { format: 'vhdx', capacity: 4 * MiB, ...opts }), (e: DiskError) => e.code === 'INVAL' && e.details.field === field, JSON.stringify(opts));
  for (const capacity of [0, 1000, -512, 65 * 2 ** 40, 1.5]) await bad({ capacity }, 'capacity');
  for (const blockSize of [MiB / 2, 3 * MiB, 512 * MiB, 0]) await bad({ blockSize }, 'blockSize');
  await bad({ type: 'qcow' }, 'type');
  await bad({ type: 'differencing' }, 'type');
  const d = await Disk.create(join(dir, 'q.vhdx'), { format: 'vhdx', capacity: 64 * MiB });
  assert.equal(d.readMetadata('blockSize'), String(8 * MiB), "QEMU's default for <= 1 GiB");
  await d.close();
  await assert.rejects(Disk.create(join(dir, 'q.vhdx'), { format: 'vhdx', capacity: 4 * MiB }), (e: DiskError) => e.code === 'FILEEXISTS');
  const p = await Disk.create(join(dir, 'p.vhdx'), { format: 'vhdx', type: 'fixed', capacity: 4 * MiB, blockSize: MiB, preallocate: true });
  await p.close();
  assert.ok((await stat(join(dir, 'p.vhdx'))).blocks * 512 >= 4 * MiB, 'preallocate writes the zeros');
});

test('sessions: a read-write open writes the other header (sequence+1, new FileWriteGuid); the first write renews the DataWriteGuid; read-only opens write nothing', async (t) => {
  const dir = (await tmpDir(t)).path;
  const path = join(dir, 's.vhdx');
  await (await Disk.create(path, { format: 'vhdx', capacity: 8 * MiB, blockSize: BLOCK })).close();
  const h0 = (await rawHeaders(path)).cur;
  const before = await sha(path);
  const ro = await Disk.open(path, { readOnly: true });
  assert.equal(ro.image.identity(), h0.dataWrite);
  await ro.read(0, 4096);
  await ro.close();
  assert.equal(await sha(path), before, 'a read-only open changes nothing');

  const rw = await Disk.open(path);
  const h1 = (await rawHeaders(path)).cur;
  assert.equal(h1.seq, h0.seq + 1n, 'the non-current slot, sequence + 1');
  assert.notEqual(h1.fileWrite, h0.fileWrite, 'a new FileWriteGuid before any other write');
  assert.equal(h1.dataWrite, h0.dataWrite, 'no data written yet');
  await rw.write(0, Buffer.alloc(512, 1));
  const h2 = (await rawHeaders(path)).cur;
  assert.notEqual(h2.dataWrite, h0.dataWrite, 'the first write renews the DataWriteGuid');
  assert.equal(rw.image.identity(), h2.dataWrite);
  await rw.write(4096, Buffer.alloc(512, 2));
  assert.equal((await rawHeaders(path)).cur.dataWrite, h2.dataWrite, 'once per session');
  await rw.close();
  const { hs } = await rawHeaders(path);
  assert.ok(hs[0]!.valid && hs[1]!.valid, 'both slots stay valid');

  // chain operations keep the identity
  const keep = await Disk.open(path, { preserveIdentity: true });
  await keep.write(8192, Buffer.alloc(512, 3));
  await keep.close();
  assert.equal((await rawHeaders(path)).cur.dataWrite, h2.dataWrite, 'preserveIdentity: unchanged');
});

test('block states of §16.4: ZERO reads zeros (and hides a parent), UNMAPPED/UNDEFINED/NOT_PRESENT fall through to the parent', async (t) => {
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'base.vhdx');
  const b = await Disk.create(base, { format: 'vhdx', capacity: 8 * MiB, blockSize: BLOCK });
  await b.write(0, Buffer.alloc(8 * MiB, 0xab));
  await b.close();
  const c = await createChild(base, join(dir, 'child.vhdx'));
  await c.close();
  const child = join(dir, 'child.vhdx');
  // child: 2 MiB blocks, chunk ratio 2048 -> payload block n at BAT index n
  await setBatEntry(child, 0, 2); // ZERO
  await setBatEntry(child, 1, 3); // UNMAPPED
  await setBatEntry(child, 2, 1); // UNDEFINED
  const r = await Disk.open(child, { readOnly: true });
  assert.deepEqual(await r.read(0, 16), Buffer.alloc(16), 'ZERO hides the parent');
  assert.deepEqual(await r.read(2 * MiB, 16), Buffer.alloc(16, 0xab), 'UNMAPPED: the parent');
  assert.deepEqual(await r.read(4 * MiB, 16), Buffer.alloc(16, 0xab), 'UNDEFINED: the parent');
  assert.deepEqual(await r.read(6 * MiB, 16), Buffer.alloc(16, 0xab), 'NOT_PRESENT: the parent');
  const single = await openLink(child, { readOnly: true });
  assert.deepEqual(await single.blockStatus(0, 8 * MiB), [
    { offset: 0, length: 2 * MiB, state: 'zero' },
    { offset: 2 * MiB, length: 6 * MiB, state: 'unallocated' },
  ]);
  await single.close();
  await r.close();
  // a write into a ZERO block of a child: the block becomes FULLY_PRESENT (zeros around the write, not the parent)
  const w = await Disk.open(child);
  await w.write(1000, Buffer.alloc(10, 7));
  assert.deepEqual(await w.read(990, 30), Buffer.concat([Buffer.alloc(10), Buffer.alloc(10, 7), Buffer.alloc(10)]));
  await w.write(2 * MiB + 1000, Buffer.alloc(10, 7));
  assert.deepEqual(await w.read(2 * MiB + 990, 30), Buffer.concat([Buffer.alloc(10, 0xab), Buffer.alloc(10, 7), Buffer.alloc(10, 0xab)]), 'UNMAPPED block: sectors copy-on-write from the parent');
  await w.close();
  assert.equal((await batEntry(child, 0))[0], 6, 'ZERO -> FULLY_PRESENT');
  assert.equal((await batEntry(child, 1))[0], 7, 'UNMAPPED -> PARTIALLY_PRESENT');
  // a dynamic image: ZERO is "zero" in block status, the rest "unallocated"
  await setBatEntry(base, 3, 2);
  const lone = await Disk.open(base, { readOnly: true });
  const st = await lone.blockStatus();
  assert.deepEqual(st.map((s) => s.state), ['data', 'zero', 'data']);
  assert.deepEqual(await lone.read(3 * MiB, 16), Buffer.alloc(16));
  await lone.close();
});

test('a 4096-byte logical sector image: whole-sector clusters, reads and writes', async (t) => {
  const dir = (await tmpDir(t)).path;
  const path = join(dir, 'l4k.vhdx');
  await (await Disk.create(path, { format: 'vhdx', capacity: 8 * MiB, blockSize: BLOCK })).close();
  const { items, md } = await rawLayout(path);
  const four = Buffer.alloc(4);
  four.writeUInt32LE(4096);
  await poke(path, md.offset + items.get(ITEM.logical)!.offset, four);
  const d = await Disk.open(path);
  assert.equal(d.image.clusterSize, 4096);
  assert.equal(d.readMetadata('logicalSectorSize'), '4096');
  await d.write(5000, Buffer.alloc(100, 9));
  await d.write(BLOCK - 10, Buffer.alloc(20, 8));
  await d.close();
  const r = await Disk.open(path, { readOnly: true });
  assert.deepEqual(await r.read(4990, 120), Buffer.concat([Buffer.alloc(10), Buffer.alloc(100, 9), Buffer.alloc(10)]));
  assert.deepEqual(await r.read(BLOCK - 10, 20), Buffer.alloc(20, 8));
  await r.close();
});

test('metadata: keys, the Virtual Disk ID written through the log, read-only keys refused', async (t) => {
  const dir = (await tmpDir(t)).path;
  const path = join(dir, 'm.vhdx');
  const d = await Disk.create(path, { format: 'vhdx', capacity: 8 * MiB, blockSize: BLOCK });
  assert.deepEqual(d.metadataKeys(), ['uuid', 'creator', 'diskType', 'blockSize', 'logicalSectorSize', 'physicalSectorSize', 'dataWriteGuid', 'fileWriteGuid']);
  assert.equal(d.readMetadata('creator'), 'vdkit 0.1.0');
  assert.equal(d.readMetadata('diskType'), 'dynamic');
  assert.equal(d.readMetadata('physicalSectorSize'), '4096');
  const id = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';
  await d.writeMetadata('uuid', `{${id.toUpperCase()}}`);
  assert.equal(d.readMetadata('uuid'), id);
  for (const key of ['blockSize', 'diskType', 'dataWriteGuid', 'comment']) {
    await assert.rejects(d.writeMetadata(key, '1'), (e: DiskError) => e.code === 'NOTSUPPORTED' && e.details.field === key && e.details.path === path, key);
  }
  await assert.rejects(d.writeMetadata('uuid', 'nope'), (e: DiskError) => e.code === 'INVAL' && e.details.field === 'uuid');
  await d.close();
  const L = await rawLayout(path);
  assert.equal(msGuid(L.items.get(ITEM.page83)!.data), id, 'Page 83 item rewritten in place');
  const r = await Disk.open(path, { readOnly: true });
  assert.equal(r.readMetadata('uuid'), id);
  assert.equal((await r.info()).uuid, id);
  await r.close();
});

test('differencing chains of depth 1 to 5 made with createChild read like a flattened model, before and after reopen', async (t) => {
  const dir = (await tmpDir(t)).path;
  const capacity = 3 * 2 * MiB + 5 * 512;
  const base = join(dir, 'base.vhdx');
  const model = Buffer.alloc(capacity);
  const b = await Disk.create(base, { format: 'vhdx', capacity, blockSize: BLOCK });
  for (const [o, data] of [
    [0, xorshiftBytes(2 * MiB + 4096, 11)],
    [4 * MiB + 999, xorshiftBytes(5000, 12)],
  ] as [number, Buffer][]) {
    await b.write(o, data);
    data.copy(model, o);
  }
  const baseUuid = b.readMetadata('uuid');
  await b.close();
  let top = base;
  const ids: string[] = [];
  for (let depth = 1; depth <= 5; depth++) {
    const parentId = (await rawHeaders(top)).cur.dataWrite;
    const c = await createChild(top);
    assert.equal(c.path, join(dir, `base-${String(depth).padStart(6, '0')}.vhdx`));
    assert.equal(c.type, 'differencing');
    assert.equal(c.readMetadata('uuid'), baseUuid, 'a child shares the Virtual Disk ID');
    assert.equal(c.readMetadata('blockSize'), String(2 * MiB), "children get Hyper-V's 2 MiB blocks");
    await assertReadsAs(c, model, `empty child at depth ${depth}`);
    const writes: [number, Buffer][] = [
      [depth * 37, xorshiftBytes(depth * 3, 100 + depth)],
      [2 * MiB - 300 + depth, xorshiftBytes(700, 200 + depth)],
      [4 * MiB + 1000 + depth * 512, xorshiftBytes(10, 300 + depth)],
      [capacity - 1 - depth, xorshiftBytes(1, 400 + depth)],
    ];
    for (const [o, data] of writes) {
      await c.write(o, data);
      data.copy(model, o);
    }
    await assertReadsAs(c, model, `depth ${depth} after writes`);
    const info = await c.info();
    assert.equal(info.numLinks, depth + 1);
    assert.equal(info.parentCid, parentId);
    assert.equal(info.parent, `base${depth === 1 ? '' : `-${String(depth - 1).padStart(6, '0')}`}.vhdx`);
    const st = await c.blockStatus();
    const at = (x: number) => st.find((e) => e.offset <= x && x < e.offset + e.length)!;
    assert.equal(at(depth * 37).depth, 0, 'the written sector is in the top');
    assert.equal(at(MiB).depth, depth, 'an untouched sector still comes from the base');
    await c.close();
    top = c.path;
    ids.push((await rawHeaders(top)).cur.dataWrite);
    const L = await rawLayout(top);
    assert.equal(L.items.get(ITEM.fileParameters)!.data.readUInt32LE(4), 2, 'HasParent');
    const pairs = locatorPairs(L.items.get(ITEM.locator)!.data);
    assert.equal(pairs.get('parent_linkage'), `{${parentId}}`, "parent_linkage = the parent's DataWriteGuid, braced");
    assert.equal(L.items.get(ITEM.locator)!.flags, 4, 'IsRequired');
    // partial blocks of a child are PARTIALLY_PRESENT with a sector bitmap (chunk ratio 2048)
    assert.equal((await batEntry(top, 0))[0], 7);
    const [bmState, bmOff] = await batEntry(top, 2048);
    assert.equal(bmState, 6, 'the sector bitmap block is present');
    const bits = await bytesAt(top, bmOff, 1);
    assert.equal(bits[0]! & 1, 1, 'sector 0 stored here: bit 0 of byte 0 (least significant bit first)');
  }
  assert.equal(new Set(ids).size, 5, 'every link has its own DataWriteGuid');
  const r = await Disk.open(top, { readOnly: true });
  await assertReadsAs(r, model, 'depth 5 after reopen');
  assert.equal((await r.info()).numLinks, 6);
  await r.close();
  const lone = await Disk.open(base, { readOnly: true });
  assert.deepEqual(await lone.read(0, 4096), xorshiftBytes(2 * MiB + 4096, 11).subarray(0, 4096), 'the base did not change under its children');
  await lone.close();
});

test('parent locator: relative_path, absolute_win32_path; found through each, and by the name beside the child', async (t) => {
  const root = (await tmpDir(t)).path;
  await mkdir(join(root, 'a', 'sub'), { recursive: true });
  await mkdir(join(root, 'b'));
  const base = join(root, 'b', 'base.vhdx');
  const p = await Disk.create(base, { format: 'vhdx', capacity: 4 * MiB, blockSize: BLOCK });
  await p.write(0, Buffer.alloc(512, 0x5a));
  await p.close();
  const child = join(root, 'a', 'child.vhdx');
  await (await createChild(base, child)).close();
  const pid = (await rawHeaders(base)).cur.dataWrite;
  const pairs = locatorPairs((await rawLayout(child)).items.get(ITEM.locator)!.data);
  assert.deepEqual([...pairs.keys()], ['parent_linkage', 'relative_path', 'absolute_win32_path']);
  assert.equal(pairs.get('relative_path'), '..\\b\\base.vhdx', 'relative to the child, Windows separators');
  assert.equal(pairs.get('absolute_win32_path'), base);
  const c = await Disk.open(child, { readOnly: true });
  assert.deepEqual(c.image.backing(), { hint: '../b/base.vhdx', hints: [base], format: 'vhdx', parentId: pid });
  assert.equal(c.readMetadata('parentLinkage'), `{${pid}}`);
  assert.deepEqual(await c.read(0, 512), Buffer.alloc(512, 0x5a), 'found through relative_path');
  await c.close();

  const moved = join(root, 'a', 'sub', 'child.vhdx');
  await rename(child, moved);
  const m = await Disk.open(moved, { readOnly: true });
  assert.equal((await m.info()).chain?.[1], base, 'found through absolute_win32_path');
  await m.close();

  // both paths stale (a chain moved as a folder): the parent's name beside the child
  await rename(base, join(root, 'a', 'sub', 'base.vhdx'));
  const n = await Disk.open(moved, { readOnly: true });
  assert.equal((await n.info()).chain?.[1], join(root, 'a', 'sub', 'base.vhdx'));
  await n.close();

  // a lone child opened read-write: refused (only the chain does its copy-on-write)
  const untouched = await sha(moved);
  await assert.rejects(Disk.open(moved, { singleLink: true }), (e: DiskError) => e.code === 'PARTIALCHAIN' && e.details.field === 'hasParent');
  assert.equal(await sha(moved), untouched, 'refused before the session header is written');
  const single = await Disk.open(moved, { singleLink: true, readOnly: true });
  assert.deepEqual(await single.read(0, 512), Buffer.alloc(512), 'alone, what the parent holds reads as zeros');
  await single.close();
});

test('a parent written after its child was made (new DataWriteGuid): CID_MISMATCH; a missing parent: OPENPARENT', async (t) => {
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'base.vhdx');
  await (await Disk.create(base, { format: 'vhdx', capacity: 4 * MiB, blockSize: BLOCK })).close();
  const c = await createChild(base);
  await c.close();
  await assert.rejects(Disk.open(base), (e: DiskError) => e.code === 'RDONLY' && e.message.includes('base-000001.vhdx'), 'a parent with a child is protected');
  const old = (await rawHeaders(base)).cur.dataWrite;
  // opening it read-write alone, without writing, keeps the DataWriteGuid: the child stays valid
  const idle = await Disk.open(base, { force: true });
  await idle.close();
  await (await Disk.open(c.path, { readOnly: true })).close();
  const p = await Disk.open(base, { force: true });
  await p.write(0, Buffer.alloc(512, 1));
  await p.close();
  const now = (await rawHeaders(base)).cur.dataWrite;
  assert.notEqual(now, old);
  await assert.rejects(Disk.open(c.path, { readOnly: true }), (e: DiskError) => e.code === 'CID_MISMATCH' && e.details.expected === old && e.details.found === now);
  await rename(base, join(dir, 'gone.bin'));
  await assert.rejects(Disk.open(c.path, { readOnly: true }), (e: DiskError) => e.code === 'OPENPARENT');
});

test('rebase, merge and commit re-link VHDX chains and keep what they read', async (t) => {
  const dir = (await tmpDir(t)).path;
  const capacity = 4 * MiB;
  const base = join(dir, 'base.vhdx');
  const model = Buffer.alloc(capacity);
  const b = await Disk.create(base, { format: 'vhdx', capacity, blockSize: BLOCK });
  await b.write(0, xorshiftBytes(2 * MiB + 777, 1));
  xorshiftBytes(2 * MiB + 777, 1).copy(model, 0);
  await b.close();
  const mid = await createChild(base, join(dir, 'mid.vhdx'));
  await mid.write(100, Buffer.alloc(10, 0xaa));
  Buffer.alloc(10, 0xaa).copy(model, 100);
  await mid.close();
  const top = await createChild(join(dir, 'mid.vhdx'), join(dir, 'top.vhdx'));
  await top.write(2 * MiB + 3, Buffer.alloc(3, 0xbb));
  Buffer.alloc(3, 0xbb).copy(model, 2 * MiB + 3);
  await top.close();
  const topId = (await rawHeaders(join(dir, 'top.vhdx'))).cur.dataWrite;

  // safe rebase of the top onto the base: what mid held is copied into the top (identity kept)
  await rebase(join(dir, 'top.vhdx'), base);
  let r = await Disk.open(join(dir, 'top.vhdx'), { readOnly: true });
  assert.equal((await r.info()).numLinks, 2);
  await assertReadsAs(r, model, 'after rebase onto the base');
  await r.close();
  assert.equal(locatorPairs((await rawLayout(join(dir, 'top.vhdx'))).items.get(ITEM.locator)!.data).get('relative_path'), '.\\base.vhdx');
  assert.equal((await rawHeaders(join(dir, 'top.vhdx'))).cur.dataWrite, topId, 'rebase keeps the DataWriteGuid');

  // commit the top into the base: the base gets a new DataWriteGuid, the top is re-linked and emptied
  await rm(join(dir, 'mid.vhdx'));
  const baseOld = (await rawHeaders(base)).cur.dataWrite;
  await commit(join(dir, 'top.vhdx'));
  const baseNew = (await rawHeaders(base)).cur.dataWrite;
  assert.notEqual(baseNew, baseOld, 'commit gives the base a new identity');
  assert.equal(locatorPairs((await rawLayout(join(dir, 'top.vhdx'))).items.get(ITEM.locator)!.data).get('parent_linkage'), `{${baseNew}}`, 'and re-links the top');
  r = await Disk.open(join(dir, 'top.vhdx'), { readOnly: true });
  await assertReadsAs(r, model, 'after commit');
  assert.equal((await r.info()).allocatedBytes, 0, 'the top was emptied');
  await r.close();
  assert.equal((await stat(join(dir, 'top.vhdx'))).size, 4 * MiB, 'emptied: cut back to its structures (log, BAT, metadata)');
  assert.deepEqual(await batEntry(join(dir, 'top.vhdx'), 0), [0, 0]);

  // merge everything into the top: it becomes a dynamic image that reads the same
  const t2 = await Disk.open(join(dir, 'top.vhdx'));
  await t2.write(2 * MiB + 10, Buffer.alloc(5, 0xcc));
  Buffer.alloc(5, 0xcc).copy(model, 2 * MiB + 10);
  await t2.close();
  await mergeIntoTop(join(dir, 'top.vhdx'), { all: true });
  r = await Disk.open(join(dir, 'top.vhdx'), { readOnly: true });
  assert.equal(r.type, 'dynamic');
  assert.equal(r.image.backing(), undefined);
  await assertReadsAs(r, model, 'after merging everything into the top');
  await r.close();
  const L = await rawLayout(join(dir, 'top.vhdx'));
  assert.equal(L.items.get(ITEM.fileParameters)!.data.readUInt32LE(4), 0, 'HasParent cleared');
  assert.equal(L.items.has(ITEM.locator), false, 'parent locator removed');
  for (let n = 0; n < 2; n++) assert.notEqual((await batEntry(join(dir, 'top.vhdx'), n))[0], 7, 'no partially present block left');
  assert.equal(await stat(base).catch(() => undefined), undefined, 'the merged base, used by no one, was removed');

  // a dynamic image can become a child again (the link only): over an empty parent it reads the same
  const empty = await Disk.create(join(dir, 'empty.vhdx'), { format: 'vhdx', capacity, blockSize: BLOCK });
  const emptyId = empty.image.identity()!;
  await empty.close();
  const link = await openLink(join(dir, 'top.vhdx'), { cowByCaller: true, preserveIdentity: true });
  await link.setBacking({ hint: 'empty.vhdx', parentId: emptyId });
  await link.close();
  r = await Disk.open(join(dir, 'top.vhdx'), { readOnly: true });
  assert.equal(r.type, 'differencing');
  assert.equal((await r.info()).numLinks, 2);
  await assertReadsAs(r, model, 'made a child of an empty disk');
  await r.close();

  // a fixed disk cannot have a parent nor be emptied
  const fixed = await Disk.create(join(dir, 'f.vhdx'), { format: 'vhdx', type: 'fixed', capacity: MiB, blockSize: BLOCK });
  await assert.rejects(fixed.image.setBacking({ hint: 'base.vhdx', parentId: emptyId }), (e: DiskError) => e.code === 'NOTSUPPORTED' && e.details.field === 'leaveBlocksAllocated');
  await assert.rejects(fixed.image.makeEmpty(), (e: DiskError) => e.code === 'NOTSUPPORTED');
  await fixed.close();
});

test('a parent path longer than the locator item: the item is placed after the others in the metadata region; the chain still opens', async (t) => {
  const dir = (await tmpDir(t)).path;
  const deep = join(dir, ...'xyzwvutsrqp'.split('').map((c) => c.repeat(200)));
  await mkdir(deep, { recursive: true });
  const base = join(dir, 'base.vhdx');
  await (await Disk.create(base, { format: 'vhdx', capacity: 4 * MiB, blockSize: BLOCK })).close();
  const c = await createChild(base, join(dir, 'c.vhdx'));
  await c.write(0, Buffer.alloc(4096, 1));
  await c.close();
  const before = (await rawLayout(join(dir, 'c.vhdx'))).items.get(ITEM.locator)!;
  const farBase = join(deep, 'base.vhdx');
  await rename(base, farBase);
  await rebase(join(dir, 'c.vhdx'), farBase, { unsafe: true });
  const L = await rawLayout(join(dir, 'c.vhdx'));
  const after = L.items.get(ITEM.locator)!;
  assert.ok(after.length > before.length, 'a longer item');
  const others = [...L.items.entries()].filter(([k]) => k !== ITEM.locator).map(([, i]) => i.offset + i.length);
  assert.ok(after.offset >= Math.max(...others), 'placed after every other item (where the old one ended the table, in place)');
  assert.equal(locatorPairs(after.data).get('absolute_win32_path'), farBase);
  const ends = [...L.items.values()].map((i) => [i.offset, i.offset + i.length]).sort((a, b) => a[0]! - b[0]!);
  for (let i = 1; i < ends.length; i++) assert.ok(ends[i]![0]! >= ends[i - 1]![1]!, 'no two items overlap');
  const r = await Disk.open(join(dir, 'c.vhdx'), { readOnly: true });
  assert.equal((await r.info()).chain?.[1], farBase);
  assert.deepEqual(await r.read(0, 4096), Buffer.alloc(4096, 1));
  await r.close();
});

test('the log: a writer stopped after the log flush leaves a pending entry; read-only opens read the replayed data without writing, read-write opens replay it', async (t) => {
  const dir = (await tmpDir(t)).path;
  const path = join(dir, 'log.vhdx');
  const d = await Disk.create(path, { format: 'vhdx', capacity: 8 * MiB, blockSize: BLOCK });
  await d.write(0, Buffer.alloc(4096, 0x11));
  await d.flush();
  await d.write(5 * MiB + 100, Buffer.alloc(4096, 0x22));
  vhdxLogHooks.afterLogFlush = () => {
    throw new Error('stopped after the log flush');
  };
  try {
    await assert.rejects(d.flush(), /stopped after the log flush/);
  } finally {
    vhdxLogHooks.afterLogFlush = undefined;
  }
  await d.close(); // a broken image closes without writing
  // on disk: the header names a log, the BAT does not have block 5 yet
  const { cur } = await rawHeaders(path);
  assert.equal(cur.logGuidZero, false, 'the header names the log');
  assert.deepEqual(await batEntry(path, 5), [0, 0], 'block 5 is only in the log');
  const before = await sha(path);

  const ro = await Disk.open(path, { readOnly: true });
  assert.deepEqual(await ro.read(5 * MiB + 100, 4096), Buffer.alloc(4096, 0x22), 'the replayed BAT, from memory');
  assert.deepEqual(await ro.read(0, 4096), Buffer.alloc(4096, 0x11));
  assert.ok((await ro.info()).warnings?.some((w) => /in-memory replay/.test(w)));
  const report = await ro.image.maintenance().check!({ repair: false });
  assert.ok(report.findings.some((f) => f.kind === 'warning' && f.field === 'logGuid' && !f.repaired));
  await ro.close();
  assert.equal(await sha(path), before, 'a read-only open does not replay into the file');

  const rw = await Disk.open(path);
  assert.deepEqual(await rw.read(5 * MiB + 100, 4096), Buffer.alloc(4096, 0x22));
  const fixedReport = await rw.image.maintenance().check!({ repair: true });
  assert.ok(fixedReport.findings.some((f) => f.kind === 'warning' && f.field === 'logGuid' && f.repaired));
  await rw.close();
  assert.equal((await batEntry(path, 5))[0], 6, 'replayed into the file');
  assert.ok((await rawHeaders(path)).cur.logGuidZero, 'and the log emptied');
  const again = await Disk.open(path, { readOnly: true });
  assert.deepEqual(await again.read(5 * MiB + 100, 4096), Buffer.alloc(4096, 0x22));
  assert.equal((await again.info()).warnings, undefined);
  await again.close();
});

test('the log carries metadata region changes: a pending parent locator rewrite is read back before and after replay', async (t) => {
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'base.vhdx');
  await (await Disk.create(base, { format: 'vhdx', capacity: 4 * MiB, blockSize: BLOCK })).close();
  const other = join(dir, 'other.vhdx');
  await (await Disk.create(other, { format: 'vhdx', capacity: 4 * MiB, blockSize: BLOCK })).close();
  await (await createChild(base, join(dir, 'c.vhdx'))).close();
  const otherId = (await rawHeaders(other)).cur.dataWrite;
  const link = await openLink(join(dir, 'c.vhdx'), { cowByCaller: true, preserveIdentity: true });
  vhdxLogHooks.afterLogFlush = () => {
    throw new Error('stopped');
  };
  try {
    await assert.rejects(link.setBacking({ hint: 'other.vhdx', parentId: otherId }), /stopped/);
  } finally {
    vhdxLogHooks.afterLogFlush = undefined;
  }
  await link.close();
  assert.equal(locatorPairs((await rawLayout(join(dir, 'c.vhdx'))).items.get(ITEM.locator)!.data).get('relative_path'), '.\\base.vhdx', 'in place: still the old parent');
  const ro = await Disk.open(join(dir, 'c.vhdx'), { readOnly: true });
  assert.equal((await ro.info()).chain?.[1], other, 'through the replayed log: the new parent');
  await ro.close();
  await (await openLink(join(dir, 'c.vhdx'), { cowByCaller: true, preserveIdentity: true })).close();
  assert.equal(locatorPairs((await rawLayout(join(dir, 'c.vhdx'))).items.get(ITEM.locator)!.data).get('relative_path'), '.\\other.vhdx', 'replayed in place');
});

test('check: a clean image, leaked space at the end (found and cut off by repair), a damaged header copy', async (t) => {
  const dir = (await tmpDir(t)).path;
  const path = join(dir, 'k.vhdx');
  const d = await Disk.create(path, { format: 'vhdx', capacity: 8 * MiB, blockSize: BLOCK });
  await d.write(0, Buffer.alloc(4096, 1));
  assert.deepEqual((await d.image.maintenance().check!({ repair: false })).findings, []);
  await d.close();
  const size = (await stat(path)).size;
  // what a writer killed between extending the file and committing its BAT leaves
  await truncate(path, size + 3 * MiB);
  const ro = await Disk.open(path, { readOnly: true });
  const report = await ro.image.maintenance().check!({ repair: false });
  assert.deepEqual(
    report.findings.map((f) => [f.kind, f.repaired]),
    [['leak', undefined]],
  );
  assert.equal(report.leakedBytes, 3 * MiB);
  await ro.close();
  const rw = await Disk.open(path);
  const fixed = await rw.image.maintenance().check!({ repair: true });
  assert.equal(fixed.findings[0]!.repaired, true);
  assert.equal(fixed.leakedBytes, 0);
  await rw.close();
  assert.equal((await stat(path)).size, size, 'cut off');
  // a damaged non-current header: a warning; a read-write open rewrites it
  const { hs } = await rawHeaders(path);
  const stale = hs[0]!.seq < hs[1]!.seq ? 0 : 1;
  await poke(path, [64 * 1024, 128 * 1024][stale]! + 100, Buffer.from([0xff]));
  const w = await Disk.open(path, { readOnly: true });
  const f = (await w.image.maintenance().check!({ repair: false })).findings;
  assert.ok(f.some((x) => x.kind === 'warning' && x.struct === 'header' && x.field === 'checksum'), JSON.stringify(f));
  await w.close();
  await (await Disk.open(path)).close();
  assert.ok((await rawHeaders(path)).hs.every((h) => h.valid), 'rewritten by the session header update');
});
