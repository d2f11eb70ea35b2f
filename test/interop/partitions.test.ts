/**
 * `listVolumes` / `vdkit partitions` against the Debian tools on disks they built: sfdisk (MBR
 * with logical partitions), sgdisk (GPT), mkfs.* on partition-sized files spliced in, then
 * qemu-img convert to qcow2, vmdk and vhdx. The oracles: `sfdisk --json`, The Sleuth Kit's
 * `mmls`, `sgdisk -p` (for a GPT with a smashed primary, which mmls does not read from the
 * backup: it falls back to the protective MBR), and `blkid -p -O OFFSET -S SIZE` for every
 * filesystem's type, label and UUID. LUKS and ISO 9660 headers are written by hand (no
 * cryptsetup or mkisofs here) and compared with blkid too; LVM uses the dfvfs images in
 * ../shared/testdata/wild (pvcreate needs a block device).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, listVolumes, type DiskLayout } from '../../src/index.js';
import { bunzip, describeRun, haveTestdata, repoRoot, run, runVdkit, skipUnless, tmpDir } from '../helpers/tools.js';

const S = 512;
const MiB = 1024 * 1024;

async function ok(cmd: string, args: string[], opts: { input?: string } = {}): Promise<string> {
  if (opts.input !== undefined) {
    // sfdisk reads its script from stdin: the script goes through the environment to printf, never into the command line
    const r = await run('sh', ['-c', `printf '%s' "$SCRIPT" | ${cmd} ${args.map((a) => `'${a}'`).join(' ')}`], { env: { ...process.env, SCRIPT: opts.input } });
    assert.equal(r.code, 0, describeRun(cmd, args, r));
    return r.stdout;
  }
  const r = await run(cmd, args);
  assert.equal(r.code, 0, describeRun(cmd, args, r));
  return r.stdout;
}

/** make a filesystem in a file of `sectors` and copy its non-zero 64 KiB blocks into `img` at `start` (keeps the image sparse) */
async function mkfsInto(dir: string, img: string, start: number, sectors: number, cmd: string, args: (file: string) => string[]): Promise<void> {
  const part = join(dir, `part-${start}.img`);
  await ok('truncate', ['-s', String(sectors * S), part]);
  await ok(cmd, args(part));
  const data = await readFile(part);
  const fh = await open(img, 'r+');
  try {
    for (let o = 0; o < data.length; o += 65536) {
      const b = data.subarray(o, o + 65536);
      if (b.some((x) => x !== 0)) await fh.write(b, 0, b.length, start * S + o);
    }
  } finally {
    await fh.close();
  }
}

interface Blkid {
  TYPE?: string;
  LABEL?: string;
  UUID?: string;
  VERSION?: string;
}

/** blkid -o export prints bytes >= 0x80 as `M-x` (x = the byte less 0x80) and controls as `^x`, as cat -v does */
function unVis(s: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s.startsWith('M-^', i)) {
      bytes.push(0x80 | ((s.charCodeAt(i + 3) + 64) & 0x7f));
      i += 3;
    } else if (s.startsWith('M-', i)) {
      bytes.push(0x80 | s.charCodeAt(i + 2));
      i += 2;
    } else bytes.push(s.charCodeAt(i));
  }
  return Buffer.from(bytes).toString('utf8');
}

async function blkid(file: string, offset: number, size: number): Promise<Blkid> {
  const r = await run('blkid', ['-p', '-O', String(offset), '-S', String(size), '-o', 'export', file]);
  const out: Record<string, string> = {};
  for (const line of r.stdout.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line);
    if (m) out[m[1]!] = unVis(m[2]!.replace(/\\(.)/g, '$1'));
  }
  return out;
}

/** every volume's content against blkid on the same bytes (partitions and LVs on one range) */
async function assertBlkidAgrees(file: string, layout: DiskLayout, expectTypes: Record<string, string>): Promise<void> {
  for (const v of layout.volumes) {
    if (v.partition?.kind === 'extended' || v.ranges.length !== 1) continue;
    const b = await blkid(file, v.ranges[0]!.offset, v.ranges[0]!.length);
    const c = v.content;
    assert.equal(c?.type, b.TYPE, `volume ${v.id}: type (blkid ${JSON.stringify(b)})`);
    assert.equal(c?.label, b.LABEL, `volume ${v.id}: label`);
    assert.equal(c?.uuid, b.UUID, `volume ${v.id}: uuid`);
    if (b.VERSION && c?.type !== 'ntfs') assert.equal(c?.version, b.VERSION, `volume ${v.id}: version`);
  }
  for (const [id, type] of Object.entries(expectTypes)) {
    assert.equal(layout.volumes.find((v) => v.id === id)?.content?.type, type, `volume ${id} holds ${type}`);
  }
}

/** mmls's partition rows (slot NNN:NNN or NNN): [start, length, description] in sectors */
async function mmlsRows(file: string): Promise<[number, number, string][]> {
  const out = await ok('mmls', [file]);
  const rows: [number, number, string][] = [];
  for (const line of out.split('\n')) {
    const m = /^\d+:\s+(\d+:\d+|\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*(.*)$/.exec(line);
    if (m) rows.push([Number(m[2]), Number(m[4]), m[5]!.trim()]);
  }
  return rows;
}

/** what must not change between the raw image and its conversions */
function shape(l: DiskLayout): unknown {
  return JSON.parse(JSON.stringify({ table: l.table, volumes: l.volumes, vgs: l.volumeGroups, warnings: l.warnings }));
}

async function layoutOf(file: string, format?: string): Promise<DiskLayout> {
  const d = await Disk.open(file, { readOnly: true, format });
  try {
    return await listVolumes(d, { path: file });
  } finally {
    await d.close();
  }
}

/** the listing is the same from qcow2, vmdk and vhdx copies of the raw image (and from the CLI) */
async function assertSameInFormats(t: TestContext, dir: string, raw: string, want: DiskLayout): Promise<void> {
  for (const fmt of ['qcow2', 'vmdk', 'vhdx']) {
    const f = join(dir, `disk.${fmt}`);
    await ok('qemu-img', ['convert', '-f', 'raw', '-O', fmt, raw, f]);
    assert.deepEqual(shape(await layoutOf(f)), shape(want), `${fmt}: the same listing as raw`);
    if (fmt === 'qcow2') {
      const r = await runVdkit(['partitions', f, '--json'], dir);
      assert.equal(r.code, 0, describeRun('vdkit', ['partitions', f, '--json'], r));
      const j = JSON.parse(r.stdout) as { volumes: { id: string; start: number; length: number; filesystem: { type: string } | null }[] };
      assert.deepEqual(
        j.volumes.map((v) => [v.id, v.start, v.length, v.filesystem?.type ?? null]),
        want.volumes.map((v) => [v.id, v.ranges[0]?.offset ?? null, v.length, v.content?.type ?? null]),
      );
      const human = await runVdkit(['partitions', f], dir);
      assert.equal(human.code, 0, describeRun('vdkit', ['partitions', f], human));
      t.diagnostic(`vdkit partitions ${fmt}:\n${human.stdout}`);
    }
  }
}

test('MBR with logical partitions (sfdisk): vdkit = sfdisk --json = mmls; blkid agrees on every filesystem; the same in qcow2, vmdk, vhdx', async (t) => {
  if (!skipUnless(t, 'sfdisk', 'mmls', 'blkid', 'mkfs.ext4', 'mkfs.fat', 'mkntfs', 'mkswap', 'mkfs.exfat', 'qemu-img', 'truncate')) return;
  const dir = (await tmpDir(t, 'vdkit-parts-mbr-')).path;
  const img = join(dir, 'disk.raw');
  await ok('truncate', ['-s', String(64 * MiB), img]);
  await ok('sfdisk', ['-q', img], {
    input: 'label: dos\nlabel-id: 0x5eed1234\nstart=2048, size=16384, type=83, bootable\nstart=18432, size=16384, type=7\nstart=34816, type=5\nstart=36864, size=8192, type=e\nstart=47104, size=8192, type=82\nstart=57344, size=16384, type=7\n',
  });
  await mkfsInto(dir, img, 2048, 16384, 'mkfs.ext4', (f) => ['-q', '-F', '-L', 'mbr-ext4', '-U', '3f0e8c2a-1111-4222-8333-444455556666', f]);
  await mkfsInto(dir, img, 18432, 16384, 'mkntfs', (f) => ['-q', '-F', '-f', '-L', 'Données', '-s', '512', '-p', '18432', f]);
  await mkfsInto(dir, img, 36864, 8192, 'mkfs.fat', (f) => ['-n', 'LOGIC FAT', '-i', '1234abcd', f]);
  await mkfsInto(dir, img, 47104, 8192, 'mkswap', (f) => ['-L', 'swappy', '-U', '9c8b7a69-5847-4362-9150-a1b2c3d4e5f6', f]);
  await mkfsInto(dir, img, 57344, 16384, 'mkfs.exfat', (f) => ['-L', 'exlogic', f]);

  const layout = await layoutOf(img);
  assert.deepEqual(layout.warnings, []);
  assert.equal(layout.table?.scheme, 'mbr');
  assert.equal(layout.table?.diskId, '5eed1234');

  // sfdisk --json: every partition with its node number, start, size and id
  const sf = JSON.parse(await ok('sfdisk', ['--json', img])) as { partitiontable: { partitions: { node: string; start: number; size: number; type: string; bootable?: boolean }[] } };
  assert.deepEqual(
    layout.table?.partitions.map((p) => [p.number, p.offset / S, p.length / S, p.type.replace(/^0x0?/, ''), p.bootable]),
    sf.partitiontable.partitions.map((p) => [Number(/(\d+)$/.exec(p.node)![1]), p.start, p.size, p.type, p.bootable ?? false]),
  );
  // mmls: the data partitions (not the extended containers), in disk order, with the id it prints
  const mm = await mmlsRows(img);
  const data = layout.table!.partitions.filter((p) => p.kind !== 'extended');
  assert.deepEqual(
    mm.map(([start, len, desc]) => [start, len, /\((0x[0-9a-f]+)\)$/.exec(desc)?.[1]]),
    data.map((p) => [p.offset / S, p.length / S, p.type]),
  );
  await assertBlkidAgrees(img, layout, { '1': 'ext4', '2': 'ntfs', '5': 'vfat', '6': 'swap', '7': 'exfat' });
  assert.equal(layout.volumes.find((v) => v.id === '2')?.content?.label, 'Données');
  await assertSameInFormats(t, dir, img, layout);
});

test('GPT (sgdisk): vdkit = sfdisk --json = mmls = sgdisk -p; blkid agrees; a smashed primary reads from the backup as sgdisk does', async (t) => {
  if (!skipUnless(t, 'sgdisk', 'sfdisk', 'mmls', 'blkid', 'mkfs.fat', 'mkfs.ext2', 'mkfs.ext3', 'mkswap', 'qemu-img', 'truncate')) return;
  const dir = (await tmpDir(t, 'vdkit-parts-gpt-')).path;
  const img = join(dir, 'disk.raw');
  await ok('truncate', ['-s', String(64 * MiB), img]);
  await ok('sgdisk', ['-o', '-U', 'A1B2C3D4-1111-4222-8333-444455556666', '-n', '1:2048:+40M', '-t', '1:ef00', '-c', '1:EFI system', '-n', '2:0:+10M', '-t', '2:8300', '-c', '2:root ✓', '-n', '3:0:+4M', '-t', '3:8200', '-n', '5:0:+4M', '-t', '5:a503', '-c', '5:ufs', img]);
  await mkfsInto(dir, img, 2048, 81920, 'mkfs.fat', (f) => ['-F', '32', '-n', 'ESP', f]);
  await mkfsInto(dir, img, 83968, 20480, 'mkfs.ext3', (f) => ['-q', '-F', '-L', 'gpt-ext3', f]);
  await mkfsInto(dir, img, 104448, 8192, 'mkswap', (f) => [f]);
  const layout = await layoutOf(img);
  assert.deepEqual(layout.warnings, []);
  assert.equal(layout.table?.scheme, 'gpt');
  assert.equal(layout.table?.mbr, 'protective');
  assert.equal(layout.table?.diskId, 'a1b2c3d4-1111-4222-8333-444455556666');

  const sf = JSON.parse(await ok('sfdisk', ['--json', img])) as { partitiontable: { firstlba: number; lastlba: number; partitions: { node: string; start: number; size: number; type: string; uuid: string; name?: string }[] } };
  const mine = (l: DiskLayout) => l.table?.partitions.map((p) => [p.number, p.offset / S, p.length / S, p.type, p.uuid, p.name ?? '']);
  assert.deepEqual(
    mine(layout),
    sf.partitiontable.partitions.map((p) => [Number(/(\d+)$/.exec(p.node)![1]), p.start, p.size, p.type.toLowerCase(), p.uuid.toLowerCase(), p.name ?? '']),
  );
  assert.equal(layout.table?.firstUsable, sf.partitiontable.firstlba * S);
  assert.equal(layout.table?.lastUsable, (sf.partitiontable.lastlba + 1) * S - 1);
  assert.deepEqual(layout.table?.partitions.map((p) => p.typeName), ['EFI System', 'Linux filesystem', 'Linux swap', 'FreeBSD UFS']);
  assert.deepEqual(
    (await mmlsRows(img)).map(([start, len, desc]) => [start, len, desc]),
    layout.table!.partitions.map((p) => [p.offset / S, p.length / S, p.name ?? '']),
  );
  await assertBlkidAgrees(img, layout, { '1': 'vfat', '2': 'ext3', '3': 'swap' });
  assert.equal(layout.volumes[0]?.content?.version, 'FAT32');

  /** sgdisk -p rows: number, start, end */
  const sgdiskRows = async (f: string) =>
    [...(await ok('sgdisk', ['-p', f])).matchAll(/^\s+(\d+)\s+(\d+)\s+(\d+)\s/gm)].map((m) => [Number(m[1]), Number(m[2]), Number(m[3])]);
  const rows = (l: DiskLayout) => l.table!.partitions.map((p) => [p.number, p.offset / S, (p.offset + p.length) / S - 1]);
  assert.deepEqual(rows(layout), await sgdiskRows(img));

  // smash the primary header: vdkit reads the backup and warns; sgdisk says the same layout
  const smashed = join(dir, 'smashed.raw');
  await ok('cp', ['--sparse=always', img, smashed]);
  const fh = await open(smashed, 'r+');
  await fh.write(Buffer.alloc(S), 0, S, S);
  await fh.close();
  const fromBackup = await layoutOf(smashed);
  assert.equal(fromBackup.table?.header, 'backup');
  assert.deepEqual(fromBackup.warnings.map((w) => [w.struct, w.field]), [['GPT header', 'signature']]);
  assert.deepEqual(mine(fromBackup), mine(layout));
  assert.deepEqual(rows(fromBackup), await sgdiskRows(smashed));
  assert.deepEqual(fromBackup.volumes.map((v) => v.content), layout.volumes.map((v) => v.content));

  await assertSameInFormats(t, dir, img, layout);
  // the CLI shows the warning on stderr, and the listing still
  const r = await runVdkit(['partitions', smashed], dir);
  assert.equal(r.code, 0, describeRun('vdkit', ['partitions', smashed], r));
  assert.match(r.stderr, /warning: GPT header\.signature: the primary header is damaged/);
  assert.match(r.stdout, /^GPT, 512-byte sectors, disk id a1b2c3d4-1111-4222-8333-444455556666, protective MBR, backup header$/m);
  assert.match(r.stdout, /^2\s+42991616\s+10485760\s+Linux filesystem\s+ext3\s+gpt-ext3\s+[0-9a-f-]{36}$/m);
});

test('GPT with XFS, Btrfs and ext4 (sparse 512 MiB): blkid agrees on each', async (t) => {
  if (!skipUnless(t, 'sgdisk', 'blkid', 'mkfs.xfs', 'mkfs.btrfs', 'mkfs.ext4', 'truncate')) return;
  const dir = (await tmpDir(t, 'vdkit-parts-big-')).path;
  const img = join(dir, 'disk.raw');
  await ok('truncate', ['-s', String(512 * MiB), img]);
  await ok('sgdisk', ['-o', '-n', '1:2048:+130M', '-n', '2:0:+310M', '-n', '3:0:+16M', img]);
  const parts = (await layoutOf(img)).table!.partitions;
  await mkfsInto(dir, img, parts[0]!.offset / S, parts[0]!.length / S, 'mkfs.btrfs', (f) => ['-q', '-f', '-L', 'bt label', f]);
  await mkfsInto(dir, img, parts[1]!.offset / S, parts[1]!.length / S, 'mkfs.xfs', (f) => ['-q', '-f', '-L', 'xfs_lab', f]);
  await mkfsInto(dir, img, parts[2]!.offset / S, parts[2]!.length / S, 'mkfs.ext4', (f) => ['-q', '-F', '-O', '64bit', f]);
  const layout = await layoutOf(img);
  await assertBlkidAgrees(img, layout, { '1': 'btrfs', '2': 'xfs', '3': 'ext4' });
  assert.equal(layout.volumes[1]?.content?.size, parts[1]!.length);
  assert.equal(layout.volumes[2]?.content?.size, parts[2]!.length);
});

/** LUKS1, LUKS2 and ISO 9660 headers by hand, each a whole-disk image, read as blkid reads them */
test('LUKS1, LUKS2 and ISO 9660 (hand-written headers): type, label and UUID equal blkid', async (t) => {
  if (!skipUnless(t, 'blkid')) return;
  const dir = (await tmpDir(t, 'vdkit-parts-hand-')).path;
  const luks = (version: 1 | 2): Buffer => {
    const b = Buffer.alloc(2 * MiB);
    Buffer.from('LUKS\xba\xbe', 'latin1').copy(b, 0);
    b.writeUInt16BE(version, 6);
    if (version === 1) {
      b.write('aes', 8, 'latin1');
      b.write('xts-plain64', 40, 'latin1');
      b.write('sha256', 72, 'latin1');
      b.writeUInt32BE(4096, 104);
      b.writeUInt32BE(64, 108);
    } else {
      b.writeBigUInt64BE(16384n, 8);
      b.writeBigUInt64BE(3n, 16);
      b.write('secret-stuff', 24, 'latin1');
      b.write('sha256', 72, 'latin1');
      b.write('backup', 208, 'latin1');
    }
    b.write(`0a1b2c3d-4e5f-4a6b-8c7d-00000000000${version}`, 168, 'latin1');
    return b;
  };
  const iso = (): Buffer => {
    const b = Buffer.alloc(64 * 2048);
    const p = 16 * 2048;
    b[p] = 1;
    b.write('CD001', p + 1, 'latin1');
    b[p + 6] = 1;
    b.write('LINUX'.padEnd(32), p + 8, 'latin1');
    b.write('MY_DISC'.padEnd(32), p + 40, 'latin1');
    b.writeUInt32LE(64, p + 80);
    b.writeUInt32BE(64, p + 84);
    b.writeUInt16LE(2048, p + 128);
    b.writeUInt16BE(2048, p + 130);
    b.write('2024010203040506\0', p + 813, 'latin1');
    b.write('2024070809101112\0', p + 830, 'latin1');
    const term = 17 * 2048;
    b[term] = 255;
    b.write('CD001', term + 1, 'latin1');
    b[term + 6] = 1;
    return b;
  };
  const cases: [string, Buffer, string][] = [
    ['luks1.img', luks(1), 'crypto_LUKS'],
    ['luks2.img', luks(2), 'crypto_LUKS'],
    ['disc.iso', iso(), 'iso9660'],
  ];
  for (const [name, bytes, type] of cases) {
    const f = join(dir, name);
    await writeFile(f, bytes);
    // -f raw: vdkit's format detection names a LUKS file as LUKS and will not open it otherwise
    const layout = await layoutOf(f, 'raw');
    assert.equal(layout.volumes[0]?.content?.type, type, name);
    await assertBlkidAgrees(f, layout, { '': type });
  }
});

const WILD = (name: string) => join(repoRoot(), '..', 'shared', 'testdata', 'wild', name);

test('LVM2 PVs from the wild (dfvfs): VGs and LVs as the metadata says, each LV holding the ext2 blkid finds there', async (t) => {
  const files = ['dfvfs-1ec6817-lvm.qcow2.bz2', 'dfvfs-f901265-lvmtest.qcow2.bz2'];
  if (!skipUnless(t, 'bunzip2', 'qemu-img', 'blkid') || !haveTestdata(t, ...files.map(WILD))) return;
  const dir = (await tmpDir(t, 'vdkit-parts-lvm-')).path;
  const want: Record<string, [string, number, number][]> = {
    'dfvfs-1ec6817-lvm.qcow2': [['test_volume_group/test_logical_volume', 1 * MiB, 4 * MiB]],
    'dfvfs-f901265-lvmtest.qcow2': [
      ['vg_test/lv_test1', 1 * MiB, 8 * MiB],
      ['vg_test/lv_test2', 9 * MiB, 4 * MiB],
    ],
  };
  for (const bz of files) {
    const name = bz.replace(/\.bz2$/, '');
    const f = join(dir, name);
    await bunzip(WILD(bz), f);
    const layout = await layoutOf(f);
    assert.deepEqual(layout.warnings, [], name);
    assert.equal(layout.volumes[0]?.content?.type, 'LVM2_member');
    assert.deepEqual(
      layout.volumes.filter((v) => v.kind === 'lv').map((v) => [v.id, v.ranges[0]!.offset, v.length]),
      want[name],
    );
    const raw = join(dir, `${name}.raw`);
    await ok('qemu-img', ['convert', '-O', 'raw', f, raw]);
    await assertBlkidAgrees(raw, layout, Object.fromEntries(want[name]!.map(([id]) => [id, 'ext2'])));
  }
});

test('a GPT disk and an MBR disk from the wild: the partitions the testdata README lists (mmls), with their filesystems', async (t) => {
  const files = ['nodevhd-a1e9f24-dynamic.vhd.bz2', 'vmdkrs-streamOptimized.vmdk.bz2'];
  if (!skipUnless(t, 'bunzip2') || !haveTestdata(t, ...files.map(WILD))) return;
  const dir = (await tmpDir(t, 'vdkit-parts-wild-')).path;
  const gpt = join(dir, 'gpt.vhd');
  await bunzip(WILD(files[0]!), gpt);
  const g = await layoutOf(gpt);
  // README: 34..65569 Microsoft reserved, then three basic data partitions of 409600 sectors
  assert.deepEqual(
    g.volumes.map((v) => [v.partition!.offset / S, v.length / S, v.partition!.name, v.content?.type]),
    [
      [34, 65536, 'Microsoft reserved partition', undefined],
      [65664, 409600, 'Basic data partition', 'vfat'],
      [475264, 409600, 'Basic data partition', 'ntfs'],
      [884864, 409600, 'Basic data partition', 'vfat'],
    ],
  );
  assert.deepEqual(g.volumes.map((v) => v.content?.label), [undefined, '32BIT FAT', 'Win10 NTFS', '16BIT FAT']);
  if (skipUnless(t, 'qemu-img', 'blkid')) {
    const raw = join(dir, 'gpt.raw');
    await ok('qemu-img', ['convert', '-O', 'raw', gpt, raw]);
    await assertBlkidAgrees(raw, g, { '2': 'vfat', '3': 'ntfs', '4': 'vfat' });
  }
  const mbr = join(dir, 'mbr.vmdk');
  await bunzip(WILD(files[1]!), mbr);
  const m = await layoutOf(mbr);
  // README: 002: 000:000 0000000128 0000018431 0000018304 NTFS / exFAT (0x07)
  assert.deepEqual(m.table?.partitions.map((p) => [p.offset / S, p.length / S, p.type]), [[128, 18304, '0x07']]);
  assert.equal(m.volumes[0]?.content?.type, 'ntfs');
  assert.equal(m.volumes[0]?.content?.label, 'test_disk');
});
