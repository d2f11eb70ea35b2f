/**
 * mkimg's library: tables read back by vdkit's own readers (GPT with 4096-byte sectors, EBR
 * chains, names, attributes), the type aliases, contents from a stream, a 1 TiB GPT that stays
 * sparse and is built in little CPU time, and the layout errors, each naming its field.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, DiskError, mkimg, readPartitionTable } from '../../src/index.js';
import { MemoryNamespace } from '../../src/storage/memory.js';
import { partitionTypeFor } from '../../src/inside/partitions/type-names.js';
import { planLayout } from '../../src/ops/mkimg/layout.js';
import { tmpDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

async function* chunks(parts: Buffer[]): AsyncIterable<Buffer> {
  for (const p of parts) yield p;
}

async function tableOf(ns: MemoryNamespace, name: string) {
  const d = await Disk.open(name, { namespace: ns, readOnly: true });
  try {
    return await readPartitionTable(d);
  } finally {
    await d.close();
  }
}

test('mkimg type names: mkimg aliases per scheme, MBR hex ids, GPT GUIDs; unknown and scheme-less types are undefined', () => {
  assert.equal(partitionTypeFor('freebsd-ufs', 'gpt'), '516e7cb6-6ecf-11d6-8ff8-00022d09712b');
  assert.equal(partitionTypeFor('freebsd-ufs', 'mbr'), undefined);
  assert.equal(partitionTypeFor('freebsd', 'mbr'), 0xa5);
  assert.equal(partitionTypeFor('EFI', 'mbr'), 0xef);
  assert.equal(partitionTypeFor('fat32', 'gpt'), 'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7');
  assert.equal(partitionTypeFor('linux-lvm', 'mbr'), 0x8e);
  assert.equal(partitionTypeFor('bios-boot', 'gpt'), '21686148-6449-6e6f-744e-656564454649');
  assert.equal(partitionTypeFor('0x83', 'mbr'), 0x83);
  assert.equal(partitionTypeFor('fd', 'mbr'), 0xfd);
  assert.equal(partitionTypeFor('{0FC63DAF-8483-4772-8E79-3D69D8477DE4}', 'gpt'), '0fc63daf-8483-4772-8e79-3d69d8477de4');
  assert.equal(partitionTypeFor('0x83', 'gpt'), undefined);
  assert.equal(partitionTypeFor('00000000-0000-0000-0000-000000000000', 'gpt'), undefined, 'the null GUID marks an unused entry');
  assert.equal(partitionTypeFor('0', 'mbr'), undefined, 'id 0 marks an unused entry');
  assert.equal(partitionTypeFor('no-such', 'gpt'), undefined);
});

test('mkimg gpt with 4096-byte sectors: vdkit reads it back (header, names, attributes, unique GUIDs); contents from a stream', async () => {
  const ns = new MemoryNamespace();
  const data = Buffer.alloc(200 * 1024);
  data.fill(0x5a, 70000, 90000);
  const r = await mkimg({
    scheme: 'gpt',
    sectorSize: 4096,
    partitions: [
      { type: 'efi', label: 'EFI system partition', contents: { size: 2 * MiB } },
      { type: 'ms-basic-data', label: 'Données', uuid: '11111111-2222-4333-8444-555555555555', contents: { stream: chunks([data.subarray(0, 1000), data.subarray(1000)]) } },
    ],
    active: 2,
    diskId: '01234567-89ab-4cde-8f01-23456789abcd',
    namespace: ns,
    output: 'g.raw',
  });
  assert.equal(r.sectorSize, 4096);
  // 6 sectors of header and array in front, 5 behind: the partitions at 1 MiB and 3 MiB
  assert.deepEqual(r.partitions.map((p) => [p.offset, p.length]), [[MiB, 2 * MiB], [3 * MiB, 200 * 1024]]);
  assert.equal(r.capacity, 3 * MiB + 200 * 1024 + 5 * 4096);
  const { table, warnings } = await tableOf(ns, 'g.raw');
  assert.deepEqual(warnings, []);
  assert.equal(table?.scheme, 'gpt');
  assert.equal(table?.sectorSize, 4096);
  assert.equal(table?.mbr, 'protective');
  assert.equal(table?.diskId, '01234567-89ab-4cde-8f01-23456789abcd');
  assert.equal(table?.firstUsable, 6 * 4096);
  assert.equal(table?.lastUsable, r.capacity - 5 * 4096 - 1);
  assert.deepEqual(
    table?.partitions.map((p) => [p.number, p.offset, p.length, p.typeName, p.name, p.bootable]),
    [
      [1, MiB, 2 * MiB, 'EFI System', 'EFI system partition', false],
      [2, 3 * MiB, 200 * 1024, 'Microsoft basic data', 'Données', true],
    ],
  );
  assert.equal(table?.partitions[1]?.uuid, '11111111-2222-4333-8444-555555555555');
  const d = await Disk.open('g.raw', { namespace: ns, readOnly: true });
  try {
    const got = Buffer.alloc(data.length);
    await d.readInto(got, 3 * MiB);
    assert.ok(got.equals(data), 'the stream\'s bytes at the partition');
  } finally {
    await d.close();
  }
  // only the 64 KiB blocks of the stream that hold data are written, beside the tables
  assert.ok(r.bytesWritten <= 2 * 65536 + 3 * 4096 * 6, `written ${r.bytesWritten}`);
});

test('mkimg ebr: vdkit reads the extended partition and its logicals (5.., the active one bootable) with no warning', async () => {
  const ns = new MemoryNamespace();
  const r = await mkimg({
    scheme: 'ebr',
    partitions: [
      { type: 'linux-data', contents: { size: MiB } },
      { type: 'linux-swap', contents: { size: 512 * 1024 } },
      { type: 'fat32lba', contents: { size: 3000 } },
    ],
    active: 3,
    align: 4096,
    heads: 16,
    sectorsPerTrack: 32,
    namespace: ns,
    output: 'e.raw',
  });
  const { table, warnings } = await tableOf(ns, 'e.raw');
  assert.deepEqual(warnings, []);
  assert.deepEqual(
    table?.partitions.map((p) => [p.number, p.kind, p.offset, p.length, p.type, p.bootable]),
    [
      [1, 'extended', 4096, r.capacity - 4096, '0x05', false],
      [5, 'logical', 8192, MiB, '0x83', false],
      [6, 'logical', 8192 + MiB + 4096, 512 * 1024, '0x82', false],
      [7, 'logical', 8192 + MiB + 4096 + 512 * 1024 + 4096, 3072, '0x0c', true],
    ],
  );
  // CHS by the geometry given: the first logical's start, LBA 16, is cylinder 0, head 0, sector 17
  const d = await Disk.open('e.raw', { namespace: ns, readOnly: true });
  try {
    const ebr = Buffer.alloc(512);
    await d.readInto(ebr, 4096);
    assert.deepEqual([...ebr.subarray(446 + 1, 446 + 4)], [0, 17, 0]);
  } finally {
    await d.close();
  }
});

test('mkimg: a 1 TiB GPT with two small partitions builds in < 2 s of CPU time and stays sparse (raw and qcow2)', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-mkimg-tib-')).path;
  for (const format of ['raw', 'qcow2']) {
    const out = join(dir, `big.${format}`);
    const before = process.cpuUsage();
    const r = await mkimg({
      scheme: 'gpt',
      capacity: 2 ** 40,
      partitions: [
        { type: 'efi', contents: { stream: chunks([Buffer.alloc(MiB, 1)]) } },
        { type: 'linux-data', contents: { size: 4 * MiB } },
      ],
      format,
      output: out,
    });
    const used = process.cpuUsage(before);
    const cpuSeconds = (used.user + used.system) / 1e6;
    t.diagnostic(`${format}: ${cpuSeconds.toFixed(3)} s CPU, ${r.bytesWritten} bytes written`);
    assert.ok(cpuSeconds < 2, `${format}: ${cpuSeconds} s of CPU`);
    assert.equal(r.capacity, 2 ** 40);
    const st = await stat(out);
    assert.ok(st.blocks * 512 < 8 * MiB, `${format}: ${st.blocks * 512} bytes allocated`);
    const d = await Disk.open(out, { readOnly: true });
    try {
      assert.equal(d.capacity, 2 ** 40);
      const { table, warnings } = await readPartitionTable(d);
      assert.deepEqual(warnings, [], 'the backup header at the last LBA is good too');
      assert.equal(table?.lastUsable, 2 ** 40 - 33 * 512 - 1);
      assert.deepEqual(table?.partitions.map((p) => [p.offset, p.length]), [[MiB, MiB], [2 * MiB, 4 * MiB]]);
    } finally {
      await d.close();
    }
  }
});

test('mkimg: layout errors are DiskErrors naming the partition and field', async () => {
  const ns = new MemoryNamespace();
  const expectErr = async (opts: Parameters<typeof mkimg>[0], field: string, text: RegExp) => {
    await assert.rejects(mkimg({ namespace: ns, ...opts }), (e: unknown) => {
      assert.ok(e instanceof DiskError, String(e));
      assert.equal(e.details.field, field, e.message);
      assert.match(e.message, text);
      return true;
    });
  };
  const one = (type: string, size = MiB) => ({ type, contents: { size } });
  await expectErr({ scheme: 'gpt', partitions: [{ ...one('linux-data'), label: 'x'.repeat(37) }], output: 'a' }, 'entry[0].name', /longer than 36/);
  await expectErr({ scheme: 'gpt', partitions: [one('linux-data')], bootcode: Buffer.alloc(513), output: 'a' }, 'bootcode', /513 bytes/);
  await expectErr({ scheme: 'mbr', partitions: [one('linux-data'), 'skip'], active: 2, output: 'a' }, 'active', /not one of the partitions/);
  await expectErr({ scheme: 'mbr', partitions: [one('linux-data', 2 ** 41 + MiB)], output: 'a', format: 'qcow2' }, 'entry[0].sectors', /32 bits/);
  await expectErr({ scheme: 'mbr', partitions: [one('linux-data', 0)], output: 'a' }, 'partitions[0].contents.size', /above 0/);
  await expectErr({ scheme: 'gpt', partitions: [{ type: 'linux-data', contents: { stream: chunks([]) } }], output: 'a' }, 'partitions[0].length', /partition 1 is empty/);
  await expectErr({ scheme: 'mbr', partitions: [one('ms-reserved')], output: 'a' }, 'partitions[0].type', /not an MBR partition type/);
  await expectErr({ scheme: 'gpt', partitions: [one('linux-data'), one('linux-data')], maxCapacity: 3 * MiB, output: 'a' }, 'partitions[1]', /partition 2 ends at byte 3145728 \(and the backup GPT after it at 3162624\), past the disk's 3145728 bytes/);
  await expectErr({ scheme: 'gpt', partitions: [one('linux-data')], align: 1000, output: 'a' }, 'align', /whole number of 512-byte sectors/);
  await expectErr({ scheme: 'gpt', partitions: [one('linux-data')], sectorSize: 1024, output: 'a' }, 'sectorSize', /512 or 4096/);
  await expectErr({ scheme: 'gpt', partitions: [one('linux-data')], diskId: 'nope', output: 'a' }, 'diskGuid', /not a GUID/);
  await expectErr({ scheme: 'gpt', partitions: [{ type: 'linux-data', contents: { stream: chunks([Buffer.alloc(200000, 1)]) } }], streamLimit: 100000, output: 'a' }, 'partitions[0].contents', /more than 100000 bytes of data/);
  assert.equal(await ns.exists('a'), false, 'nothing is left behind');
});

test('mkimg: -P rounds sizes and starts to the physical sector; -c grows the disk; a stop before the copy leaves no output', async () => {
  const l = planLayout({ scheme: 'mbr', entries: [{ type: 'linux-data', length: 1000 }, { type: 'linux-data', length: 5000 }], physicalSectorSize: 4096, align: 512 });
  assert.deepEqual(l.partitions.map((p) => [p.offset, p.length]), [[4096, 4096], [8192, 8192]]);
  const g = planLayout({ scheme: 'mbr', entries: [{ type: 'linux-data', length: MiB }], capacity: 10 * MiB + 1 });
  assert.equal(g.capacity, 10 * MiB + 512, 'rounded up to whole sectors');
  const ns = new MemoryNamespace();
  const ac = new AbortController();
  ac.abort(new Error('stop'));
  await assert.rejects(mkimg({ scheme: 'gpt', partitions: [{ type: 'linux-data', contents: { stream: chunks([Buffer.alloc(10, 1)]) } }], output: 's.raw', namespace: ns, signal: ac.signal }), (e: unknown) => e instanceof DiskError && e.code === 'CANCELLED');
  assert.equal(await ns.exists('s.raw'), false);
});

test('mkimg: an image as contents is its virtual disk, copied by its allocation (a qcow2 of 64 MiB with 128 KiB written)', async () => {
  const ns = new MemoryNamespace();
  const part = await Disk.create('p.qcow2', { format: 'qcow2', capacity: 64 * MiB, namespace: ns });
  const data = Buffer.alloc(128 * 1024, 0xc3);
  await part.write(40 * MiB, data);
  await part.close();
  const r = await mkimg({ scheme: 'mbr', partitions: [{ type: 'linux-data', contents: { image: 'p.qcow2' } }], format: 'vdi', output: 'd.vdi', namespace: ns });
  assert.deepEqual(r.partitions.map((p) => [p.offset, p.length]), [[MiB, 64 * MiB]]);
  // the MBR's sector and the 128 KiB: nothing of the 64 MiB the qcow2 does not hold
  assert.ok(r.bytesWritten <= 2 * MiB, `written ${r.bytesWritten}`);
  const d = await Disk.open('d.vdi', { namespace: ns, readOnly: true });
  try {
    const got = Buffer.alloc(data.length + 4096);
    await d.readInto(got, MiB + 40 * MiB - 2048);
    assert.ok(got.subarray(2048, 2048 + data.length).equals(data));
    assert.ok(got.subarray(0, 2048).every((b) => b === 0) && got.subarray(2048 + data.length).every((b) => b === 0));
    const { table } = await readPartitionTable(d);
    assert.equal(table?.partitions[0]?.type, '0x83');
  } finally {
    await d.close();
  }
});
