/**
 * VHD on-disk structures and arithmetic (src/formats/vhd/structs.ts) against vhd.md part 1:
 * field offsets of the footer (§2), dynamic header (§4) and parent locator entry (§4.1); the
 * checksum (§2.1) on golden bytes taken from real files (the Hyper-V 2012 R2 sample's footer and
 * a `qemu-img create -f vpc 100M` footer and dynamic header, hex dumps below); the CHS algorithm
 * and QEMU's rounding (§3, §3.1 test vectors); the 2000-01-01 epoch; the size rule per creator
 * (§2.2); unique id text in stored byte order (§10).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DynamicHeader,
  Footer,
  ParentLocatorEntry,
  chsGeometry,
  chsRoundedSize,
  decodeUtf16be,
  encodeFooter,
  encodeHeader,
  encodeUtf16be,
  exactSizeGeometry,
  fromVhdTime,
  geometrySectors,
  parseUuid,
  sizeRule,
  toVhdTime,
  uuidFromIdentity,
  uuidText,
  vhdChecksum,
} from '../../src/formats/vhd/structs.js';
import { sectorRuns } from '../../src/formats/vhd/layout.js';

/** `len` bytes: the hex prefix, then zeros */
const golden = (hex: string, len: number) => {
  const b = Buffer.alloc(len);
  Buffer.from(hex.replace(/\s+/g, ''), 'hex').copy(b);
  return b;
};

// hyperv2012r2-dynamic.vhd, last 512 bytes (xxd): creator "win " 6.3, 127 GiB, 65278/16/255
const HYPERV_FOOTER = golden(
  `636f6e6563746978 00000002 00010000 0000000000000200 1e598ef7 77696e20 00060003 5769326b
   0000001fc0000000 0000001fc0000000 fefe 10 ff 00000003 ffffe9db 6d2d5fc8eebade4c8ceede3a12db7c98 00`,
  512,
);
// qemu-img 7.2 `create -f vpc q.vhd 100M`: footer and dynamic header
const QEMU_FOOTER = golden(
  `636f6e6563746978 00000002 00010000 0000000000000200 3293eeda 71656d75 00050003 5769326b
   0000000006402000 0000000006402000 03ec 0c 11 00000003 ffffea10 d873f4fec4e6423d996cfbdbb4b983d7 00`,
  512,
);
const QEMU_HEADER = golden(`6378737061727365 ffffffffffffffff 0000000000000600 00010000 00000033 00200000 fffff444`, 1024);

test('footer field offsets are those of vhd.md §2', () => {
  const want: [Parameters<typeof Footer.offsetOf>[0], number][] = [
    ['cookie', 0],
    ['features', 8],
    ['fileFormatVersion', 12],
    ['dataOffset', 16],
    ['timestamp', 24],
    ['creatorApplication', 28],
    ['creatorVersion', 32],
    ['creatorHostOS', 36],
    ['originalSize', 40],
    ['currentSize', 48],
    ['cylinders', 56],
    ['heads', 58],
    ['sectorsPerTrack', 59],
    ['diskType', 60],
    ['checksum', 64],
    ['uniqueId', 68],
    ['savedState', 84],
    ['reserved', 85],
  ];
  for (const [f, off] of want) assert.equal(Footer.offsetOf(f), off, f);
  assert.equal(Footer.size, 512);
});

test('dynamic header and parent locator offsets are those of vhd.md §4 and §4.1', () => {
  const want: [Parameters<typeof DynamicHeader.offsetOf>[0], number][] = [
    ['cookie', 0],
    ['dataOffset', 8],
    ['tableOffset', 16],
    ['headerVersion', 24],
    ['maxTableEntries', 28],
    ['blockSize', 32],
    ['checksum', 36],
    ['parentUniqueId', 40],
    ['parentTimestamp', 56],
    ['reserved1', 60],
    ['parentUnicodeName', 64],
    ['parentLocators', 576],
    ['reserved2', 768],
  ];
  for (const [f, off] of want) assert.equal(DynamicHeader.offsetOf(f), off, f);
  assert.equal(DynamicHeader.size, 1024);
  const loc: [Parameters<typeof ParentLocatorEntry.offsetOf>[0], number][] = [
    ['platformCode', 0],
    ['platformDataSpace', 4],
    ['platformDataLength', 8],
    ['reserved', 12],
    ['platformDataOffset', 16],
  ];
  for (const [f, off] of loc) assert.equal(ParentLocatorEntry.offsetOf(f), off, f);
  assert.equal(ParentLocatorEntry.size, 24);
});

test('golden footers decode, checksum and re-encode byte for byte', () => {
  const h = Footer.decode(HYPERV_FOOTER);
  assert.equal(h.cookie, 'conectix');
  assert.equal(h.features, 2);
  assert.equal(h.fileFormatVersion, 0x00010000);
  assert.equal(h.dataOffset, 512n);
  assert.equal(h.creatorApplication.toString('latin1'), 'win ');
  assert.equal(h.creatorVersion, 0x00060003);
  assert.equal(h.creatorHostOS.toString('latin1'), 'Wi2k');
  assert.equal(h.currentSize, 136365211648n);
  assert.deepEqual([h.cylinders, h.heads, h.sectorsPerTrack], [65278, 16, 255]);
  assert.equal(h.diskType, 3);
  assert.equal(h.checksum, 0xffffe9db);
  assert.equal(uuidText(h.uniqueId), '6d2d5fc8-eeba-de4c-8cee-de3a12db7c98', 'stored byte order, as vhdiinfo prints it');
  assert.equal(vhdChecksum(HYPERV_FOOTER, 64), 0xffffe9db);
  assert.deepEqual(encodeFooter(h), HYPERV_FOOTER);

  const q = Footer.decode(QEMU_FOOTER);
  assert.equal(q.creatorApplication.toString('latin1'), 'qemu');
  assert.equal(q.currentSize, 104865792n);
  assert.equal(vhdChecksum(QEMU_FOOTER, 64), 0xffffea10);
  assert.deepEqual(encodeFooter({ ...q, checksum: 0 }), QEMU_FOOTER, 'the checksum is computed, not copied');
});

test('golden dynamic header decodes, checksums and re-encodes byte for byte', () => {
  const d = DynamicHeader.decode(QEMU_HEADER);
  assert.equal(d.cookie, 'cxsparse');
  assert.equal(d.dataOffset, 0xffffffffffffffffn);
  assert.equal(d.tableOffset, 1536n);
  assert.equal(d.headerVersion, 0x00010000);
  assert.equal(d.maxTableEntries, 51);
  assert.equal(d.blockSize, 2 * 1024 * 1024);
  assert.equal(vhdChecksum(QEMU_HEADER, 36), 0xfffff444);
  assert.deepEqual(encodeHeader({ ...d, checksum: 0 }), QEMU_HEADER);
});

test('checksum: one complement of the byte sum with the field as zero', () => {
  const b = Buffer.alloc(512);
  assert.equal(vhdChecksum(b, 64), 0xffffffff);
  b[0] = 1;
  b[64] = 0xff; // inside the checksum field: ignored
  assert.equal(vhdChecksum(b, 64), 0xfffffffe);
  const changed = Buffer.from(HYPERV_FOOTER);
  changed[100] = 1;
  assert.notEqual(vhdChecksum(changed, 64), changed.readUInt32BE(64));
});

test('CHS geometry (vhd.md §3) and QEMU rounding (§3.1 test vectors)', () => {
  const MiB = 2 ** 20;
  const GiB = 2 ** 30;
  const rows: [number, string, number, string][] = [
    [3 * MiB, '90/4/17', 3168256, '91/4/17'],
    [20 * MiB, '602/4/17', 20994048, '603/4/17'],
    [100 * MiB, '1003/12/17', 104865792, '1004/12/17'],
    [GiB, '2080/16/63', 1073995776, '2081/16/63'],
    [10 * GiB, '20805/16/63', 10737893376, '20806/16/63'],
    [127 * GiB, '65278/16/255', 136365219840, '65279/16/255'],
    [200 * GiB, '65535/16/255', 200 * GiB, '65535/16/255'],
  ];
  const text = (g: { cylinders: number; heads: number; sectors: number }) => `${g.cylinders}/${g.heads}/${g.sectors}`;
  for (const [requested, spec, qemuSize, qemuGeometry] of rows) {
    assert.equal(text(chsGeometry(requested / 512)), spec, `spec geometry of ${requested}`);
    const r = chsRoundedSize(requested);
    assert.equal(r.size, qemuSize, `qemu size of ${requested}`);
    assert.equal(text(r.geometry), qemuGeometry, `qemu geometry of ${requested}`);
    assert.ok(geometrySectors(chsGeometry(requested / 512)) * 512 <= requested, 'the spec geometry rounds down');
  }
  // exact sizes: the spec geometry when it is exact, else the force_size marker
  assert.equal(text(exactSizeGeometry(104865792)), '1004/12/17');
  assert.equal(text(exactSizeGeometry(64 * MiB)), '65535/16/255');
});

test('size rule per creator (vhd.md §2.2)', () => {
  const f = (app: string, c: number, h: number, s: number) => ({ creatorApplication: Buffer.from(app, 'latin1'), cylinders: c, heads: h, sectorsPerTrack: s });
  assert.equal(sizeRule(f('vpc ', 65278, 16, 255)), 'chs', 'Virtual PC');
  assert.equal(sizeRule(f('vs  ', 1004, 12, 17)), 'chs', 'Virtual Server');
  assert.equal(sizeRule(f('qemu', 1004, 12, 17)), 'chs', 'QEMU without force_size');
  assert.equal(sizeRule(f('win ', 65278, 16, 255)), 'current', 'Hyper-V');
  assert.equal(sizeRule(f('qem2', 65535, 16, 255)), 'current', 'QEMU force_size');
  assert.equal(sizeRule(f('d2v\0', 65535, 16, 255)), 'current', 'Disk2vhd');
  assert.equal(sizeRule(f('vbox', 1004, 12, 17)), 'current', 'VirtualBox');
  assert.equal(sizeRule(f('wa\0\0', 1004, 12, 17)), 'current', 'Azure');
  assert.equal(sizeRule(f('vdkt', 1004, 12, 17)), 'current', 'vdkit');
  assert.equal(sizeRule(f('vpc ', 65535, 16, 255)), 'current', 'maximum geometry: too big for CHS');
  assert.equal(sizeRule(f('vpc ', 0, 0, 0)), 'current', 'no geometry at all');
});

test('timestamps count seconds from 2000-01-01T00:00:00Z', () => {
  assert.equal(toVhdTime(new Date('2000-01-01T00:00:00Z')), 0);
  assert.equal(toVhdTime(new Date((946684800 + 1) * 1000)), 1, 'Unix time - 946684800');
  assert.equal(toVhdTime(new Date('2000-01-02T00:00:01Z')), 86401);
  assert.equal(fromVhdTime(0).toISOString(), '2000-01-01T00:00:00.000Z');
  assert.equal(fromVhdTime(0x1e598ef7).getTime(), Date.UTC(2000, 0, 1) + 0x1e598ef7 * 1000);
  assert.equal(toVhdTime(new Date('1999-12-31T00:00:00Z')), 0, 'clamped at the epoch');
});

test('unique ids: text in stored byte order, both ways; other identities map to stable UUIDs', () => {
  const text = '33ea0013-6191-4d02-b93f-88af84296f85';
  const b = parseUuid(text)!;
  assert.equal(b.toString('hex'), '33ea001361914d02b93f88af84296f85');
  assert.equal(uuidText(b), text);
  assert.deepEqual(parseUuid('{33EA001361914D02B93F88AF84296F85}'), b);
  assert.equal(parseUuid('not-a-uuid'), undefined);
  assert.deepEqual(uuidFromIdentity(text), b);
  const x = uuidFromIdentity('abcd1234');
  assert.deepEqual(uuidFromIdentity('ABCD1234'), x, 'deterministic');
  assert.equal(x[6]! >> 4, 5, 'version 5 bits');
});

test('UTF-16BE parent name and sector bitmap runs (MSB first)', () => {
  const name = 'bäse-\u{1F600}.vhd';
  const field = Buffer.alloc(512);
  encodeUtf16be(name).copy(field);
  assert.equal(decodeUtf16be(field), name);
  assert.equal(field[0], 0x00, 'big-endian: high byte first');
  assert.equal(field[1], 0x62);
  const bm = Buffer.from([0b11000000, 0xff, 0x00, 0b00000001]);
  assert.deepEqual(sectorRuns(bm, 0, 32), [
    [0, 2, true],
    [2, 8, false],
    [8, 16, true],
    [16, 31, false],
    [31, 32, true],
  ]);
  assert.deepEqual(sectorRuns(bm, 9, 12), [[9, 12, true]]);
});
