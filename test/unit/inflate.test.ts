/** src/core/inflate.ts (the browser build's inflateSync/inflateRawSync) against node:zlib. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deflateRawSync, deflateSync, constants } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { inflateRaw, inflateZlib } from '../../src/core/inflate.js';

/** data with long repeats, short repeats, literals and runs, so every block kind and code appears */
function mixed(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = i % 4096 < 1024 ? 0 : i % 4096 < 2048 ? (x >>> 24) & 0x0f : i % 4096 < 3000 ? b[i - 300]! : (x >>> 16) & 0xff;
  }
  return b;
}

test('every deflate level and strategy (stored, fixed, dynamic blocks) inflates to the input', () => {
  const inputs = [Buffer.alloc(0), Buffer.from('a'), randomBytes(70000), mixed(65536, 1), mixed(200000, 7), Buffer.alloc(1 << 20)];
  for (const data of inputs) {
    for (const level of [0, 1, 6, 9]) {
      for (const strategy of [constants.Z_DEFAULT_STRATEGY, constants.Z_FIXED, constants.Z_HUFFMAN_ONLY, constants.Z_RLE]) {
        const raw = deflateRawSync(data, { level, strategy });
        assert.ok(inflateRaw(raw).equals(data), `raw, ${data.length} bytes, level ${level}, strategy ${strategy}`);
        assert.ok(inflateZlib(deflateSync(data, { level, strategy })).equals(data), `zlib, ${data.length} bytes, level ${level}, strategy ${strategy}`);
      }
    }
  }
});

test('maxOutputLength: more output is an error; exactly that much is not', () => {
  const data = mixed(65536, 3);
  const z = deflateSync(data);
  assert.equal(inflateZlib(z, { maxOutputLength: 65536 }).length, 65536);
  assert.throws(() => inflateZlib(z, { maxOutputLength: 65535 }), RangeError);
});

test('input cut short: an error, unless finishFlush is Z_SYNC_FLUSH (then what was inflated)', () => {
  const data = mixed(100000, 5);
  const z = deflateSync(data);
  const cut = z.subarray(0, z.length >> 1);
  assert.throws(() => inflateZlib(cut), /unexpected end/);
  const part = inflateZlib(cut, { finishFlush: constants.Z_SYNC_FLUSH });
  assert.ok(part.length > 0 && part.length < data.length);
  assert.ok(part.equals(data.subarray(0, part.length)), 'a prefix of the input');
  // trailing bytes after the stream (a VMDK grain padded to a sector) are ignored
  assert.ok(inflateZlib(Buffer.concat([z, Buffer.alloc(300)])).equals(data));
});

test('bad streams are errors, never a hang or a wrong result', () => {
  assert.throws(() => inflateZlib(Buffer.from([0x78, 0x9d, 0, 0])), /header/);
  assert.throws(() => inflateRaw(Buffer.from([0x07])), /block type/);
  // a stored block whose length check fails
  assert.throws(() => inflateRaw(Buffer.from([0x01, 0x05, 0x00, 0x00, 0x00])), /length check/);
  for (let i = 0; i < 300; i++) {
    const junk = randomBytes(1 + (i % 64));
    try {
      inflateRaw(junk, { maxOutputLength: 1 << 20 });
    } catch (err) {
      assert.ok(err instanceof Error);
    }
  }
});
