/**
 * Partition tables and LVM from hand-built bytes (test/helpers/inside-builders.ts): MBR with an
 * EBR chain, GPT in 512- and 4096-byte sectors with its backup, damaged and hostile tables, the
 * LVM2 metadata text grammar, and linear and striped LVs read back through volumeSource.
 * test/interop/partitions.test.ts checks the same parsers against sfdisk, sgdisk, mmls and blkid.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 } from '../../src/binary/crc32.js';
import { DiskError } from '../../src/core/errors.js';
import { listVolumes, readPartitionTable, volumeSource } from '../../src/inside/volumes.js';
import { MAX_LOGICAL } from '../../src/inside/partitions/mbr.js';
import { parseLvmText } from '../../src/inside/lvm/text.js';
import type { ByteSource } from '../../src/inside/source.js';
import { buildGpt, lvmDashed, lvmId, memSource, resealGptHeader, writeMbr, writePv } from '../helpers/inside-builders.js';

const LINUX = '0fc63daf-8483-4772-8e79-3d69d8477de4';
const ESP = 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b';
const LVM = 'e6d6d379-f507-44c2-a23c-238f2a3df928';
const UNKNOWN = '01234567-89ab-4cde-8f01-23456789abcd';

function rejects(code: string, field: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof DiskError, `a DiskError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(String(err.details.field), field);
    return true;
  };
}

test('CRC-32 (IEEE) check value', () => {
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  assert.equal(crc32(Buffer.from('56789'), crc32(Buffer.from('1234'))), 0xcbf43926);
});

function mbrDisk(): Buffer {
  const d = Buffer.alloc(8192 * 512);
  writeMbr(d, 0, [{ type: 0x83, lba: 2048, sectors: 1024, status: 0x80 }, { type: 0x05, lba: 4096, sectors: 4000 }]);
  writeMbr(d, 4096 * 512, [{ type: 0x07, lba: 63, sectors: 500 }, { type: 0x05, lba: 1000, sectors: 600 }]);
  writeMbr(d, 5096 * 512, [{ type: 0x82, lba: 63, sectors: 400 }]);
  return d;
}

test('MBR: primaries, the extended partition and its logicals in chain order, numbered as Linux does', async () => {
  const { table, warnings } = await readPartitionTable(memSource(mbrDisk()));
  assert.equal(table?.scheme, 'mbr');
  assert.equal(table?.diskId, '12345678');
  assert.deepEqual(
    table?.partitions.map((p) => [p.number, p.kind, p.offset / 512, p.length / 512, p.type, p.bootable]),
    [
      [1, 'primary', 2048, 1024, '0x83', true],
      [2, 'extended', 4096, 4000, '0x05', false],
      [5, 'logical', 4096 + 63, 500, '0x07', false],
      [6, 'logical', 5096 + 63, 400, '0x82', false],
    ],
  );
  assert.equal(table?.partitions[3]?.typeName, 'Linux swap / Solaris');
  assert.deepEqual(warnings, []);
});

test('MBR: an EBR chain that loops is a DiskError naming the link field, read in a few sectors', async () => {
  const d = mbrDisk();
  writeMbr(d, 5096 * 512, [{ type: 0x82, lba: 63, sectors: 400 }, { type: 0x05, lba: 0, sectors: 600 }]);
  const src = memSource(d);
  await assert.rejects(readPartitionTable(src), rejects('INVALIDPARTITIONTABLE', /^entry\[1\]\.lbaFirst$/));
  assert.ok(src.bytesRead <= 4 * 512, `read ${src.bytesRead} bytes`);
});

test('MBR: an endless chain of distinct EBRs stops at MAX_LOGICAL with a DiskError, memory and reads bounded', async () => {
  const extStart = 2048;
  // every sector from extStart on is an EBR linking to the next one: made on demand, never stored
  let reads = 0;
  const src: ByteSource = {
    capacity: 2 ** 40,
    async read(offset, length) {
      reads++;
      const b = Buffer.alloc(length);
      if (offset === 0) writeMbr(b, 0, [{ type: 0x0f, lba: extStart, sectors: 0xfffffff0 }]);
      else {
        const k = offset / 512 - extStart;
        writeMbr(b, 0, [{ type: 0x83, lba: 1, sectors: 1 }, { type: 0x05, lba: k + 1, sectors: 2 }]);
      }
      return b;
    },
  };
  const t0 = process.cpuUsage();
  await assert.rejects(readPartitionTable(src), rejects('INVALIDPARTITIONTABLE', /^entry\[1\]\.lbaFirst$/));
  const cpu = process.cpuUsage(t0);
  assert.ok(reads <= MAX_LOGICAL + 2, `${reads} reads`);
  assert.ok((cpu.user + cpu.system) / 1e6 < 1, 'under a second of CPU');
});

test('MBR: an EBR past the disk end, or without its signature, ends the chain with a warning', async () => {
  const d = mbrDisk();
  writeMbr(d, 5096 * 512, [{ type: 0x82, lba: 63, sectors: 400 }, { type: 0x05, lba: 900000, sectors: 600 }]);
  const { table, warnings } = await readPartitionTable(memSource(d));
  assert.equal(table?.partitions.length, 4);
  assert.ok(warnings.some((w) => w.struct === 'EBR' && /past the disk end/.test(w.text)), JSON.stringify(warnings));
});

test('MBR: a FAT or NTFS boot sector (55 AA, no table) is not read as a partition table', async () => {
  const d = Buffer.alloc(1024 * 1024);
  d[0] = 0xeb;
  d.write('NTFS    ', 3, 'latin1');
  d.fill(0x33, 446, 510); // boot code where the entries would be
  d.writeUInt16LE(0xaa55, 510);
  assert.equal((await readPartitionTable(memSource(d))).table, undefined);
});

for (const ss of [512, 4096] as const) {
  const sectors = (8 * 1024 * 1024) / ss;
  const parts = [
    { type: ESP, first: 256, last: 511, name: 'EFI system' },
    { type: LINUX, first: 512, last: 1023, name: 'root ✓', attributes: 4n },
    { type: UNKNOWN, first: 1024, last: 1279, name: 'mystery', slot: 5 },
  ];
  const expected = [
    [1, 256 * ss, 256 * ss, ESP, 'EFI System', 'EFI system'],
    [2, 512 * ss, 512 * ss, LINUX, 'Linux filesystem', 'root ✓'],
    [6, 1024 * ss, 256 * ss, UNKNOWN, undefined, 'mystery'],
  ];
  const shape = (t: Awaited<ReturnType<typeof readPartitionTable>>['table']) => t?.partitions.map((p) => [p.number, p.offset, p.length, p.type, p.typeName, p.name]);

  test(`GPT, ${ss}-byte sectors: found by trying both sizes; unknown type GUIDs kept; numbers by entry slot`, async () => {
    const { table, warnings } = await readPartitionTable(memSource(buildGpt({ sectorSize: ss, sectors, parts })));
    assert.equal(table?.scheme, 'gpt');
    assert.equal(table?.sectorSize, ss);
    assert.equal(table?.header, 'primary');
    assert.equal(table?.mbr, 'protective');
    assert.equal(table?.diskId, '11111111-2222-4333-8444-555555555555');
    assert.deepEqual(shape(table), expected);
    assert.equal(table?.partitions[1]?.bootable, true);
    assert.deepEqual(warnings, []);
  });

  test(`GPT, ${ss}-byte sectors: a smashed primary (zeroed, bad CRC, bad array) reads from the backup with a warning`, async () => {
    const cases: [string, (d: Buffer) => void, RegExp][] = [
      ['zeroed', (d) => d.fill(0, ss, 2 * ss), /^signature$/],
      ['header CRC', (d) => (d[ss + 60] ^= 1), /^headerCrc32$/],
      ['entry array', (d) => (d[2 * ss + 40] ^= 1), /^partitionEntryArrayCrc32$/],
    ];
    for (const [what, smash, field] of cases) {
      const d = buildGpt({ sectorSize: ss, sectors, parts });
      smash(d);
      const { table, warnings } = await readPartitionTable(memSource(d));
      assert.equal(table?.header, 'backup', what);
      assert.deepEqual(shape(table), expected, what);
      const w = warnings.find((x) => x.struct === 'GPT header');
      assert.ok(w && field.test(String(w.field)), `${what}: ${JSON.stringify(warnings)}`);
    }
  });

  test(`GPT, ${ss}-byte sectors: a damaged backup beside a good primary is a warning`, async () => {
    const d = buildGpt({ sectorSize: ss, sectors, parts });
    d[d.length - ss + 70] ^= 0xff;
    const { table, warnings } = await readPartitionTable(memSource(d));
    assert.equal(table?.header, 'primary');
    assert.ok(warnings.some((w) => w.struct === 'GPT backup header' && w.field === 'headerCrc32'), JSON.stringify(warnings));
  });
}

test('GPT: both headers damaged is a DiskError naming the field', async () => {
  const d = buildGpt({ sectorSize: 512, sectors: 4096, parts: [{ type: LINUX, first: 64, last: 127 }] });
  d[512 + 60] ^= 1;
  d[d.length - 512 + 60] ^= 1;
  await assert.rejects(readPartitionTable(memSource(d)), rejects('INVALIDPARTITIONTABLE', /^headerCrc32$/));
});

test('GPT: a huge entry count (with good CRCs) is refused before the array is read', async () => {
  const d = buildGpt({ sectorSize: 512, sectors: 4096, parts: [{ type: LINUX, first: 64, last: 127 }] });
  for (const lba of [1, 4095]) {
    d.writeUInt32LE(0xffffffff, lba * 512 + 80);
    resealGptHeader(d, lba, 512);
  }
  const src = memSource(d);
  await assert.rejects(readPartitionTable(src), rejects('INVALIDPARTITIONTABLE', /^numberOfPartitionEntries$/));
  assert.ok(src.bytesRead < 64 * 1024, `read ${src.bytesRead} bytes`);
});

test('GPT: entries past the disk end, outside the usable sectors, or overlapping are warnings', async () => {
  const sectors = 4096;
  const d = buildGpt({
    sectorSize: 512,
    sectors,
    parts: [
      { type: LINUX, first: 64, last: 1000 },
      { type: LINUX, first: 900, last: 1100 },
      { type: LINUX, first: 4000, last: 9000 },
    ],
  });
  const { table, warnings } = await readPartitionTable(memSource(d));
  assert.equal(table?.partitions.length, 3);
  const texts = warnings.map((w) => w.text).join('\n');
  assert.match(texts, /partitions 1 and 2 overlap/);
  assert.match(texts, /partition 3 ends at byte 4608512, past the disk end/);
  assert.match(texts, /entry 3 .* outside the usable sectors/);
  assert.ok(warnings.some((w) => w.field === 'entry[2].lastLba' && /past the disk end/.test(w.text)));
  assert.ok(warnings.some((w) => w.field === 'entry[1].firstLba' && /overlap/.test(w.text)));
});

test('GPT: hybrid MBR, and a GPT whose protective MBR is gone', async () => {
  const parts = [{ type: LINUX, first: 64, last: 127 }];
  const hybrid = await readPartitionTable(memSource(buildGpt({ sectorSize: 512, sectors: 4096, parts, mbr: 'hybrid' })));
  assert.equal(hybrid.table?.mbr, 'hybrid');
  const none = await readPartitionTable(memSource(buildGpt({ sectorSize: 512, sectors: 4096, parts, mbr: 'none' })));
  assert.equal(none.table?.scheme, 'gpt');
  assert.ok(none.warnings.some((w) => /no protective MBR/.test(w.text)));
});

test('LVM metadata text: sections, lists, strings with escapes, comments', () => {
  const v = parseLvmText('# top\nvg0 {\n id = "a\\"b"\n seqno = 7\n status = ["READ", "WRITE"] # trailing\n pvs { pv0 { pe_start = 2048 } }\n stripes = [\n"pv0", 0,\n"pv1", 5\n]\n}\ncontents = "Text Format Volume Group"\n');
  const vg = v.vg0 as Record<string, unknown>;
  assert.equal(vg.id, 'a"b');
  assert.equal(vg.seqno, 7);
  assert.deepEqual(vg.status, ['READ', 'WRITE']);
  assert.deepEqual(vg.stripes, ['pv0', 0, 'pv1', 5]);
  assert.equal(((vg.pvs as Record<string, unknown>).pv0 as Record<string, unknown>).pe_start, 2048);
  assert.equal(v.contents, 'Text Format Volume Group');
  // keys that are Object.prototype names are plain keys
  assert.equal((parseLvmText('__proto__ = 1\nconstructor { x = 2 }\n') as Record<string, unknown>).__proto__, 1);
});

test('LVM metadata text: malformed text is a CORRUPT DiskError naming the line', () => {
  const bad = ['vg {\n id = "x\n', 'vg {\n id = \n}', 'vg {\n a = 1\n', '}\n', 'vg { x = [1, { }\n}', `${'a {'.repeat(100)}${'}'.repeat(100)}`, 'x = @'];
  for (const text of bad) {
    assert.throws(() => parseLvmText(text), (err: unknown) => err instanceof DiskError && err.code === 'CORRUPT' && /line \d+/.test(err.message), text);
  }
});

/** a disk with a GPT of two LVM partitions, each a PV of one VG (extent 32 KiB, data at 1 MiB of each) */
function lvmDisk(opts: { textOffset?: number; mdaSize?: number } = {}): { disk: Buffer; pvData: number[]; vgText: string } {
  const ss = 512;
  const sectors = 16384; // 8 MiB
  const parts = [
    { type: LVM, first: 2048, last: 2048 + 6143 },
    { type: LVM, first: 8192, last: 8192 + 6143 },
  ];
  const disk = buildGpt({ sectorSize: ss, sectors, parts });
  const ids = [lvmId(1), lvmId(2), lvmId(3)];
  const vgText = `vgx {
id = "${lvmDashed(lvmId(9))}"
seqno = 4
format = "lvm2"
status = ["RESIZEABLE", "READ", "WRITE"]
extent_size = 64
physical_volumes {
pv0 {
id = "${lvmDashed(ids[0]!)}"
dev_size = 6144
pe_start = 2048
pe_count = 64
}
pv1 {
id = "${lvmDashed(ids[1]!)}"
dev_size = 6144
pe_start = 2048
pe_count = 64
}
pv2 {
id = "${lvmDashed(ids[2]!)}"
dev_size = 6144
pe_start = 2048
pe_count = 64
}
}
logical_volumes {
lin {
id = "lin-id"
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 2
segment2 {
start_extent = 2
extent_count = 1
type = "striped"
stripe_count = 1
stripes = ["pv1", 10]
}
segment1 {
start_extent = 0
extent_count = 2
type = "striped"
stripe_count = 1
stripes = ["pv0", 3]
}
}
str {
id = "str-id"
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 1
segment1 {
start_extent = 0
extent_count = 4
type = "striped"
stripe_count = 2
stripe_size = 8
stripes = ["pv0", 20, "pv1", 30]
}
}
away {
id = "away-id"
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 1
segment1 {
start_extent = 0
extent_count = 1
type = "striped"
stripe_count = 1
stripes = ["pv2", 0]
}
}
hidden_tmeta {
id = "h-id"
status = ["READ", "WRITE"]
segment_count = 1
segment1 {
start_extent = 0
extent_count = 1
type = "striped"
stripe_count = 1
stripes = ["pv0", 60]
}
}
}
}
# Generated by hand
contents = "Text Format Volume Group"
version = 1
`;
  const pvAt = parts.map((p) => p.first * ss);
  pvAt.forEach((at, i) => writePv(disk, at, { id: ids[i]!, size: 6144 * 512, text: vgText, ...opts }));
  // every 4-byte word of a PV's data area says which PV and which byte it is
  const pvData = pvAt.map((at) => at + 2048 * 512);
  pvData.forEach((start, pv) => {
    for (let o = 0; o + 4 <= 2 * 1024 * 1024 && start + o + 4 <= pvAt[pv]! + 6144 * 512; o += 4) disk.writeUInt32LE((pv << 28) | o, start + o);
  });
  return { disk, pvData, vgText };
}

test('LVM: linear and striped LVs over two PVs map to the bytes the LVM layout puts them at', async () => {
  const { disk, pvData } = lvmDisk();
  const src = memSource(disk);
  const layout = await listVolumes(src);
  assert.deepEqual(layout.volumes.slice(0, 2).map((v) => v.content?.type), ['LVM2_member', 'LVM2_member']);
  assert.equal(layout.volumeGroups.length, 1);
  const vg = layout.volumeGroups[0]!;
  assert.equal(vg.name, 'vgx');
  assert.equal(vg.extentSize, 32768);
  assert.deepEqual(vg.pvs.map((p) => p.offset), [2048 * 512, 8192 * 512, undefined]);
  assert.deepEqual(vg.lvs.map((l) => [l.name, l.layout, l.complete, l.length]), [
    ['lin', 'linear', true, 3 * 32768],
    ['str', 'striped', true, 4 * 32768],
    ['away', 'linear', false, 32768],
  ]);
  assert.ok(layout.warnings.some((w) => /pv2, which is not on this disk/.test(w.text)), JSON.stringify(layout.warnings));
  assert.deepEqual(layout.volumes.map((v) => v.id), ['1', '2', 'vgx/lin', 'vgx/str', 'vgx/away']);

  const E = 32768;
  const word = (pv: number, at: number) => ((pv << 28) | at) >>> 0;
  // lin: extents 3,4 of pv0 then extent 10 of pv1
  const lin = volumeSource(src, vg.lvs[0]!);
  const linBytes = await lin.read(0, 3 * E);
  for (let o = 0; o < 3 * E; o += 4096) {
    const want = o < 2 * E ? word(0, 3 * E + o) : word(1, 10 * E + (o - 2 * E));
    assert.equal(linBytes.readUInt32LE(o), want, `lin byte ${o}`);
  }
  // str: 4 KiB chunks alternating pv0 (from extent 20) and pv1 (from extent 30)
  const str = volumeSource(src, vg.lvs[1]!);
  const chunk = 8 * 512;
  for (let o = 0; o < 4 * E; o += 1024) {
    const c = Math.floor(o / chunk);
    const pv = c % 2;
    const phys = (pv === 0 ? 20 : 30) * E + Math.floor(c / 2) * chunk + (o % chunk);
    const got = (await str.read(o, 8)).readUInt32LE(0);
    assert.equal(got, word(pv, phys), `str byte ${o}`);
  }
  // a read across chunk boundaries joins the pieces
  const across = await str.read(chunk - 4, 8);
  assert.deepEqual([across.readUInt32LE(0), across.readUInt32LE(4)], [word(0, 20 * E + chunk - 4), word(1, 30 * E)]);
  assert.ok(pvData.length === 2);
});

test('LVM: metadata text that wraps round the ring is read whole', async () => {
  const { disk, vgText } = lvmDisk({ mdaSize: 64 * 1024, textOffset: 64 * 1024 - 700 });
  assert.ok(vgText.length > 700);
  const layout = await listVolumes(memSource(disk));
  assert.deepEqual(layout.warnings.filter((w) => /CRC/.test(w.text)), []);
  assert.equal(layout.volumeGroups[0]?.lvs.length, 3);
});

test('LVM: a damaged label CRC is a warning; a metadata text size past its area is a DiskError', async () => {
  const { disk } = lvmDisk();
  disk[2048 * 512 + 512 + 40] ^= 1; // inside the label's CRC-covered bytes (the PV uuid)
  const l1 = await listVolumes(memSource(disk));
  assert.ok(l1.warnings.some((w) => w.struct === 'LVM label' && w.field === 'crc'), JSON.stringify(l1.warnings));

  const { disk: d2 } = lvmDisk();
  const mda = 2048 * 512 + 4096;
  d2.writeBigUInt64LE(1n << 40n, mda + 48); // raw location size
  await assert.rejects(listVolumes(memSource(d2)), rejects('CORRUPT', /^size$/));
});
