import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isZero } from '../../src/binary/zeros.js';

test('isZero: whole buffers, ranges, past one zero block, non-Buffer views', () => {
  const b = Buffer.alloc(200 * 1024);
  assert.ok(isZero(b));
  assert.ok(isZero(Buffer.alloc(0)));
  b[150 * 1024 + 3] = 1;
  assert.ok(!isZero(b), 'a byte past the first 64 KiB');
  assert.ok(isZero(b, 0, 150 * 1024 + 3), 'the range before it');
  assert.ok(!isZero(b, 150 * 1024 + 3, 150 * 1024 + 4));
  assert.ok(isZero(b, 150 * 1024 + 4));
  assert.ok(!isZero(new Uint8Array(b.buffer, b.byteOffset, b.length)));
});
