/** Checked integer helpers (src/core/ints.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DiskError } from '../../src/core/errors.js';
import { SECTOR_SIZE, ceilDiv, checkRange, isPowerOfTwo, parseSize, roundUp, toSafeNumber, unitSpans } from '../../src/core/ints.js';

const isCode = (code: string) => (e: unknown) => e instanceof DiskError && e.code === code;

test('parseSize: bytes, K/M/G/T/P suffixes (binary), sectors, KB/KiB spellings, fractions', () => {
  const cases: [string, number][] = [
    ['0', 0],
    ['4096', 4096],
    ['1K', 1024],
    ['1k', 1024],
    ['10KB', 10240],
    ['10KiB', 10240],
    ['512M', 512 * 2 ** 20],
    ['512m', 512 * 2 ** 20],
    ['10G', 10 * 2 ** 30],
    ['10GiB', 10 * 2 ** 30],
    ['1.5G', 1.5 * 2 ** 30],
    ['2T', 2 * 2 ** 40],
    ['1P', 2 ** 50],
    ['2048s', 2048 * 512],
    ['1S', 512],
    ['  7M  ', 7 * 2 ** 20],
    ['100B', 100],
  ];
  for (const [text, bytes] of cases) assert.equal(parseSize(text), bytes, text);
  assert.equal(SECTOR_SIZE, 512);
});

test('parseSize: bad input is INVAL with a message that quotes it', () => {
  for (const bad of ['', ' ', 'abc', '10X', '-1', '1.2.3', 'G', '10 G B', '0x10', '1,5G', '1.5', '0.1K', '8E', '1e3', '16384P']) {
    assert.throws(
      () => parseSize(bad),
      (e: unknown) => e instanceof DiskError && e.code === 'INVAL' && e.message.includes(JSON.stringify(bad)),
      JSON.stringify(bad),
    );
  }
});

test('toSafeNumber accepts up to 2^53-1 and rejects more (bigint and number), naming the field', () => {
  assert.equal(toSafeNumber(0n), 0);
  assert.equal(toSafeNumber(2n ** 53n - 1n), Number.MAX_SAFE_INTEGER);
  assert.equal(toSafeNumber(Number.MAX_SAFE_INTEGER), Number.MAX_SAFE_INTEGER);
  assert.equal(toSafeNumber(12345), 12345);
  for (const v of [2n ** 53n, 2n ** 64n - 1n, 2233785398448881665n]) {
    assert.throws(
      () => toSafeNumber(v, { path: 'a.vmdk', field: 'capacity' }),
      (e: unknown) => e instanceof DiskError && e.code === 'CORRUPT' && e.details.field === 'capacity' && e.details.found === v && /a\.vmdk/.test(e.message),
    );
  }
  for (const v of [2 ** 53, 1.5, NaN, Infinity]) assert.throws(() => toSafeNumber(v), isCode('CORRUPT'), String(v));
});

test('isPowerOfTwo, ceilDiv, roundUp', () => {
  for (const p of [1, 2, 8, 128, 512, 2 ** 20, 2 ** 52]) assert.equal(isPowerOfTwo(p), true, String(p));
  for (const n of [0, -2, 3, 6, 100, 513, 1.5, NaN, 2 ** 53 + 2]) assert.equal(isPowerOfTwo(n), false, String(n));
  assert.equal(ceilDiv(0, 128), 0);
  assert.equal(ceilDiv(1, 128), 1);
  assert.equal(ceilDiv(128, 128), 1);
  assert.equal(ceilDiv(129, 128), 2);
  assert.equal(roundUp(279, 128), 384);
  assert.equal(roundUp(384, 128), 384);
});

test('checkRange: INVAL for bad numbers, OUTOFRANGE past the capacity', () => {
  checkRange(0, 0, 0);
  checkRange(0, 100, 100);
  checkRange(100, 0, 100);
  assert.throws(() => checkRange(1, 100, 100, 'd.vmdk'), (e: unknown) => e instanceof DiskError && e.code === 'OUTOFRANGE' && e.details.path === 'd.vmdk');
  assert.throws(() => checkRange(101, 0, 100), isCode('OUTOFRANGE'));
  for (const [o, l] of [[-1, 1], [0, -1], [0.5, 1], [0, NaN], [2 ** 53, 0]]) assert.throws(() => checkRange(o!, l!, 100), isCode('INVAL'), `${o},${l}`);
});

test('unitSpans cuts a range where units begin, and yields nothing for an empty range', () => {
  assert.deepEqual([...unitSpans(5, 20, 8)], [
    { index: 0, within: 5, pos: 0, n: 3 },
    { index: 1, within: 0, pos: 3, n: 8 },
    { index: 2, within: 0, pos: 11, n: 8 },
    { index: 3, within: 0, pos: 19, n: 1 },
  ]);
  assert.deepEqual([...unitSpans(16, 8, 8)], [{ index: 2, within: 0, pos: 0, n: 8 }]);
  assert.deepEqual([...unitSpans(7, 0, 8)], []);
});
