/**
 * Disks over HTTP: every format qemu-img makes (raw, qcow2, vmdk sparse, a twoGbMaxExtentSparse
 * and a monolithicFlat VMDK of descriptor + extent, vdi, vhd, vhdx), a 2-link qcow2 chain and a
 * 2-link VHD chain, served by the in-test range server (test/helpers/range-server.ts) and read
 * by `vdkit` through http:// URLs. The oracle is the local file: the same checksum, a convert
 * equal per qemu-img compare (or byte for byte where qemu cannot read the format), compare and
 * map as for the local file. nbdkit's curl plugin reads the same server as a second client.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startRangeServer } from '../helpers/range-server.js';
import { describeRun, run, runVdkit, skipUnless, tmpDir } from '../helpers/tools.js';
import { SIZE, background, makeFixture, ok } from './nbd-support.js';

async function vdkit(args: string[], cwd: string): Promise<string> {
  const r = await runVdkit(args, cwd);
  assert.equal(r.code, 0, describeRun('vdkit', args, r));
  return r.stdout;
}

const checksumOf = (out: string) => out.trim().split(/\s+/)[0];

interface Case {
  label: string;
  /** the file the URL names */
  file: string;
  /** qemu's format name, or undefined where qemu cannot read it (a VHD child) */
  qemuFormat?: string;
}

async function fixtures(dir: string): Promise<Case[]> {
  const cases: Case[] = [];
  for (const kind of ['raw', 'qcow2', 'vmdk', 'vdi', 'vpc', 'vhdx']) {
    const fx = await makeFixture(dir, kind);
    cases.push({ label: kind, file: fx.path.slice(dir.length + 1), qemuFormat: kind });
  }
  // multi-file VMDKs: a descriptor whose extents the reader finds beside it (relative to the URL)
  const model = join(dir, 'raw.model.raw');
  for (const sub of ['twoGbMaxExtentSparse', 'monolithicFlat']) {
    await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', `subformat=${sub}`, model, join(dir, `${sub}.vmdk`)]);
    cases.push({ label: sub, file: `${sub}.vmdk`, qemuFormat: 'vmdk' });
  }
  // a 2-link qcow2 chain (the child names its parent by a relative hint)
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'disk.qcow2', '-F', 'qcow2', join(dir, 'child.qcow2')]);
  await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 2M 192k', '-c', 'write -z 5M 64k', join(dir, 'child.qcow2')]);
  cases.push({ label: 'qcow2 chain', file: 'child.qcow2', qemuFormat: 'qcow2' });
  // a 2-link VHD chain made by vdkit (qemu makes no VHD children), written into
  await vdkit(['create', '-b', 'disk.vhd', 'child.vhd'], dir);
  await writeFile(join(dir, 'patch.bin'), Buffer.alloc(300000, 0x5c));
  await vdkit(['write', '--offset', '3M', '--input', 'patch.bin', 'child.vhd'], dir);
  cases.push({ label: 'vhd chain', file: 'child.vhd' });
  return cases;
}

test('every format, multi-file VMDKs and 2-link chains read over http:// equal the local files (checksum, convert, compare, map, check, chain)', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const cases = await fixtures(dir);
  const server = await startRangeServer(t, dir);
  for (const c of cases) {
    const url = `${server.url}/${c.file}`;
    const local = checksumOf(await vdkit(['checksum', c.file], dir));
    assert.equal(checksumOf(await vdkit(['checksum', url], dir)), local, `${c.label}: checksum over HTTP`);
    const out = `out-${c.label.replace(/\W+/g, '-')}.raw`;
    await vdkit(['convert', '-O', 'raw', url, out], dir);
    if (c.qemuFormat) {
      await ok('qemu-img', ['compare', '-f', 'raw', '-F', c.qemuFormat, join(dir, out), join(dir, c.file)]);
    } else {
      await vdkit(['convert', '-O', 'raw', c.file, `${out}.local`], dir);
      assert.ok((await readFile(join(dir, out))).equals(await readFile(join(dir, `${out}.local`))), `${c.label}: convert over HTTP equals the local convert`);
    }
    await vdkit(['compare', url, c.file], dir);
    // a raw file's map comes from the file system's holes, which HTTP cannot show: the formats' own maps must agree
    if (c.label !== 'raw') assert.equal(await vdkit(['map', url], dir), await vdkit(['map', c.file], dir), `${c.label}: map`);
  }
  // info names the URL; check reads through it; chain walks to the parent beside the child
  const info = JSON.parse(await vdkit(['info', '--json', `${server.url}/child.vhd`], dir)) as { path?: string; format: string; numLinks?: number };
  assert.equal(info.format, 'vhd');
  assert.match(JSON.stringify(info), new RegExp(`${server.url}/child\\.vhd`));
  await vdkit(['check', `${server.url}/disk.qcow2`], dir);
  const chain = await vdkit(['chain', `${server.url}/child.qcow2`], dir);
  assert.match(chain, new RegExp(`${server.url}/disk\\.qcow2`));
  // a convert into an http URL is refused as read-only
  const r = await runVdkit(['convert', 'disk.qcow2', `${server.url}/new.raw`], dir);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /RDONLY.*read-only/s);
});

test('credentials in an http URL are not printed by info --json or in errors', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  await makeFixture(dir, 'qcow2');
  const server = await startRangeServer(t, dir, { auth: `Basic ${Buffer.from('ann:pa55word').toString('base64')}` });
  const url = `http://ann:pa55word@127.0.0.1:${server.port}/disk.qcow2`;
  const out = await vdkit(['info', '--json', url], dir);
  assert.equal((JSON.parse(out) as { capacity: number }).capacity, SIZE);
  assert.ok(!out.includes('pa55word'), out);
  const bad = await runVdkit(['info', `http://ann:pa55word@127.0.0.1:${server.port}/missing.qcow2`], dir);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /FILENOTFOUND/);
  assert.ok(!(bad.stdout + bad.stderr).includes('pa55word'), bad.stderr);
  assert.ok(server.log.every((r) => r.authorization !== undefined), 'every request carried the credentials');
});

test('a server that ignores Range is refused by vdkit info, with a clear message', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  await makeFixture(dir, 'qcow2');
  const server = await startRangeServer(t, dir, { ignoreRange: true });
  const r = await runVdkit(['info', `${server.url}/disk.qcow2`], dir);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /NOTSUPPORTED.*ignores Range/s);
});

test('nbdkit curl reads the same server as a second client: qemu-img compare over NBD equals the model', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io', 'nbdkit')) return;
  const probe = await run('nbdkit', ['curl', '--version']);
  if (probe.code !== 0) {
    t.skip(`nbdkit's curl plugin is not installed (nbdkit curl --version: ${probe.stderr.trim().split('\n')[0]}); install nbdkit-plugin-curl`);
    return;
  }
  const dir = (await tmpDir(t)).path;
  const fx = await makeFixture(dir, 'qcow2');
  const server = await startRangeServer(t, dir);
  const sock = join(dir, 'curl.sock');
  const k = background(t, 'nbdkit', ['-f', '-U', sock, 'curl', `url=${server.url}/disk.qcow2`]);
  for (let i = 0; i < 200 && !existsSync(sock); i++) {
    if (k.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await ok('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', `nbd+unix:///?socket=${sock}`, fx.model]);
  // and vdkit over the same server agrees with it
  const viaNbd = checksumOf(await vdkit(['checksum', '-f', 'qcow2', `nbd+unix:///?socket=${sock}`], dir));
  assert.equal(checksumOf(await vdkit(['checksum', `${server.url}/disk.qcow2`], dir)), viaNbd);
  assert.ok(server.log.some((r) => r.range !== undefined), 'nbdkit sent ranged GETs');
});
