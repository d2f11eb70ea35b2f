/**
 * `ova create` checked by the tools that read OVAs: GNU tar lists the descriptor first and
 * extracts members whose sha256sum is what the manifest says; the descriptor (parsed here by a
 * tokenizer of the test's own, not vdkit's) has OVF's required elements and every reference
 * resolves; `xmllint --noout` accepts it where installed; qemu-img reads each extracted
 * streamOptimized disk as identical to its source and checks it clean; vdkit reads the disks
 * straight out of the archive (vm.ova#disk1.vmdk, vm.ova#2, stdin -#1), `ova verify` catches
 * a flipped byte, and a VMDK descriptor with its flat extent inside a tar (made by GNU tar) opens.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { open, readFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { describeRun, hasTool, repoRoot, run, runVdkit, skipUnless, tmpDir } from '../helpers/tools.js';
import { startRangeServer } from '../helpers/range-server.js';

async function ok(cmd: string, args: string[], cwd?: string): Promise<string> {
  const r = await run(cmd, args, { cwd });
  assert.equal(r.code, 0, describeRun(cmd, args, r));
  return r.stdout;
}

async function vdkit(args: string[], cwd: string): Promise<string> {
  const r = await runVdkit(args, cwd);
  assert.equal(r.code, 0, describeRun('vdkit', args, r));
  return r.stdout;
}

/** A minimal element tree from XML text: enough to walk an OVF descriptor in a test. */
interface El {
  name: string;
  attrs: Record<string, string>;
  children: El[];
  text: string;
}

function parse(xml: string): El {
  const root: El = { name: '#doc', attrs: {}, children: [], text: '' };
  const stack = [root];
  const re = /<\?[^>]*\?>|<!--[\s\S]*?-->|<(\/?)([\w:.-]+)((?:\s+[\w:.-]+\s*=\s*"[^"]*")*)\s*(\/?)>|([^<]+)/g;
  for (let m = re.exec(xml); m; m = re.exec(xml)) {
    const top = stack[stack.length - 1]!;
    if (m[5] !== undefined) {
      top.text += m[5];
      continue;
    }
    if (m[2] === undefined) continue;
    if (m[1] === '/') {
      assert.equal(top.name, m[2], `end tag </${m[2]}> closes <${top.name}>`);
      stack.pop();
      continue;
    }
    const el: El = { name: m[2], attrs: {}, children: [], text: '' };
    for (const a of m[3]!.matchAll(/([\w:.-]+)\s*=\s*"([^"]*)"/g)) el.attrs[a[1]!] = a[2]!;
    top.children.push(el);
    if (m[4] !== '/') stack.push(el);
  }
  assert.equal(stack.length, 1, 'every element is closed');
  assert.equal(root.children.length, 1, 'one root element');
  return root.children[0]!;
}

const kids = (e: El | undefined, name: string) => (e ? e.children.filter((c) => c.name === name) : []);
const kid = (e: El | undefined, name: string) => kids(e, name)[0];
const text = (e: El | undefined, name: string) => kid(e, name)?.text.trim();

const MiB = 1024 * 1024;

async function makeSources(t: TestContext, dir: string): Promise<{ qcow2: string; raw: string }> {
  const qcow2 = join(dir, 'sys.qcow2');
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2, '48M']);
  await ok('qemu-io', ['-c', 'write -P 0xab 1M 3M', '-c', 'write -P 0x5c 40M 64k', '-c', 'write -P 0x01 50331136 512', qcow2]);
  // a raw disk with an odd size (rounded up to whole sectors in the VMDK) and data in two places
  const raw = join(dir, 'data.raw');
  const fh = await open(raw, 'w');
  await fh.truncate(5 * MiB + 1000);
  await fh.write(Buffer.from('vdkit ova test data'), 0, undefined, 7777);
  await fh.write(Buffer.alloc(70000, 0x33), 0, undefined, 3 * MiB);
  await fh.close();
  t.diagnostic(`sources: ${qcow2}, ${raw}`);
  return { qcow2, raw };
}

/** The descriptor's required parts and every reference between them, for `disks` disk members. */
function checkDescriptor(xml: string, sizes: Map<string, number>, want: { version: '1.0' | '2.0'; disks: { href: string; capacity: number }[]; cpus: number; memory: number; network: string; hw: number; firmware: string }): El {
  const env = parse(xml);
  assert.equal(env.name, 'Envelope');
  const ns = want.version === '1.0' ? 'http://schemas.dmtf.org/ovf/envelope/1' : 'http://schemas.dmtf.org/ovf/envelope/2';
  assert.equal(env.attrs.xmlns, ns);
  assert.equal(env.attrs['xmlns:ovf'], ns);
  assert.equal(env.attrs['xmlns:rasd'], 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData');
  assert.equal(env.attrs['xmlns:vssd'], 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData');
  if (want.version === '2.0') assert.equal(env.attrs['xmlns:epasd'], 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData');
  // section order the OVF schema's sequence requires: References, sections, the content
  assert.deepEqual(env.children.map((c) => c.name), ['References', 'DiskSection', 'NetworkSection', 'VirtualSystem']);
  const files = kids(kid(env, 'References'), 'File');
  assert.equal(files.length, want.disks.length);
  const fileById = new Map(files.map((f) => [f.attrs['ovf:id']!, f]));
  for (const f of files) assert.equal(Number(f.attrs['ovf:size']), sizes.get(f.attrs['ovf:href']!), `ovf:size of ${f.attrs['ovf:href']} is its tar member's size`);
  const ds = kid(env, 'DiskSection')!;
  assert.ok(text(ds, 'Info'), 'DiskSection has its Info');
  const disks = kids(ds, 'Disk');
  assert.equal(disks.length, want.disks.length);
  disks.forEach((d, i) => {
    assert.equal(fileById.get(d.attrs['ovf:fileRef']!)?.attrs['ovf:href'], want.disks[i]!.href, 'Disk fileRef names the File of its member');
    assert.equal(Number(d.attrs['ovf:capacity']) * (d.attrs['ovf:capacityAllocationUnits'] === 'byte' ? 1 : NaN), want.disks[i]!.capacity);
    assert.equal(d.attrs['ovf:format'], 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized');
    assert.ok(Number(d.attrs['ovf:populatedSize']) > 0 && Number(d.attrs['ovf:populatedSize']) <= want.disks[i]!.capacity + 65535, 'populatedSize is the allocated grains');
  });
  const nets = kids(kid(env, 'NetworkSection'), 'Network');
  assert.deepEqual(nets.map((n) => n.attrs['ovf:name']), [want.network]);
  const vs = kid(env, 'VirtualSystem')!;
  assert.ok(vs.attrs['ovf:id'], 'VirtualSystem has an ovf:id');
  assert.ok(text(vs, 'Info'));
  const os = kid(vs, 'OperatingSystemSection')!;
  assert.match(os.attrs['ovf:id']!, /^\d+$/);
  assert.ok(text(os, 'Info'));
  const hw = kid(vs, 'VirtualHardwareSection')!;
  assert.ok(text(hw, 'Info'));
  assert.equal(text(kid(hw, 'System'), 'vssd:VirtualSystemType'), `vmx-${String(want.hw).padStart(2, '0')}`);
  const items = [...kids(hw, 'Item'), ...kids(hw, 'EthernetPortItem')];
  const field = (it: El, f: string) => text(it, `rasd:${f}`) ?? text(it, `epasd:${f}`);
  const byType = (n: number) => items.filter((it) => Number(field(it, 'ResourceType')) === n);
  const ids = items.map((it) => field(it, 'InstanceID'));
  assert.equal(new Set(ids).size, ids.length, 'InstanceIDs are unique');
  for (const it of items) {
    // RASD fields in the CIM schema's (alphabetical) order
    const names = it.children.map((c) => c.name.slice(c.name.indexOf(':') + 1));
    assert.deepEqual(names, [...names].sort(), `fields of ${field(it, 'ElementName')} in schema order`);
    assert.ok(field(it, 'ElementName'), 'every Item has its ElementName');
  }
  assert.equal(Number(field(byType(3)[0]!, 'VirtualQuantity')), want.cpus);
  assert.equal(Number(field(byType(4)[0]!, 'VirtualQuantity')), want.memory);
  assert.equal(field(byType(4)[0]!, 'AllocationUnits'), 'byte * 2^20');
  const controller = byType(6)[0] ?? byType(5)[0];
  assert.ok(controller, 'a disk controller');
  const diskItems = byType(17);
  assert.equal(diskItems.length, want.disks.length);
  diskItems.forEach((it, i) => {
    assert.equal(field(it, 'Parent'), field(controller!, 'InstanceID'), 'disks hang off the controller');
    assert.equal(field(it, 'HostResource'), `ovf:/disk/${disks[i]!.attrs['ovf:diskId']}`, 'HostResource names a Disk');
  });
  const nic = byType(10)[0]!;
  assert.ok(nic, 'a NIC');
  assert.equal(nic.name, want.version === '2.0' ? 'EthernetPortItem' : 'Item');
  assert.equal(field(nic, 'Connection'), want.network, 'the NIC joins a network of the NetworkSection');
  assert.equal(kids(hw, 'vmw:Config').find((c) => c.attrs['vmw:key'] === 'firmware')?.attrs['vmw:value'], want.firmware);
  return env;
}

async function xmllint(t: TestContext, file: string): Promise<void> {
  if (!hasTool('xmllint')) {
    t.diagnostic('xmllint not installed (libxml2-utils): well-formedness checked by the test\'s own tokenizer only');
    return;
  }
  await ok('xmllint', ['--noout', file]);
}

test('ova create: descriptor first, references resolve, manifest = sha256sum, disks identical for qemu-img and vdkit', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io', 'tar', 'sha256sum')) return;
  const dir = (await tmpDir(t)).path;
  const src = await makeSources(t, dir);
  for (const version of ['1.0', '2.0'] as const) {
    const ova = join(dir, `vm${version}.ova`);
    await vdkit(['ova', 'create', ova, '--disk', src.qcow2, '--disk', src.raw, '--name', 'Test VM', '--cpus', '2', '--memory', '1536', '--network', 'lan', '--firmware', 'efi', '--hw-version', '14', '--ovf', version, '--os-type', '101:otherLinux64Guest'], dir);
    const listing = (await ok('tar', ['tvf', ova])).trim().split('\n');
    const names = listing.map((l) => l.split(/\s+/).pop()!);
    assert.deepEqual(names, ['Test_VM.ovf', 'disk1.vmdk', 'disk2.vmdk', 'Test_VM.mf'], 'descriptor first, then the disks, the manifest last');
    const sizes = new Map(listing.map((l) => [l.split(/\s+/).pop()!, Number(l.split(/\s+/)[2])]));
    const x = join(dir, `x${version}`);
    await ok('mkdir', [x]);
    await ok('tar', ['xf', ova, '-C', x]);
    const xml = await readFile(join(x, 'Test_VM.ovf'), 'utf8');
    checkDescriptor(xml, sizes, { version, disks: [{ href: 'disk1.vmdk', capacity: 48 * MiB }, { href: 'disk2.vmdk', capacity: 5 * MiB + 1024 }], cpus: 2, memory: 1536, network: 'lan', hw: 14, firmware: 'efi' });
    await xmllint(t, join(x, 'Test_VM.ovf'));
    // the manifest lists every other member with GNU coreutils' digest
    const sums = (await ok('sha256sum', ['Test_VM.ovf', 'disk1.vmdk', 'disk2.vmdk'], x)).trim().split('\n').map((l) => l.split(/\s+/));
    const mf = (await readFile(join(x, 'Test_VM.mf'), 'utf8')).trim().split('\n');
    assert.deepEqual(mf, sums.map(([h, n]) => `SHA256(${n})= ${h}`));
    // the disks as qemu-img reads them
    await ok('qemu-img', ['compare', '-f', 'qcow2', '-F', 'vmdk', src.qcow2, join(x, 'disk1.vmdk')]);
    await ok('qemu-img', ['check', join(x, 'disk1.vmdk')]);
    // a raw source of an odd size: the VMDK has whole sectors (zeros past the end): compare in strict mode fails on size, so compare the common part
    const out2 = join(dir, `d2-${version}.raw`);
    await ok('qemu-img', ['convert', '-O', 'raw', join(x, 'disk2.vmdk'), out2]);
    const a = await readFile(src.raw);
    const b = await readFile(out2);
    assert.equal(b.length, 5 * MiB + 1024);
    assert.ok(b.subarray(0, a.length).equals(a) && b.subarray(a.length).every((v) => v === 0), 'disk2 reads as the raw source, zero-padded to a sector');
    // info reads back what was asked
    const info = JSON.parse(await vdkit(['ova', 'info', '--json', ova], dir));
    assert.equal(info.ovf.ovfVersion, version);
    assert.equal(info.ovf.cpus, 2);
    assert.equal(info.ovf.memory, 1536);
    assert.equal(info.ovf.firmware, 'efi');
    assert.deepEqual(info.ovf.os, { id: 101, vmwType: 'otherLinux64Guest' });
    assert.deepEqual(info.ovf.disks.map((d: { href: string; capacity: number }) => [d.href, d.capacity]), [['disk1.vmdk', 48 * MiB], ['disk2.vmdk', 5 * MiB + 1024]]);
  }
  // vdkit reads the disks straight out of the archive: by name, by number, and from stdin
  const ova = join(dir, 'vm1.0.ova');
  await vdkit(['convert', `${ova}#disk1.vmdk`, join(dir, 'o1.qcow2')], dir);
  await ok('qemu-img', ['compare', src.qcow2, join(dir, 'o1.qcow2')]);
  await vdkit(['convert', '-O', 'qcow2', `${ova}#1`, join(dir, 'o1b.qcow2')], dir);
  await ok('qemu-img', ['compare', src.qcow2, join(dir, 'o1b.qcow2')]);
  await vdkit(['compare', `${ova}#2`, src.raw], dir);
  const piped = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const p = spawn(process.execPath, [join(repoRoot(), 'bin', 'vdkit.js'), 'convert', '-#1', join(dir, 'o3.qcow2')], { cwd: dir, stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ code, stderr }));
    createReadStream(ova).pipe(p.stdin);
  });
  assert.equal(piped.code, 0, piped.stderr);
  await ok('qemu-img', ['compare', src.qcow2, join(dir, 'o3.qcow2')]);
  // an archive that lives behind a URL: its member opens through the URL's namespace
  const server = await startRangeServer(t, dir);
  await vdkit(['compare', `${server.url}/vm1.0.ova#2`, src.raw], dir);
  // a member is read-only: it is never a convert target
  const r = await runVdkit(['convert', src.raw, `${ova}#disk2.vmdk`], dir);
  assert.equal(r.code, 1, describeRun('vdkit', ['convert', src.raw, `${ova}#disk2.vmdk`], r));
  assert.match(r.stderr, /RDONLY/);
});

test('ova verify: a clean archive passes, a flipped byte in a disk fails with exit 1 naming the member; extract equals tar xf', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'tar')) return;
  const dir = (await tmpDir(t)).path;
  const src = await makeSources(t, dir);
  const ova = join(dir, 'v.ova');
  await vdkit(['ova', 'create', ova, '--disk', src.raw, '--manifest', 'sha1'], dir);
  assert.match(await vdkit(['ova', 'verify', ova], dir), /manifest v\.mf matches/);
  await vdkit(['ova', 'extract', ova, join(dir, 'ex')], dir);
  await ok('mkdir', [join(dir, 'tx')]);
  await ok('tar', ['xf', ova, '-C', join(dir, 'tx')]);
  for (const n of ['v.ovf', 'disk1.vmdk', 'v.mf']) assert.ok((await readFile(join(dir, 'ex', n))).equals(await readFile(join(dir, 'tx', n))), `${n} extracted as tar does`);
  assert.match(await readFile(join(dir, 'ex', 'v.mf'), 'utf8'), /^SHA1\(v\.ovf\)= [0-9a-f]{40}\n/);
  // extract refuses to replace files
  const again = await runVdkit(['ova', 'extract', ova, join(dir, 'ex')], dir);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /FILEEXISTS/);
  // flip one byte inside disk1.vmdk's data (past its header: the archive still parses)
  const index = JSON.parse(await vdkit(['ova', 'info', '--json', ova], dir));
  const disk = index.members.find((m: { name: string }) => m.name === 'disk1.vmdk');
  const fh = await open(ova, 'r+');
  const at = disk.offset + disk.size - 700;
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, at);
  b[0] ^= 0xff;
  await fh.write(b, 0, 1, at);
  await fh.close();
  const bad = await runVdkit(['ova', 'verify', ova], dir);
  assert.equal(bad.code, 1, describeRun('vdkit', ['ova', 'verify', ova], bad));
  assert.match(bad.stdout, /FAIL SHA1\(disk1\.vmdk\): digest differs/);
  assert.match(bad.stdout, /ok {3}SHA1\(v\.ovf\)/);
});

test('a VMDK descriptor with its flat extent inside a tar made by GNU tar opens beside each other', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io', 'tar')) return;
  const dir = (await tmpDir(t)).path;
  await ok('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', join(dir, 'flat.vmdk'), '4M']);
  await ok('qemu-io', ['-c', 'write -P 0x77 64k 128k', join(dir, 'flat.vmdk')]);
  await ok('tar', ['cf', join(dir, 'pack.tar'), '--format=gnu', '-C', dir, 'flat.vmdk', 'flat-flat.vmdk']);
  await vdkit(['convert', '-O', 'raw', `${join(dir, 'pack.tar')}#flat.vmdk`, join(dir, 'out.raw')], dir);
  await ok('qemu-img', ['compare', '-F', 'raw', join(dir, 'flat.vmdk'), join(dir, 'out.raw')]);
  // and a pax archive (GNU tar --format=pax) too
  await ok('tar', ['cf', join(dir, 'pax.tar'), '--format=pax', '-C', dir, 'flat.vmdk', 'flat-flat.vmdk']);
  await vdkit(['compare', `${join(dir, 'pax.tar')}#flat.vmdk`, join(dir, 'out.raw')], dir);
});
