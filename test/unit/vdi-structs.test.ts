/**
 * VDI field tables (src/formats/vdi/structs.ts) against the layout of vdi.md §2-4, and the UUID
 * byte order of §1. The golden header is built here with plain Buffer writes at the spec's literal
 * offsets (the qemu-img 7.2 layout of §11.1), independently of the codec.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import {
  HEADER_V1PLUS_SIZE,
  HEADER_V1_SIZE,
  VDI_SIGNATURE,
  VdiHeaderV0,
  VdiHeaderV1,
  VdiHeaderV1Plus,
  VdiPreHeader,
  freshLayout,
  isNullUuid,
  newUuid,
  uuidFromText,
  uuidToText,
  type VdiHeaderField,
} from '../../src/formats/vdi/structs.js';

test('pre-header and v1/v1+ header: every field at the offset of vdi.md §2-3', () => {
  const want: [VdiHeaderField, number][] = [
    ['fileInfo', 0x00],
    ['signature', 0x40],
    ['version', 0x44],
    ['cbHeader', 0x48],
    ['type', 0x4c],
    ['flags', 0x50],
    ['comment', 0x54],
    ['offBlocks', 0x154],
    ['offData', 0x158],
    ['legacyCylinders', 0x15c],
    ['legacyHeads', 0x160],
    ['legacySectors', 0x164],
    ['legacySectorSize', 0x168],
    ['dummy', 0x16c],
    ['cbDisk', 0x170],
    ['cbBlock', 0x178],
    ['cbBlockExtra', 0x17c],
    ['cBlocks', 0x180],
    ['cBlocksAllocated', 0x184],
    ['uuidCreate', 0x188],
    ['uuidModify', 0x198],
    ['uuidLinkage', 0x1a8],
    ['uuidParentModify', 0x1b8],
    ['lchsCylinders', 0x1c8],
    ['lchsHeads', 0x1cc],
    ['lchsSectors', 0x1d0],
    ['lchsSectorSize', 0x1d4],
  ];
  for (const [f, off] of want) assert.equal(VdiHeaderV1Plus.offsetOf(f), off, f);
  // the v1 table is the same up to the UUIDs
  for (const [f, off] of want.filter(([f]) => !f.startsWith('lchs'))) assert.equal(VdiHeaderV1.offsetOf(f as Parameters<typeof VdiHeaderV1.offsetOf>[0]), off, `v1 ${f}`);
  assert.equal(VdiPreHeader.size, 0x48);
  assert.equal(VdiHeaderV1.size, 0x48 + HEADER_V1_SIZE);
  assert.equal(VdiHeaderV1Plus.size, 0x48 + HEADER_V1PLUS_SIZE);
  assert.equal(HEADER_V1_SIZE, 0x180);
  assert.equal(HEADER_V1PLUS_SIZE, 0x190);
});

test('legacy v0 header: fields at the offsets of vdi.md §4, 348 bytes after the pre-header', () => {
  const want: [Parameters<typeof VdiHeaderV0.offsetOf>[0], number][] = [
    ['type', 0x48],
    ['flags', 0x4c],
    ['comment', 0x50],
    ['legacyCylinders', 0x150],
    ['legacySectorSize', 0x15c],
    ['cbDisk', 0x160],
    ['cbBlock', 0x168],
    ['cBlocks', 0x16c],
    ['cBlocksAllocated', 0x170],
    ['uuidCreate', 0x174],
    ['uuidModify', 0x184],
    ['uuidLinkage', 0x194],
  ];
  for (const [f, off] of want) assert.equal(VdiHeaderV0.offsetOf(f), off, f);
  assert.equal(VdiHeaderV0.size, 0x1a4);
});

/** The header qemu-img 7.2 writes for a 10 MiB dynamic image (vdi.md §11.1), by hand. */
function qemuGolden(uuidA: Buffer, uuidB: Buffer): Buffer {
  const b = Buffer.alloc(0x200);
  b.write('<<< QEMU VM Virtual Disk Image >>>\n', 0, 'latin1');
  b.writeUInt32LE(0xbeda107f, 0x40);
  b.writeUInt32LE(0x00010001, 0x44);
  b.writeUInt32LE(0x180, 0x48);
  b.writeUInt32LE(1, 0x4c);
  b.writeUInt32LE(0x200, 0x154);
  b.writeUInt32LE(0x400, 0x158);
  b.writeUInt32LE(0x200, 0x168);
  b.writeBigUInt64LE(10n * 1024n * 1024n, 0x170);
  b.writeUInt32LE(0x100000, 0x178);
  b.writeUInt32LE(10, 0x180);
  b.writeUInt32LE(0, 0x184);
  uuidA.copy(b, 0x188);
  uuidB.copy(b, 0x198);
  return b;
}

test('decode of a qemu-img 7.2 header (§11.1) and encode back to the same bytes', () => {
  const a = newUuid();
  const m = newUuid();
  const golden = qemuGolden(a, m);
  // the prefix is the exact byte sequence §11.1 lists for 0x40..0x4f
  assert.deepEqual([...golden.subarray(0x40, 0x50)], [0x7f, 0x10, 0xda, 0xbe, 0x01, 0x00, 0x01, 0x00, 0x80, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00]);
  const h = VdiHeaderV1.decode(golden, 0, 'golden.vdi');
  assert.equal(h.signature, VDI_SIGNATURE);
  assert.equal(h.version, 0x00010001);
  assert.equal(h.cbHeader, 0x180);
  assert.equal(h.type, 1);
  assert.equal(h.offBlocks, 0x200);
  assert.equal(h.offData, 0x400);
  assert.equal(h.legacySectorSize, 512);
  assert.equal(h.cbDisk, 10485760n);
  assert.equal(h.cbBlock, 1048576);
  assert.equal(h.cBlocks, 10);
  assert.equal(h.cBlocksAllocated, 0);
  assert.ok(h.uuidCreate.equals(a) && h.uuidModify.equals(m));
  assert.ok(isNullUuid(h.uuidLinkage) && isNullUuid(h.uuidParentModify));
  const again = VdiHeaderV1.encode(h);
  assert.ok(again.equals(golden.subarray(0, VdiHeaderV1.size)), 'encode(decode(x)) == x');
  // the same bytes read as v1+ show an unset LCHS record (QEMU leaves it zero)
  const plus = VdiHeaderV1Plus.decode(golden, 0, 'golden.vdi');
  assert.deepEqual([plus.lchsCylinders, plus.lchsHeads, plus.lchsSectors, plus.lchsSectorSize], [0, 0, 0, 0]);
});

test('UUID text <-> bytes: the first three groups little-endian (vdi.md §1 example)', () => {
  const bytes = uuidFromText('01234567-89ab-cdef-0123-456789abcdef')!;
  assert.deepEqual([...bytes], [0x67, 0x45, 0x23, 0x01, 0xab, 0x89, 0xef, 0xcd, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
  assert.equal(uuidToText(bytes), '01234567-89ab-cdef-0123-456789abcdef');
  // braces and upper case are accepted, text comes back lower case
  assert.ok(uuidFromText('{01234567-89AB-CDEF-0123-456789ABCDEF}')!.equals(bytes));
  for (const badText of ['', '01234567-89ab-cdef-0123-456789abcde', '0123456789abcdef0123456789abcdef', 'g1234567-89ab-cdef-0123-456789abcdef', '01234567_89ab_cdef_0123_456789abcdef']) {
    assert.equal(uuidFromText(badText), undefined, badText);
  }
  assert.equal(uuidToText(Buffer.alloc(16)), '00000000-0000-0000-0000-000000000000');
});

test('UUID round trips: random text -> bytes -> text, random bytes -> text -> bytes', () => {
  for (let i = 0; i < 500; i++) {
    const text = randomUUID();
    assert.equal(uuidToText(uuidFromText(text)!), text);
    const raw = randomBytes(16);
    assert.ok(uuidFromText(uuidToText(raw))!.equals(raw));
  }
  const u = newUuid();
  assert.equal(u.length, 16);
  assert.equal(uuidToText(u)[14], '4', 'a version-4 UUID in text form');
  assert.ok(!isNullUuid(u));
});

test('fresh layout: block map at 1 MiB, data area 1 MiB aligned after it (vdi.md §5.3, §11.2)', () => {
  assert.deepEqual(freshLayout(10), { offBlocks: 0x100000, offData: 0x200000 });
  assert.deepEqual(freshLayout(262144), { offBlocks: 0x100000, offData: 0x200000 }, '256 GiB: the map fills exactly 1 MiB');
  assert.deepEqual(freshLayout(262145), { offBlocks: 0x100000, offData: 0x300000 });
  assert.deepEqual(freshLayout(0x1fffff80), { offBlocks: 0x100000, offData: 0x100000 + 0x80000000 });
});
