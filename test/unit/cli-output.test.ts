import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hexDump, humanBytes } from '../../src/cli/output.js';

test('humanBytes', () => {
  assert.equal(humanBytes(512), '512 B');
  assert.equal(humanBytes(1024), '1 KiB');
  assert.equal(humanBytes(5 * 2 ** 30), '5 GiB');
  assert.equal(humanBytes(1536 * 1024), '1.50 MiB');
});

test('hexDump prints offset, 16 bytes and ASCII per line', () => {
  const d = hexDump(Buffer.from('ABCDEFGHIJKLMNOPqr\n'), 0x200);
  assert.equal(d, '00000200: 41 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e 4f 50  |ABCDEFGHIJKLMNOP|\n00000210: 71 72 0a                                         |qr.|\n');
});
