/**
 * Error texts a person reads (issue 16 item 8): the VDDK code stays, but the text says what
 * happened. VDDK's stock text for CANTSHRINK ("not the parent disk") and INVALIDCHAIN ("cannot
 * mix ESX & hosted") names one cause; vdkit raises those codes for others too, so the stock line
 * must not follow a message that gives the real one. Hints name the CLI flag (`--force`), and a
 * convert's errors name the destination the user typed, not the hidden temporary file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import { Disk, createChild } from '../../src/index.js';
import { run, tmpDir } from '../helpers/tools.js';

const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;
const vdkit = (...args: string[]) => run(process.execPath, [BIN, ...args]);
const MiB = 2 ** 20;

test('a refused shrink says why, not "not the parent disk", and names --force', async (t) => {
  const dir = (await tmpDir(t)).path;
  const img = join(dir, 'd.qcow2');
  const d = await Disk.create(img, { format: 'qcow2', capacity: 64 * MiB });
  await d.write(60 * MiB, Buffer.alloc(4096, 0xab));
  await d.close();
  let r = await vdkit('resize', img, '32M');
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /CANTSHRINK/);
  assert.match(r.stderr, /--shrink/);
  assert.doesNotMatch(r.stderr, /not the parent disk/);
  r = await vdkit('resize', '--shrink', img, '32M');
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /holds data: pass --force/);
  assert.doesNotMatch(r.stderr, /not the parent disk/);
});

test('a parent of another size: INVALIDCHAIN gives both sizes, not "cannot mix ESX & hosted"', async (t) => {
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'base.vmdk');
  await (await Disk.create(base, { capacity: 64 * MiB, type: 'twoGbMaxExtentSparse' })).close();
  await (await createChild(base, join(dir, 'child.vmdk'))).close();
  await (await Disk.create(join(dir, 'small.vmdk'), { capacity: 32 * MiB })).close();

  // rebase onto a parent of another size
  let r = await vdkit('rebase', '--unsafe', '-b', join(dir, 'small.vmdk'), join(dir, 'child.vmdk'));
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /INVALIDCHAIN/);
  assert.match(r.stderr, /33554432 bytes and this child 67108864/);
  assert.doesNotMatch(r.stderr, /ESX/);

  // the parent changed size under the child (same CID, so only the size is wrong)
  const small = await Disk.create(join(dir, 'small2.vmdk'), { capacity: 32 * MiB, type: 'twoGbMaxExtentSparse' });
  await small.close();
  const cid = /^CID=(.*)$/m.exec(await readFile(base, 'utf8'))![1];
  await writeFile(base, (await readFile(join(dir, 'small2.vmdk'), 'utf8')).replace(/^CID=.*$/m, `CID=${cid}`));
  r = await vdkit('info', join(dir, 'child.vmdk'));
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /INVALIDCHAIN/);
  assert.match(r.stderr, /is 33554432 bytes and this child 67108864/);
  assert.doesNotMatch(r.stderr, /ESX/);
});

test('deleting a disk a child depends on names --force', async (t) => {
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'base.qcow2');
  await (await Disk.create(base, { format: 'qcow2', capacity: 16 * MiB })).close();
  await (await createChild(base, join(dir, 'child.qcow2'))).close();
  const r = await vdkit('delete', base);
  assert.notEqual(r.code, 0, r.stderr);
  assert.match(r.stderr, /pass --force/);
});

test('errors during convert name the destination typed, not the hidden temporary file', async (t) => {
  const dir = (await tmpDir(t)).path;
  const src = join(dir, 'src.qcow2');
  await (await Disk.create(src, { format: 'qcow2', capacity: 16 * MiB })).close();
  // refused by the target's create, while it is being built under its temporary name
  let r = await vdkit('convert', '-O', 'vmdk', '-a', 'nosuch', src, join(dir, 'out.vmdk'));
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`INVAL \\(16000\\): ${join(dir, 'out.vmdk')}: adapterType`));
  assert.doesNotMatch(r.stderr, /vdkit-partial/);
  r = await vdkit('convert', '-O', 'vhd', '--size', '3T', src, join(dir, 'out.vhd'));
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`${join(dir, 'out.vhd')}: capacity`));
  assert.doesNotMatch(r.stderr, /vdkit-partial/);
  // a chain clone: each link's final name
  r = await vdkit('convert', '--keep-chain', '-O', 'vmdk', '-a', 'nosuch', src, join(dir, 'kept.vmdk'));
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /kept[^ ]*\.vmdk: adapterType/);
  assert.doesNotMatch(r.stderr, /vdkit-partial/);
});
