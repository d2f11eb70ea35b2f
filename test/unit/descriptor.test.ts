/**
 * The VMDK text descriptor (src/formats/vmdk/descriptor.ts) against vmdk.md §2: parsing what
 * VMware, ESXi and QEMU write, keeping every unknown line on rewrite, and refusing broken text
 * with a DiskError that carries the right code and names the file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DiskError, type ErrorCode } from '../../src/core/errors.js';
import { Descriptor, formatExtent, hex8, looksLikeDescriptor, parseCid } from '../../src/formats/vmdk/descriptor.js';

/** An ESXi-style vmfs descriptor with CBT (version 3), unknown keys, comments with trailing blanks. */
const ESXI = [
  '# Disk DescriptorFile',
  'version=3',
  'encoding="UTF-8"',
  'CID=fffffffe',
  'parentCID=ffffffff',
  'isNativeSnapshot="no"',
  'createType="vmfs"',
  'futureHeaderKey="something new"',
  '',
  '# Extent description',
  'RW 41943040 VMFS "web01-flat.vmdk"',
  '',
  '# Change Tracking File',
  'changeTrackPath="web01-ctk.vmdk"',
  '',
  '# The Disk Data Base ',
  '#DDB',
  '',
  'ddb.adapterType = "lsilogic"',
  'ddb.deletable = "true"',
  'ddb.geometry.cylinders = "2610"',
  'ddb.geometry.heads = "255"',
  'ddb.geometry.sectors = "63"',
  'ddb.longContentID = "5f8e2d9c0a7b4e31c6d2a9f1fffffffe"',
  'ddb.thinProvisioned = "1"',
  'ddb.toolsInstallType = "4"',
  'ddb.toolsVersion = "12352"',
  'ddb.uuid = "60 00 C2 9a 4c 1f 7e 22-b3 05 d8 6e 91 aa 0c 47"',
  'ddb.virtualHWVersion = "13"',
  'ddb.vendorSpecific.someKey="no blanks, kept verbatim"',
  '',
].join('\n');

/** A Workstation-style hosted descriptor without CBT. */
const WORKSTATION = [
  '# Disk DescriptorFile',
  'version=1',
  'encoding="windows-1252"',
  'CID=1a2b3c4d',
  'parentCID=ffffffff',
  'createType="twoGbMaxExtentSparse"',
  '',
  '# Extent description',
  'RW 4192256 SPARSE "w-s001.vmdk"',
  'RW 4192256 SPARSE "w-s002.vmdk"',
  'RW 2101248 SPARSE "w-s003.vmdk"',
  '',
  '# The Disk Data Base ',
  '#DDB',
  '',
  'ddb.adapterType = "lsilogic"',
  'ddb.virtualHWVersion = "19"',
  '',
].join('\n');

/** What QEMU writes (no padding of the CID, no encoding line). */
const QEMU = [
  '# Disk DescriptorFile',
  'version=1',
  'CID=f9287b2',
  'parentCID=ffffffff',
  'createType="monolithicFlat"',
  '',
  '# Extent description',
  'RW 2048 FLAT "q-flat.vmdk" 0',
  '',
  '# The Disk Data Base',
  '#DDB',
  '',
  'ddb.virtualHWVersion = "4"',
  'ddb.geometry.cylinders = "2"',
  'ddb.geometry.heads = "16"',
  'ddb.geometry.sectors = "63"',
  'ddb.adapterType = "ide"',
  'ddb.toolsVersion = "2147483647"',
  '',
].join('\n');

function isDiskError(code: ErrorCode, check?: (e: DiskError) => void) {
  return (e: unknown) => {
    assert.ok(e instanceof DiskError, `expected DiskError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    check?.(e);
    return true;
  };
}

/** Lines of `after` that differ from `before`, assuming the same number of lines. */
function changedLines(before: string, after: string): number[] {
  const a = before.split('\n');
  const b = after.split('\n');
  assert.equal(b.length, a.length, 'line count changed');
  return a.flatMap((l, i) => (l === b[i] ? [] : [i]));
}

test('parses an ESXi descriptor: header keys, unknown keys, changeTrackPath, extents, ddb', () => {
  const d = Descriptor.parse(ESXI, '/vmfs/volumes/ds1/web01/web01.vmdk');
  assert.equal(d.get('version'), '3');
  assert.equal(d.get('encoding'), 'UTF-8');
  assert.equal(d.get('CID'), 'fffffffe');
  assert.equal(d.get('parentCID'), 'ffffffff');
  assert.equal(d.get('createType'), 'vmfs');
  assert.equal(d.get('isNativeSnapshot'), 'no');
  assert.equal(d.get('futureHeaderKey'), 'something new');
  assert.equal(d.get('changeTrackPath'), 'web01-ctk.vmdk');
  assert.equal(d.get('parentFileNameHint'), undefined);
  // keys are read case-insensitively (technote), values as written
  assert.equal(d.get('createtype'), 'vmfs');
  assert.equal(d.get('CREATETYPE'), 'vmfs');
  assert.deepEqual(d.extents(), [{ access: 'RW', sectorCount: 41943040, type: 'VMFS', fileName: 'web01-flat.vmdk', offsetSectors: 0 }]);
  assert.deepEqual(d.ddbKeys(), [
    'adapterType',
    'deletable',
    'geometry.cylinders',
    'geometry.heads',
    'geometry.sectors',
    'longContentID',
    'thinProvisioned',
    'toolsInstallType',
    'toolsVersion',
    'uuid',
    'virtualHWVersion',
    'vendorSpecific.someKey',
  ]);
  assert.equal(d.ddb('adapterType'), 'lsilogic');
  assert.equal(d.ddb('ddb.adapterType'), 'lsilogic', 'a ddb. prefix in the query is accepted');
  assert.equal(d.ddb('ADAPTERTYPE'), 'lsilogic');
  assert.equal(d.ddb('uuid'), '60 00 C2 9a 4c 1f 7e 22-b3 05 d8 6e 91 aa 0c 47');
  assert.equal(d.ddb('vendorSpecific.someKey'), 'no blanks, kept verbatim');
  assert.equal(d.ddb('missing'), undefined);
});

test('toString of an unmodified descriptor is the input, byte for byte', () => {
  for (const text of [ESXI, WORKSTATION, QEMU]) assert.equal(Descriptor.parse(text).toString(), text);
  // no trailing newline in the input: one is added, nothing else changes
  assert.equal(Descriptor.parse(QEMU.trimEnd()).toString(), QEMU.trimEnd() + '\n');
  // blank lines at the end survive
  assert.equal(Descriptor.parse(QEMU + '\n\n').toString(), QEMU + '\n\n');
});

test('split descriptor: three SPARSE extents in order', () => {
  const d = Descriptor.parse(WORKSTATION);
  assert.deepEqual(
    d.extents().map((e) => [e.sectorCount, e.type, e.fileName]),
    [
      [4192256, 'SPARSE', 'w-s001.vmdk'],
      [4192256, 'SPARSE', 'w-s002.vmdk'],
      [2101248, 'SPARSE', 'w-s003.vmdk'],
    ],
  );
  assert.equal(d.get('encoding'), 'windows-1252');
});

test('QEMU-style descriptor: unpadded CID parses to the right number', () => {
  const d = Descriptor.parse(QEMU);
  assert.equal(d.get('CID'), 'f9287b2');
  assert.equal(parseCid(d.get('CID')), 0x0f9287b2);
  assert.equal(parseCid(d.get('parentCID')), 0xffffffff);
  assert.deepEqual(d.extents(), [{ access: 'RW', sectorCount: 2048, type: 'FLAT', fileName: 'q-flat.vmdk', offsetSectors: 0 }]);
  assert.equal(parseCid('ABCDEF01'), 0xabcdef01);
  assert.equal(parseCid('0'), 0);
  assert.equal(parseCid(undefined), undefined);
  for (const bad of ['', '123456789', 'xyz', '-1', '0x12']) {
    assert.throws(() => parseCid(bad, 'a.vmdk'), isDiskError('BADDESCRIPTOR', (e) => assert.equal(e.details.path, 'a.vmdk')));
  }
});

test('CRLF line endings parse like LF (no \\r in keys, values or file names)', () => {
  for (const text of [ESXI, WORKSTATION, QEMU]) {
    const lf = Descriptor.parse(text);
    const crlf = Descriptor.parse(text.replace(/\n/g, '\r\n'));
    assert.deepEqual(crlf.extents(), lf.extents());
    assert.deepEqual(crlf.ddbKeys(), lf.ddbKeys());
    for (const k of lf.ddbKeys()) assert.equal(crlf.ddb(k), lf.ddb(k));
    for (const k of ['version', 'CID', 'parentCID', 'createType', 'changeTrackPath', 'encoding']) assert.equal(crlf.get(k), lf.get(k));
    // a rewrite writes LF only (vmdk.md §2.2 "Write LF only"): the CRLF file comes back as the LF text
    assert.equal(crlf.toString(), text);
  }
});

test('extent line forms: FLAT with offset, ZERO without name, RDONLY/NOACCESS, extra device fields', () => {
  const text = [
    '# Disk DescriptorFile',
    'version=1',
    'CID=12345678',
    'parentCID=ffffffff',
    'createType="partitionedDevice"',
    'RW 63 FLAT "disk-pt.vmdk" 0',
    'RDONLY 1000 FLAT "/dev/sda" 63 "partition-uuid" "device-id"',
    'NOACCESS 200 ZERO',
    'RW 8 VMFS "v-flat.vmdk"',
  ].join('\n');
  const d = Descriptor.parse(text);
  assert.deepEqual(d.extents(), [
    { access: 'RW', sectorCount: 63, type: 'FLAT', fileName: 'disk-pt.vmdk', offsetSectors: 0 },
    { access: 'RDONLY', sectorCount: 1000, type: 'FLAT', fileName: '/dev/sda', offsetSectors: 63 },
    { access: 'NOACCESS', sectorCount: 200, type: 'ZERO', fileName: undefined, offsetSectors: 0 },
    { access: 'RW', sectorCount: 8, type: 'VMFS', fileName: 'v-flat.vmdk', offsetSectors: 0 },
  ]);
});

test('set() of an existing header key changes only its line', () => {
  for (const text of [ESXI, WORKSTATION, QEMU]) {
    const d = Descriptor.parse(text);
    d.set('CID', 'abcdef01');
    const out = d.toString();
    const idx = text.split('\n').findIndex((l) => l.startsWith('CID='));
    assert.deepEqual(changedLines(text, out), [idx]);
    assert.equal(out.split('\n')[idx], 'CID=abcdef01', 'CID is written bare (QEMU needs CID= without quotes)');
    assert.equal(d.get('CID'), 'abcdef01');
    assert.equal(Descriptor.parse(out).get('cid'), 'abcdef01');
  }
  const d = Descriptor.parse(ESXI);
  d.set('createType', 'monolithicFlat');
  const out = d.toString();
  assert.deepEqual(changedLines(ESXI, out), [6]);
  assert.equal(out.split('\n')[6], 'createType="monolithicFlat"');
});

test('set() with a differently cased key keeps the key as the file has it for lookups', () => {
  const d = Descriptor.parse(QEMU);
  d.set('cid', '00000001');
  assert.equal(d.get('CID'), '00000001');
  assert.equal(d.toString().split('\n').filter((l) => /^cid=/i.test(l)).length, 1, 'no duplicate CID line');
});

test('setDdb() of an existing key changes only its line; unknown ddb keys are preserved', () => {
  const d = Descriptor.parse(ESXI);
  d.setDdb('toolsVersion', '0');
  d.setDdb('ddb.virtualHWVersion', '14');
  const out = d.toString();
  const lines = ESXI.split('\n');
  const tv = lines.findIndex((l) => l.startsWith('ddb.toolsVersion'));
  const hw = lines.findIndex((l) => l.startsWith('ddb.virtualHWVersion'));
  assert.deepEqual(changedLines(ESXI, out), [tv, hw]);
  assert.equal(out.split('\n')[tv], 'ddb.toolsVersion = "0"');
  assert.equal(out.split('\n')[hw], 'ddb.virtualHWVersion = "14"');
  assert.match(out, /^ddb\.vendorSpecific\.someKey="no blanks, kept verbatim"$/m);
  assert.match(out, /^# The Disk Data Base $/m, 'trailing blank of the section comment kept');
});

test('a new ddb key goes after the last ddb line; everything else is kept', () => {
  const d = Descriptor.parse(ESXI);
  d.setDdb('uuid.image', '11111111-2222-3333-4444-555555555555');
  const out = d.toString().split('\n');
  const before = ESXI.split('\n');
  let lastDdb = -1;
  before.forEach((l, i) => {
    if (l.startsWith('ddb.')) lastDdb = i;
  });
  assert.equal(out.length, before.length + 1);
  assert.equal(out[lastDdb + 1], 'ddb.uuid.image = "11111111-2222-3333-4444-555555555555"');
  assert.deepEqual([...out.slice(0, lastDdb + 1), ...out.slice(lastDdb + 2)], before);
  // a descriptor with no ddb lines at all gets the key at the end
  const bare = '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="vmfs"\nRW 8 VMFS "x.vmdk"\n';
  const b = Descriptor.parse(bare);
  b.setDdb('adapterType', 'ide');
  assert.equal(b.toString(), bare + 'ddb.adapterType = "ide"\n');
});

test('a new header key goes into the header section, before the first extent line', () => {
  const d = Descriptor.parse(WORKSTATION);
  d.set('parentFileNameHint', 'base.vmdk');
  const out = d.toString().split('\n');
  const before = WORKSTATION.split('\n');
  const ct = before.findIndex((l) => l.startsWith('createType='));
  assert.equal(out.length, before.length + 1);
  assert.equal(out[ct + 1], 'parentFileNameHint="base.vmdk"');
  assert.deepEqual([...out.slice(0, ct + 1), ...out.slice(ct + 2)], before);
  assert.equal(Descriptor.parse(d.toString()).get('parentFileNameHint'), 'base.vmdk');
});

test(
  'a new header key lands before the extents even when changeTrackPath follows them (ESXi layout)',
  () => {
    const d = Descriptor.parse(ESXI);
    d.set('parentFileNameHint', 'base.vmdk');
    const out = d.toString().split('\n');
    const hint = out.findIndex((l) => l.startsWith('parentFileNameHint='));
    const firstExtent = out.findIndex((l) => l.startsWith('RW '));
    assert.ok(hint >= 0 && hint < firstExtent, `parentFileNameHint at line ${hint}, first extent at line ${firstExtent}`);
  },
);

test('values with quotes, line breaks or NUL are refused (INVAL) and leave the descriptor untouched', () => {
  const d = Descriptor.parse(ESXI);
  for (const bad of ['a"b', '"', 'x\ny', 'x\r', 'a\0b']) {
    assert.throws(() => d.set('createType', bad), isDiskError('INVAL'));
    assert.throws(() => d.set('brandNewKey', bad), isDiskError('INVAL'));
    assert.throws(() => d.setDdb('adapterType', bad), isDiskError('INVAL'));
    assert.throws(() => d.setDdb('brandNew', bad), isDiskError('INVAL'));
  }
  assert.throws(() => d.setDdb('bad key', 'x'), isDiskError('INVAL'));
  assert.throws(() => d.setDdb('a=b', 'x'), isDiskError('INVAL'));
  assert.equal(d.toString(), ESXI);
});

test('removeDdb removes only that line', () => {
  const d = Descriptor.parse(ESXI);
  assert.equal(d.removeDdb('ddb.thinProvisioned'), true);
  assert.equal(d.removeDdb('thinProvisioned'), false);
  assert.equal(d.toString(), ESXI.replace('ddb.thinProvisioned = "1"\n', ''));
});

test('broken descriptors raise DiskError with the right code, naming the file', () => {
  const path = '/images/broken.vmdk';
  const head = ['# Disk DescriptorFile', 'version=1', 'CID=12345678', 'parentCID=ffffffff', 'createType="monolithicFlat"'];
  const extent = 'RW 2048 FLAT "broken-flat.vmdk" 0';
  const cases: { name: string; text: string; code: ErrorCode; field?: string }[] = [
    { name: 'no extents', text: [...head, '', '#DDB', 'ddb.adapterType = "ide"'].join('\n'), code: 'BADDESCRIPTOR', field: 'extents' },
    { name: 'garbage line', text: [...head, extent, 'this is not a descriptor line'].join('\n'), code: 'BADDESCRIPTOR', field: 'line 7' },
    { name: 'binary garbage', text: [...head, extent, '\u0001\u0002\u00ff'].join('\n'), code: 'BADDESCRIPTOR' },
    { name: 'bad extent type', text: [...head, 'RW 2048 FLOPPY "broken-flat.vmdk"'].join('\n'), code: 'BADDESCRIPTOR', field: 'extent type' },
    { name: 'extent size 0', text: [...head, 'RW 0 FLAT "broken-flat.vmdk" 0'].join('\n'), code: 'BADDESCRIPTOR', field: 'extent size' },
    { name: 'extent without a file name', text: [...head, 'RW 2048 FLAT'].join('\n'), code: 'BADDESCRIPTOR', field: 'extent file name' },
    { name: 'extent size beyond 2^53', text: [...head, 'RW 99999999999999999999 FLAT "x" 0'].join('\n'), code: 'BADDESCRIPTOR', field: 'extent size' },
    { name: 'version=4', text: [head[0]!, 'version=4', ...head.slice(2), extent].join('\n'), code: 'UNSUPPORTEDDISKVERSION', field: 'version' },
    { name: 'version=0', text: [head[0]!, 'version=0', ...head.slice(2), extent].join('\n'), code: 'UNSUPPORTEDDISKVERSION', field: 'version' },
    { name: 'no createType', text: [...head.slice(0, 4), extent].join('\n'), code: 'BADDESCRIPTOR', field: 'createType' },
    { name: 'NUL in a line', text: [...head, extent, 'ddb.x = "a\0b"'].join('\n'), code: 'BADDESCRIPTOR' },
    { name: 'too large', text: [...head, extent, ...Array.from({ length: 40000 }, () => '#'.repeat(30))].join('\n'), code: 'BADDESCRIPTOR', field: 'descriptor' },
  ];
  for (const c of cases) {
    assert.throws(
      () => Descriptor.parse(c.text, path),
      isDiskError(c.code, (e) => {
        assert.equal(e.details.path, path, c.name);
        assert.ok(e.message.includes(path), `${c.name}: message names the file: ${e.message}`);
        if (c.field) assert.equal(e.details.field, c.field, `${c.name}: field`);
      }),
      c.name,
    );
  }
});

test('build() writes the order every reader accepts and parses back', () => {
  const d = Descriptor.build({
    cid: 0x1a2b3c4d,
    createType: 'twoGbMaxExtentFlat',
    extents: [
      { access: 'RW', sectorCount: 4192256, type: 'FLAT', fileName: 'b-f001.vmdk', offsetSectors: 0 },
      { access: 'RW', sectorCount: 100, type: 'FLAT', fileName: 'b-f002.vmdk', offsetSectors: 0 },
    ],
    ddb: [
      ['adapterType', 'lsilogic'],
      ['virtualHWVersion', '4'],
    ],
  });
  assert.equal(
    d.toString(),
    [
      '# Disk DescriptorFile',
      'version=1',
      'encoding="UTF-8"',
      'CID=1a2b3c4d',
      'parentCID=ffffffff',
      'createType="twoGbMaxExtentFlat"',
      '',
      '# Extent description',
      'RW 4192256 FLAT "b-f001.vmdk" 0',
      'RW 100 FLAT "b-f002.vmdk" 0',
      '',
      '# The Disk Data Base',
      '#DDB',
      '',
      'ddb.adapterType = "lsilogic"',
      'ddb.virtualHWVersion = "4"',
      '',
    ].join('\n'),
  );
  assert.throws(() => Descriptor.build({ cid: 1, createType: 'vmfs', extents: [{ access: 'RW', sectorCount: 1, type: 'VMFS', fileName: 'a"b', offsetSectors: 0 }], ddb: [] }), isDiskError('INVAL'));
});

test('formatExtent: FLAT keeps its offset, VMFS has none, ZERO has no name; hex8 pads', () => {
  assert.equal(formatExtent({ access: 'RW', sectorCount: 10, type: 'FLAT', fileName: 'f.vmdk', offsetSectors: 7 }), 'RW 10 FLAT "f.vmdk" 7');
  assert.equal(formatExtent({ access: 'RW', sectorCount: 10, type: 'VMFS', fileName: 'f.vmdk', offsetSectors: 7 }), 'RW 10 VMFS "f.vmdk"');
  assert.equal(formatExtent({ access: 'NOACCESS', sectorCount: 10, type: 'ZERO', offsetSectors: 0 }), 'NOACCESS 10 ZERO');
  assert.equal(formatExtent({ access: 'RDONLY', sectorCount: 10, type: 'SPARSE', fileName: 's.vmdk', offsetSectors: 0 }), 'RDONLY 10 SPARSE "s.vmdk"');
  assert.equal(hex8(0xf9287b2), '0f9287b2');
  assert.equal(hex8(0xffffffff), 'ffffffff');
});

test('looksLikeDescriptor: signature line, or version= after comments', () => {
  assert.equal(looksLikeDescriptor(Buffer.from(ESXI)), true);
  assert.equal(looksLikeDescriptor(Buffer.from(QEMU.replace(/\n/g, '\r\n'))), true);
  assert.equal(looksLikeDescriptor(Buffer.from('#comment\nversion=1\ncreateType="vmfs"\n')), true);
  assert.equal(looksLikeDescriptor(Buffer.from('hello world\n')), false);
  assert.equal(looksLikeDescriptor(Buffer.alloc(512)), false);
  assert.equal(looksLikeDescriptor(Buffer.from('version=1\n')), false, 'version= alone (no createType) is not enough');
});
