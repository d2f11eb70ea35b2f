import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeU32Array, readU32Array, readU64Array, u32Buffer, u32Bytes, u64Buffer, u64Bytes } from '../../src/binary/tables.js';

/** a byte store over a buffer, recording what it was asked for */
function source(bytes: Buffer) {
  return {
    reads: [] as [number, number][],
    async readInto(into: Buffer, at: number) {
      this.reads.push([at, into.length]);
      bytes.copy(into, 0, at, at + into.length);
    },
  };
}

test('u32 tables: LE and BE entries read from an offset, written back byte for byte', async () => {
  const disk = Buffer.from([0xee, 0xee, 0x01, 0x02, 0x03, 0x04, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x80]);
  const s = source(disk);
  const le = await readU32Array(s, 2, 3, 'le');
  assert.deepEqual([...le], [0x04030201, 0xffffffff, 0x80000000]);
  const be = await readU32Array(s, 2, 3, 'be');
  assert.deepEqual([...be], [0x01020304, 0xffffffff, 0x00000080]);
  assert.deepEqual(s.reads, [[2, 12], [2, 12]], 'one read per table');
  assert.deepEqual([...(await readU32Array(s, 2, 1))], [0x04030201], 'LE by default');
  assert.ok(u32Bytes(le, 0, 3, 'le').equals(disk.subarray(2)));
  assert.ok(u32Bytes(be, 0, 3, 'be').equals(disk.subarray(2)));
  assert.ok(u32Bytes(be, 1, 3, 'be').equals(disk.subarray(6)), 'a slice starts at its first entry');
  assert.equal(u32Bytes(be, 1, 1, 'be').length, 0);
  assert.deepEqual([...decodeU32Array(disk.subarray(2), 'be')], [...be]);
  assert.deepEqual([...decodeU32Array(disk.subarray(2))], [...le]);
});

test('u32Bytes in BE copies; the table is not changed by encoding it', () => {
  const arr = Uint32Array.from([1, 2]);
  const b = u32Bytes(arr, 0, 2, 'be');
  assert.deepEqual([...b], [0, 0, 0, 1, 0, 0, 0, 2]);
  b[3] = 9;
  assert.deepEqual([...arr], [1, 2]);
});

test('u64 tables: LE and BE, entries past 2^53 kept exact', async () => {
  const disk = Buffer.alloc(17);
  disk.writeBigUInt64BE(0x8000000000050000n, 1);
  disk.writeBigUInt64BE(0x0102030405060708n, 9);
  const s = source(disk);
  const be = await readU64Array(s, 1, 2, 'be');
  assert.deepEqual([...be], [0x8000000000050000n, 0x0102030405060708n]);
  const le = await readU64Array(s, 1, 2, 'le');
  assert.deepEqual([...le], [0x0000050000000080n, 0x0807060504030201n]);
  assert.ok(u64Bytes(be, 0, 2, 'be').equals(disk.subarray(1)));
  assert.ok(u64Bytes(le, 1, 2, 'le').equals(disk.subarray(9)));
  const copy = u64Bytes(le, 0, 1, 'le');
  copy[0] = 0xaa;
  assert.equal(le[0], 0x0000050000000080n, 'u64Bytes always copies');
});

test('single values: u32Buffer and u64Buffer in both orders', () => {
  assert.deepEqual([...u32Buffer(0x01020304)], [4, 3, 2, 1]);
  assert.deepEqual([...u32Buffer(0x01020304, 'be')], [1, 2, 3, 4]);
  assert.deepEqual([...u64Buffer(2 ** 40 + 1)], [1, 0, 0, 0, 0, 1, 0, 0]);
  assert.deepEqual([...u64Buffer(0xff00000000000001n, 'be')], [0xff, 0, 0, 0, 0, 0, 0, 1]);
});
