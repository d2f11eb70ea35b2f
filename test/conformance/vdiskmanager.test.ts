/**
 * `vdkit vdiskmanager`: vmware-vdiskmanager's options, each one's effect checked with qemu-img
 * (info, compare, check) and qemu-io, the descriptor read with plain fs, and exit statuses.
 */
import assert from 'node:assert/strict';
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk } from '../../src/index.js';
import { parseVdiskSize, vdiskmanager } from '../../src/cli/vdiskmanager.js';
import { describeRun, repoRoot, run, skipUnless, tmpDir, type RunResult } from '../helpers/tools.js';
import { descriptorText } from '../interop/support.js';

const BIN = join(repoRoot(), 'bin', 'vdkit.js');
/** the CLI as a process (what scripts run) */
const vdmProcess = (cwd: string, args: string[]) => run(process.execPath, [BIN, 'vdiskmanager', ...args], { cwd });
/** the same entry point in this process (most cases: a process start costs more than the work) */
async function vdm(cwd: string, args: string[]): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  const back = process.cwd();
  process.chdir(cwd);
  try {
    const code = await vdiskmanager(args, { out: (s) => void (stdout += s), err: (s) => void (stderr += s) });
    return { code, stdout, stderr };
  } finally {
    process.chdir(back);
  }
}
async function vdmOk(cwd: string, args: string[]): Promise<string> {
  const r = await vdm(cwd, args);
  assert.equal(r.code, 0, describeRun('vdkit vdiskmanager', args, r));
  return r.stdout;
}
async function vdmFails(cwd: string, args: string[], status: number, stderr: RegExp): Promise<void> {
  const r = await vdm(cwd, args);
  assert.equal(r.code, status, describeRun('vdkit vdiskmanager', args, r));
  assert.match(r.stderr, stderr, describeRun('vdkit vdiskmanager', args, r));
}
async function qemu(args: string[]): Promise<string> {
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, describeRun('qemu-img', args, r));
  return r.stdout;
}
const qinfo = async (p: string) => JSON.parse(await qemu(['info', '--output=json', p]));
async function qemuIo(fmt: string, path: string, cmd: string): Promise<void> {
  const r = await run('qemu-io', ['-f', fmt, '-c', cmd, path]);
  assert.equal(r.code, 0, describeRun('qemu-io', [cmd, path], r));
}
async function poke(path: string, at: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, at);
  } finally {
    await fh.close();
  }
}
const MB = 1024 * 1024;

test('vdiskmanager sizes: sectors, KB, MB, GB, decimals', () => {
  assert.equal(parseVdiskSize('2048'), MB);
  assert.equal(parseVdiskSize('1024KB'), MB);
  assert.equal(parseVdiskSize('850MB'), 850 * MB);
  assert.equal(parseVdiskSize('36GB'), 36 * 1024 * MB);
  assert.equal(parseVdiskSize('8192.0GB'), 8192 * 1024 * MB);
  assert.equal(parseVdiskSize('1.5g'), 1536 * MB);
  assert.equal(parseVdiskSize('1000'), 1000 * 512);
  assert.equal(parseVdiskSize('0.3KB'), 512, 'rounded up to whole sectors');
  assert.throws(() => parseVdiskSize('12 parsecs'));
  assert.throws(() => parseVdiskSize('-5MB'));
});

test('vdiskmanager -c with every -t and -a, sizes and ranges (qemu-img info/check)', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t, 'vdkit-vdm-c-')).path;
  // through `vdkit vdiskmanager` as a process: main.ts hands the options to this parser
  const proc = await vdmProcess(dir, ['-c', '-s', '850MB', '-a', 'ide', '-t', '0', 'myIdeDisk.vmdk']);
  assert.equal(proc.code, 0, describeRun('vdkit vdiskmanager', [], proc));
  assert.equal(proc.stdout, "Creating disk 'myIdeDisk.vmdk'\n  Create: 100% done.\nVirtual disk creation successful.\n");
  const qi = await qinfo(join(dir, 'myIdeDisk.vmdk'));
  assert.equal(qi['virtual-size'], 850 * MB);
  assert.equal(qi['format-specific'].data['create-type'], 'monolithicSparse');
  assert.match(await descriptorText(join(dir, 'myIdeDisk.vmdk')), /ddb\.adapterType = "ide"/);
  const types = ['monolithicSparse', 'twoGbMaxExtentSparse', 'monolithicFlat', 'twoGbMaxExtentFlat', 'vmfs', 'streamOptimized', 'vmfs'];
  for (const [n, createType] of types.entries()) {
    const name = `t${n}.vmdk`;
    await vdmOk(dir, ['-c', '-s', '16MB', '-a', n % 2 ? 'buslogic' : 'lsilogic', '-t', String(n), name]);
    const q = await qinfo(join(dir, name));
    assert.equal(q['virtual-size'], 16 * MB, `-t ${n}`);
    assert.equal(q['format-specific'].data['create-type'], createType, `-t ${n}`);
    const desc = await descriptorText(join(dir, name));
    assert.match(desc, new RegExp(`ddb\\.adapterType = "${n % 2 ? 'buslogic' : 'lsilogic'}"`), `-t ${n} adapter`);
    assert.equal(/ddb\.thinProvisioned = "1"/.test(desc), n === 6, `-t ${n}: thin only for 6`);
    if (n !== 5) await qemu(['check', join(dir, name)]);
  }
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('.')), [], '-t 5 leaves no temporary file');
  // defaults (-t 0, lsilogic), sectors as the unit, -q silences
  assert.equal(await vdmOk(dir, ['-q', '-c', '-s', '4096', 'plain.vmdk']), '');
  const plain = await qinfo(join(dir, 'plain.vmdk'));
  assert.equal(plain['virtual-size'], 4096 * 512);
  assert.equal(plain['format-specific'].data['create-type'], 'monolithicSparse');
  assert.match(await descriptorText(join(dir, 'plain.vmdk')), /ddb\.adapterType = "lsilogic"/);
  // ranges and wrong usage
  await vdmFails(dir, ['-c', '-s', '512KB', 'tiny.vmdk'], 1, /outside the acceptable range.*\[1MB, 8192\.0GB\]/);
  await vdmFails(dir, ['-c', '-s', '2041GB', '-a', 'buslogic', 'big.vmdk'], 1, /\[1MB, 2040\.0GB\]/);
  await vdmFails(dir, ['-c', '-s', '16MB', '-t', '7', 'x.vmdk'], 2, /disk type "7"/);
  await vdmFails(dir, ['-c', '-s', '16MB', '-a', 'sata', 'x.vmdk'], 2, /adapter type "sata"/);
  await vdmFails(dir, ['-c', 'x.vmdk'], 2, /-s SIZE/);
  await vdmFails(dir, ['-c', '-k', 'x.vmdk'], 2, /only one operation/);
  await vdmFails(dir, ['-c', '-s', '16MB', 't0.vmdk'], 1, /FILEEXISTS/);
  await vdmFails(dir, ['-r', 't0.vmdk', '-t', '4', '-h', 'esx', '-u', 'root', '-f', 'pw', '[storage1]/x.vmdk'], 1, /local disks only/);
  const usage = await vdmProcess(dir, []);
  assert.equal(usage.code, 2);
  assert.match(usage.stdout, /Usage: vdkit vdiskmanager OPTIONS <disk-name> \| <mount-point>/);
  assert.ok(!(await readdir(dir)).some((f) => f.startsWith('x') || f.startsWith('tiny') || f.startsWith('big')), 'failed runs create nothing');
});

test('vdiskmanager: a size the type cannot hold fails before "Creating disk"; --help prints the usage (issue 16 item 10)', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-vdm-limits-')).path;
  const GB = 1024 * MB;
  // -c: the help's 8192 GB is the adapter's range; type 0 (and 5, written from an empty type 0) stop at the driver's limit
  for (const type of ['0', '5']) {
    const r = await vdm(dir, ['-c', '-s', '4000GB', '-t', type, 'x.vmdk']);
    assert.equal(r.code, 1, describeRun('vdkit vdiskmanager', ['-t', type], r));
    assert.equal(r.stdout, '', `-t ${type}: nothing printed before the refusal`);
    assert.match(r.stderr, /more than a type [05] disk holds \(2047\.5GB.*use -t 1/);
  }
  await vdmFails(dir, ['-c', '-s', '2048GB', 'x.vmdk'], 1, /2047\.5GB/);
  // -r: the source's size is checked against the type before anything is printed
  const big = await Disk.create(join(dir, 'big.qcow2'), { format: 'qcow2', capacity: 3 * 1024 * GB });
  await big.close();
  const r = await vdm(dir, ['-r', 'big.qcow2', '-t', '0', 'copy.vmdk']);
  assert.equal(r.code, 1, describeRun('vdkit vdiskmanager', ['-r'], r));
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /more than a type 0 disk holds/);
  assert.deepEqual((await readdir(dir)).sort(), ['big.qcow2'], 'failed runs create nothing');
  // --help: the usage on stdout, exit 0, with the limit the code applies
  for (const args of [['--help'], ['help']]) {
    const help = await vdmProcess(dir, args);
    assert.equal(help.code, 0, describeRun('vdkit vdiskmanager', args, help));
    assert.match(help.stdout, /Usage: vdkit vdiskmanager OPTIONS/);
    assert.match(help.stdout, /disk type 0 \(5 with -c\) : at most 2047\.5GB/);
    assert.equal(help.stderr, '');
  }
});

test('vdiskmanager -r converts (any source format, keeps the adapter), -x expands, -n renames (qemu-img compare)', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-vdm-rxn-')).path;
  const src = join(dir, 'src.vmdk');
  await qemu(['create', '-f', 'vmdk', '-o', 'adapter_type=buslogic', src, '24M']);
  await qemuIo('vmdk', src, 'write -P 0x31 1M 300k');
  await qemuIo('vmdk', src, `write -P 0x32 ${24 * MB - 4096} 4096`);
  for (const [n, createType] of [['1', 'twoGbMaxExtentSparse'], ['2', 'monolithicFlat'], ['5', 'streamOptimized']] as const) {
    const dst = `conv${n}.vmdk`;
    assert.match(await vdmOk(dir, ['-r', 'src.vmdk', '-t', n, dst]), /Virtual disk conversion successful\.\n$/);
    assert.equal((await qinfo(join(dir, dst)))['format-specific'].data['create-type'], createType);
    assert.match(await qemu(['compare', src, join(dir, dst)]), /Images are identical/);
    assert.match(await descriptorText(join(dir, dst)), /ddb\.adapterType = "buslogic"/, '-r keeps the source adapter');
  }
  const q = join(dir, 'src.qcow2');
  await qemu(['convert', '-O', 'qcow2', src, q]);
  await vdmOk(dir, ['-r', 'src.qcow2', '-t', '0', 'fromqcow.vmdk']);
  assert.match(await qemu(['compare', q, join(dir, 'fromqcow.vmdk')]), /Images are identical/);
  await vdmFails(dir, ['-r', 'src.vmdk', '-t', '0', 'conv1.vmdk'], 1, /FILEEXISTS/);
  await vdmFails(dir, ['-r', 'src.vmdk', 'nodst.vmdk'], 2, /disk type missing/);
  await vdmFails(dir, ['-r', 'src.vmdk', '-t', '0', '-a', 'ide', 'a.vmdk'], 2, /-a is for use with -c only/);

  // -x: the data stays, the new end is writable; smaller or equal is refused
  assert.equal(await vdmOk(dir, ['-x', '64MB', 'src.vmdk']), '  Grow: 100% done.\nDisk expansion completed successfully.\n');
  assert.equal((await qinfo(src))['virtual-size'], 64 * MB);
  await qemuIo('vmdk', src, 'read -P 0x31 1M 300k');
  await qemuIo('vmdk', src, `read -P 0x32 ${24 * MB - 4096} 4096`);
  await qemuIo('vmdk', src, `read -P 0 ${24 * MB} ${40 * MB}`);
  await qemuIo('vmdk', src, `write -P 0x33 ${64 * MB - 512} 512`);
  await qemu(['check', src]);
  await vdmFails(dir, ['-x', '32MB', 'src.vmdk'], 1, /must be larger/);
  await vdmOk(dir, ['-x', '131072', 'conv1.vmdk']); // sectors: 64 MB
  assert.equal((await qinfo(join(dir, 'conv1.vmdk')))['virtual-size'], 64 * MB);

  // -n: every file moves, a child follows its parent
  await qemu(['create', '-f', 'vmdk', '-b', 'conv1.vmdk', '-F', 'vmdk', join(dir, 'child.vmdk')]);
  assert.equal(await vdmOk(dir, ['-n', 'conv1.vmdk', 'moved.vmdk']), 'Renaming completed successfully.\n');
  const files = await readdir(dir);
  assert.ok(!files.some((f) => f.startsWith('conv1')), `old names gone: ${files.join(' ')}`);
  assert.ok(files.includes('moved-s001.vmdk'), 'extents renamed');
  assert.equal((await qinfo(join(dir, 'child.vmdk')))['backing-filename'], 'moved.vmdk');
  assert.match(await qemu(['compare', join(dir, 'child.vmdk'), join(dir, 'moved.vmdk')]), /Images are identical/);
  await vdmFails(dir, ['-n', 'absent.vmdk', 'other.vmdk'], 1, /FILENOTFOUND/);
});

test('vdiskmanager -R repairs, -e checks the chain, -k/-d go through the driver (qemu-img check)', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-vdm-check-')).path;
  const a = join(dir, 'a.vmdk');
  await qemu(['create', '-f', 'vmdk', a, '16M']);
  await qemuIo('vmdk', a, 'write -P 0x44 0 200k');
  assert.equal(await vdmOk(dir, ['-R', 'a.vmdk']), "No errors were found on the virtual disk, 'a.vmdk'.\n");
  // leaked grains after the data: repaired
  const size = (await stat(a)).size;
  await poke(a, size, Buffer.alloc(2 * 65536, 7));
  const repaired = await vdmOk(dir, ['-R', 'a.vmdk']);
  assert.match(repaired, /repaired: .*\nThe virtual disk, 'a\.vmdk', was corrupted and has been successfully repaired\.\n$/);
  assert.equal((await stat(a)).size, size, 'the leak is cut off');
  await qemu(['check', a]);
  await qemuIo('vmdk', a, 'read -P 0x44 0 200k');
  // a VHD whose end footer checksum is wrong: a corruption -R mends from the copy at offset 0
  const v = join(dir, 'v.vhd');
  await qemu(['create', '-f', 'vpc', v, '8M']);
  await qemuIo('vpc', v, 'write -P 0x45 0 64k');
  const vsize = (await stat(v)).size;
  // a byte of the unique id, flipped (a fixed value equals the random id's byte 1 time in 256)
  await poke(v, vsize - 512 + 70, Buffer.from([(await readFile(v))[vsize - 512 + 70]! ^ 0xff]));
  assert.match(await vdmOk(dir, ['-R', 'v.vhd']), /was corrupted and has been successfully repaired/);
  assert.deepEqual(await readFile(v).then((b) => b.subarray(vsize - 512)), await readFile(v).then((b) => b.subarray(0, 512)));
  await qemuIo('vpc', v, 'read -P 0x45 0 64k');

  // -e: a sound chain, then one whose parent changed under the child
  await qemu(['create', '-f', 'vmdk', '-b', 'a.vmdk', '-F', 'vmdk', join(dir, 'c.vmdk')]);
  assert.equal(await vdmOk(dir, ['-e', 'c.vmdk']), 'Disk chain is consistent.\n');
  await qemuIo('vmdk', a, 'write -P 0x46 1M 4k'); // QEMU gives the parent a new CID
  const broken = await vdmProcess(dir, ['-e', 'c.vmdk']);
  assert.equal(broken.code, 1, describeRun('vdkit vdiskmanager', ['-e'], broken));
  assert.match(broken.stdout, /^Disk chain is not consistent: .*CID_MISMATCH/);

  // -k on a redo log is refused as vdiskmanager refuses it; -k/-d on a base: the driver decides
  await vdmFails(dir, ['-k', 'c.vmdk'], 1, /CANTSHRINK 16009/);
  const probe = await Disk.open(a, { readOnly: true });
  const caps = probe.image.capabilities;
  await probe.close();
  for (const [op, cap, done] of [['-k', caps.compact, 'Shrink completed successfully.'], ['-d', caps.defragment, 'Defragmentation completed successfully.']] as const) {
    const before = await readFile(a);
    if (cap === 'none') {
      await vdmFails(dir, [op, 'a.vmdk'], 1, /NOTSUPPORTED 16013; VIX_E_DISK_NOTSUPPORTED 16013/);
      assert.deepEqual(await readFile(a), before, `${op} changed nothing`);
    } else {
      assert.match(await vdmOk(dir, [op, 'a.vmdk']), new RegExp(done));
      await qemu(['check', a]);
      await qemuIo('vmdk', a, 'read -P 0x44 0 200k');
    }
  }
  await vdmFails(dir, ['-p', '/mnt'], 1, /NOTSUPPORTED/);
});
