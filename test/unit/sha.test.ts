/** src/core/sha.ts (the browser build's createHash) gives node:crypto's digests, fed in any pieces. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash as nodeHash, randomBytes } from 'node:crypto';
import { createHash } from '../../src/core/sha.js';

// lengths around the 56-byte padding edge and the 64-byte block
const LENGTHS = [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 1000, 65536 + 7];

for (const algorithm of ['sha256', 'sha1'] as const) {
  test(`${algorithm}: equal to node:crypto for every length around the block edges`, () => {
    for (const n of LENGTHS) {
      const data = randomBytes(n);
      assert.equal(createHash(algorithm).update(data).digest('hex'), nodeHash(algorithm).update(data).digest('hex'), `${n} bytes`);
    }
  });

  test(`${algorithm}: updates in pieces of any size give the one-shot digest`, () => {
    const data = randomBytes(5000);
    const want = nodeHash(algorithm).update(data).digest();
    for (const piece of [1, 7, 63, 64, 65, 200, 4999]) {
      const h = createHash(algorithm);
      for (let at = 0; at < data.length; at += piece) h.update(data.subarray(at, at + piece));
      assert.ok(h.digest().equals(want), `pieces of ${piece}`);
    }
  });
}

test('known answers: FIPS 180 "abc" and a string input', () => {
  assert.equal(createHash('sha256').update(Buffer.from('abc')).digest('hex'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  assert.equal(createHash('sha1').update('abc').digest('hex'), 'a9993e364706816aba3e25717850c26c9cd0d89d');
  // update of a string is its UTF-8 bytes, as node:crypto takes it
  assert.equal(createHash('sha256').update('é').digest('hex'), nodeHash('sha256').update('é').digest('hex'));
});

test('a 1 MiB zero block (checksum hashes every block) and a misuse', () => {
  const zero = Buffer.alloc(1024 * 1024);
  assert.ok(createHash('sha256').update(zero).digest().equals(nodeHash('sha256').update(zero).digest()));
  const h = createHash('sha256');
  h.digest();
  assert.throws(() => h.update(zero), /after digest/);
  assert.throws(() => createHash('md5'), /md5/);
});
