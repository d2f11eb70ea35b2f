import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { NULL_GUID, guidFromIdentity, guidFromText, guidText, isNullGuid, newGuid, normalizeGuidText } from '../../src/binary/guid.js';

const TEXT = '01234567-89ab-cdef-0123-456789abcdef';

test('le order: first three groups little-endian (VDI RTUUID, VHDX GUID)', () => {
  const b = guidFromText(TEXT, 'le')!;
  assert.deepEqual([...b], [0x67, 0x45, 0x23, 0x01, 0xab, 0x89, 0xef, 0xcd, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
  assert.equal(guidText(b, 'le'), TEXT);
});

test('be order: bytes in text order (VHD unique id)', () => {
  const b = guidFromText(TEXT, 'be')!;
  assert.equal(b.toString('hex'), '0123456789abcdef0123456789abcdef');
  assert.equal(guidText(b, 'be'), TEXT);
});

test('parsing: braces, case and blanks accepted; dashes optional unless required; bad text undefined', () => {
  const b = guidFromText(TEXT, 'le')!;
  assert.ok(guidFromText(' {01234567-89AB-CDEF-0123-456789ABCDEF} ', 'le')!.equals(b));
  assert.ok(guidFromText('0123456789abcdef0123456789abcdef', 'le')!.equals(b));
  assert.equal(guidFromText('0123456789abcdef0123456789abcdef', 'le', { dashes: 'required' }), undefined);
  assert.ok(guidFromText(TEXT, 'le', { dashes: 'required' })!.equals(b));
  for (const bad of ['', TEXT.slice(1), 'g' + TEXT.slice(1), TEXT.replace(/-/g, '_'), TEXT + '0', 'not-a-uuid']) {
    assert.equal(guidFromText(bad, 'be'), undefined, bad);
  }
});

test('text at an offset; short buffers are refused', () => {
  const b = Buffer.concat([Buffer.from([9, 9, 9]), guidFromText(TEXT, 'le')!]);
  assert.equal(guidText(b, 'le', 3), TEXT);
  assert.throws(() => guidText(Buffer.alloc(15), 'be'), RangeError);
  assert.throws(() => guidText(b, 'be', 4), RangeError);
});

test('round trips in both orders; the input buffer is not changed', () => {
  for (let i = 0; i < 200; i++) {
    for (const order of ['le', 'be'] as const) {
      const text = randomUUID();
      assert.equal(guidText(guidFromText(text, order)!, order), text);
      const raw = randomBytes(16);
      const before = Buffer.from(raw);
      assert.ok(guidFromText(guidText(raw, order), order)!.equals(raw));
      assert.ok(raw.equals(before));
    }
  }
});

test('null, random and normalized GUIDs', () => {
  assert.ok(isNullGuid(NULL_GUID));
  assert.ok(isNullGuid(Buffer.concat([Buffer.from([1]), NULL_GUID]), 1));
  for (const order of ['le', 'be'] as const) {
    const g = newGuid(order);
    assert.equal(g.length, 16);
    assert.equal(guidText(g, order)[14], '4', 'version 4 in text form');
    assert.ok(!isNullGuid(g));
  }
  assert.equal(normalizeGuidText('{01234567-89AB-CDEF-0123-456789ABCDEF}'), TEXT);
  assert.equal(normalizeGuidText('x'), undefined);
});

test('identities: GUID text used as is; other text gives the same version-5 GUID in both orders', () => {
  assert.ok(guidFromIdentity(TEXT, 'le', 'l:').equals(guidFromText(TEXT, 'le')!));
  const be = guidFromIdentity('abcd1234', 'be', 'vdkit-vhd-identity:');
  assert.ok(guidFromIdentity('ABCD1234', 'be', 'vdkit-vhd-identity:').equals(be), 'case-insensitive, deterministic');
  assert.equal(be[6]! >> 4, 5, 'version 5 bits');
  assert.equal(be[8]! >> 6, 2, 'RFC 4122 variant');
  const le = guidFromIdentity('abcd1234', 'le', 'vdkit-vhd-identity:');
  assert.equal(guidText(le, 'le'), guidText(be, 'be'), 'one identity, one text, either order');
  assert.ok(!guidFromIdentity('abcd1234', 'be', 'other:').equals(be), 'the label separates formats');
});
