/**
 * Formats vdkit does not read are named and refused, never shown or converted as raw (issue 16
 * item 2): images qemu-img makes (qed, qcow v1, parallels) and signature-only files for the ones
 * it cannot make here (luks needs a CPU timer this VM lacks; dmg, cloop and bochs have no
 * create). `-f raw` still opens each as bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, DiskError, detectFormat } from '../../src/index.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;

async function expectRefused(path: string, name: string): Promise<void> {
  await assert.rejects(detectFormat(path), (e: unknown) => {
    assert.ok(e instanceof DiskError, String(e));
    assert.equal(e.code, 'NOTSUPPORTED');
    assert.equal(e.details.format, name);
    assert.equal(e.details.field, 'format');
    assert.ok(e.message.includes(path), e.message);
    assert.match(e.message, new RegExp(`\\(${name}\\)`));
    return true;
  });
  await assert.rejects(Disk.open(path, { readOnly: true }), (e: unknown) => e instanceof DiskError && e.code === 'NOTSUPPORTED');
  const d = await Disk.open(path, { readOnly: true, format: 'raw' });
  try {
    assert.equal(d.format, 'raw');
  } finally {
    await d.close();
  }
}

test('images qemu-img makes in formats vdkit does not read are refused by name', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  for (const [fmt, name] of [
    ['qed', 'qed'],
    ['qcow', 'qcow'],
    ['parallels', 'parallels'],
  ] as const) {
    const p = join(dir, `x.${fmt}`);
    const r = await run('qemu-img', ['create', '-q', '-f', fmt, p, '4M']);
    assert.equal(r.code, 0, r.stderr);
    const info = await run('qemu-img', ['info', '--output=json', p]);
    assert.equal(JSON.parse(info.stdout).format, fmt, 'qemu-img names the format it made');
    await expectRefused(p, name);
  }
});

test('signatures of luks, dmg, cloop and bochs are refused by name; a qcow2 of version 4 is qcow2 with a version error', async (t) => {
  const dir = (await tmpDir(t)).path;
  const luks = Buffer.alloc(MiB);
  Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe, 0x00, 0x02]).copy(luks); // LUKS2
  const dmg = Buffer.alloc(MiB);
  dmg.write('koly', MiB - 512, 'latin1');
  const cloop = Buffer.alloc(MiB);
  cloop.write('#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n', 0, 'latin1');
  const bochs = Buffer.alloc(MiB);
  bochs.write('Bochs Virtual HD Image\0', 0, 'latin1');
  for (const [name, bytes] of [
    ['luks', luks],
    ['dmg', dmg],
    ['cloop', cloop],
    ['bochs', bochs],
  ] as const) {
    const p = join(dir, `x.${name}`);
    await writeFile(p, bytes);
    await expectRefused(p, name);
  }

  // plain data that only mentions a signature somewhere else stays raw
  const data = Buffer.alloc(MiB);
  data.write('LUKS', 100, 'latin1');
  data.write('koly', 0, 'latin1');
  const p = join(dir, 'data.img');
  await writeFile(p, data);
  assert.equal((await detectFormat(p)).name, 'raw');

  const q4 = Buffer.alloc(MiB);
  q4.writeUInt32BE(0x514649fb, 0);
  q4.writeUInt32BE(4, 4);
  const pq = join(dir, 'v4.qcow2');
  await writeFile(pq, q4);
  assert.equal((await detectFormat(pq)).name, 'qcow2');
  await assert.rejects(Disk.open(pq, { readOnly: true }), (e: unknown) => e instanceof DiskError && e.code === 'UNSUPPORTEDDISKVERSION' && e.details.field === 'version');
});
