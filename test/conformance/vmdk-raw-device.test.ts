/**
 * Raw-device VMDKs (issue 15 item 5): a descriptor whose extents name a device or partition
 * (VMware's fullDevice, VirtualBox's VBOXHDDRAW, ESX raw device mappings with VMFSRDM / VMFSRAW
 * extents). Made only on request (CreateOptions.rawDevice, `vdkit create --raw-device`), opened
 * only on request (OpenOptions.allowRawDevice, `--allow-raw-device`); refused otherwise with
 * NOTSUPPORTED naming the option. A regular file outside the descriptor's folder stands in for
 * the device (QEMU and libvmdk do not read fullDevice descriptors: there is no outside oracle).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk } from '../../src/index.js';
import { expectFailure } from '../corpus/support.js';
import { describeRun, runVdkit, tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;

async function setup(t: Parameters<typeof tmpDir>[0]): Promise<{ dir: string; dev: string; content: Buffer }> {
  const dir = (await tmpDir(t, 'vdkit-rawdev-')).path;
  await mkdir(join(dir, 'devices'));
  await mkdir(join(dir, 'vm'));
  const dev = join(dir, 'devices', 'sdz');
  const content = Buffer.alloc(3 * MiB);
  for (let i = 0; i < content.length; i += 4096) content.writeUInt32LE(i, i);
  writeFileSync(dev, content);
  return { dir, dev, content };
}

test('create with rawDevice: a fullDevice descriptor with one FLAT extent naming the device; nothing written to the device', async (t) => {
  const { dir, dev, content } = await setup(t);
  const p = join(dir, 'vm', 'raw.vmdk');
  const d = await Disk.create(p, { format: 'vmdk', capacity: 0, rawDevice: dev });
  try {
    assert.equal(d.capacity, content.length, 'capacity 0: the whole device');
    assert.equal(d.type, 'fullDevice');
    assert.ok((await d.read(0, content.length)).equals(content), 'the disk is the device');
  } finally {
    await d.close();
  }
  assert.ok(readFileSync(dev).equals(content), 'create wrote nothing to the device');
  const text = readFileSync(p, 'utf8');
  assert.match(text, /createType="fullDevice"/);
  assert.ok(text.includes(`RW ${content.length / 512} FLAT "${dev}" 0`), text);

  // a capacity smaller than the device is allowed; larger or not whole sectors is not
  const part = join(dir, 'vm', 'part.vmdk');
  await (await Disk.create(part, { format: 'vmdk', capacity: MiB, rawDevice: dev })).close();
  for (const capacity of [content.length + 512, 1000]) {
    const bad = join(dir, 'vm', `bad${capacity}.vmdk`);
    await expectFailure(() => Disk.create(bad, { format: 'vmdk', capacity, rawDevice: dev }), { code: 'INVAL', path: dev, field: 'capacity' });
  }
  // a character device is no disk
  const z = join(dir, 'vm', 'zero.vmdk');
  await expectFailure(() => Disk.create(z, { format: 'vmdk', capacity: 0, rawDevice: '/dev/zero' }), { code: 'INVALIDDISK', path: '/dev/zero' });
});

test('without the opt-in: type fullDevice is refused at create, and opening one is refused (NOTSUPPORTED naming the option)', async (t) => {
  const { dir, dev, content } = await setup(t);
  const p = join(dir, 'vm', 'raw.vmdk');
  await expectFailure(() => Disk.create(p, { format: 'vmdk', type: 'fullDevice', capacity: MiB }), { code: 'NOTSUPPORTED', path: p, field: 'rawDevice' });
  await (await Disk.create(p, { format: 'vmdk', capacity: 0, rawDevice: dev })).close();
  await expectFailure(() => Disk.open(p), { code: 'NOTSUPPORTED', path: p, field: 'allowRawDevice' });
  await expectFailure(() => Disk.open(p, { readOnly: true }), { code: 'NOTSUPPORTED', path: p, field: 'allowRawDevice' });
  // allowExternalExtents is not that opt-in
  await expectFailure(() => Disk.open(p, { readOnly: true, allowExternalExtents: true }), { code: 'NOTSUPPORTED', path: p, field: 'allowRawDevice' });

  // with it: reads and writes go to the device
  const d = await Disk.open(p, { allowRawDevice: true });
  const data = Buffer.alloc(5000, 0x7e);
  try {
    assert.ok((await d.read(MiB, 4096)).equals(content.subarray(MiB, MiB + 4096)));
    await d.write(2 * MiB + 100, data);
  } finally {
    await d.close();
  }
  const now = readFileSync(dev);
  assert.ok(now.subarray(2 * MiB + 100, 2 * MiB + 100 + data.length).equals(data), 'the write reached the device');
  assert.ok(now.subarray(0, 2 * MiB).equals(content.subarray(0, 2 * MiB)), 'nothing else changed');
});

test('ESX raw device mappings (VMFSRDM, VMFSRAW) and partitionedDevice open with the opt-in and read the device', async (t) => {
  const { dir, dev, content } = await setup(t);
  const sectors = content.length / 512;
  const cases: [string, string[]][] = [
    ['vmfsRawDeviceMap', [`RW ${sectors} VMFSRDM "${dev}"`]],
    ['vmfsPassthroughRawDeviceMap', [`RW ${sectors} VMFSRAW "${dev}"`]],
    // a partition table device: two partitions of one device at their offsets
    ['partitionedDevice', [`RW 2048 FLAT "${dev}" 0`, `RW ${sectors - 2048} FLAT "${dev}" 2048`]],
  ];
  for (const [type, lines] of cases) {
    const p = join(dir, 'vm', `${type}.vmdk`);
    writeFileSync(p, ['# Disk DescriptorFile', 'version=1', 'CID=fffffffe', 'parentCID=ffffffff', `createType="${type}"`, '', ...lines, '', 'ddb.adapterType = "lsilogic"', ''].join('\n'));
    await expectFailure(() => Disk.open(p, { readOnly: true }), { code: 'NOTSUPPORTED', path: p, field: 'allowRawDevice' });
    const d = await Disk.open(p, { readOnly: true, allowRawDevice: true });
    try {
      assert.equal(d.capacity, content.length, type);
      assert.ok((await d.read(0, content.length)).equals(content), type);
    } finally {
      await d.close();
    }
  }
  // the opt-in does not open a regular monolithicFlat's extents outside its folder
  const flat = join(dir, 'vm', 'flat.vmdk');
  writeFileSync(flat, ['# Disk DescriptorFile', 'version=1', 'CID=fffffffe', 'parentCID=ffffffff', 'createType="monolithicFlat"', '', `RW ${sectors} FLAT "${dev}" 0`, ''].join('\n'));
  await expectFailure(() => Disk.open(flat, { readOnly: true, allowRawDevice: true }), { code: 'EXTERNALEXTENT', path: flat, field: 'extent file name' });
});

test('CLI: create --raw-device (size from the device), refused -t fullDevice without it, info only with --allow-raw-device', async (t) => {
  const { dir, dev, content } = await setup(t);
  const vm = join(dir, 'vm');
  const ok = ['create', '--raw-device', dev, 'raw.vmdk'];
  const r = await runVdkit(ok, vm);
  assert.equal(r.code, 0, describeRun('vdkit', ok, r));
  assert.match(r.stdout, new RegExp(`${content.length} bytes`));
  const refused = ['create', '-t', 'fullDevice', 'other.vmdk', '1M'];
  const f = await runVdkit(refused, vm);
  assert.notEqual(f.code, 0, describeRun('vdkit', refused, f));
  assert.match(f.stderr, /rawDevice|--raw-device/);
  const info = await runVdkit(['info', 'raw.vmdk'], vm);
  assert.notEqual(info.code, 0);
  assert.match(info.stderr, /allow-raw-device|allowRawDevice/);
  const allowed = ['info', '--allow-raw-device', '--json', 'raw.vmdk'];
  const i = await runVdkit(allowed, vm);
  assert.equal(i.code, 0, describeRun('vdkit', allowed, i));
  assert.equal(JSON.parse(i.stdout).capacity, content.length);
});
