/**
 * `vdkit check -r leaks|all` and `--output=json` as qemu-img check spells them: the JSON object
 * equals qemu-img's on a clean image, a compressed one, one with leaks and one with a corruption,
 * before and after each repair; the exit statuses are qemu-img's (0 clean, 2 corruptions, 3
 * leaks); -r leaks leaves a disk with a corruption alone; `-r IMAGE` still means repair all.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, open, readFile, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk } from '../../src/index.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { runOk } from './support.js';

const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;
const vdkit = (...args: string[]) => run(process.execPath, [BIN, ...args]);
const CS = 65536;

/** qcow2 of 64 MiB, 1 MiB of data (clusters 5..20; half random, half compressible), the file grown to 30 clusters */
async function image(path: string): Promise<void> {
  const d = await Disk.create(path, { format: 'qcow2', capacity: 64 * 2 ** 20 });
  await d.write(0, xorshiftBytes(2 ** 19, 7));
  await d.write(2 ** 19, Buffer.alloc(2 ** 19, 'compressible '));
  await d.close();
  await truncate(path, 30 * CS);
}

/** set the 16-bit refcounts of `clusters` in the first refcount block (cluster 2, as create lays it out) */
async function setRefcounts(path: string, clusters: number[], value: number): Promise<void> {
  const fh = await open(path, 'r+');
  const b = Buffer.alloc(2);
  b.writeUInt16BE(value);
  for (const c of clusters) await fh.write(b, 0, 2, 2 * CS + 2 * c);
  await fh.close();
}

async function bothJson(path: string, ...args: string[]): Promise<{ ours: unknown; theirs: unknown; code: number; qemuCode: number }> {
  const copy = `${path}.qemu`;
  await copyFile(path, copy);
  const r = await vdkit('check', ...args, '--output=json', path);
  const q = await run('qemu-img', ['check', ...args, '--output=json', copy]);
  const ours = JSON.parse(r.stdout) as Record<string, unknown>;
  const theirs = JSON.parse(q.stdout) as Record<string, unknown>;
  theirs.filename = ours.filename; // the copy's name
  return { ours, theirs, code: r.code, qemuCode: q.code };
}

test('check --output=json: the keys and numbers of qemu-img check --output=json, before and after -r leaks / -r all', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const clean = join(dir, 'clean.qcow2');
  await image(clean);
  await runOk('qemu-img', ['check', clean], 'clean');
  let r = await bothJson(clean);
  assert.deepEqual(r.ours, r.theirs);
  assert.equal(r.code, 0);

  const compressed = join(dir, 'compressed.qcow2');
  await runOk('qemu-img', ['convert', '-c', '-O', 'qcow2', clean, compressed], 'convert -c');
  r = await bothJson(compressed);
  assert.deepEqual(r.ours, r.theirs);
  assert.ok((r.ours as Record<string, number>)['compressed-clusters']! > 0);

  // leaks: clusters 25, 26 counted but unused
  const leaky = join(dir, 'leaky.qcow2');
  await copyFile(clean, leaky);
  await setRefcounts(leaky, [25, 26], 1);
  r = await bothJson(leaky);
  assert.deepEqual(r.ours, r.theirs);
  assert.equal((r.ours as Record<string, number>).leaks, 2);
  assert.equal(r.code, 3);
  assert.equal(r.qemuCode, 3);
  r = await bothJson(leaky, '-r', 'leaks');
  assert.deepEqual(r.ours, r.theirs);
  assert.equal((r.ours as Record<string, number>)['leaks-fixed'], 2);
  assert.equal(r.code, 0);

  // a corruption (data cluster 7 with refcount 0) and leaks
  const bad = join(dir, 'bad.qcow2');
  await copyFile(clean, bad);
  await setRefcounts(bad, [25, 26], 1);
  await setRefcounts(bad, [7], 0);
  r = await bothJson(bad);
  assert.deepEqual(r.ours, r.theirs);
  assert.equal(r.code, 2);
  assert.equal(r.qemuCode, 2);
  // -r leaks: vdkit leaves a disk with a corruption alone (qemu-img would free the leaks)
  const before = await readFile(bad);
  const leaksOnly = await vdkit('check', '-r', 'leaks', bad);
  assert.equal(leaksOnly.code, 2, leaksOnly.stdout);
  assert.match(leaksOnly.stdout, /nothing was repaired/);
  assert.ok((await readFile(bad)).equals(before), '-r leaks changed a disk with a corruption');
  r = await bothJson(bad, '-r', 'all');
  // QEMU mends this corruption by rebuilding the refcount structures at the end of the file,
  // vdkit in place: the end differs, and is what qemu-img check then sees on vdkit's file
  const { 'image-end-offset': ourEnd, ...ours } = r.ours as Record<string, number>;
  const { 'image-end-offset': _qemuEnd, ...theirs } = r.theirs as Record<string, number>;
  assert.deepEqual(ours, theirs);
  const recheck = JSON.parse((await runOk('qemu-img', ['check', '--output=json', bad], 'recheck')).stdout);
  assert.equal(ourEnd, recheck['image-end-offset']);
  assert.equal((r.ours as Record<string, number>)['corruptions-fixed'], 1);
  assert.equal((r.ours as Record<string, number>)['leaks-fixed'], 2);
  assert.equal(r.code, 0);
  await runOk('qemu-img', ['check', bad], 'after -r all');
});

test('check -r: leaks|all as qemu-img, -r IMAGE as before, anything else a usage error', async (t) => {
  const dir = (await tmpDir(t)).path;
  const img = join(dir, 'a.qcow2');
  await image(img);
  await setRefcounts(img, [25], 1);
  assert.equal((await vdkit('check', img)).code, 3);
  const bogus = await vdkit('check', '-r', 'some', img);
  assert.equal(bogus.code, 2, bogus.stderr);
  assert.match(bogus.stderr, /leaks or all/);
  // the old spelling: -r names no scope, the image follows it
  const old = await vdkit('check', '-r', img);
  assert.equal(old.code, 0, old.stdout + old.stderr);
  assert.match(old.stdout, /Repaired: Leaked cluster 25/);
  assert.equal((await vdkit('check', img)).code, 0);
  const both = await vdkit('check', '--json', '--output=json', img);
  assert.equal(both.code, 2);
});
