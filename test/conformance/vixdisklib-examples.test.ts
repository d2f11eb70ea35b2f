/**
 * The ported VDDK sample program and virus-scan example, run as programs (node
 * dist/examples/...) through every command of the guide's walk-through. What they print is
 * checked against the guide's shapes and against facts read independently: qemu-img
 * (info/compare/check/map), the embedded descriptor read with plain fs, and a raw model file
 * given the same writes.
 */
import assert from 'node:assert/strict';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { serve } from '../../src/nbd/server/server.js';
import { describeRun, repoRoot, run, skipUnless, tmpDir } from '../helpers/tools.js';
import { descriptorText } from '../interop/support.js';

const SAMPLE = join(repoRoot(), 'dist', 'examples', 'vixdisksample.js');
const SCAN = join(repoRoot(), 'dist', 'examples', 'virus-scan.js');
const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';

function sample(cwd: string, args: string[]) {
  return run(process.execPath, [SAMPLE, ...args], { cwd });
}
async function sampleOk(cwd: string, args: string[]): Promise<string> {
  const r = await sample(cwd, args);
  assert.equal(r.code, 0, describeRun('vixdisksample', args, r));
  return r.stdout;
}
async function qemu(args: string[]): Promise<string> {
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, describeRun('qemu-img', args, r));
  return r.stdout;
}

/** DoInfo's five lines, parsed */
function parseInfo(stdout: string): { capacity: number; links: number; adapter: string; bios: number[]; phys: number[] } {
  const m = /^capacity {10}= (\d+) sectors\nnumber of links {3}= (\d+)\nadapter type {6}= (.+)\nBIOS geometry {5}= (\d+)\/(\d+)\/(\d+)\nphysical geometry = (\d+)\/(\d+)\/(\d+)\n$/.exec(stdout);
  assert.ok(m, `-info output has the sample's shape:\n${stdout}`);
  return { capacity: Number(m[1]), links: Number(m[2]), adapter: m[3]!, bios: [m[4], m[5], m[6]].map(Number), phys: [m[7], m[8], m[9]].map(Number) };
}

/** the ddb entries of a descriptor, read without vdkit */
function ddb(descriptor: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of descriptor.matchAll(/^ddb\.([\w.]+)\s*=\s*"([^"]*)"/gm)) out.set(m[1]!, m[2]!);
  return out;
}

/** -dump output: sectors of 32 lines "oooo : xx xx ... " then a blank line */
function parseDump(stdout: string): Buffer[] {
  const sectors: Buffer[] = [];
  for (const block of stdout.split('\n\n').filter((b) => b.trim() !== '')) {
    const lines = block.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 32, 'a sector is 32 lines of 16 bytes');
    const bytes: number[] = [];
    lines.forEach((l, i) => {
      const m = /^([0-9a-f]{4}) : ((?:[0-9a-f]{2} ){16})$/.exec(l);
      assert.ok(m, `dump line ${JSON.stringify(l)}`);
      assert.equal(parseInt(m[1]!, 16), i * 16, 'line offsets count up by 16');
      bytes.push(...m[2]!.trim().split(' ').map((h) => parseInt(h, 16)));
    });
    sectors.push(Buffer.from(bytes));
  }
  return sectors;
}

/** a sparse raw file of `bytes`, then the given writes */
async function model(path: string, bytes: number, writes: [number, Buffer][]): Promise<void> {
  await writeFile(path, Buffer.alloc(0));
  const fh = await open(path, 'r+');
  try {
    await fh.truncate(bytes);
    for (const [at, data] of writes) await fh.write(data, 0, data.length, at);
  } finally {
    await fh.close();
  }
}

test('VDDK sample program: every command of the guide, checked with qemu-img and the descriptor', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t, 'vdkit-vddk-sample-')).path;
  const MB100 = 100 * 1024 * 1024;

  // usage message: no arguments, and more than one command
  for (const args of [[], ['-info', '-meta', 'x.vmdk']]) {
    const r = await sample(dir, args);
    assert.equal(r.code, 1, describeRun('vixdisksample', args, r));
    assert.match(r.stdout, /^Usage: vixdisklibsample command \[options\] diskPath\ncommands:\n {2}-create : creates a sparse virtual disk with capacity specified by -cap\n/);
    for (const c of ['-redo parentPath', '-info', '-dump', '-fill', '-wmeta key value', '-rmeta key', '-meta', '-clone sourcePath']) assert.ok(r.stdout.includes(`\n  ${c} : `), `usage lists ${c}`);
  }

  // -create: 100 MB monolithic sparse, SCSI (BusLogic), Workstation 5; 65536 bytes at first (the guide)
  assert.equal(await sampleOk(dir, ['-create', 'sample.vmdk']), '');
  const info = JSON.parse(await qemu(['info', '--output=json', join(dir, 'sample.vmdk')]));
  assert.equal(info.format, 'vmdk');
  assert.equal(info['virtual-size'], MB100);
  assert.equal(info['format-specific'].data['create-type'], 'monolithicSparse');
  assert.equal((await stat(join(dir, 'sample.vmdk'))).size, 65536, 'a new monolithic sparse disk is 2^16 bytes (guide, DoCreate)');
  const db = ddb(await descriptorText(join(dir, 'sample.vmdk')));
  assert.equal(db.get('adapterType'), 'buslogic');
  assert.equal(db.get('virtualHWVersion'), '4');

  // -info: capacity, links, adapter, geometry (the descriptor's own numbers)
  const i1 = parseInfo(await sampleOk(dir, ['-info', 'sample.vmdk']));
  assert.equal(i1.capacity, info['virtual-size'] / 512);
  assert.equal(i1.links, 1);
  assert.equal(i1.adapter, 'BusLogic SCSI');
  assert.deepEqual(i1.bios, [0, 0, 0]);
  assert.deepEqual(i1.phys, [Number(db.get('geometry.cylinders')), Number(db.get('geometry.heads')), Number(db.get('geometry.sectors'))]);
  assert.deepEqual(i1.phys, [100, 64, 32], 'the guide\'s metadata example: 100 cylinders, 64 heads, 32 sectors');

  // -create -adapter ide -cap 3: IDE geometry 16 heads / 63 sectors
  await sampleOk(dir, ['-create', '-adapter', 'ide', '-cap', '3', 'ide.vmdk']);
  const i2 = parseInfo(await sampleOk(dir, ['-info', 'ide.vmdk']));
  assert.equal(i2.capacity, 3 * 2048);
  assert.equal(i2.adapter, 'IDE');
  assert.deepEqual(i2.phys, [Math.floor(6144 / (16 * 63)), 16, 63]);
  assert.equal(JSON.parse(await qemu(['info', '--output=json', join(dir, 'ide.vmdk')]))['virtual-size'], 3 * 1024 * 1024);

  // -fill and -dump: the guide's demonstration sequence
  assert.equal(await sampleOk(dir, ['-fill', '-val', '1', 'sample.vmdk']), '');
  assert.equal(await sampleOk(dir, ['-fill', '-val', '2', '-start', '1', '-count', '1', 'sample.vmdk']), '');
  assert.equal((await stat(join(dir, 'sample.vmdk'))).size, 131072, 'after the first write the file is 2^17 bytes (guide, DoCreate)');
  const dumped = parseDump(await sampleOk(dir, ['-dump', '-start', '0', '-count', '2', 'sample.vmdk']));
  assert.equal(dumped.length, 2);
  assert.deepEqual(dumped[0], Buffer.alloc(512, 1));
  assert.deepEqual(dumped[1], Buffer.alloc(512, 2));
  assert.deepEqual(parseDump(await sampleOk(dir, ['-dump', '-start', '2', 'sample.vmdk'])), [Buffer.alloc(512)], '-count defaults to 1; unwritten sectors read zeros');
  // default -val is 255
  await sampleOk(dir, ['-fill', '-start', '100', '-count', '3', 'sample.vmdk']);
  const base = join(dir, 'base.raw');
  const baseWrites: [number, Buffer][] = [
    [0, Buffer.alloc(512, 1)],
    [512, Buffer.alloc(512, 2)],
    [100 * 512, Buffer.alloc(3 * 512, 0xff)],
  ];
  await model(base, MB100, baseWrites);
  assert.match(await qemu(['compare', '-f', 'vmdk', '-F', 'raw', join(dir, 'sample.vmdk'), base]), /Images are identical/);
  await qemu(['check', join(dir, 'sample.vmdk')]);

  // -wmeta / -rmeta / -meta against the descriptor
  assert.equal(await sampleOk(dir, ['-wmeta', 'toolsVersion', '2', 'sample.vmdk']), '');
  assert.equal(await sampleOk(dir, ['-rmeta', 'toolsVersion', 'sample.vmdk']), 'toolsVersion = 2\n');
  const db2 = ddb(await descriptorText(join(dir, 'sample.vmdk')));
  assert.equal(db2.get('toolsVersion'), '2');
  assert.equal(await sampleOk(dir, ['-rmeta', 'uuid', 'sample.vmdk']), `uuid = ${db2.get('uuid')}\n`);
  const meta = await sampleOk(dir, ['-meta', 'sample.vmdk']);
  const metaMap = new Map(meta.trimEnd().split('\n').map((l) => {
    const m = /^([\w.]+) = (.*)$/.exec(l);
    assert.ok(m, `-meta line ${JSON.stringify(l)}`);
    return [m[1]!, m[2]!] as [string, string];
  }));
  assert.deepEqual(metaMap, db2, '-meta lists exactly the descriptor\'s ddb entries');
  for (const k of ['geometry.sectors', 'geometry.heads', 'geometry.cylinders', 'adapterType', 'toolsVersion', 'virtualHWVersion']) assert.ok(metaMap.has(k), `-meta shows ${k} (guide's example)`);

  // -redo: a child; -info shows two links; writes land in the child only
  assert.equal(await sampleOk(dir, ['-redo', 'sample.vmdk', 'child.vmdk']), '');
  const cinfo = JSON.parse(await qemu(['info', '--output=json', join(dir, 'child.vmdk')]));
  assert.equal(cinfo['backing-filename'], 'sample.vmdk');
  assert.equal(parseInfo(await sampleOk(dir, ['-info', 'child.vmdk'])).links, 2);
  const parentBefore = await readFile(join(dir, 'sample.vmdk'));
  await sampleOk(dir, ['-fill', '-val', '3', '-start', '1000', '-count', '2', 'child.vmdk']);
  assert.deepEqual(await readFile(join(dir, 'sample.vmdk')), parentBefore, 'the parent is untouched');
  const top = join(dir, 'top.raw');
  await model(top, MB100, [...baseWrites, [1000 * 512, Buffer.alloc(1024, 3)]]);
  assert.match(await qemu(['compare', '-f', 'vmdk', '-F', 'raw', join(dir, 'child.vmdk'), top]), /Images are identical/);
  // -single: the child alone, whose grain 0 it never wrote (the write above is copy-on-write of grain 7)
  assert.deepEqual(parseDump(await sampleOk(dir, ['-dump', '-single', 'child.vmdk'])), [Buffer.alloc(512)]);
  assert.deepEqual(parseDump(await sampleOk(dir, ['-dump', 'child.vmdk'])), [Buffer.alloc(512, 1)]);
  // writing the parent of a redo log is an error (the guide, "Create Child from Parent Disk")
  const parentWrite = await sample(dir, ['-fill', 'sample.vmdk']);
  assert.equal(parentWrite.code, 1, describeRun('vixdisksample', ['-fill', 'sample.vmdk'], parentWrite));
  assert.match(parentWrite.stderr, /^Error: \[vixdisksample\] [0-9a-f]+ VIX_E_DISK_RDONLY /);

  // -clone: the chain into one new disk, with progress in percent
  const cl = await sampleOk(dir, ['-clone', 'child.vmdk', 'clone.vmdk']);
  const steps = cl.split('\r').filter((s) => s.trim() !== '').map((s) => /^Cloning : (\d+)% Done$/.exec(s.trim()));
  assert.ok(steps.length >= 2 && steps.every(Boolean), `clone progress lines: ${JSON.stringify(cl)}`);
  const percents = steps.map((m) => Number(m![1]));
  assert.deepEqual(percents, [...percents].sort((a, b) => a - b), 'progress never goes back');
  assert.equal(percents[percents.length - 1], 100);
  const clInfo = JSON.parse(await qemu(['info', '--output=json', join(dir, 'clone.vmdk')]));
  assert.equal(clInfo['backing-filename'], undefined, 'the clone stands alone');
  assert.equal(clInfo['virtual-size'], MB100);
  assert.match(await qemu(['compare', join(dir, 'clone.vmdk'), join(dir, 'child.vmdk')]), /Images are identical/);
  await qemu(['check', join(dir, 'clone.vmdk')]);
  const i3 = parseInfo(await sampleOk(dir, ['-info', 'clone.vmdk']));
  assert.equal(i3.links, 1);
  assert.equal(i3.adapter, 'BusLogic SCSI');
  // -cap on clone: a larger clone; a smaller one is refused
  await sampleOk(dir, ['-clone', 'clone.vmdk', '-cap', '200', '-adapter', 'ide', 'big.vmdk']);
  const i4 = parseInfo(await sampleOk(dir, ['-info', 'big.vmdk']));
  assert.equal(i4.capacity, 200 * 2048);
  assert.equal(i4.adapter, 'IDE');
  const small = await sample(dir, ['-clone', 'clone.vmdk', '-cap', '50', 'small.vmdk']);
  assert.equal(small.code, 1);
  assert.match(small.stderr, /VIX_E_DISK_INVAL One of the parameters supplied is invalid/);

  // errors: missing key, missing file, remote host
  const nokey = await sample(dir, ['-rmeta', 'noSuchKey', 'sample.vmdk']);
  assert.equal(nokey.code, 1);
  assert.match(nokey.stderr, /^Error: \[vixdisksample\] 3eb4 VIX_E_DISK_KEY_NOTFOUND /, '16052 = 0x3eb4');
  const nofile = await sample(dir, ['-info', 'missing.vmdk']);
  assert.equal(nofile.code, 1);
  assert.match(nofile.stderr, /VIX_E_DISK_FILENOTFOUND The system cannot find the file specified/);
  // a file that is no disk image: VDDK refuses to open it, so -fill must not overwrite it
  const notes = join(dir, 'notes.txt');
  const text = 'not a disk, just text\n'.repeat(100);
  await writeFile(notes, text);
  const notDisk = await sample(dir, ['-fill', '-val', '7', 'notes.txt']);
  assert.equal(notDisk.code, 1, describeRun('vixdisksample', ['-fill', 'notes.txt'], notDisk));
  assert.match(notDisk.stderr, /^Error: \[vixdisksample\] 3ebf VIX_E_DISK_INVALIDDISK The file specified is not a virtual disk/, '16063 = 0x3ebf');
  assert.equal(await readFile(notes, 'utf8'), text, 'the file is unchanged');
  // a host: the disk is an NBD export there; nothing listens on this port
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const remote = await sample(dir, ['-info', '-host', '127.0.0.1', '-port', String(port), '-user', 'admin', '-password', 'secret', '[storage1]RHEL5/RHEL5.vmdk']);
  assert.equal(remote.code, 1);
  assert.match(remote.stderr, /^Error: \[vixdisksample\] 36b9 VIX_E_HOST_NETWORK_CONN_REFUSED /, '14009 = 0x36b9');

  // -virus (the guide's chapter 5 addition): nothing in sample.vmdk
  const clean = await sample(dir, ['-virus', 'clone.vmdk']);
  assert.equal(clean.code, 0, describeRun('vixdisksample', ['-virus'], clean));
  assert.equal(clean.stdout, `capacity = ${MB100 / 512} sectors\n${MB100 / 512} sectors scanned\n`);
});

test('vixdisksample with -host/-port against vdkit serve: -info, -fill and -dump of an NBD export (the sample unchanged)', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-sample-nbd-')).path;
  const disk = join(dir, 'served.qcow2');
  await qemu(['create', '-q', '-f', 'qcow2', disk, '8M']);
  const q = await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 512', disk]);
  assert.equal(q.code, 0, describeRun('qemu-io', [disk], q));
  const server = await serve({ images: [{ path: disk, name: 'vm1' }], listen: { host: '127.0.0.1', port: 0 } });
  t.after(() => server.close());
  const host = ['-host', '127.0.0.1', '-port', String((server.address as { port: number }).port)];
  const info = await sampleOk(dir, ['-info', ...host, 'vm1']);
  assert.match(info, /^capacity {10}= 16384 sectors\nnumber of links {3}= 1\n/);
  await sampleOk(dir, ['-fill', '-val', '171', '-start', '3', '-count', '2', ...host, 'vm1']);
  const dump = await sampleOk(dir, ['-dump', '-start', '3', '-count', '1', ...host, 'vm1']);
  assert.match(dump, /^0000 : ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab \n/);
  await server.close();
  const check = await run('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 0xab 1536 1024', '-c', 'read -P 0x5a 0 512', disk]);
  assert.equal(check.code, 0, describeRun('qemu-io', [disk], check));
});

test('virus-scan example: finds a signature in any sector (also across sector and read boundaries) of a qemu-made disk', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-virus-')).path;
  const disk = join(dir, 'infected.vmdk');
  // sector 7 (inside), across sectors 40/41, across the scanner's 2048-sector reads (2047/2048), and far on
  const places = [7 * 512 + 100, 41 * 512 - 20, 2048 * 512 - 30, 16000 * 512];
  const raw = join(dir, 'infected.raw');
  await model(raw, 8 * 1024 * 1024, places.map((at) => [at, Buffer.from(EICAR, 'latin1')] as [number, Buffer]));
  await qemu(['convert', '-f', 'raw', '-O', 'vmdk', raw, disk]);
  const r = await run(process.execPath, [SCAN, 'infected.vmdk'], { cwd: dir });
  assert.equal(r.code, 3, describeRun('virus-scan', [], r));
  const expected = places.map((at) => `Virus detected in sector ${Math.floor(at / 512)}`);
  assert.equal(r.stdout, [`capacity = ${16384} sectors`, ...expected, '16384 sectors scanned', ''].join('\n'));

  // another signature by -hex, and -single on a child that holds only its own writes
  const child = join(dir, 'child.vmdk');
  await qemu(['create', '-f', 'vmdk', '-b', 'infected.vmdk', '-F', 'vmdk', child]);
  const w = await run('qemu-io', ['-f', 'vmdk', '-c', `write -P 0xab ${300 * 512} 512`, child]);
  assert.equal(w.code, 0, describeRun('qemu-io', [], w));
  const abab = Buffer.alloc(64, 0xab).toString('hex');
  const hit = await run(process.execPath, [SCAN, '-hex', abab, 'child.vmdk'], { cwd: dir });
  assert.equal(hit.code, 3, describeRun('virus-scan', [], hit));
  assert.match(hit.stdout, /^Virus detected in sector 300$/m);
  assert.doesNotMatch(hit.stdout, /sector 301/, 'one hit per sector where a signature starts, not one per overlap');
  const single = await run(process.execPath, [SCAN, '-single', 'child.vmdk'], { cwd: dir });
  assert.equal(single.code, 0, 'the child alone holds no EICAR string');
  const chain = await run(process.execPath, [SCAN, 'child.vmdk'], { cwd: dir });
  assert.equal(chain.code, 3, 'through the chain the parent\'s are seen');
  const usage = await run(process.execPath, [SCAN], { cwd: dir });
  assert.equal(usage.code, 1);
  assert.match(usage.stdout, /^Usage: virus-scan /);
});
