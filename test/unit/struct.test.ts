/**
 * The declarative struct codec (src/binary/struct.ts) and the SparseExtentHeader table
 * (src/formats/vmdk/structs.ts) against the byte layout of vmdk.md §3.2. The golden bytes are
 * built here with plain Buffer writes at the spec's literal offsets, independently of the codec.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defineStruct, u8, u16, u32, u64, bytes, ascii, reserved } from '../../src/binary/struct.js';
import { DiskError } from '../../src/core/errors.js';
import { GD_AT_END, MarkerHead, SPARSE_MAGIC, SparseExtentHeader, type SparseExtentHeaderValue } from '../../src/formats/vmdk/structs.js';

/** A QEMU-style header of a fresh 1 GiB monolithicSparse (vmdk.md §3.7 row "1 GiB"). */
function sampleHeader(): SparseExtentHeaderValue {
  return {
    magicNumber: SPARSE_MAGIC,
    version: 1,
    flags: 0x3,
    capacity: 2097152n,
    grainSize: 128n,
    descriptorOffset: 1n,
    descriptorSize: 20n,
    numGTEsPerGT: 512,
    rgdOffset: 21n,
    gdOffset: 150n,
    overHead: 384n,
    uncleanShutdown: 0,
    singleEndLineChar: 0x0a,
    nonEndLineChar: 0x20,
    doubleEndLineChar1: 0x0d,
    doubleEndLineChar2: 0x0a,
    compressAlgorithm: 0,
  };
}

/** The same header, written by hand from the §3.2 table. */
function goldenBytes(): Buffer {
  const b = Buffer.alloc(512);
  b.write('KDMV', 0, 'latin1');
  b.writeUInt32LE(1, 4);
  b.writeUInt32LE(3, 8);
  b.writeBigUInt64LE(2097152n, 12);
  b.writeBigUInt64LE(128n, 20);
  b.writeBigUInt64LE(1n, 28);
  b.writeBigUInt64LE(20n, 36);
  b.writeUInt32LE(512, 44);
  b.writeBigUInt64LE(21n, 48);
  b.writeBigUInt64LE(150n, 56);
  b.writeBigUInt64LE(384n, 64);
  b[72] = 0;
  b[73] = 0x0a;
  b[74] = 0x20;
  b[75] = 0x0d;
  b[76] = 0x0a;
  b.writeUInt16LE(0, 77);
  return b;
}

test('SparseExtentHeader is 512 bytes and its field offsets are those of vmdk.md §3.2', () => {
  assert.equal(SparseExtentHeader.size, 512);
  const expected: Record<string, number> = {
    magicNumber: 0,
    version: 4,
    flags: 8,
    capacity: 12,
    grainSize: 20,
    descriptorOffset: 28,
    descriptorSize: 36,
    numGTEsPerGT: 44,
    rgdOffset: 48,
    gdOffset: 56,
    overHead: 64,
    uncleanShutdown: 72,
    singleEndLineChar: 73,
    nonEndLineChar: 74,
    doubleEndLineChar1: 75,
    doubleEndLineChar2: 76,
    compressAlgorithm: 77,
    pad: 79,
  };
  for (const [field, off] of Object.entries(expected)) {
    assert.equal(SparseExtentHeader.offsetOf(field as 'pad'), off, `offset of ${field}`);
  }
});

test('SparseExtentHeader encodes to the golden bytes (KDMV at 0, little-endian, unaligned u64s)', () => {
  const enc = SparseExtentHeader.encode(sampleHeader());
  assert.equal(enc.length, 512);
  assert.equal(enc.subarray(0, 4).toString('latin1'), 'KDMV');
  assert.deepEqual([...enc.subarray(0, 4)], [0x4b, 0x44, 0x4d, 0x56]);
  assert.ok(enc.equals(goldenBytes()), `encoded header differs from golden bytes:\n${enc.subarray(0, 80).toString('hex')}\n${goldenBytes().subarray(0, 80).toString('hex')}`);
  // individual reads at the spec offsets, through offsetOf
  assert.equal(enc.readBigUInt64LE(SparseExtentHeader.offsetOf('capacity')), 2097152n);
  assert.equal(enc.readBigUInt64LE(SparseExtentHeader.offsetOf('gdOffset')), 150n);
  assert.equal(enc[SparseExtentHeader.offsetOf('uncleanShutdown')], 0);
  assert.equal(enc.readUInt16LE(SparseExtentHeader.offsetOf('compressAlgorithm')), 0);
  // pad is zero
  assert.ok(enc.subarray(79).every((x) => x === 0));
});

test('SparseExtentHeader decode(golden) gives the value back; encode/decode round trip', () => {
  assert.deepEqual(SparseExtentHeader.decode(goldenBytes()), sampleHeader());
  const v: SparseExtentHeaderValue = {
    ...sampleHeader(),
    version: 3,
    flags: 0x30001,
    capacity: 0x0123456789abcdefn,
    gdOffset: GD_AT_END,
    rgdOffset: 0n,
    uncleanShutdown: 1,
    compressAlgorithm: 1,
  };
  const enc = SparseExtentHeader.encode(v);
  assert.deepEqual(SparseExtentHeader.decode(enc), v);
  assert.equal(enc.readBigUInt64LE(56), 0xffffffffffffffffn);
  assert.equal(enc.readBigUInt64LE(12), 0x0123456789abcdefn);
  assert.equal(enc[72], 1);
  assert.equal(enc.readUInt16LE(77), 1);
});

test('decode and encode at a non-zero position; encode into a buffer clears the record first', () => {
  const big = Buffer.alloc(2048, 0xee);
  SparseExtentHeader.encode(sampleHeader(), big, 1024);
  assert.ok(big.subarray(0, 1024).every((x) => x === 0xee), 'bytes before the record untouched');
  assert.ok(big.subarray(1536).every((x) => x === 0xee), 'bytes after the record untouched');
  assert.ok(big.subarray(1024, 1536).equals(goldenBytes()), 'record bytes, pad zeroed');
  assert.deepEqual(SparseExtentHeader.decode(big, 1024), sampleHeader());
});

test('encode defaults the magic from `expect`', () => {
  const { magicNumber: _m, ...rest } = sampleHeader();
  const enc = SparseExtentHeader.encode(rest as SparseExtentHeaderValue);
  assert.equal(enc.subarray(0, 4).toString('latin1'), 'KDMV');
});

test('decode refuses a wrong magic with INVALIDDISK naming path, struct and field', () => {
  const b = goldenBytes();
  b.write('XXXX', 0, 'latin1');
  assert.throws(
    () => SparseExtentHeader.decode(b, 0, '/some/disk.vmdk'),
    (e: unknown) => {
      assert.ok(e instanceof DiskError);
      assert.equal(e.code, 'INVALIDDISK');
      assert.equal(e.details.path, '/some/disk.vmdk');
      assert.equal(e.details.struct, 'SparseExtentHeader');
      assert.equal(e.details.field, 'magicNumber');
      assert.match(e.message, /\/some\/disk\.vmdk/);
      assert.match(e.message, /magicNumber/);
      return true;
    },
  );
});

test('decode of a short buffer is CORRUPT, not a RangeError', () => {
  assert.throws(
    () => SparseExtentHeader.decode(Buffer.alloc(511), 0, 'short.vmdk'),
    (e: unknown) => e instanceof DiskError && e.code === 'CORRUPT' && e.details.path === 'short.vmdk',
  );
  assert.throws(
    () => SparseExtentHeader.decode(Buffer.alloc(600), 100),
    (e: unknown) => e instanceof DiskError && e.code === 'CORRUPT',
  );
});

test('a table whose field widths do not add up to the spec size throws at definition', () => {
  assert.throws(
    () => defineStruct('Bad', 'le', [{ name: 'a', type: u32 }, { name: 'b', type: u64 }] as const, 16),
    (e: unknown) => e instanceof DiskError && e.code === 'INTERNAL' && /Bad/.test(e.message) && /12/.test(e.message) && /16/.test(e.message),
  );
  assert.throws(() => defineStruct('Bad2', 'le', [{ name: 'r', type: reserved(10) }] as const, 9), DiskError);
  // and one that adds up does not
  const ok = defineStruct('Ok', 'le', [{ name: 'a', type: u32 }, { name: 'b', type: u64 }, { name: 'r', type: reserved(4) }] as const, 16);
  assert.equal(ok.size, 16);
});

test('offsetOf an unknown field is INTERNAL', () => {
  assert.throws(
    () => SparseExtentHeader.offsetOf('nope' as 'pad'),
    (e: unknown) => e instanceof DiskError && e.code === 'INTERNAL',
  );
});

test('every field kind, both byte orders', () => {
  const fields = [
    { name: 'a', type: u8 },
    { name: 'b', type: u16 },
    { name: 'c', type: u32 },
    { name: 'd', type: u64 },
    { name: 'e', type: bytes(3) },
    { name: 'f', type: ascii(6) },
    { name: 'g', type: reserved(2) },
  ] as const;
  const value = { a: 0x12, b: 0x3456, c: 0x789abcde, d: 0x0102030405060708n, e: Buffer.from([1, 2, 3]), f: 'abc' };
  const le = defineStruct('LE', 'le', fields, 26);
  const be = defineStruct('BE', 'be', fields, 26);
  const lb = le.encode(value);
  const bb = be.encode(value);
  assert.equal(lb.toString('hex'), '12' + '5634' + 'debc9a78' + '0807060504030201' + '010203' + '616263000000' + '0000');
  assert.equal(bb.toString('hex'), '12' + '3456' + '789abcde' + '0102030405060708' + '010203' + '616263000000' + '0000');
  assert.deepEqual(le.decode(lb), value);
  assert.deepEqual(be.decode(bb), value);
  assert.equal(be.offsetOf('d'), 7);
  assert.equal(be.offsetOf('g'), 24);
});

test('expect constants on non-magic fields are checked by decode', () => {
  const s = defineStruct('V', 'be', [{ name: 'sig', type: ascii(4), expect: 'conx' }, { name: 'n', type: u32 }] as const, 8);
  const good = Buffer.from('conx\0\0\0\x05', 'latin1');
  assert.deepEqual(s.decode(good), { sig: 'conx', n: 5 });
  assert.throws(() => s.decode(Buffer.from('conY\0\0\0\x05', 'latin1')), (e: unknown) => e instanceof DiskError && e.code === 'INVALIDDISK' && e.details.field === 'sig');
});

test('MarkerHead (stream marker) is 16 bytes: val u64 @0, size u32 @8, type u32 @12', () => {
  assert.equal(MarkerHead.size, 16);
  assert.equal(MarkerHead.offsetOf('val'), 0);
  assert.equal(MarkerHead.offsetOf('size'), 8);
  assert.equal(MarkerHead.offsetOf('type'), 12);
  const b = MarkerHead.encode({ val: 4n, size: 0, type: 1 });
  assert.equal(b.toString('hex'), '0400000000000000' + '00000000' + '01000000');
});
