/**
 * `vdkit resize IMAGE +SIZE / -SIZE` as qemu-img resize spells them: a negative size is the last
 * argument without `--` (qemu-img takes it out before parsing options) and needs --shrink; the
 * options may come before or after the image.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Disk } from '../../src/index.js';
import { negativeSizeLast } from '../../src/cli/main.js';
import { run, tmpDir } from '../helpers/tools.js';

const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;
const vdkit = (...args: string[]) => run(process.execPath, [BIN, ...args]);
const MiB = 2 ** 20;

async function capacity(path: string): Promise<number> {
  const d = await Disk.open(path, { readOnly: true });
  const c = d.capacity;
  await d.close();
  return c;
}

test('resize +SIZE grows, -SIZE without -- shrinks with --shrink and is refused without it', async (t) => {
  const dir = (await tmpDir(t)).path;
  for (const format of ['qcow2', 'vhdx']) {
    const img = join(dir, `d.${format}`);
    await (await Disk.create(img, { format, capacity: 64 * MiB })).close();
    let r = await vdkit('resize', img, '+16M');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await capacity(img), 80 * MiB);
    r = await vdkit('resize', img, '-8M');
    assert.equal(r.code, 1, r.stderr); // CANTSHRINK, as qemu-img's "Use the --shrink option"
    assert.match(r.stderr, /--shrink/);
    assert.doesNotMatch(r.stderr, /unknown option/);
    assert.equal(await capacity(img), 80 * MiB);
    r = await vdkit('resize', '--shrink', img, '-8M');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await capacity(img), 72 * MiB);
    r = await vdkit('resize', img, '--shrink', '-8M');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await capacity(img), 64 * MiB);
    r = await vdkit('resize', '--shrink', img, '--', '-4M'); // the old spelling still works
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await capacity(img), 60 * MiB);
    r = await vdkit('resize', '--shrink', img, '-1G'); // below zero
    assert.notEqual(r.code, 0);
    assert.equal(await capacity(img), 60 * MiB);
  }
});

test('negativeSizeLast: only resize, only a negative number last, only without --', () => {
  assert.deepEqual(negativeSizeLast(['resize', 'a', '-1G']), ['resize', 'a', '--', '-1G']);
  assert.deepEqual(negativeSizeLast(['resize', '--shrink', 'a', '-512']), ['resize', '--shrink', 'a', '--', '-512']);
  assert.deepEqual(negativeSizeLast(['resize', 'a', '--', '-1G']), ['resize', 'a', '--', '-1G']);
  assert.deepEqual(negativeSizeLast(['resize', 'a', '--shrink']), ['resize', 'a', '--shrink']);
  assert.deepEqual(negativeSizeLast(['resize', '-h']), ['resize', '-h']);
  assert.deepEqual(negativeSizeLast(['write', 'a', '-1']), ['write', 'a', '-1']);
});
