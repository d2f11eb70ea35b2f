/**
 * `vdkit info` text (issue 16 item 11): qcow2 shows what qemu-img info shows (cluster size,
 * compat, refcount bits, dirty and corrupt flags); "read only" appears only for an image that
 * cannot be written (info itself opens every image read-only); a CID line only where the format
 * has content IDs (VMDK), not for the GUIDs VHDX and VDI link their children by.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { open } from 'node:fs/promises';
import { Disk } from '../../src/index.js';
import { run, tmpDir } from '../helpers/tools.js';

const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;
const vdkit = (...args: string[]) => run(process.execPath, [BIN, ...args]);
const MiB = 2 ** 20;

/** the value of one `key : value` row, or undefined when the row is absent */
function row(text: string, key: string): string | undefined {
  const m = new RegExp(`^${key} *: (.*)$`, 'm').exec(text);
  return m?.[1];
}

test('qcow2: cluster size, compat, refcount bits, dirty and corrupt flags', async (t) => {
  const dir = (await tmpDir(t)).path;
  const img = join(dir, 'd.qcow2');
  await (await Disk.create(img, { format: 'qcow2', capacity: 64 * MiB, clusterSize: 128 * 1024 })).close();
  let r = await vdkit('info', img);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(row(r.stdout, 'cluster size'), '131072 bytes (128 KiB)');
  assert.equal(row(r.stdout, 'compat'), '1.1');
  assert.equal(row(r.stdout, 'refcount bits'), '16');
  assert.equal(row(r.stdout, 'dirty'), 'no');
  assert.equal(row(r.stdout, 'corrupt'), 'no');

  // incompatible_features (header offset 72, big-endian): bit 0 dirty, bit 1 corrupt
  const fh = await open(img, 'r+');
  await fh.write(Buffer.from([0x03]), 0, 1, 79);
  await fh.close();
  r = await vdkit('info', img);
  assert.equal(r.code, 0, r.stderr);
  assert.match(row(r.stdout, 'dirty') ?? '', /^yes/);
  assert.equal(row(r.stdout, 'corrupt'), 'yes');
});

test('"read only" only for an image that cannot be written; CID only for VMDK', async (t) => {
  const dir = (await tmpDir(t)).path;
  for (const [name, format] of [['d.qcow2', 'qcow2'], ['d.vhdx', 'vhdx'], ['d.vdi', 'vdi'], ['d.vmdk', 'vmdk']]) {
    const img = join(dir, name!);
    await (await Disk.create(img, { format, capacity: 16 * MiB })).close();
    const r = await vdkit('info', img);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(row(r.stdout, 'read only'), undefined, `${format}: a writable image is not read only\n${r.stdout}`);
    if (format === 'vmdk') assert.match(row(r.stdout, 'CID') ?? '', /^[0-9a-f]{8}$/);
    else assert.equal(row(r.stdout, 'CID'), undefined, `${format} has no CID\n${r.stdout}`);
  }
  // streamOptimized is written in one pass and never opened for writing again
  const stream = join(dir, 's.vmdk');
  const r = await vdkit('convert', '-t', 'streamOptimized', join(dir, 'd.qcow2'), stream);
  assert.equal(r.code, 0, r.stderr);
  const s = await vdkit('info', stream);
  assert.equal(row(s.stdout, 'read only'), 'yes');
});
