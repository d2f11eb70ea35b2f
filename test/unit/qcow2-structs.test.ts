/**
 * qcow2 structures against qcow2.md: header field offsets (v2 72 bytes, v3 104/112), snapshot
 * entry offsets, a golden header from `qemu-img create` (QEMU 7.2), L1/L2 entry decoding
 * (normal, zero, preallocated zero, compressed descriptors for several cluster sizes, extended
 * L2 bitmaps, reserved bits), packed refcounts of every width, and the cluster-0 layout of the
 * worked example in qcow2.md §3.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  EXT,
  ExtensionHeader,
  Header,
  SnapshotHeader,
  compressedShift,
  decodeCompressed,
  decodeFeatureTable,
  decodeL1,
  decodeL2,
  encodeCompressed,
  encodeFeatureTable,
  encodeHeaderArea,
  encodeL1,
  encodeL2,
  formatFromQemu,
  formatToQemu,
  geometry,
  getRefcount,
  l1EntriesFor,
  maxRefcount,
  refcountBytes,
  setRefcount,
  type HeaderValue,
} from '../../src/formats/qcow2/structs.js';

const word = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
};

test('header field offsets are those of qcow2.md §2 (v2 ends at 72, v3 at 104, QEMU >= 5.1 writes 112)', () => {
  const want: [Parameters<typeof Header.offsetOf>[0], number][] = [
    ['magic', 0],
    ['version', 4],
    ['backing_file_offset', 8],
    ['backing_file_size', 16],
    ['cluster_bits', 20],
    ['size', 24],
    ['crypt_method', 32],
    ['l1_size', 36],
    ['l1_table_offset', 40],
    ['refcount_table_offset', 48],
    ['refcount_table_clusters', 56],
    ['nb_snapshots', 60],
    ['snapshots_offset', 64],
    ['incompatible_features', 72],
    ['compatible_features', 80],
    ['autoclear_features', 88],
    ['refcount_order', 96],
    ['header_length', 100],
    ['compression_type', 104],
  ];
  for (const [f, o] of want) assert.equal(Header.offsetOf(f), o, f);
  assert.equal(Header.size, 112);
  assert.equal(ExtensionHeader.size, 8);
  for (const [f, o] of [
    ['l1_table_offset', 0],
    ['l1_size', 8],
    ['id_str_size', 12],
    ['name_size', 14],
    ['date_sec', 16],
    ['date_nsec', 20],
    ['vm_clock_nsec', 24],
    ['vm_state_size', 32],
    ['extra_data_size', 36],
  ] as const) assert.equal(SnapshotHeader.offsetOf(f), o, f);
  assert.equal(SnapshotHeader.size, 40);
});

test('golden header: `qemu-img create -f qcow2 img 1G` (QEMU 7.2) decodes field by field', () => {
  const hex =
    '514649fb00000003000000000000000000000000000000100000000040000000' +
    '0000000000000002000000000003000000000000000100000000000100000000' +
    '0000000000000000000000000000000000000000000000000000000000000000' +
    '0000000400000070000000000000000';
  const b = Buffer.alloc(112);
  Buffer.from(hex + '0', 'hex').copy(b);
  const h = Header.decode(b);
  assert.equal(h.version, 3);
  assert.equal(h.backing_file_offset, 0n);
  assert.equal(h.cluster_bits, 16);
  assert.equal(h.size, 1n << 30n);
  assert.equal(h.crypt_method, 0);
  assert.equal(h.l1_size, 2);
  assert.equal(h.l1_table_offset, 0x30000n);
  assert.equal(h.refcount_table_offset, 0x10000n);
  assert.equal(h.refcount_table_clusters, 1);
  assert.equal(h.nb_snapshots, 0);
  assert.equal(h.incompatible_features, 0n);
  assert.equal(h.refcount_order, 4);
  assert.equal(h.header_length, 0x70);
  assert.equal(h.compression_type, 0);
  assert.deepEqual(Header.encode(h), b, 'encode gives the same bytes back');
  const bad = Buffer.from(b);
  bad[3] = 0xfa;
  assert.throws(() => Header.decode(bad, 0, 'x.qcow2'), (e: Error & { code?: string; details?: { field?: string } }) => e.code === 'INVALIDDISK' && e.details?.field === 'magic');
});

test('geometry: entries per L2 and guest bytes per L2 table (qcow2.md §4)', () => {
  const g = geometry(16, false);
  assert.equal(g.l2Entries, 8192);
  assert.equal(2 ** g.l2Bits, 512 * 2 ** 20, 'one L2 table maps 512 MiB at 64 KiB');
  assert.equal(l1EntriesFor(2 ** 30, g), 2);
  assert.equal(l1EntriesFor(100 * 2 ** 20, g), 1);
  assert.equal(l1EntriesFor(10 * 2 ** 40, g), 20480, 'qcow2.md §10: 10 TiB -> 20480 entries');
  assert.equal(l1EntriesFor(0, g), 0);
  const small = geometry(9, false);
  assert.equal(small.l2Entries, 64);
  assert.equal(2 ** small.l2Bits, 32 * 1024);
  const ext = geometry(16, true);
  assert.equal(ext.l2EntrySize, 16);
  assert.equal(ext.l2Entries, 4096);
  assert.equal(2 ** ext.l2Bits, 256 * 2 ** 20);
});

test('L1 entries: offset bits 9..55, COPIED bit 63, reserved bits', () => {
  const b = word(0x8000000000040000n);
  assert.deepEqual(decodeL1(b, 0), { offset: 0x40000, copied: true, reservedBits: false });
  assert.deepEqual(decodeL1(word(0x00ffffffffffe00n), 0), { offset: 0x00ffffffffffe00, copied: false, reservedBits: false });
  assert.equal(decodeL1(word(0x0100000000040000n), 0).reservedBits, true, 'bit 56');
  assert.equal(decodeL1(word(0x0000000000040001n), 0).reservedBits, true, 'bit 0');
  const out = Buffer.alloc(16);
  encodeL1(out, 1, 0x123450000, true);
  assert.equal(out.readBigUInt64BE(8), 0x8000000123450000n);
  encodeL1(out, 0, 0, true);
  assert.equal(out.readBigUInt64BE(0), 0n, 'no COPIED bit without a table');
});

test('standard L2 entries: unallocated, zero (plain and preallocated), normal, reserved bits', () => {
  const g = geometry(16, false);
  const k = (v: bigint) => decodeL2(word(v), 0, g);
  assert.equal(k(0n).kind, 'unallocated');
  assert.deepEqual([k(1n).kind, k(1n).offset], ['zero', 0]);
  assert.deepEqual([k(0x8000000000050001n).kind, k(0x8000000000050001n).offset, k(0x8000000000050001n).copied], ['zero', 0x50000, true]);
  const n = k(0x8000000000050000n);
  assert.deepEqual([n.kind, n.offset, n.copied, n.reservedBits], ['normal', 0x50000, true, false]);
  assert.equal(k(0x0000000000050000n).copied, false);
  assert.equal(k(0x0000000000050002n).reservedBits, true, 'bit 1');
  assert.equal(k(0x2000000000050000n).reservedBits, true, 'bit 61');
  const out = Buffer.alloc(8);
  encodeL2(out, 0, g, 0x70000, { copied: true });
  assert.equal(out.readBigUInt64BE(0), 0x8000000000070000n);
  encodeL2(out, 0, g, 0, { zero: true });
  assert.equal(out.readBigUInt64BE(0), 1n);
});

test('compressed descriptors: qcow2.md §6 examples, sector counts, the shift per cluster size, round trip', () => {
  const g = geometry(16, false);
  assert.equal(compressedShift(16), 54);
  assert.equal(compressedShift(9), 61);
  assert.equal(compressedShift(21), 49);
  const a = decodeL2(word(0x4000000000050000n), 0, g);
  assert.deepEqual([a.kind, a.offset, a.csize, a.copied], ['compressed', 0x50000, 512, false]);
  const b = decodeL2(word(0x400000000005004fn), 0, g);
  assert.deepEqual([b.kind, b.offset, b.csize], ['compressed', 0x5004f, 512 - 0x4f]);
  // 3 additional sectors
  const e = (1n << 62n) | (3n << 54n) | 0x12345n;
  const c = decodeL2(word(e), 0, g);
  assert.deepEqual([c.offset, c.csize], [0x12345, 4 * 512 - (0x12345 % 512)]);
  for (const bits of [9, 12, 16, 21]) {
    for (const [off, len] of [
      [0x50000, 1],
      [0x5004f, 700],
      [123457, 2 ** bits - 1],
    ] as const) {
      if (len >= 2 ** bits) continue;
      const v = encodeCompressed(off, len, bits);
      assert.equal(v >> 62n, 1n, 'bit 62 only: never COPIED');
      const d = decodeCompressed(Number(v >> 32n), Number(v & 0xffffffffn), bits);
      assert.equal(d.offset, off, `offset at ${bits} bits`);
      assert.ok(d.csize >= len, `csize ${d.csize} covers ${len} bytes at ${bits} bits`);
      assert.ok(d.csize - len < 512, 'and no more than the sectors it touches');
    }
  }
});

test('extended L2 entries: 16 bytes, allocation bits 0..31 and zero bits 32..63 of the second word', () => {
  const g = geometry(16, true);
  const b = Buffer.alloc(32);
  b.writeBigUInt64BE(0x8000000000070000n, 16);
  b.writeBigUInt64BE((0x0000000fn << 32n) | 0x00000030n, 24); // zero: subclusters 0-3; allocated: 4-5
  const e = decodeL2(b, 1, g);
  assert.equal(e.kind, 'normal');
  assert.equal(e.offset, 0x70000);
  assert.equal(e.allocMask, 0x30);
  assert.equal(e.zeroMask, 0x0f);
  // bit 0 of the first word is not the zero flag with extended L2
  b.writeBigUInt64BE(1n, 0);
  b.writeBigUInt64BE(0n, 8);
  assert.equal(decodeL2(b, 0, g).kind, 'unallocated');
  b.writeBigUInt64BE(0xffffffffn << 32n, 8);
  assert.equal(decodeL2(b, 0, g).kind, 'zero', 'all subclusters read as zero');
  encodeL2(b, 1, g, 0x90000, { copied: true });
  assert.equal(b.readBigUInt64BE(16), 0x8000000000090000n);
  assert.equal(b.readBigUInt64BE(24), 0n, 'encoding clears the bitmap');
});

test('refcounts of every width (refcount_order 0..6): packed big-endian, bit 0 = LSB below a byte', () => {
  for (let order = 0; order <= 6; order++) {
    const bits = 1 << order;
    const block = Buffer.alloc(64);
    const n = (64 * 8) / bits;
    const max = maxRefcount(order);
    for (let i = 0; i < n; i++) setRefcount(block, i, order, i % (Math.min(max, 1000) + 1));
    for (let i = 0; i < n; i++) assert.equal(getRefcount(block, i, order), i % (Math.min(max, 1000) + 1), `order ${order} entry ${i}`);
  }
  const b = Buffer.alloc(2);
  setRefcount(b, 0, 0, 1);
  assert.equal(b[0], 0x01, '1-bit refcount 0 is the least significant bit');
  setRefcount(b, 3, 1, 2);
  assert.equal(b[0], 0x81, '2-bit refcount 3 is bits 6-7');
  const w = Buffer.alloc(4);
  setRefcount(w, 1, 4, 0x1234);
  assert.deepEqual([...w], [0, 0, 0x12, 0x34], '16-bit big-endian');
  assert.equal(maxRefcount(4), 65535);
  assert.equal(maxRefcount(0), 1);
  assert.deepEqual(refcountBytes(3, 5, 4), [6, 12]);
  assert.deepEqual(refcountBytes(3, 5, 0), [0, 1]);
});

test('cluster 0 of qcow2.md §3 example: backing format at 0x70, feature table at 0x80, end marker at 0x208, name at 0x210', () => {
  const h = {
    ...Header.decode(Buffer.concat([Buffer.from('514649fb00000003', 'hex'), Buffer.alloc(104)])),
    cluster_bits: 16,
    refcount_order: 4,
    header_length: 112,
  } as HeaderValue;
  const name = Buffer.from('base.qcow2');
  const area = encodeHeaderArea(h, Buffer.alloc(0), [
    { type: EXT.BACKING_FORMAT, data: Buffer.from('qcow2') },
    { type: EXT.FEATURE_TABLE, data: encodeFeatureTable() },
  ], name);
  assert.equal(area.readUInt32BE(0x70), 0xe2792aca);
  assert.equal(area.readUInt32BE(0x74), 5);
  assert.equal(area.toString('latin1', 0x78, 0x7d), 'qcow2');
  assert.deepEqual([...area.subarray(0x7d, 0x80)], [0, 0, 0], 'padded to 8 bytes');
  assert.equal(area.readUInt32BE(0x80), 0x6803f857);
  assert.equal(area.readUInt32BE(0x84), 0x180);
  assert.deepEqual(area.subarray(0x208, 0x210), Buffer.alloc(8), 'end marker');
  assert.equal(area.toString('latin1', 0x210), 'base.qcow2');
  const back = Header.decode(area);
  assert.equal(back.backing_file_offset, 0x210n);
  assert.equal(back.backing_file_size, 10);
  const names = decodeFeatureTable(area.subarray(0x88, 0x88 + 0x180));
  assert.equal(names.get('0:0'), 'dirty bit');
  assert.equal(names.get('0:4'), 'extended L2 entries');
  assert.equal(names.get('1:0'), 'lazy refcounts');
  assert.equal(names.get('2:1'), 'raw external data');
  // version 2: the 72-byte header, then the extensions
  const v2 = encodeHeaderArea({ ...h, version: 2 }, Buffer.alloc(0), [{ type: EXT.BACKING_FORMAT, data: Buffer.from('qcow2') }], Buffer.from('a.qcow2'));
  assert.equal(v2.readUInt32BE(72), 0xe2792aca);
  assert.equal(v2.readBigUInt64BE(8), 0x60n, 'as qemu-img create -o compat=0.10 -b a.qcow2 writes it');
  assert.equal(v2.toString('latin1', 0x60), 'a.qcow2');
});

test('format names: QEMU "vpc" is vdkit "vhd", others pass through', () => {
  assert.equal(formatFromQemu('vpc'), 'vhd');
  assert.equal(formatToQemu('vhd'), 'vpc');
  for (const f of ['qcow2', 'vmdk', 'raw', 'vdi', 'vhdx']) {
    assert.equal(formatFromQemu(f), f);
    assert.equal(formatToQemu(f), f);
  }
});
