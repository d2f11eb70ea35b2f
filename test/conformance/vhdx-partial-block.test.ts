/**
 * A VHDX whose last payload block is only partly inside the virtual disk (32 MiB blocks on a
 * 10 MiB disk): the block still owns BlockSize bytes of file (MS-VHDX; Hyper-V, QEMU and vdkit
 * allocate it whole). check must not call the rest of it a leak, and no repair, defragment,
 * compact or shrink may cut the file inside it.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, checkDisk, compact, defragment, resize } from '../../src/index.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;
const BS = 32 * MiB;
const sha = async (p: string) => createHash('sha256').update(await readFile(p)).digest('hex');
/** where the last payload block's BlockSize bytes end (BAT read from region table 1; the chunk ratio is over 3 blocks here) */
async function lastBlockEnd(p: string): Promise<number> {
  const f = await readFile(p);
  const rt = 192 * 1024;
  let end = 0;
  for (let i = 0; i < f.readUInt32LE(rt + 8); i++) {
    const e = rt + 16 + i * 32;
    if (f.toString('hex', e, e + 4) !== '6677c22d') continue;
    const bat = Number(f.readBigUInt64LE(e + 16));
    for (let n = 0; n < 3; n++) {
      const v = f.readBigUInt64LE(bat + n * 8);
      if ((v & 7n) === 6n) end = Math.max(end, Number(v >> 20n) * MiB + BS);
    }
  }
  return end;
}
const nonWarnings = (r: { findings: { kind: string }[] }) => r.findings.filter((f) => f.kind !== 'warning');

async function vdkitImage(p: string, capacity: number, writes: [number, number][]): Promise<void> {
  const d = await Disk.create(p, { format: 'vhdx', capacity, blockSize: BS });
  for (const [at, len] of writes) await d.write(at, Buffer.alloc(len, 0x5a));
  await d.close();
}

/** check finds nothing, check --repair changes no byte, qemu-img check stays clean */
async function cleanAndUntouched(t: TestContext, p: string): Promise<void> {
  const r = await checkDisk(p, { repair: false });
  assert.deepEqual(nonWarnings(r), [], `${p}: ${JSON.stringify(r.findings)}`);
  assert.equal((await stat(p)).size, await lastBlockEnd(p), `${p}: the file ends after the last whole block`);
  assert.equal(r.leakedBytes, 0);
  const before = await sha(p);
  const size = (await stat(p)).size;
  const rep = await checkDisk(p, { repair: true });
  assert.deepEqual(nonWarnings(rep), [], `${p}: repair found ${JSON.stringify(rep.findings)}`);
  assert.equal((await stat(p)).size, size, `${p}: repair kept the file size`);
  assert.equal(await sha(p), before, `${p}: repair left the file byte-identical`);
  if (skipUnless(t, 'qemu-img')) {
    const q = await run('qemu-img', ['check', '-f', 'vhdx', p]);
    assert.equal(q.code, 0, q.stdout + q.stderr);
  }
}

test('vhdx check: a last block partly inside the disk (32 MiB blocks, 10 MiB disk) is no leak, and repair never cuts it (vdkit and qemu-img made)', async (t) => {
  const dir = (await tmpDir(t)).path;
  const mine = join(dir, 'v.vhdx');
  await vdkitImage(mine, 10 * MiB, [[0, MiB]]);
  await cleanAndUntouched(t, mine);
  if (skipUnless(t, 'qemu-img', 'qemu-io')) {
    const q = join(dir, 'q.vhdx');
    assert.equal((await run('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=32M', q, '10M'])).code, 0);
    assert.equal((await run('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x5a 0 1M', q])).code, 0);
    await cleanAndUntouched(t, q);
    const d = await Disk.open(q, { readOnly: true });
    assert.ok((await d.read(0, MiB)).equals(Buffer.alloc(MiB, 0x5a)));
    await d.close();
  }
});

test('vhdx defragment, compact and shrink keep the partial last block whole', async (t) => {
  const dir = (await tmpDir(t)).path;
  // 80 MiB: blocks 0, 1 and a last block 2 of 16 MiB; block 2 written first, so it sits before block 0
  const p = join(dir, 'd.vhdx');
  await vdkitImage(p, 80 * MiB, [[64 * MiB, MiB], [0, MiB]]);
  await defragment(p);
  await cleanAndUntouched(t, p);

  // compact: block 1 zeros, dropped; the last block moves into its place, whole
  const c = join(dir, 'c.vhdx');
  await vdkitImage(c, 80 * MiB, [[0, MiB], [32 * MiB, MiB], [64 * MiB, MiB]]);
  const d = await Disk.open(c);
  await d.write(32 * MiB, Buffer.alloc(MiB));
  await d.close();
  const full = (await stat(c)).size;
  await compact(c);
  assert.equal((await stat(c)).size, full - BS, 'compact gave back one whole block');
  await cleanAndUntouched(t, c);

  // shrink to 40 MiB: block 1 becomes the partial last block; check -r cuts only block 2's space
  const s = join(dir, 's.vhdx');
  await vdkitImage(s, 80 * MiB, [[0, MiB], [32 * MiB, MiB], [64 * MiB, MiB]]);
  await resize(s, 40 * MiB, { shrink: true, force: true });
  const r = await checkDisk(s, { repair: true });
  assert.equal(r.findings.filter((f) => f.kind === 'leak').length, 1, JSON.stringify(r.findings));
  assert.equal((await stat(s)).size, full - BS, 'only the dropped block 2 was cut');
  await cleanAndUntouched(t, s);
});
