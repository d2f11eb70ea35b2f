/**
 * `mkimg` against the Debian partitioning tools: for mbr, ebr and gpt, each built by vdkit into
 * raw, qcow2, vmdk, vhd, vhdx and vdi, converted back to raw by qemu-img, must read in
 * `sfdisk --json`, `sgdisk -p` and `mmls` exactly as the same layout does when sfdisk writes it
 * onto a raw file; `sgdisk -v` finds no problem in a GPT; `qemu-img check` is clean; every
 * partition's bytes equal its input (a FAT made by mkfs.fat here, random bytes, a command's
 * output); the boot code lands in sector 0. The CLI is run for mkimg's spellings, stdout and
 * its usage and layout errors.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { mkimg, type MkimgPartition, type MkimgResult } from '../../src/index.js';
import { describeRun, run, runVdkit, skipUnless, tmpDir } from '../helpers/tools.js';

const S = 512;
const FORMATS = ['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi'] as const;
/** qemu-img check has a checker for these (not raw, not vpc) */
const CHECKED = new Set(['qcow2', 'vmdk', 'vhdx', 'vdi']);
const COMMAND = 'yes vdkit-mkimg | head -c 1000000';
const COMMAND_BYTES = Buffer.from('vdkit-mkimg\n'.repeat(Math.ceil(1000000 / 12))).subarray(0, 1000000);

async function ok(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const r = await run(cmd, args, env ? { env: { ...process.env, ...env } } : {});
  assert.equal(r.code, 0, describeRun(cmd, args, r));
  return r.stdout;
}

interface Inputs {
  fat: string;
  rnd: string;
  boot: string;
}

async function makeInputs(dir: string): Promise<Inputs> {
  const fat = join(dir, 'fat.img');
  await ok('truncate', ['-s', '8M', fat]);
  await ok('mkfs.fat', ['-n', 'MKIMGFAT', '-i', '1234abcd', fat]);
  const rnd = join(dir, 'rnd.bin');
  // not a whole number of sectors: the partition rounds up and the tail reads as zeros
  await writeFile(rnd, Buffer.from(Array.from({ length: 3000000 }, (_, i) => (i * 2654435761) >>> 24)));
  const boot = join(dir, 'boot.bin');
  await writeFile(boot, Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 7 + 1) & 0xff)));
  return { fat, rnd, boot };
}

function partitionsFor(scheme: 'mbr' | 'ebr' | 'gpt', inp: Inputs): (MkimgPartition | 'skip')[] {
  const fat: MkimgPartition = scheme === 'gpt' ? { type: 'efi', label: 'ESP', contents: { file: inp.fat } } : { type: 'fat16b', contents: { file: inp.fat } };
  const rnd: MkimgPartition = { type: 'linux-data', label: scheme === 'gpt' ? 'root ✓' : undefined, contents: { file: inp.rnd } };
  const swap: MkimgPartition = { type: 'linux-swap', contents: { size: 4 * 1024 * 1024 } };
  const cmd: MkimgPartition = { type: scheme === 'gpt' ? '0FC63DAF-8483-4772-8E79-3D69D8477DE4' : '0x83', contents: { command: COMMAND } };
  if (scheme === 'mbr') return [fat, 'skip', rnd, cmd];
  if (scheme === 'ebr') return [fat, rnd, swap, cmd];
  // fixed unique GUIDs, so every format's copy and sfdisk's reference list the same
  return ([fat, 'skip', rnd, swap, cmd] as const).map((p, i) => (p === 'skip' ? p : { ...p, uuid: `0000000${i}-aaaa-4bbb-8ccc-dddddddddddd` }));
}

/** the same layout written by sfdisk onto a raw file of the same size */
async function sfdiskReference(dir: string, scheme: 'mbr' | 'ebr' | 'gpt', r: MkimgResult): Promise<string> {
  const ref = join(dir, `ref-${scheme}.raw`);
  await ok('truncate', ['-s', String(r.capacity), ref]);
  const lines: string[] = [];
  if (scheme === 'gpt') {
    lines.push('label: gpt', `label-id: ${r.diskId}`, 'first-lba: 34');
    for (const p of r.partitions) {
      lines.push(`${p.number} : start=${p.offset / S}, size=${p.length / S}, type=${p.type}, uuid=0000000${p.index}-aaaa-4bbb-8ccc-dddddddddddd${p.label ? `, name="${p.label}"` : ''}${p.index === 0 ? ', attrs="LegacyBIOSBootable"' : ''}`);
    }
  } else {
    lines.push('label: dos', `label-id: 0x${r.diskId}`);
    const hex = (t: number | string) => (t as number).toString(16);
    if (scheme === 'mbr') for (const p of r.partitions) lines.push(`${p.number} : start=${p.offset / S}, size=${p.length / S}, type=${hex(p.type)}${p.index === 0 ? ', bootable' : ''}`);
    else {
      const first = r.partitions[0]!;
      const last = r.partitions[r.partitions.length - 1]!;
      const extStart = first.offset / S - 2048;
      lines.push(`1 : start=${extStart}, size=${(last.offset + last.length) / S - extStart}, type=5`);
      for (const p of r.partitions) lines.push(`${p.number} : start=${p.offset / S}, size=${p.length / S}, type=${hex(p.type)}${p.index === 0 ? ', bootable' : ''}`);
    }
  }
  const script = lines.join('\n') + '\n';
  const res = await run('sh', ['-c', `printf '%s' "$SCRIPT" | sfdisk -q --no-reread --no-tell-kernel "$IMG"`], { env: { ...process.env, SCRIPT: script, IMG: ref } });
  assert.equal(res.code, 0, `${describeRun('sfdisk', [ref], res)}\n${script}`);
  return ref;
}

/** sfdisk --json with the file names taken out */
async function sfdiskJson(raw: string): Promise<unknown> {
  const j = JSON.parse(await ok('sfdisk', ['--json', raw])) as { partitiontable: { device: string; partitions: { node: string }[] } };
  const t = j.partitiontable;
  return { ...t, device: undefined, partitions: t.partitions.map((p) => ({ ...p, node: Number(/(\d+)$/.exec(p.node)![1]) })) };
}

/** sgdisk -p from the partition rows down (the header names the file) */
async function sgdiskRows(raw: string): Promise<string> {
  const out = await ok('sgdisk', ['-p', raw]);
  return out.slice(out.indexOf('Number'));
}

/** mmls rows that are partitions (not tables, not gaps): [start, length, description] */
async function mmlsData(raw: string, all: boolean): Promise<string[]> {
  const out = await ok('mmls', [raw]);
  return out.split('\n').filter((l) => /^\d+:/.test(l) && (all || !/^\d+:\s+(Meta|-------)/.test(l))).map((l) => l.replace(/^\d+:\s+/, ''));
}

async function slice(file: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const b = Buffer.alloc(length);
    await fh.read(b, 0, length, offset);
    return b;
  } finally {
    await fh.close();
  }
}

async function checkContents(raw: string, r: MkimgResult, parts: (MkimgPartition | 'skip')[], inp: Inputs): Promise<void> {
  const want = new Map<string, Buffer>([
    [inp.fat, await readFile(inp.fat)],
    [inp.rnd, await readFile(inp.rnd)],
  ]);
  for (const p of r.partitions) {
    const spec = parts[p.index] as MkimgPartition;
    const got = await slice(raw, p.offset, p.length);
    const c = spec.contents;
    const bytes = 'file' in c ? want.get(c.file)! : 'command' in c ? COMMAND_BYTES : Buffer.alloc(0);
    assert.ok(got.subarray(0, bytes.length).equals(bytes), `partition ${p.number}: its bytes equal the input`);
    assert.ok(got.subarray(bytes.length).every((b) => b === 0), `partition ${p.number}: zeros after the input`);
  }
}

async function checkBootcode(raw: string, scheme: string, inp: Inputs): Promise<void> {
  const boot = await readFile(inp.boot);
  const s0 = await slice(raw, 0, 512);
  // the boot code's first 446 bytes, but for a disk signature given apart (the MBR schemes' diskId below)
  assert.ok(s0.subarray(0, 440).equals(boot.subarray(0, 440)), `${scheme}: boot code in bytes 0..439 of sector 0`);
  assert.ok(s0.subarray(444, 446).equals(boot.subarray(444, 446)), `${scheme}: boot code in bytes 444..445 of sector 0`);
  assert.equal(s0.readUInt32LE(440), scheme === 'gpt' ? boot.readUInt32LE(440) : 0xa1b2c3d4, `${scheme}: disk signature`);
  assert.equal(s0.readUInt16LE(510), 0xaa55);
  if (scheme === 'gpt') {
    assert.equal(s0[446 + 4], 0xee, 'the protective entry');
    assert.equal(s0[446], 0x80, 'marked active, as mkimg does with boot code');
  }
}

async function scheme(t: TestContext, name: 'mbr' | 'ebr' | 'gpt'): Promise<void> {
  if (!skipUnless(t, 'sfdisk', 'sgdisk', 'mmls', 'mkfs.fat', 'qemu-img', 'truncate')) return;
  const dir = (await tmpDir(t, `vdkit-mkimg-${name}-`)).path;
  const inp = await makeInputs(dir);
  const parts = partitionsFor(name, inp);
  let ref: string | undefined;
  let first: MkimgResult | undefined;
  for (const format of FORMATS) {
    const out = join(dir, `${name}.${format}`);
    const r = await mkimg({ scheme: name, partitions: parts, active: 1, bootcode: { file: inp.boot }, format, output: out, diskId: name === 'gpt' ? '5eed0000-1111-4222-8333-444455556666' : 'a1b2c3d4' });
    if (first) assert.deepEqual(r.partitions, first.partitions, `${format}: the same layout`);
    first ??= r;
    if (CHECKED.has(format)) {
      const c = await run('qemu-img', ['check', '-f', format, out]);
      assert.equal(c.code, 0, describeRun('qemu-img', ['check', out], c));
    }
    const raw = format === 'raw' ? out : join(dir, `${name}.${format}.raw`);
    if (format !== 'raw') await ok('qemu-img', ['convert', '-f', format === 'vhd' ? 'vpc' : format, '-O', 'raw', out, raw]);
    ref ??= await sfdiskReference(dir, name, r);
    assert.deepEqual(await sfdiskJson(raw), await sfdiskJson(ref), `${format}: sfdisk --json reads what it reads from its own layout`);
    assert.deepEqual(await mmlsData(raw, name === 'gpt'), await mmlsData(ref, name === 'gpt'), `${format}: mmls`);
    if (name === 'gpt') {
      assert.equal(await sgdiskRows(raw), await sgdiskRows(ref), `${format}: sgdisk -p`);
      const v = await ok('sgdisk', ['-v', raw]);
      assert.match(v, /No problems found/, `${format}: sgdisk -v\n${v}`);
    }
    await checkContents(raw, r, parts, inp);
    await checkBootcode(raw, name, inp);
    t.diagnostic(`${name} ${format}: ${r.capacity} bytes, ${r.bytesWritten} written`);
  }
  const j = (await sfdiskJson(ref!)) as { partitions: { node: number; bootable?: boolean; attrs?: string }[] };
  assert.deepEqual(
    j.partitions.filter((p) => p.node !== 1 || name !== 'ebr').map((p) => p.node),
    first!.partitions.map((p) => p.number),
    'numbered as the readers number them (a skipped entry leaves its number free)',
  );
}

test('mkimg mbr x raw, qcow2, vmdk, vhd, vhdx, vdi: sfdisk --json and mmls read the layout sfdisk writes; contents and boot code in place', (t) => scheme(t, 'mbr'));
test('mkimg ebr (logical partitions) x every format: sfdisk --json and mmls agree with sfdisk\'s own layout; contents in place', (t) => scheme(t, 'ebr'));
test('mkimg gpt x every format: sfdisk --json, sgdisk -p and mmls as sfdisk\'s own layout; sgdisk -v clean; names, attributes, contents, pmbr boot code', (t) => scheme(t, 'gpt'));

test('vdkit mkimg CLI: mkimg spellings into qcow2 and to stdout as streamOptimized; qemu-img and sfdisk accept them', async (t) => {
  if (!skipUnless(t, 'sfdisk', 'sgdisk', 'mkfs.fat', 'qemu-img', 'truncate')) return;
  const dir = (await tmpDir(t, 'vdkit-mkimg-cli-')).path;
  const inp = await makeInputs(dir);
  const args = ['mkimg', '-s', 'gpt', '-b', inp.boot, '-p', `efi/ESP:=${inp.fat}`, '-p-', '-p', 'freebsd-ufs/rootfs:=rnd.bin', '-p', 'freebsd-swap/swap::4M', '-p', `linux-data:-${COMMAND}`, '-c', '64M', '-f', 'qcow2', '-o', 'disk.qcow2', '--json'];
  const r = await runVdkit(args, dir);
  assert.equal(r.code, 0, describeRun('vdkit', args, r));
  const res = JSON.parse(r.stdout) as MkimgResult;
  assert.equal(res.capacity, 64 * 1024 * 1024, '-c grows the disk past the last partition');
  assert.deepEqual(res.partitions.map((p) => [p.number, p.label ?? '']), [[1, 'ESP'], [3, 'rootfs'], [4, 'swap'], [5, '']]);
  assert.equal((await run('qemu-img', ['check', join(dir, 'disk.qcow2')])).code, 0);
  await ok('qemu-img', ['convert', '-O', 'raw', join(dir, 'disk.qcow2'), join(dir, 'disk.raw')]);
  assert.match(await ok('sgdisk', ['-v', join(dir, 'disk.raw')]), /No problems found/);
  const sf = (await sfdiskJson(join(dir, 'disk.raw'))) as { lastlba: number; partitions: { node: number; type: string; name?: string }[] };
  assert.equal(sf.lastlba, 64 * 2048 - 34);
  assert.deepEqual(sf.partitions.map((p) => [p.node, p.type, p.name ?? '']), [
    [1, 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B', 'ESP'],
    [3, '516E7CB6-6ECF-11D6-8FF8-00022D09712B', 'rootfs'],
    [4, '516E7CB5-6ECF-11D6-8FF8-00022D09712B', 'swap'],
    [5, '0FC63DAF-8483-4772-8E79-3D69D8477DE4', ''],
  ]);
  await checkContents(join(dir, 'disk.raw'), res, [{ type: 'efi', contents: { file: inp.fat } }, 'skip', { type: 'x', contents: { file: inp.rnd } }, { type: 'x', contents: { size: 1 } }, { type: 'x', contents: { command: COMMAND } }], inp);

  // no -o: streamOptimized VMDK on stdout (sh redirects it: the test runner's stdout is not a file)
  const s = await run('sh', ['-c', `"${process.execPath}" "$VDKIT" mkimg -s mbr -a 1 -p fat32:=fat.img -p linux-lvm::2M -f vmdk -t streamOptimized > stream.vmdk`], { cwd: dir, env: { ...process.env, VDKIT: join(process.cwd(), 'bin', 'vdkit.js') } });
  assert.equal(s.code, 0, describeRun('vdkit mkimg > stream.vmdk', [], s));
  const info = JSON.parse(await ok('qemu-img', ['info', '--output=json', join(dir, 'stream.vmdk')])) as { format: string; 'format-specific': { data: { 'create-type': string } } };
  assert.equal(info['format-specific'].data['create-type'], 'streamOptimized');
  assert.equal((await run('qemu-img', ['check', join(dir, 'stream.vmdk')])).code, 0);
  await ok('qemu-img', ['convert', '-O', 'raw', join(dir, 'stream.vmdk'), join(dir, 'stream.raw')]);
  const mbr = (await sfdiskJson(join(dir, 'stream.raw'))) as { partitions: { node: number; start: number; size: number; type: string; bootable?: boolean }[] };
  assert.deepEqual(mbr.partitions, [
    { node: 1, start: 2048, size: 16384, type: 'b', bootable: true },
    { node: 2, start: 18432, size: 4096, type: '8e' },
  ]);
  assert.ok((await slice(join(dir, 'stream.raw'), 2048 * S, 8 * 1024 * 1024)).equals(await readFile(inp.fat)));
});

test('vdkit mkimg CLI: bad input is a usage error (exit 2) or a DiskError (exit 1) naming what is wrong', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-mkimg-bad-')).path;
  const cases: [string[], number, RegExp][] = [
    [['-s', 'gpt', '-p', 'no-such-type::1M', '-o', 'x.raw'], 1, /partitions\[0\]\.type.*"no-such-type" is not a GPT partition type/],
    [['-s', 'mbr', '-p', 'linux-data::1M', '-p', 'linux-data::1M', '-p', 'linux-data::1M', '-p', 'linux-data::1M', '-p', 'linux-data::1M', '-o', 'x.raw'], 1, /5 partitions: the mbr scheme holds at most 4/],
    [['-s', 'gpt', '-p', 'linux-data::2G', '-C', '1G', '-o', 'x.raw'], 1, /partitions\[0\].*partition 1 ends at byte \d+.*past the disk's 1073741824 bytes/],
    [['-s', 'mbr', '-p', 'linux-data::3T', '-o', 'x.qcow2', '-f', 'qcow2'], 1, /lbaFirst|sectors.*32 bits/],
    [['-s', 'mbr', '-p', 'linux-data/name::1M', '-o', 'x.raw'], 1, /partitions\[0\]\.label.*MBR partitions have no labels/],
    [['-s', 'gpt', '-p', 'linux-data:=missing.img', '-o', 'x.raw'], 1, /missing\.img/],
    [['-s', 'gpt', '-p', 'linux-data:-exit 3', '-o', 'x.raw'], 1, /exited with status 3/],
    [['-s', 'zfs', '-p', 'linux-data::1M', '-o', 'x.raw'], 2, /-s: unknown scheme "zfs"/],
    [['-s', 'gpt', '-p', 'linux-data', '-o', 'x.raw'], 2, /-p "linux-data": expected TYPE\[\/LABEL\]:=FILE/],
    [['-s', 'gpt', '-p', 'linux-data::1M', '-f', 'qcow2'], 2, /qcow2 cannot be written to stdout/],
    [['-s', 'gpt', '-p', 'linux-data::1M', '-f', 'vhdz', '-o', 'x'], 2, /-f: unknown format "vhdz"/],
  ];
  for (const [args, code, re] of cases) {
    const r = await runVdkit(['mkimg', ...args], dir);
    assert.equal(r.code, code, describeRun('vdkit mkimg', args, r));
    assert.match(r.stderr, re, describeRun('vdkit mkimg', args, r));
  }
});
