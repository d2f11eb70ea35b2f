/**
 * Target profiles (docs/targets.md): applyTarget's choices as data, `vdkit convert --target` for
 * every profile checked by the outside tools (qemu-img info/compare/check, vmdkinfo, vhdiinfo,
 * the VHD footer read with plain fs), `vdkit lint --target` passing on each result, and lint's
 * specific findings on images that break a target's rules (exit 1), with exit 2 on errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DiskError, TARGETS, applyTarget, targetByName, type LintFinding, type TargetName } from '../../src/index.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';
import { MiB, GiB, runOk } from './support.js';

const BIN = join(resolve(dirname(fileURLToPath(import.meta.url)), '../../..'), 'bin', 'vdkit.js');
/** not a whole MiB, so Azure's and GCP's rounding shows */
const SRC_SIZE = 33 * MiB + 3 * 512;

function vdkit(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const p = spawn(process.execPath, [BIN, ...args], { cwd });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    p.on('error', rej);
    p.on('close', (code) => res({ code: code ?? -1, stdout, stderr }));
  });
}

async function qemuInfoJson(path: string, format?: string): Promise<Record<string, unknown> & { 'virtual-size': number; format: string }> {
  const args = ['info', '--output=json', ...(format ? ['-f', format] : []), path];
  return JSON.parse((await runOk('qemu-img', args, 'qemu-img info')).stdout) as Record<string, unknown> & { 'virtual-size': number; format: string };
}

/** key -> value lines of vmdkinfo / vhdiinfo */
async function toolInfo(tool: string, path: string): Promise<Record<string, string>> {
  const r = await runOk(tool, [path], tool);
  const out: Record<string, string> = {};
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*([A-Za-z][A-Za-z ]*?)\s*:\s*(.*)$/.exec(line);
    if (m && !(m[1]! in out)) out[m[1]!] = m[2]!.trim();
  }
  return out;
}

async function lintJson(file: string, target: string, cwd: string): Promise<{ code: number; findings: LintFinding[]; accepted: boolean }> {
  const r = await vdkit(['lint', '--json', '--target', target, file], cwd);
  assert.ok(r.code === 0 || r.code === 1, `lint ${target} ${file}: exit ${r.code}: ${r.stderr}`);
  const j = JSON.parse(r.stdout) as { findings: LintFinding[]; accepted: boolean };
  return { code: r.code, ...j };
}

test('applyTarget: what each profile chooses, rounding, explicit options winning, conflicts', () => {
  const aws = applyTarget(targetByName('aws'), {}, SRC_SIZE);
  assert.equal(aws.options.format, 'vmdk');
  assert.equal(aws.options.type, 'streamOptimized');
  assert.equal(aws.options.adapterType, 'lsilogic');
  assert.equal(aws.capacity, SRC_SIZE, 'AWS keeps a sector-aligned size');
  assert.deepEqual(aws.conflicts, []);

  const az = applyTarget(targetByName('azure'), {}, SRC_SIZE);
  assert.deepEqual([az.options.format, az.options.type, az.options.chsRounding], ['vhd', 'fixed', false]);
  assert.equal(az.capacity, 34 * MiB, 'Azure: rounded up to a whole MiB');
  assert.equal(az.options.capacity, 34 * MiB);
  assert.ok(az.choices.some((c) => c.includes(String(34 * MiB))), az.choices.join('; '));
  assert.equal(applyTarget(targetByName('azure'), {}, 5 * MiB).capacity, 20 * MiB, 'Azure: at least 20 MiB');
  assert.equal(applyTarget(targetByName('azure'), {}, 64 * MiB).capacity, 64 * MiB, 'an aligned size stays');
  assert.throws(() => applyTarget(targetByName('azure'), {}, 32 * 1024 * GiB + MiB), (e: unknown) => e instanceof DiskError && e.code === 'INVAL');

  const dyn = applyTarget(targetByName('azure'), { type: 'dynamic' }, SRC_SIZE);
  assert.equal(dyn.options.type, 'dynamic', 'the explicit type wins');
  assert.equal(dyn.conflicts.length, 1);
  assert.equal(dyn.conflicts[0]!.severity, 'error');
  const other = applyTarget(targetByName('azure'), { format: 'vhdx' }, SRC_SIZE);
  assert.equal(other.options.format, 'vhdx');
  assert.equal(other.options.type, undefined, 'no VHD type forced onto another format');
  assert.equal(other.conflicts[0]?.field, 'format');

  // another format the target also takes: its default type is judged, not "no type"
  assert.deepEqual(applyTarget(targetByName('aws'), { format: 'vhd' }, SRC_SIZE).conflicts, []);
  assert.equal(applyTarget(targetByName('aws'), { format: 'qcow2' }, SRC_SIZE).conflicts[0]?.severity, 'error');

  const hv = applyTarget(targetByName('hyperv'), {}, SRC_SIZE);
  assert.deepEqual([hv.options.format, hv.options.type, hv.options.blockSize], ['vhdx', 'dynamic', 32 * MiB]);
  assert.equal(applyTarget(targetByName('gcp'), {}, SRC_SIZE).capacity, GiB, 'GCP: whole GiB');
  const esxi = applyTarget(targetByName('esxi'), { adapterType: 'ide', hwVersion: '13' }, SRC_SIZE);
  assert.deepEqual([esxi.options.type, esxi.options.adapterType, esxi.options.hwVersion], ['vmfs', 'ide', '13']);
  assert.ok(esxi.choices.some((c) => c.includes('ide (yours')), esxi.choices.join('; '));
  assert.equal(applyTarget(targetByName('qemu'), {}, SRC_SIZE).options.clusterSize, 65536);

  // every profile's own choice is one it accepts
  for (const name of Object.keys(TARGETS)) {
    const p = applyTarget(targetByName(name), {}, SRC_SIZE);
    assert.deepEqual(p.conflicts, [], `${name}: its own choice conflicts with its rules`);
  }
  assert.throws(() => targetByName('nowhere'), (e: unknown) => e instanceof DiskError && e.code === 'INVAL');
});

test('convert --target: every profile, checked by qemu-img, vmdkinfo, vhdiinfo and lint', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io', 'vmdkinfo', 'vhdiinfo')) return;
  const dir = (await tmpDir(t, 'vdkit-targets-')).path;
  const src = join(dir, 'src.qcow2');
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', src, String(SRC_SIZE)], 'qemu-img create');
  await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 1M', '-c', `write -P 0x22 ${SRC_SIZE - 4096} 4096`, src], 'qemu-io write');

  const cases: { target: TargetName; out: string; qemuFormat: string; check: (out: string) => Promise<void> }[] = [
    {
      target: 'esxi',
      qemuFormat: 'vmdk',
      out: 'esxi.vmdk',
      check: async (out) => {
        const info = await qemuInfoJson(out, 'vmdk');
        assert.equal((info['format-specific'] as { data: { 'create-type': string } }).data['create-type'], 'vmfs');
        assert.equal((await toolInfo('vmdkinfo', out))['Disk type'], 'VMFS flat');
        assert.match(await readFile(out, 'utf8'), /ddb\.adapterType = "lsilogic"/);
        assert.equal(info['virtual-size'], SRC_SIZE);
      },
    },
    {
      target: 'workstation',
      qemuFormat: 'vmdk',
      out: 'ws.vmdk',
      check: async (out) => {
        assert.equal((await toolInfo('vmdkinfo', out))['Disk type'], 'Monolithic sparse');
        assert.equal((await qemuInfoJson(out, 'vmdk'))['virtual-size'], SRC_SIZE);
      },
    },
    {
      target: 'virtualbox',
      qemuFormat: 'vdi',
      out: 'vb.vdi',
      check: async (out) => {
        const info = await qemuInfoJson(out);
        assert.equal(info.format, 'vdi');
        assert.equal(info['virtual-size'], SRC_SIZE);
      },
    },
    {
      target: 'hyperv',
      qemuFormat: 'vhdx',
      out: 'hv.vhdx',
      check: async (out) => {
        const info = await qemuInfoJson(out);
        assert.equal(info.format, 'vhdx');
        assert.equal(info['cluster-size'], 32 * MiB, 'Hyper-V block size');
        const v = await toolInfo('vhdiinfo', out);
        assert.match(v['Format'] ?? '', /VHDX/);
        assert.equal(v['Disk type'], 'Dynamic');
      },
    },
    {
      target: 'azure',
      qemuFormat: 'vpc',
      out: 'az.vhd',
      check: async (out) => {
        const info = await qemuInfoJson(out, 'vpc');
        assert.equal(info['virtual-size'], 34 * MiB, 'rounded up to a whole MiB');
        assert.equal((await toolInfo('vhdiinfo', out))['Disk type'], 'Fixed');
        // the footer, read without vdkit: the file's last 512 bytes, big-endian fields (VHD spec)
        const size = (await stat(out)).size;
        assert.equal(size, 34 * MiB + 512, 'data + one footer, nothing else');
        const fh = await open(out, 'r');
        const footer = Buffer.alloc(512);
        await fh.read(footer, 0, 512, size - 512);
        await fh.close();
        assert.equal(footer.toString('latin1', 0, 8), 'conectix');
        assert.equal(footer.readUInt32BE(60), 2, 'disk type 2 = fixed');
        assert.equal(Number(footer.readBigUInt64BE(48)), 34 * MiB, 'current size');
        assert.equal(Number(footer.readBigUInt64BE(40)), 34 * MiB, 'original size');
        assert.equal(footer.readBigUInt64BE(16), 0xffffffffffffffffn, 'a fixed disk has no data offset');
      },
    },
    {
      target: 'aws',
      out: 'aws.vmdk',
      qemuFormat: 'vmdk',
      check: async (out) => {
        const info = await qemuInfoJson(out, 'vmdk');
        assert.equal((info['format-specific'] as { data: { 'create-type': string } }).data['create-type'], 'streamOptimized');
        assert.equal((await toolInfo('vmdkinfo', out))['Disk type'], 'Stream optimized');
        const head = Buffer.alloc(8);
        const fh = await open(out, 'r');
        await fh.read(head, 0, 8, 0);
        await fh.close();
        assert.equal(head.toString('latin1', 0, 4), 'KDMV');
        assert.equal(head.readUInt32LE(4), 3, 'sparse header version 3');
        assert.match(await readFile(out, 'latin1'), /ddb\.adapterType = "lsilogic"/);
      },
    },
    {
      target: 'gcp',
      qemuFormat: 'raw',
      out: 'disk.raw',
      check: async (out) => {
        assert.equal((await stat(out)).size, GiB, 'rounded up to a whole GiB');
        assert.equal((await qemuInfoJson(out, 'raw'))['virtual-size'], GiB);
      },
    },
    {
      target: 'qemu',
      qemuFormat: 'qcow2',
      out: 'q.qcow2',
      check: async (out) => {
        const info = await qemuInfoJson(out, 'qcow2');
        assert.equal(info['cluster-size'], 65536);
        assert.equal((info['format-specific'] as { data: { compat: string } }).data.compat, '1.1');
        await runOk('qemu-img', ['check', out], 'qemu-img check');
      },
    },
  ];
  for (const c of cases) {
    const r = await vdkit(['convert', '--target', c.target, 'src.qcow2', c.out], dir);
    assert.equal(r.code, 0, `convert --target ${c.target}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`^target ${c.target} \\(`, 'm'), 'says what the profile chose');
    assert.match(r.stderr, new RegExp(`nothing blocks ${c.target}`), `convert checks its result: ${r.stderr}`);
    const out = join(dir, c.out);
    await c.check(out);
    // the content is the source's (a larger target reads zeros past the source's end); the format
    // is named because qemu-img probes a fixed VHD (footer only at the end) as raw
    const cmp = await run('qemu-img', ['compare', '-f', 'qcow2', '-F', c.qemuFormat, src, out]);
    assert.equal(cmp.code, 0, `${c.target}: qemu-img compare: ${cmp.stdout}${cmp.stderr}`);
    const l = await vdkit(['lint', '--target', c.target, c.out], dir);
    assert.equal(l.code, 0, `lint --target ${c.target} on its own convert: ${l.stdout}${l.stderr}`);
    assert.doesNotMatch(l.stdout, /^error:/m);
  }
});

test('lint --target: specific findings on images that break a target\'s rules', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-lint-')).path;
  const ok = async (args: string[]) => {
    const r = await vdkit(args, dir);
    assert.equal(r.code, 0, `vdkit ${args.join(' ')}: ${r.stderr}`);
  };
  const has = (findings: LintFinding[], severity: string, field: string) => findings.some((f) => f.severity === severity && f.field === field);

  // a dynamic VHD for Azure: the type is wrong (the format is right)
  await ok(['create', '-f', 'vhd', 'dyn.vhd', '64M']);
  let l = await lintJson('dyn.vhd', 'azure', dir);
  assert.equal(l.code, 1);
  assert.equal(l.accepted, false);
  assert.ok(has(l.findings, 'error', 'type'), JSON.stringify(l.findings));
  assert.ok(l.findings.every((f) => f.fix), 'every finding says how to fix it');

  // a fixed VHD made by qemu-img whose size is not a whole MiB
  await runOk('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on', join(dir, 'odd.vhd'), String(33 * MiB + 512)], 'qemu-img create vpc');
  l = await lintJson('odd.vhd', 'azure', dir);
  assert.equal(l.code, 1);
  assert.deepEqual(l.findings.map((f) => [f.severity, f.field]), [['error', 'capacity']], JSON.stringify(l.findings));

  // a small fixed VHD, under Azure's 20 MiB
  await ok(['create', '-f', 'vhd', '-t', 'fixed', 'small.vhd', '8M']);
  assert.ok(has((await lintJson('small.vhd', 'azure', dir)).findings, 'error', 'capacity'));

  // a hosted sparse VMDK for ESXi
  await ok(['create', 'ws.vmdk', '64M']);
  l = await lintJson('ws.vmdk', 'esxi', dir);
  assert.equal(l.code, 1);
  assert.ok(has(l.findings, 'error', 'type'));
  assert.match(l.findings.find((f) => f.field === 'type')!.message, /vmkfstools/);
  assert.equal((await lintJson('ws.vmdk', 'workstation', dir)).code, 0, 'what Workstation makes, Workstation takes');

  // a qcow2 for Hyper-V: the format is wrong
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'q.qcow2'), '64M'], 'qemu-img create');
  l = await lintJson('q.qcow2', 'hyperv', dir);
  assert.equal(l.code, 1);
  assert.ok(has(l.findings, 'error', 'format'));
  // ...which GCP's import tool may still take (a warning does not block), and QEMU runs as it is
  l = await lintJson('q.qcow2', 'gcp', dir);
  assert.equal(l.code, 0);
  assert.ok(has(l.findings, 'warning', 'format'));
  assert.deepEqual((await lintJson('q.qcow2', 'qemu', dir)).findings, []);

  // qemu-img's streamOptimized (sparse header version 3) is what AWS takes; a version-1 stream is refused
  await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 3 0 1M', join(dir, 'q.qcow2')], 'qemu-io write');
  await runOk('qemu-img', ['convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', join(dir, 'q.qcow2'), join(dir, 's3.vmdk')], 'qemu-img convert stream');
  l = await lintJson('s3.vmdk', 'aws', dir);
  assert.equal(l.code, 0, JSON.stringify(l.findings));
  const v1 = Buffer.from(await readFile(join(dir, 's3.vmdk')));
  assert.equal(v1.readUInt32LE(4), 3, 'qemu-img 7.2 writes version-3 streams');
  v1.writeUInt32LE(1, 4);
  await writeFile(join(dir, 's1.vmdk'), v1);
  for (const target of ['aws', 'esxi']) {
    l = await lintJson('s1.vmdk', target, dir);
    assert.equal(l.code, 1, `${target}: ${JSON.stringify(l.findings)}`);
    assert.ok(has(l.findings, 'error', 'version'));
  }
  // a monolithicSparse VMDK for AWS
  assert.ok(has((await lintJson('ws.vmdk', 'aws', dir)).findings, 'error', 'type'));

  // a descriptor version VirtualBox does not read
  await ok(['create', '-t', 'monolithicFlat', 'flat.vmdk', '16M']);
  const text = await readFile(join(dir, 'flat.vmdk'), 'utf8');
  await writeFile(join(dir, 'flat.vmdk'), text.replace(/^version=1$/m, 'version=2'));
  l = await lintJson('flat.vmdk', 'virtualbox', dir);
  assert.equal(l.code, 1);
  assert.ok(has(l.findings, 'error', 'descriptor.version'));

  // a child for a target that takes one standalone disk (Azure), and one that runs chains (Hyper-V)
  await ok(['create', '-f', 'vhdx', 'base.vhdx', '64M']);
  await ok(['create', '-f', 'vhdx', '-b', 'base.vhdx', 'child.vhdx']);
  assert.ok(has((await lintJson('child.vhdx', 'azure', dir)).findings, 'error', 'parent'));
  l = await lintJson('child.vhdx', 'hyperv', dir);
  assert.equal(l.code, 0);
  assert.ok(has(l.findings, 'info', 'parent'));

  // human output, and errors (exit 2): a missing file, an unknown target, no --target
  const human = await vdkit(['lint', '--target', 'azure', 'dyn.vhd'], dir);
  assert.equal(human.code, 1);
  assert.match(human.stdout, /^error: type: /m);
  assert.match(human.stdout, /fix: vdkit convert --target azure/);
  assert.match(human.stdout, /azure would refuse it/);
  assert.equal((await vdkit(['lint', '--target', 'azure', 'missing.vhd'], dir)).code, 2);
  assert.equal((await vdkit(['lint', '--target', 'mars', 'dyn.vhd'], dir)).code, 2);
  assert.equal((await vdkit(['lint', 'dyn.vhd'], dir)).code, 2);
});
