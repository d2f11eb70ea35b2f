/**
 * qcow2 conformance: create with cluster sizes 512 B, 4 KiB, 64 KiB and 2 MiB (layout read back
 * with plain fs at the offsets of qcow2.md), read-after-write at cluster and L2-table boundaries,
 * persistence across reopen, block status honesty (data / zero / unallocated), the zero flag
 * (whole-cluster zeros over data and over a backing file; version 2 writes real zeros), chains
 * of depth 1-5 made with createChild, a qcow2 child over a VMDK base (through the chain layer,
 * committed into it), rebase / commit / merge through src/ops, setBacking and makeEmpty, the
 * dirty bit (refcounts rebuilt on a read-write open), unknown autoclear bits cleared by the first
 * write, and check/repair of leaks and refcount corruptions.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, DiskError } from '../../src/index.js';
import { chainFormats, openLink } from '../../src/disk.js';
import { backingTo } from '../../src/chain/chain.js';
import { hostFiles } from '../../src/storage/file.js';
import { createChild } from '../../src/ops/child.js';
import { commit, mergeIntoTop } from '../../src/ops/commit.js';
import { rebase } from '../../src/ops/rebase.js';
import type { Image } from '../../src/formats/types.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { tmpDir } from '../helpers/tools.js';
import { readAt as bytesAt } from '../helpers/bytes.js';

const KiB = 1024;
const MiB = 1024 * KiB;

async function poke(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

const u64 = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
};

/** header facts straight from the bytes (qcow2.md §2, §3) */
async function rawHeader(path: string) {
  const b = await bytesAt(path, 0, 4096);
  const version = b.readUInt32BE(4);
  const headerLength = version === 3 ? b.readUInt32BE(100) : 72;
  const exts: { type: number; data: Buffer }[] = [];
  const backingOffset = Number(b.readBigUInt64BE(8));
  for (let at = headerLength; at + 8 <= 4096; ) {
    const type = b.readUInt32BE(at);
    const len = b.readUInt32BE(at + 4);
    if (type === 0) break;
    exts.push({ type, data: b.subarray(at + 8, at + 8 + len) });
    at += 8 + Math.ceil(len / 8) * 8;
  }
  const fmt = exts.find((e) => e.type === 0xe2792aca);
  return {
    version,
    backingOffset,
    backingName: backingOffset ? b.toString('utf8', backingOffset, backingOffset + b.readUInt32BE(16)) : undefined,
    backingFormat: fmt?.data.toString('latin1'),
    clusterBits: b.readUInt32BE(20),
    size: Number(b.readBigUInt64BE(24)),
    l1Size: b.readUInt32BE(36),
    l1Offset: Number(b.readBigUInt64BE(40)),
    rtOffset: Number(b.readBigUInt64BE(48)),
    rtClusters: b.readUInt32BE(56),
    incompat: version === 3 ? b.readBigUInt64BE(72) : 0n,
    autoclear: version === 3 ? b.readBigUInt64BE(88) : 0n,
    refcountOrder: version === 3 ? b.readUInt32BE(96) : 4,
    headerLength,
    extTypes: exts.map((e) => e.type),
  };
}

/** the raw L2 entry mapping guest `offset` (0n when no L2 table) */
async function l2Entry(path: string, offset: number): Promise<bigint> {
  const h = await rawHeader(path);
  const cs = 2 ** h.clusterBits;
  const entries = cs / 8;
  const c = Math.floor(offset / cs);
  const l1 = (await bytesAt(path, h.l1Offset + Math.floor(c / entries) * 8, 8)).readBigUInt64BE(0) & 0x00fffffffffffe00n;
  if (l1 === 0n) return 0n;
  return (await bytesAt(path, Number(l1) + (c % entries) * 8, 8)).readBigUInt64BE(0);
}

/** The refcount of host cluster `c` from the bytes (16-bit refcounts). */
async function refcountOf(path: string, c: number): Promise<number> {
  const h = await rawHeader(path);
  const cs = 2 ** h.clusterBits;
  const epb = cs / 2;
  const rb = (await bytesAt(path, h.rtOffset + Math.floor(c / epb) * 8, 8)).readBigUInt64BE(0);
  if (rb === 0n) return 0;
  return (await bytesAt(path, Number(rb) + (c % epb) * 2, 2)).readUInt16BE(0);
}

/** Writes in order; expected bytes of any range are computed from them (a sparse model for big disks). */
class SparseModel {
  readonly writes: { offset: number; data: Buffer }[] = [];
  apply(offset: number, data: Buffer): void {
    this.writes.push({ offset, data: Buffer.from(data) });
  }
  expect(offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    for (const w of this.writes) {
      const a = Math.max(offset, w.offset);
      const b = Math.min(offset + length, w.offset + w.data.length);
      if (a < b) w.data.copy(out, a - offset, a - w.offset, b - w.offset);
    }
    return out;
  }
}

function firstDiff(a: Buffer, b: Buffer): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

async function assertRange(d: Disk, m: SparseModel, offset: number, length: number, label: string): Promise<void> {
  const got = await d.read(offset, length);
  const i = firstDiff(got, m.expect(offset, length));
  if (i >= 0) assert.fail(`${label}: byte ${offset + i} reads ${got[i]}, expected ${m.expect(offset + i, 1)[0]}`);
}

/** every written window (with 4 KiB around it) and a few untouched places read as the model says */
async function assertModel(d: Disk, m: SparseModel, label: string): Promise<void> {
  for (const w of m.writes) {
    const a = Math.max(0, w.offset - 4 * KiB);
    const b = Math.min(d.capacity, w.offset + w.data.length + 4 * KiB);
    await assertRange(d, m, a, b - a, `${label}, around the write at ${w.offset}`);
  }
  for (const at of [0, Math.floor(d.capacity / 3), Math.floor(d.capacity / 2), d.capacity - 64 * KiB]) await assertRange(d, m, Math.max(0, at), Math.min(64 * KiB, d.capacity), `${label}, sample at ${at}`);
}

/** block status covers the disk in order, and no written non-zero byte lies in a non-data range */
async function assertHonest(d: Disk, m: SparseModel, label: string): Promise<void> {
  const st = await d.blockStatus();
  let at = 0;
  for (const r of st) {
    assert.equal(r.offset, at, `${label}: contiguous`);
    at += r.length;
    if (r.state === 'data') continue;
    for (const w of m.writes) {
      const a = Math.max(r.offset, w.offset);
      const b = Math.min(r.offset + r.length, w.offset + w.data.length);
      if (a < b) assert.ok(m.expect(a, b - a).every((x) => x === 0), `${label}: ${r.state} range ${r.offset}+${r.length} holds written bytes`);
    }
  }
  assert.equal(at, d.capacity, `${label}: covers the disk`);
}

async function assertClean(img: Image, label: string): Promise<void> {
  const r = await img.maintenance().check!({ repair: false });
  assert.deepEqual(
    r.findings.filter((f) => f.kind !== 'warning').map((f) => f.message),
    [],
    `${label}: vdkit check finds nothing`,
  );
}

const stateAt = (st: { offset: number; length: number; state: string; depth?: number }[], x: number) => st.find((e) => e.offset <= x && x < e.offset + e.length)!;

for (const cs of [512, 4 * KiB, 64 * KiB, 2 * MiB]) {
  test(`cluster size ${cs}: QEMU's layout, read-after-write at cluster and L2 boundaries, reopen, honest block status`, async (t) => {
    const dir = (await tmpDir(t)).path;
    const path = join(dir, 'd.qcow2');
    const span = (cs * cs) / 8; // guest bytes one L2 table maps
    // big enough to cross an L2 boundary where that stays small (sparse) on disk
    const capacity = span < 600 * MiB ? Math.max(span + 3 * MiB, 24 * MiB) : 64 * MiB;
    const d = await Disk.create(path, { format: 'qcow2', capacity, clusterSize: cs });
    assert.equal(d.capacity, capacity);
    assert.equal(d.type, 'v3');
    assert.equal(d.image.clusterSize, cs);
    const h = await rawHeader(path);
    assert.equal(h.version, 3);
    assert.equal(h.clusterBits, Math.log2(cs));
    assert.equal(h.size, capacity);
    assert.equal(h.headerLength, 112);
    assert.equal(h.refcountOrder, 4);
    assert.equal(h.rtOffset, cs, 'refcount table in cluster 1');
    assert.equal(h.l1Offset, 3 * cs, 'L1 table in cluster 3 (refcount block in cluster 2)');
    assert.equal(h.l1Size, Math.ceil(capacity / span));
    assert.deepEqual(h.extTypes, cs > 4096 ? [0x6803f857] : [], 'feature name table only above 4 KiB clusters, as QEMU');
    assert.equal((await stat(path)).size, 3 * cs + h.l1Size * 8, 'the file ends right after the L1 table');
    assert.equal(await refcountOf(path, 2), 1);

    const m = new SparseModel();
    const writes: [number, Buffer][] = [
      [0, xorshiftBytes(4096, 1)],
      [cs - 1, xorshiftBytes(2, 2)], // across a cluster boundary, 1 byte each side
      [3 * cs + 100, xorshiftBytes(10, 3)], // inside one cluster
      [3 * cs + 101, xorshiftBytes(1, 4)], // again inside the now allocated cluster
      [5 * cs - 300, xorshiftBytes(2 * cs + 600, 5)], // partial, two whole, partial
      [span - 700, xorshiftBytes(1400, 6)], // across an L2 table boundary
      [span + 7 * cs, Buffer.alloc(cs)], // whole-cluster zeros over nothing: stays unallocated
      [capacity - 512, xorshiftBytes(512, 8)],
      [capacity - 1, xorshiftBytes(1, 9)],
      [cs - 1, xorshiftBytes(1, 10)], // rewrite inside an allocated cluster
    ];
    for (const [o, b] of writes) {
      if (o < 0 || o + b.length > capacity) continue;
      await d.write(o, b);
      m.apply(o, b);
      assert.deepEqual(await d.read(o, b.length), b, `read after write at ${o}`);
    }
    await assertModel(d, m, 'before reopen');
    await assertHonest(d, m, 'before reopen');
    await assertClean(d.image, 'after the writes');
    await d.close();

    const r = await Disk.open(path, { readOnly: true });
    assert.equal(r.format, 'qcow2');
    await assertModel(r, m, 'after reopen');
    await assertHonest(r, m, 'after reopen');
    const st = await r.blockStatus();
    assert.equal(stateAt(st, 0).state, 'data');
    assert.equal(stateAt(st, 3 * cs + 100).state, 'data');
    assert.equal(stateAt(st, 9 * cs).state, 'unallocated', 'a cluster never written');
    if (span + 8 * cs < capacity) assert.equal(stateAt(st, span + 7 * cs).state, 'unallocated', 'zeros over nothing in a base change nothing');
    const data = st.filter((s) => s.state === 'data').reduce((a, s) => a + s.length, 0);
    assert.ok(data <= 12 * cs + 8 * KiB, `only touched clusters are data (${data} bytes)`);
    const info = await r.info();
    assert.equal(info.format, 'qcow2');
    assert.equal(info.type, 'v3');
    assert.equal(info.version, 3);
    assert.equal(info.allocatedBytes, data);
    assert.ok(info.diskSize < 4 * cs + 4 * MiB, `sparse on disk (${info.diskSize} bytes)`);
    await r.close();
  });
}

test('version 2 (compat 0.10): 72-byte header; zeros over a backing file are written as data, not as a zero flag', async (t) => {
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'base.qcow2');
  const b = await Disk.create(base, { format: 'qcow2', type: 'v2', capacity: 8 * MiB });
  assert.equal(b.type, 'v2');
  await b.write(0, Buffer.alloc(256 * KiB, 0x5a));
  await b.close();
  const h = await rawHeader(base);
  assert.equal(h.version, 2);
  assert.equal(h.headerLength, 72);
  assert.deepEqual(h.extTypes, [], 'no feature table in version 2');
  const c = await createChild(base, join(dir, 'child.qcow2'), { type: 'v2' });
  await c.write(64 * KiB, Buffer.alloc(64 * KiB));
  assert.deepEqual(await c.read(64 * KiB, 64 * KiB), Buffer.alloc(64 * KiB));
  await c.close();
  const e = await l2Entry(join(dir, 'child.qcow2'), 64 * KiB);
  assert.equal(e & 1n, 0n, 'no zero flag in version 2');
  assert.notEqual(e & 0x00fffffffffffe00n, 0n, 'a data cluster holds the zeros');
  assert.equal((await rawHeader(join(dir, 'child.qcow2'))).version, 2);
  await assert.rejects(Disk.create(join(dir, 'x.qcow2'), { format: 'qcow2', type: 'v4', capacity: MiB }), (e2: DiskError) => e2.code === 'INVAL' && e2.details.field === 'type');
  for (const clusterSize of [256, 3000, 4 * MiB]) {
    await assert.rejects(Disk.create(join(dir, `cs${clusterSize}.qcow2`), { format: 'qcow2', capacity: MiB, clusterSize }), (e2: DiskError) => e2.code === 'INVAL' && e2.details.field === 'clusterSize');
  }
  for (const capacity of [1000, -512, 1.5]) {
    await assert.rejects(Disk.create(join(dir, `c${capacity}.qcow2`), { format: 'qcow2', capacity }), (e2: DiskError) => e2.code === 'INVAL' && e2.details.field === 'capacity');
  }
});

test('zero flag: whole-cluster zeros over data free the cluster; over a backing file they hide it; partial zeros are data', async (t) => {
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'base.qcow2');
  const cs = 64 * KiB;
  const b = await Disk.create(base, { format: 'qcow2', capacity: 8 * MiB });
  await b.write(0, Buffer.alloc(4 * cs, 0x11));
  const before = await l2Entry(base, cs);
  const host = Number(before & 0x00fffffffffffe00n) / cs;
  assert.equal(await refcountOf(base, host), 1);
  await b.write(cs, Buffer.alloc(cs)); // whole cluster of zeros over data
  assert.equal(await l2Entry(base, cs), 1n, 'L2 entry = zero flag, no cluster');
  assert.equal(await refcountOf(base, host), 0, 'the old cluster is freed');
  await b.write(2 * cs + 10, Buffer.alloc(100)); // partial zeros: written in place
  assert.equal((await l2Entry(base, 2 * cs)) & 1n, 0n);
  const st = await b.blockStatus();
  assert.deepEqual(
    st.map((s) => [s.offset, s.state]),
    [
      [0, 'data'],
      [cs, 'zero'],
      [2 * cs, 'data'],
      [4 * cs, 'unallocated'],
    ],
  );
  // data written into a zero cluster: a new cluster, zeros around the written bytes
  await b.write(cs + 5, Buffer.from([1, 2, 3]));
  const back = await b.read(cs, cs);
  assert.deepEqual([...back.subarray(0, 9)], [0, 0, 0, 0, 0, 1, 2, 3, 0]);
  assert.ok(back.subarray(9).every((x) => x === 0));
  await b.write(cs, Buffer.alloc(cs)); // back to zero
  await assertClean(b.image, 'base');
  await b.close();

  const c = await createChild(base, join(dir, 'child.qcow2'));
  await c.write(2 * cs, Buffer.alloc(cs)); // zeros over the base's data
  await c.write(3 * cs + 100, Buffer.alloc(50)); // partial zeros over base data: copy-on-write, data
  const cst = await c.blockStatus();
  assert.equal(stateAt(cst, 2 * cs).state, 'zero');
  assert.equal(stateAt(cst, 2 * cs).depth, 0, 'the zero comes from the top');
  assert.equal(stateAt(cst, 3 * cs).state, 'data');
  assert.equal(stateAt(cst, 3 * cs).depth, 0);
  assert.equal(stateAt(cst, 0).depth, 1, 'untouched data still comes from the base');
  assert.deepEqual(await c.read(2 * cs, cs), Buffer.alloc(cs));
  const third = await c.read(3 * cs, cs);
  assert.ok(third.subarray(0, 100).every((x) => x === 0x11) && third.subarray(100, 150).every((x) => x === 0) && third.subarray(150).every((x) => x === 0x11));
  assert.equal(await l2Entry(join(dir, 'child.qcow2'), 2 * cs), 1n);
  await c.write(2 * cs + 7, Buffer.alloc(9)); // partial zeros inside a zero cluster: nothing to do
  assert.equal(await l2Entry(join(dir, 'child.qcow2'), 2 * cs), 1n);
  await c.close();
  const lone = await Disk.open(base, { readOnly: true });
  const baseThird = Buffer.alloc(cs, 0x11).fill(0, 10, 110);
  assert.deepEqual(await lone.read(2 * cs, cs), baseThird, 'the base is untouched');
  await lone.close();
});

test('qcow2 chains of depth 1 to 5 made with createChild read like a flattened model; each link stores name and format', async (t) => {
  const dir = (await tmpDir(t)).path;
  const cs = 4 * KiB;
  const capacity = 6 * MiB + 3 * 512;
  const base = join(dir, 'base.qcow2');
  const model = Buffer.alloc(capacity);
  const b = await Disk.create(base, { format: 'qcow2', capacity, clusterSize: cs });
  for (const [o, data] of [
    [0, xorshiftBytes(MiB + 4096, 11)],
    [3 * MiB + 999, xorshiftBytes(50000, 12)],
  ] as [number, Buffer][]) {
    await b.write(o, data);
    data.copy(model, o);
  }
  await b.close();
  let top = base;
  for (let depth = 1; depth <= 5; depth++) {
    const c = await createChild(top);
    assert.equal(c.path, join(dir, `base-${String(depth).padStart(6, '0')}.qcow2`));
    assert.equal(c.image.clusterSize, 64 * KiB, 'a child gets the default cluster size');
    const writes: [number, Buffer][] = [
      [depth * 37, xorshiftBytes(depth * 3, 100 + depth)],
      [MiB - 300 + depth, xorshiftBytes(70000, 200 + depth)],
      [3 * MiB + 1000 + depth * 512, xorshiftBytes(10, 300 + depth)],
      [capacity - 1 - depth, xorshiftBytes(1, 400 + depth)],
    ];
    for (const [o, data] of writes) {
      await c.write(o, data);
      data.copy(model, o);
    }
    assert.deepEqual(await c.read(0, capacity), model, `depth ${depth}`);
    const info = await c.info();
    assert.equal(info.numLinks, depth + 1);
    const parentName = depth === 1 ? 'base.qcow2' : `base-${String(depth - 1).padStart(6, '0')}.qcow2`;
    assert.equal(info.parent, parentName);
    assert.deepEqual(c.image.backing(), { hint: parentName, format: 'qcow2' });
    const st = await c.blockStatus();
    assert.equal(stateAt(st, depth * 37).depth, 0);
    assert.equal(stateAt(st, 512 * KiB).depth, depth, 'untouched bytes still come from the base');
    await c.close();
    const h = await rawHeader(join(dir, `base-${String(depth).padStart(6, '0')}.qcow2`));
    assert.equal(h.backingName, parentName);
    assert.equal(h.backingFormat, 'qcow2');
    const link = await openLink(join(dir, `base-${String(depth).padStart(6, '0')}.qcow2`), { readOnly: true });
    await assertClean(link, `link ${depth}`);
    await link.close();
    top = c.path;
  }
  const r = await Disk.open(top, { readOnly: true });
  assert.deepEqual(await r.read(0, capacity), model, 'depth 5 after reopen');
  assert.equal((await r.info()).numLinks, 6);
  await r.close();
  const lone = await Disk.open(base, { readOnly: true });
  assert.deepEqual(await lone.read(0, 4096), xorshiftBytes(MiB + 4096, 11).subarray(0, 4096));
  await lone.close();
});

test('a qcow2 child over a VMDK base: backing format "vmdk", copy-on-write through the chain, committed into the VMDK', async (t) => {
  const dir = (await tmpDir(t)).path;
  const capacity = 8 * MiB;
  const base = join(dir, 'base.vmdk');
  const model = Buffer.alloc(capacity);
  const b = await Disk.create(base, { format: 'vmdk', capacity });
  const seed = xorshiftBytes(3 * MiB, 21);
  await b.write(0, seed);
  seed.copy(model, 0);
  await b.close();
  const childPath = join(dir, 'top.qcow2');
  const c = await createChild(base, childPath, { format: 'qcow2' });
  assert.equal(c.format, 'qcow2');
  for (const [o, data] of [
    [100, xorshiftBytes(10, 22)], // partial cluster over VMDK data: the rest comes from the VMDK
    [64 * KiB - 3, xorshiftBytes(6, 23)],
    [5 * MiB + 7, xorshiftBytes(1000, 24)], // over nothing
  ] as [number, Buffer][]) {
    await c.write(o, data);
    data.copy(model, o);
  }
  assert.deepEqual(await c.read(0, capacity), model);
  await c.close();
  const h = await rawHeader(childPath);
  assert.equal(h.backingName, 'base.vmdk');
  assert.equal(h.backingFormat, 'vmdk');
  let r = await Disk.open(childPath, { readOnly: true });
  assert.equal((await r.info()).numLinks, 2);
  assert.deepEqual((await r.info()).chain, [childPath, base]);
  assert.deepEqual(await r.read(0, capacity), model);
  await r.close();

  await commit(childPath);
  r = await Disk.open(childPath, { readOnly: true });
  assert.deepEqual(await r.read(0, capacity), model, 'after commit into the VMDK');
  assert.equal((await r.info()).allocatedBytes, 0, 'the qcow2 top was emptied');
  await r.close();
  const v = await Disk.open(base, { readOnly: true });
  assert.deepEqual(await v.read(0, capacity), model, 'the VMDK holds everything');
  await v.close();
  assert.equal((await rawHeader(childPath)).backingFormat, 'vmdk');
});

test('rebase, commit and merge re-link qcow2 chains and keep what they read', async (t) => {
  const dir = (await tmpDir(t)).path;
  const capacity = 4 * MiB;
  const base = join(dir, 'base.qcow2');
  const model = Buffer.alloc(capacity);
  const b = await Disk.create(base, { format: 'qcow2', capacity, clusterSize: 4 * KiB });
  xorshiftBytes(MiB + 777, 1).copy(model, 0);
  await b.write(0, model.subarray(0, MiB + 777));
  await b.close();
  const mid = await createChild(base, join(dir, 'mid.qcow2'));
  await mid.write(100, Buffer.alloc(10, 0xaa));
  Buffer.alloc(10, 0xaa).copy(model, 100);
  await mid.write(2 * MiB, Buffer.alloc(64 * KiB)); // a zero cluster over nothing in the base
  await mid.write(128 * KiB, Buffer.alloc(64 * KiB)); // a zero cluster over base data
  model.fill(0, 128 * KiB, 192 * KiB);
  await mid.close();
  const topPath = join(dir, 'top.qcow2');
  const top = await createChild(join(dir, 'mid.qcow2'), topPath);
  await top.write(MiB + 3, Buffer.alloc(3, 0xbb));
  Buffer.alloc(3, 0xbb).copy(model, MiB + 3);
  await top.close();

  await rebase(topPath, base);
  let r = await Disk.open(topPath, { readOnly: true });
  assert.equal((await r.info()).numLinks, 2);
  assert.deepEqual(await r.read(0, capacity), model, 'after a safe rebase onto the base');
  await r.close();
  assert.equal((await rawHeader(topPath)).backingName, 'base.qcow2');
  assert.equal((await rawHeader(topPath)).backingFormat, 'qcow2');

  await rm(join(dir, 'mid.qcow2'));
  await commit(topPath);
  r = await Disk.open(topPath, { readOnly: true });
  assert.deepEqual(await r.read(0, capacity), model, 'after commit');
  assert.equal((await r.info()).allocatedBytes, 0, 'the top was emptied');
  await assertClean((r.image as unknown as { layers: Image[] }).layers[0]!, 'emptied top');
  await assertClean((r.image as unknown as { layers: Image[] }).layers[1]!, 'base after commit');
  await r.close();

  await mergeIntoTop(topPath, { all: true });
  r = await Disk.open(topPath, { readOnly: true });
  assert.equal(r.image.backing(), undefined);
  assert.deepEqual(await r.read(0, capacity), model, 'after merging everything into the top');
  await assertClean(r.image, 'merged top');
  await r.close();
  const h = await rawHeader(topPath);
  assert.equal(h.backingOffset, 0);
  assert.equal(h.backingFormat, undefined, 'the backing format extension went with the name');
  assert.equal(await stat(base).catch(() => undefined), undefined, 'the merged base, used by no one, was removed');

  // unsafe rebase: only the link
  const other = await Disk.create(join(dir, 'other.qcow2'), { format: 'qcow2', capacity });
  await other.close();
  await rebase(topPath, join(dir, 'other.qcow2'), { unsafe: true });
  assert.equal((await rawHeader(topPath)).backingName, 'other.qcow2');
  r = await Disk.open(topPath, { readOnly: true });
  assert.deepEqual(await r.read(0, capacity), model, 'it holds every non-zero byte itself');
  await r.close();
});

test('setBacking writes and removes name and format; makeEmpty frees everything and cuts the file', async (t) => {
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'a.qcow2');
  const d = await Disk.create(p, { format: 'qcow2', capacity: 4 * MiB, clusterSize: 4096 });
  await d.write(0, xorshiftBytes(MiB, 5));
  await d.close();
  await (await Disk.create(join(dir, 'p.vmdk'), { format: 'vmdk', capacity: 4 * MiB })).close();
  await (await Disk.create(join(dir, 'p.vhd'), { format: 'vhd', capacity: 4 * MiB })).close();
  const link = await openLink(p, { cowByCaller: true });
  // the chain layer probes the new parent's format (the driver never opens it)
  await link.setBacking(await backingTo(hostFiles(), p, join(dir, 'p.vmdk'), 'ignored', chainFormats));
  assert.deepEqual(link.backing(), { hint: 'p.vmdk', format: 'vmdk' });
  await link.setBacking(await backingTo(hostFiles(), p, join(dir, 'p.vhd'), 'ignored', chainFormats));
  assert.deepEqual(link.backing(), { hint: 'p.vhd', format: 'vhd' });
  await assert.rejects(link.setBacking({ hint: 'x'.repeat(1024), parentId: '' }), (e: DiskError) => e.code === 'NAMETOOLONG' && e.details.field === 'backing_file_size');
  await link.close();
  let h = await rawHeader(p);
  assert.equal(h.backingName, 'p.vhd');
  assert.equal(h.backingFormat, 'vpc', "QEMU's name for VHD");
  const l2 = await openLink(p, { cowByCaller: true });
  await l2.setBacking(undefined);
  assert.equal(l2.backing(), undefined);
  const before = (await stat(p)).size;
  await l2.makeEmpty();
  assert.deepEqual(await l2.blockStatus(0, l2.capacity), [{ offset: 0, length: 4 * MiB, state: 'unallocated' }]);
  await assertClean(l2, 'after makeEmpty');
  await l2.close();
  h = await rawHeader(p);
  assert.equal(h.backingOffset, 0);
  assert.deepEqual(await bytesAt(p, 112, 64), Buffer.alloc(64), 'old extension and name bytes zeroed');
  const after = (await stat(p)).size;
  assert.ok(after < before / 10, `file cut back (${before} -> ${after})`);
});

test('a child alone opened read-write is refused (PARTIALCHAIN); alone read-only its unallocated clusters read as zeros', async (t) => {
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'base.qcow2');
  const b = await Disk.create(base, { format: 'qcow2', capacity: MiB });
  await b.write(0, Buffer.alloc(4096, 7));
  await b.close();
  const c = await createChild(base, join(dir, 'c.qcow2'));
  await c.close();
  await assert.rejects(Disk.open(join(dir, 'c.qcow2'), { singleLink: true }), (e: DiskError) => e.code === 'PARTIALCHAIN' && e.details.field === 'backing_file_offset');
  const s = await Disk.open(join(dir, 'c.qcow2'), { singleLink: true, readOnly: true });
  assert.deepEqual(await s.read(0, 4096), Buffer.alloc(4096));
  await assert.rejects(s.write(0, Buffer.alloc(1)), (e: DiskError) => e.code === 'RDONLY');
  await s.close();
  await assert.rejects(Disk.open(base), (e: DiskError) => e.code === 'RDONLY', 'a parent with a child is protected');
});

test('metadata: compat, cluster size, refcount bits, backing; all read-only; identity is a constant, setIdentity a no-op', async (t) => {
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'base.qcow2');
  await (await Disk.create(base, { format: 'qcow2', capacity: MiB, clusterSize: 4096 })).close();
  const c = await createChild(base, join(dir, 'c.qcow2'));
  assert.deepEqual(c.metadataKeys(), ['compat', 'clusterSize', 'refcountBits', 'lazyRefcounts', 'extendedL2', 'compressionType', 'dirty', 'corrupt', 'snapshots', 'bitmaps', 'backingFile', 'backingFormat']);
  assert.equal(c.readMetadata('compat'), '1.1');
  assert.equal(c.readMetadata('clusterSize'), '65536');
  assert.equal(c.readMetadata('refcountBits'), '16');
  assert.equal(c.readMetadata('lazyRefcounts'), 'false');
  assert.equal(c.readMetadata('snapshots'), '[]');
  assert.equal(c.readMetadata('bitmaps'), '0');
  assert.equal(c.readMetadata('backingFile'), 'base.qcow2');
  assert.equal(c.readMetadata('backingFormat'), 'qcow2');
  await assert.rejects(c.writeMetadata('compat', '0.10'), (e: DiskError) => e.code === 'NOTSUPPORTED' && e.details.field === 'compat');
  assert.equal(c.image.identity(), undefined);
  await c.image.setIdentity('1234abcd');
  await c.close();
});

test('dirty bit: a read-only open warns; a read-write open rebuilds refcounts (leak and refcount 0 of a used cluster) and clears it', async (t) => {
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'd.qcow2');
  const cs = 64 * KiB;
  const d = await Disk.create(p, { format: 'qcow2', capacity: 4 * MiB });
  await d.write(0, Buffer.alloc(2 * cs, 0x42));
  await d.close();
  const host = Number((await l2Entry(p, 0)) & 0x00fffffffffffe00n) / cs;
  const h = await rawHeader(p);
  const rb = Number((await bytesAt(p, h.rtOffset, 8)).readBigUInt64BE(0));
  await poke(p, rb + host * 2, Buffer.from([0, 0])); // a used cluster at refcount 0
  await poke(p, rb + 40 * 2, Buffer.from([0, 1])); // an unused cluster at refcount 1 (past the end)
  await poke(p, rb + 2 * 2, Buffer.from([0, 2])); // the refcount block itself at 2 (leak)
  await poke(p, 72, u64(1n)); // dirty
  const ro = await Disk.open(p, { readOnly: true });
  assert.ok((await ro.info()).warnings?.some((w) => w.startsWith('dirty bit set')));
  const report = await ro.image.maintenance().check!({ repair: false });
  assert.ok(report.findings.some((f) => f.kind === 'corruption' && f.field === `refcount[${host}]`));
  assert.ok(report.findings.some((f) => f.kind === 'leak' && f.field === 'refcount[2]'));
  await ro.close();
  const rw = await Disk.open(p);
  assert.ok((await rw.info()).warnings?.some((w) => /refcounts rebuilt/.test(w)));
  await rw.write(4 * cs, Buffer.alloc(cs, 0x43)); // must not land on the cluster that had refcount 0
  assert.deepEqual(await rw.read(0, 2 * cs), Buffer.alloc(2 * cs, 0x42));
  await assertClean(rw.image, 'after the rebuild');
  await rw.close();
  assert.equal((await rawHeader(p)).incompat, 0n, 'dirty bit cleared');
  assert.equal(await refcountOf(p, host), 1);
  assert.equal(await refcountOf(p, 40), 0);
});

test('unknown autoclear bits are cleared by the first write, not by the open', async (t) => {
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'a.qcow2');
  await (await Disk.create(p, { format: 'qcow2', capacity: MiB })).close();
  await poke(p, 88, u64(0x21n)); // bitmaps (0) and an unknown bit (5)
  const d = await Disk.open(p);
  assert.equal((await rawHeader(p)).autoclear, 0x21n, 'open alone writes nothing');
  await d.write(0, Buffer.alloc(512, 1));
  assert.equal((await rawHeader(p)).autoclear, 0n);
  await d.close();
});

test('check and repair: leaks are lowered, a refcount below the count raised, COPIED flags fixed', async (t) => {
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'c.qcow2');
  const cs = 4 * KiB;
  const d = await Disk.create(p, { format: 'qcow2', capacity: 4 * MiB, clusterSize: cs });
  await d.write(0, xorshiftBytes(40 * cs, 9));
  await d.close();
  const h = await rawHeader(p);
  const rb = Number((await bytesAt(p, h.rtOffset, 8)).readBigUInt64BE(0));
  const host = Number((await l2Entry(p, 5 * cs)) & 0x00fffffffffffe00n) / cs;
  await poke(p, rb + 3 * 2, Buffer.from([0, 3])); // the L1 table's cluster: leak
  await poke(p, rb + host * 2, Buffer.from([0, 0])); // a data cluster: corruption
  const fileClusters = Math.ceil((await stat(p)).size / cs);
  await poke(p, rb + (fileClusters + 2) * 2, Buffer.from([0, 1])); // past the end: warning
  let link = await openLink(p, { readOnly: true });
  let r = await link.maintenance().check!({ repair: false });
  await link.close();
  const kinds = r.findings.map((f) => `${f.kind}:${f.field}`).sort();
  assert.deepEqual(kinds, ['corruption:l2[0][5]', `corruption:refcount[${host}]`, 'leak:refcount[3]', `warning:refcount[${fileClusters + 2}]`].sort());
  assert.equal(r.leakedBytes, cs);
  assert.match(r.findings.find((f) => f.kind === 'leak')!.message, /^Leaked cluster 3 refcount=3 reference=1$/);
  // a read-write open of the damaged image is refused; the repair opens it for the check
  await assert.rejects(openLink(p, { cowByCaller: true }), (e: DiskError) => e.code === 'NEEDSREPAIR');
  link = await openLink(p, { cowByCaller: true, tolerateDamage: true });
  r = await link.maintenance().check!({ repair: true });
  assert.ok(r.findings.filter((f) => f.kind !== 'corruption' || f.field !== 'l2[0][5]').every((f) => f.repaired), JSON.stringify(r.findings));
  assert.equal(r.leakedBytes, 0);
  await assertClean(link, 'after repair');
  await link.close();
  assert.equal(await refcountOf(p, host), 1);
  assert.equal(await refcountOf(p, 3), 1);
  assert.notEqual((await l2Entry(p, 5 * cs)) & 0x8000000000000000n, 0n, 'COPIED set again');
});

test('refcount table growth: 512-byte clusters past 8 MiB of file move the table; data and check stay right', async (t) => {
  const dir = (await tmpDir(t)).path;
  const p = join(dir, 'g.qcow2');
  const capacity = 16 * MiB;
  const d = await Disk.create(p, { format: 'qcow2', capacity, clusterSize: 512 });
  const before = await rawHeader(p);
  assert.deepEqual([before.rtOffset, before.rtClusters], [512, 1], 'one table cluster: 64 blocks of 256 clusters = 8 MiB of file');
  const data = xorshiftBytes(10 * MiB, 77);
  for (let at = 0; at < data.length; at += MiB) await d.write(3 * MiB + at, data.subarray(at, at + MiB));
  await d.write(100, Buffer.alloc(1000, 9)); // and the allocator keeps working afterwards
  await assertClean(d.image, 'after growth');
  await d.close();
  const after = await rawHeader(p);
  assert.ok(after.rtOffset > 512 && after.rtClusters >= 2, `table moved and grew (${after.rtOffset}, ${after.rtClusters} clusters)`);
  assert.equal(await refcountOf(p, 1), 0, 'the old table cluster was freed');
  const r = await Disk.open(p, { readOnly: true });
  assert.deepEqual(await r.read(3 * MiB, data.length), data);
  assert.deepEqual(await r.read(100, 1000), Buffer.alloc(1000, 9));
  await r.close();
});
