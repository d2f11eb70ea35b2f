/**
 * The `vdkit serve` command itself: --run with $NBD_URI and its exit status, systemd socket
 * activation (libnbd's `[ cmd ]` form), one-shot vs --persistent, --pid-file, --dir, and SIGTERM
 * stopping a server with a client attached: the image is closed cleanly (qemu-img check).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot, run, skipUnless, tmpDir } from '../helpers/tools.js';
import { SIZE, makeFixture, ok } from './nbd-support.js';

const vdkit = () => join(repoRoot(), 'bin', 'vdkit.js');

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('vdkit serve --run: the command gets $NBD_URI, the server stops with it and exits with its status', async (t) => {
  if (!skipUnless(t, 'nbdinfo', 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const fx = await makeFixture(dir, 'vdi');
  const r = await ok(process.execPath, [vdkit(), 'serve', '-r', '-q', '-k', join(dir, 's.sock'), '--run', 'nbdinfo --size "$NBD_URI" && qemu-img compare -f raw -F raw "$NBD_URI" ' + fx.model, fx.path]);
  assert.match(r.stdout, new RegExp(`^${SIZE}\\n`));
  assert.match(r.stdout, /identical/);
  const failing = await run(process.execPath, [vdkit(), 'serve', '-q', '-p', '0', '--run', 'exit 3', fx.path]);
  assert.equal(failing.code, 3);
  assert.ok(!existsSync(join(dir, 's.sock')), 'the socket is removed');
  // without --persistent the server ends once its first client has gone (qemu-nbd's default)
  const pid = join(dir, 'one.pid');
  const child = spawn(process.execPath, [vdkit(), 'serve', '-r', '-q', '-k', join(dir, 'one.sock'), '--pid-file', pid, fx.path], { stdio: 'ignore' });
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  await waitFor(() => existsSync(pid));
  await ok('nbdinfo', ['--size', `nbd+unix:///?socket=${join(dir, 'one.sock')}`]);
  assert.equal(await exited, 0);
});

test('vdkit serve under socket activation (nbdinfo -- [ vdkit serve IMAGE ]), one-shot by default', async (t) => {
  if (!skipUnless(t, 'nbdinfo', 'nbdcopy', 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const fx = await makeFixture(dir, 'vhdx');
  const r = await ok('nbdinfo', ['--size', '--', '[', process.execPath, vdkit(), 'serve', '-r', fx.path, ']']);
  assert.equal(r.stdout.trim(), String(SIZE));
  const out = join(dir, 'out.raw');
  await ok('nbdcopy', ['--', '[', process.execPath, vdkit(), 'serve', '-r', fx.path, ']', out]);
  assert.ok((await readFile(out)).equals(await readFile(fx.model)));
});

test('vdkit serve --dir --persistent --pid-file: lists the folder, serves by name, SIGTERM drains and closes the images cleanly', async (t) => {
  if (!skipUnless(t, 'nbdinfo', 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const fx = await makeFixture(dir, 'qcow2');
  const served = join(dir, 'served');
  await ok('mkdir', [served]);
  await copyFile(fx.path, join(served, 'a.qcow2'));
  await copyFile(fx.model, join(served, 'b.raw'));
  const pid = join(dir, 'pid');
  const sock = join(dir, 'd.sock');
  const child = spawn(process.execPath, [vdkit(), 'serve', '--dir', served, '-k', sock, '--persistent', '--pid-file', pid, '-q'], { stdio: 'ignore' });
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  await waitFor(() => existsSync(pid));
  assert.equal(Number((await readFile(pid, 'utf8')).trim()), child.pid);
  const list = JSON.parse((await ok('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${sock}`])).stdout) as { exports: { 'export-name': string }[] };
  assert.deepEqual(list.exports.map((e) => e['export-name']), ['a.qcow2', 'b.raw']);
  await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 0 1M', `nbd+unix:///a.qcow2?socket=${sock}`]);
  await ok('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', `nbd+unix:///b.raw?socket=${sock}`, fx.model]);
  const missing = await run('nbdinfo', [`nbd+unix:///../${'a.qcow2'}?socket=${sock}`]);
  assert.notEqual(missing.code, 0, 'a name climbing out of the folder is no export');
  // a client attached while the server is told to stop
  const attached = spawn('qemu-io', ['-f', 'raw', `nbd+unix:///a.qcow2?socket=${sock}`], { stdio: ['pipe', 'ignore', 'ignore'] });
  await new Promise((r) => setTimeout(r, 300));
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
  attached.kill('SIGKILL');
  assert.ok(!existsSync(pid), 'pid file removed');
  await ok('qemu-img', ['check', '-f', 'qcow2', join(served, 'a.qcow2')]);
  await ok('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x55 0 1M', join(served, 'a.qcow2')]);
});

test('vdkit serve --single-link serves the top of a chain alone; without it every link shows in the allocation depth', async (t) => {
  if (!skipUnless(t, 'nbdinfo', 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const fx = await makeFixture(dir, 'chain');
  const depths = async (extra: string[]) => {
    const r = await ok(process.execPath, [vdkit(), 'serve', '-r', '-q', '-k', join(dir, 'c.sock'), ...extra, '--run', 'nbdinfo --map=qemu:allocation-depth --json "$NBD_URI"', fx.path]);
    return new Set((JSON.parse(r.stdout) as { type: number }[]).map((e) => e.type));
  };
  assert.deepEqual([...(await depths([]))].sort(), [0, 1, 2, 3]);
  assert.deepEqual([...(await depths(['--single-link']))].sort(), [0, 1]);
});
