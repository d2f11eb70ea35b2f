/**
 * qcow2 with compression_type=zstd (incompatible bit 3, header byte 104) both ways with qemu-img
 * 7.2: an image qemu-img convert -c made reads equal to its source in vdkit; vdkit's convert -c
 * output passes qemu-img check and compare; vdkit create writes qemu-img create's bytes; vdkit
 * writes into qemu's compressed clusters (each becomes a normal cluster) and qemu-img agrees;
 * info (text and json) says zstd as qemu-img does.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';

const MiB = 2 ** 20;
const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;

async function ok(cmd: string, args: string[], cwd?: string): Promise<string> {
  const r = await run(cmd, args, { cwd });
  assert.equal(r.code, 0, describeRun(cmd, args, r));
  return r.stdout;
}
const vdkit = (args: string[], cwd?: string) => ok(process.execPath, [BIN, ...args], cwd);

/** 6 MiB: random, text-like lines, zeros, a tail sector: compressed, stored and unallocated clusters */
function source(): Buffer {
  const b = Buffer.alloc(6 * MiB);
  xorshiftBytes(MiB, 7).copy(b, 0);
  for (let at = MiB, i = 0; at < 4 * MiB; i++) at += b.write(`${i} cluster table refcount ${i * 7919}\n`, at);
  b.write('the last sector', b.length - 100);
  return b;
}

test('zstd: qemu-img convert -c output reads equal in vdkit; vdkit convert -c output is clean and equal in qemu-img', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const raw = join(dir, 'src.raw');
  await writeFile(raw, source());
  const theirs = join(dir, 'qemu.qcow2');
  await ok('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'compression_type=zstd', raw, theirs]);
  // vdkit reads qemu's zstd clusters: compare and checksum against the source
  await vdkit(['compare', raw, theirs]);
  const sum = (f: string) => vdkit(['checksum', f]).then((s) => s.split(/\s+/)[0]);
  assert.equal(await sum(theirs), await sum(raw));

  const ours = join(dir, 'vdkit.qcow2');
  await vdkit(['convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', raw, ours]);
  const check = await ok('qemu-img', ['check', ours]);
  assert.match(check, /No errors were found/);
  assert.match(check, /[1-9][0-9.]*% compressed clusters/);
  await ok('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', raw, ours]);
  const q = JSON.parse(await ok('qemu-img', ['info', '--output=json', ours])) as { 'format-specific': { data: Record<string, unknown> } };
  assert.equal(q['format-specific'].data['compression-type'], 'zstd');
  const v = JSON.parse(await vdkit(['info', '--output=json', ours])) as typeof q;
  assert.deepEqual(v['format-specific'], q['format-specific']);
  assert.match(await vdkit(['info', ours]), /compression type\s*: zstd/);
  // the header: compression_type 1 at byte 104, incompatible bit 3
  const head = await readFile(ours);
  assert.equal(head[104], 1);
  assert.equal(head.readBigUInt64BE(72) & 8n, 8n);
});

test('zstd: vdkit create is qemu-img create byte for byte; writes over qemu\'s zstd clusters agree with qemu-img', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  await vdkit(['create', '-f', 'qcow2', '-o', 'compression_type=zstd', join(dir, 'v.qcow2'), '64M']);
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compression_type=zstd', join(dir, 'q.qcow2'), '64M']);
  assert.deepEqual(await readFile(join(dir, 'v.qcow2')), await readFile(join(dir, 'q.qcow2')));

  // qemu writes compressed clusters (write -c); vdkit writes parts of them and a new range
  const raw = join(dir, 'model.raw');
  const img = join(dir, 'c.qcow2');
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compression_type=zstd', img, '4M']);
  await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -c -P 0x33 0 64k', '-c', 'write -c -P 0x44 64k 64k', '-c', 'write -c -P 0x55 1M 64k', img]);
  await ok('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', img, raw]);
  const model = await readFile(raw);
  const patch = xorshiftBytes(3000, 11);
  await writeFile(join(dir, 'patch.bin'), patch);
  await vdkit(['write', '--offset', '70000', '--input', join(dir, 'patch.bin'), img]);
  patch.copy(model, 70000);
  await writeFile(raw, model);
  assert.match(await ok('qemu-img', ['check', img]), /No errors were found/);
  await ok('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', raw, img]);
  await vdkit(['compare', raw, img]);
});
