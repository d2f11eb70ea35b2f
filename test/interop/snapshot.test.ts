/**
 * qcow2 internal snapshots against qemu-img 7.2 (issue 16): snapshots vdkit takes are listed by
 * `qemu-img snapshot -l`, read back by `qemu-img convert -l` as the disk was when they were taken,
 * and leave `qemu-img check` (and `vdkit check`) clean; snapshots qemu-img takes are listed,
 * applied and deleted by vdkit with the same results. Every stage's content is kept as a raw
 * file (the model) and compared byte for byte.
 */
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk, checkDisk, listSnapshots } from '../../src/index.js';
import { describeRun, run, runVdkit, skipUnless, tmpDir } from '../helpers/tools.js';
import { MiB, runOk } from './support.js';

const SIZE = 16 * MiB;
/** dates in the listings are local time: one zone for both tools */
const ENV = { ...process.env, TZ: 'UTC' };

async function vdkit(dir: string, args: string[]): Promise<string> {
  const r = await run(process.execPath, [new URL('../../../bin/vdkit.js', import.meta.url).pathname, ...args], { cwd: dir, env: ENV });
  assert.equal(r.code, 0, describeRun('vdkit', args, r));
  return r.stdout;
}

async function qemuIo(img: string, ...cmds: string[]): Promise<void> {
  await runOk('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), img], `qemu-io ${cmds.join('; ')}`);
}

async function checkClean(img: string, when: string): Promise<void> {
  const r = await run('qemu-img', ['check', img]);
  assert.equal(r.code, 0, `qemu-img check after ${when}\n${describeRun('qemu-img', ['check', img], r)}`);
  assert.match(r.stdout, /No errors were found/, `qemu-img check after ${when}: ${r.stdout}`);
  const ours = await checkDisk(img, { repair: false });
  assert.equal(ours.findings.length, 0, `vdkit check after ${when}: ${JSON.stringify(ours.findings)}`);
}

/** The disk's content now (or a snapshot's, with `-l`) as a raw file. */
async function rawOf(img: string, out: string, snapshot?: string): Promise<Buffer> {
  await runOk('qemu-img', ['convert', ...(snapshot ? ['-l', `snapshot.name=${snapshot}`] : []), '-O', 'raw', img, out], `qemu-img convert ${snapshot ?? ''}`);
  return readFile(out);
}

async function vdkitContent(img: string): Promise<Buffer> {
  const d = await Disk.open(img, { readOnly: true });
  try {
    return await d.read(0, d.capacity);
  } finally {
    await d.close();
  }
}

test('vdkit takes snapshots: qemu-img lists them, reads each as it was, check stays clean; vdkit applies and deletes them', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = await tmpDir(t);
  const img = join(dir.path, 'a.qcow2');
  await runOk('qemu-img', ['create', '-f', 'qcow2', img, String(SIZE)], 'create');
  // normal and compressed clusters, and a zero cluster
  await qemuIo(img, 'write -P 0x11 0 1M', 'write -c -P 0x22 4M 64k', 'write -P 0x33 8M 128k', 'write -z 8M 64k');
  const a = await rawOf(img, join(dir.path, 'a.raw'));

  await vdkit(dir.path, ['snapshot', '-c', 'first', img]);
  await checkClean(img, 'snapshot -c first');
  // vdkit writes over shared clusters (in place and partial), qemu writes over the compressed one
  const d = await Disk.open(img);
  await d.write(512 * 1024, Buffer.alloc(1 * MiB, 0x44));
  await d.write(12 * MiB, Buffer.alloc(100_000, 0x45));
  await d.close();
  await qemuIo(img, 'write -P 0x46 4M 4k');
  const b = await rawOf(img, join(dir.path, 'b.raw'));
  assert.notDeepEqual(a, b);

  await vdkit(dir.path, ['snapshot', '--create', 'second', img]);
  await qemuIo(img, 'write -P 0x55 2M 2M', 'discard 0 64k');
  const c = await rawOf(img, join(dir.path, 'c.raw'));
  await checkClean(img, 'snapshot -c second and writes');

  const ql = await run('qemu-img', ['snapshot', '-l', img], { env: ENV });
  assert.equal(ql.code, 0, ql.stderr);
  assert.match(ql.stdout, /^1\s+first\s+0 B /m);
  assert.match(ql.stdout, /^2\s+second\s+0 B /m);
  // the same listing, column for column
  assert.equal(await vdkit(dir.path, ['snapshot', '-l', img]), ql.stdout);
  assert.deepEqual((await listSnapshots(img)).map((s) => [s.id, s.name, s.diskSize]), [['1', 'first', SIZE], ['2', 'second', SIZE]]);

  assert.ok((await rawOf(img, join(dir.path, 's1.raw'), 'first')).equals(a), 'qemu-img convert -l first = the disk when first was taken');
  assert.ok((await rawOf(img, join(dir.path, 's2.raw'), 'second')).equals(b), 'qemu-img convert -l second = the disk when second was taken');
  assert.ok((await rawOf(img, join(dir.path, 'now.raw'))).equals(c), 'the active disk keeps the writes after the snapshots');

  // apply by name: the disk is the first snapshot's again, the snapshots stay
  await vdkit(dir.path, ['snapshot', '-a', 'first', img]);
  await checkClean(img, 'snapshot -a first');
  assert.ok((await vdkitContent(img)).equals(a), 'vdkit reads the first snapshot after -a');
  assert.ok((await rawOf(img, join(dir.path, 'after-a.raw'))).equals(a), 'qemu reads the first snapshot after -a');
  assert.ok((await rawOf(img, join(dir.path, 's2b.raw'), 'second')).equals(b), 'the second snapshot is untouched by -a');

  // delete by id, then by name: freed clusters are reused, nothing leaks
  await vdkit(dir.path, ['snapshot', '-d', '2', img]);
  await checkClean(img, 'snapshot -d 2');
  assert.match((await run('qemu-img', ['snapshot', '-l', img])).stdout, /first/);
  assert.doesNotMatch((await run('qemu-img', ['snapshot', '-l', img])).stdout, /second/);
  await vdkit(dir.path, ['snapshot', '-d', 'first', img]);
  await checkClean(img, 'snapshot -d first');
  assert.equal((await run('qemu-img', ['snapshot', '-l', img])).stdout, '');
  assert.equal(await vdkit(dir.path, ['snapshot', img]), '', 'an image without snapshots lists nothing (as qemu-img)');
  assert.ok((await vdkitContent(img)).equals(a), 'deleting snapshots leaves the disk as it is');
  const before = (await stat(img)).size;
  const w = await Disk.open(img);
  await w.write(14 * MiB, Buffer.alloc(1 * MiB, 0x66));
  await w.close();
  assert.equal((await stat(img)).size, before, 'a new 1 MiB write goes into clusters the deleted snapshots freed');
  await checkClean(img, 'a write after the deletes');
});

test('qemu-img takes snapshots: vdkit lists, applies and deletes them (ids and names as qemu-img takes them)', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = await tmpDir(t);
  const img = join(dir.path, 'q.qcow2');
  await runOk('qemu-img', ['create', '-f', 'qcow2', img, String(SIZE)], 'create');
  await qemuIo(img, 'write -P 0x71 0 3M', 'write -c -P 0x72 6M 64k');
  const a = await rawOf(img, join(dir.path, 'a.raw'));
  await runOk('qemu-img', ['snapshot', '-c', 'q1', img], 'snapshot -c q1');
  await qemuIo(img, 'write -P 0x73 1M 3M', 'write -z 0 64k');
  const b = await rawOf(img, join(dir.path, 'b.raw'));
  await runOk('qemu-img', ['snapshot', '-c', 'q2', img], 'snapshot -c q2');
  // a tag that looks like the other snapshot's id: ids are looked up first
  await qemuIo(img, 'write -P 0x74 10M 1M');
  await runOk('qemu-img', ['snapshot', '-c', '1', img], 'snapshot -c 1');
  await qemuIo(img, 'write -P 0x75 0 8M');

  const ql = await run('qemu-img', ['snapshot', '-l', img], { env: ENV });
  assert.equal(await vdkit(dir.path, ['snapshot', '-l', img]), ql.stdout);

  await vdkit(dir.path, ['snapshot', '-a', '1', img]);
  await checkClean(img, 'snapshot -a 1 (id 1 = q1)');
  assert.ok((await vdkitContent(img)).equals(a), 'snapshot -a 1 applied id 1 (q1), not the tag "1"');
  await vdkit(dir.path, ['snapshot', '-a', 'q2', img]);
  await checkClean(img, 'snapshot -a q2');
  assert.ok((await vdkitContent(img)).equals(b), 'vdkit reads q2 after -a q2');
  assert.ok((await rawOf(img, join(dir.path, 'now.raw'))).equals(b), 'qemu reads q2 after vdkit -a q2');

  await vdkit(dir.path, ['snapshot', '-d', 'q1', img]);
  await checkClean(img, 'snapshot -d q1');
  assert.ok((await rawOf(img, join(dir.path, 'q2.raw'), 'q2')).equals(b), 'q2 still reads as taken after q1 is deleted');
  // QEMU can still work with the table vdkit rewrote
  await runOk('qemu-img', ['snapshot', '-d', 'q2', img], 'qemu-img snapshot -d q2');
  await vdkit(dir.path, ['snapshot', '-d', '3', img]);
  await checkClean(img, 'every snapshot deleted');
  assert.equal((await run('qemu-img', ['snapshot', '-l', img])).stdout, '');
  assert.ok((await vdkitContent(img)).equals(b), 'the disk stays as applied');
});

test('snapshot refusals: unknown name, other formats, refcount overflow, defrag and shrink with snapshots', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = await tmpDir(t);
  const img = join(dir.path, 'r.qcow2');
  await runOk('qemu-img', ['create', '-f', 'qcow2', img, '4M'], 'create');
  const w = await Disk.open(img);
  await w.write(0, Buffer.alloc(128 * 1024, 0x5a));
  await w.close();
  await vdkit(dir.path, ['snapshot', '-c', 's', img]);

  const missing = await runVdkit(['snapshot', '-a', 'nosuch', img], dir.path);
  assert.equal(missing.code, 1, describeRun('vdkit', ['snapshot', '-a', 'nosuch'], missing));
  assert.match(missing.stderr, /INVAL.*nosuch/);
  const two = await runVdkit(['snapshot', '-c', 'x', '-d', 's', img], dir.path);
  assert.equal(two.code, 2, 'two actions at once are wrong usage');

  const defrag = await runVdkit(['defrag', img], dir.path);
  assert.equal(defrag.code, 1);
  assert.match(defrag.stderr, /NOTSUPPORTED.*snapshots/);
  const shrink = await runVdkit(['resize', '--shrink', img, '2M'], dir.path);
  assert.equal(shrink.code, 1);
  assert.match(shrink.stderr, /CANTSHRINK.*snapshots/);

  const vmdk = join(dir.path, 'x.vmdk');
  await vdkit(dir.path, ['create', vmdk, '1M']);
  for (const args of [['snapshot', '-l', vmdk], ['snapshot', '-c', 'a', vmdk]]) {
    const r = await runVdkit(args, dir.path);
    assert.equal(r.code, 1, describeRun('vdkit', args, r));
    assert.match(r.stderr, /NOTSUPPORTED.*vmdk images have no internal snapshots/);
  }

  // refcount_bits=1 cannot count a second reference: refused before anything changes
  const one = join(dir.path, 'one.qcow2');
  await runOk('qemu-img', ['create', '-f', 'qcow2', '-o', 'refcount_bits=1', one, '4M'], 'create refcount_bits=1');
  await runOk('qemu-io', ['-c', 'write -P 1 0 64k', one], 'qemu-io');
  const bytes = await readFile(one);
  const over = await runVdkit(['snapshot', '-c', 'x', one], dir.path);
  assert.equal(over.code, 1, describeRun('vdkit', ['snapshot', '-c', 'x', one], over));
  assert.match(over.stderr, /NOTSUPPORTED.*refcount overflow/);
  assert.ok((await readFile(one)).equals(bytes), 'a refused snapshot changes nothing');
});
