/**
 * `vdkit dd` and `vdkit bench` against qemu-img's: dd output equal to qemu-img dd's (where the two
 * agree on what count= means) and sparse; skip= with count= as qemu-img's documentation and POSIX
 * dd define it (qemu-img 7.2 itself copies up to block `count` instead: see README); the usage and
 * range errors; bench's requests reaching the disk (the write pattern read back by qemu-io) and
 * its qemu-img-style report.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { access, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk } from '../../src/index.js';
import { describeRun, run, runVdkit, skipUnless, tmpDir } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { readAll } from '../helpers/in-place-kill.js';

const MiB = 2 ** 20;
const KiB = 1024;

/** a 16 MiB qcow2 with random data at 1-3 MiB and 9 MiB + 5 KiB (an unaligned piece), the rest holes */
async function source(dir: string, format = 'qcow2'): Promise<{ path: string; model: Buffer }> {
  const path = join(dir, `src.${format}`);
  const model = Buffer.alloc(16 * MiB);
  xorshiftBytes(2 * MiB, 7).copy(model, 1 * MiB);
  xorshiftBytes(3 * KiB, 8).copy(model, 9 * MiB + 5 * KiB);
  const d = await Disk.create(path, { format, capacity: model.length });
  await d.write(1 * MiB, model.subarray(1 * MiB, 3 * MiB));
  await d.write(9 * MiB + 4 * KiB, model.subarray(9 * MiB + 4 * KiB, 9 * MiB + 12 * KiB));
  await d.close();
  return { path, model };
}

test('dd: the same image as qemu-img dd for each output format, and sparse', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = await tmpDir(t);
  const { path: src } = await source(dir.path);
  for (const [fmt, qfmt, ext] of [['qcow2', 'qcow2', 'qcow2'], ['vmdk', 'vmdk', 'vmdk'], ['vdi', 'vdi', 'vdi'], ['vhdx', 'vhdx', 'vhdx'], ['raw', 'raw', 'raw']] as const) {
    for (const ops of [['bs=64k', 'count=160'], ['bs=1M'], ['bs=4096', 'count=2400']]) {
      const mine = join(dir.path, `v-${ops.join('-')}.${ext}`);
      const theirs = join(dir.path, `q-${ops.join('-')}.${ext}`);
      const args = ['dd', '-f', 'qcow2', '-O', fmt, `if=${src}`, `of=${mine}`, ...ops];
      const r = await runVdkit(args, dir.path);
      assert.equal(r.code, 0, describeRun('vdkit', args, r));
      const q = await run('qemu-img', ['dd', '-f', 'qcow2', '-O', qfmt, `if=${src}`, `of=${theirs}`, ...ops]);
      assert.equal(q.code, 0, q.stderr);
      const cmp = await run('qemu-img', ['compare', '-f', qfmt, '-F', qfmt, theirs, mine]);
      assert.equal(cmp.code, 0, `${fmt} ${ops.join(' ')}: ${cmp.stdout}${cmp.stderr}`);
      const info = JSON.parse((await run('qemu-img', ['info', '--output=json', '-f', qfmt, mine])).stdout) as { 'virtual-size': number };
      const qinfo = JSON.parse((await run('qemu-img', ['info', '--output=json', '-f', qfmt, theirs])).stdout) as { 'virtual-size': number };
      assert.equal(info['virtual-size'], qinfo['virtual-size'], `${fmt} ${ops.join(' ')}: virtual size`);
      // qemu-img dd writes every block; vdkit leaves what reads as zeros unallocated
      if (fmt === 'qcow2' || fmt === 'raw') {
        const mapped = JSON.parse((await run('qemu-img', ['map', '--output=json', '-f', qfmt, mine])).stdout) as { length: number; data: boolean }[];
        const data = mapped.filter((m) => m.data).reduce((n, m) => n + m.length, 0);
        assert.ok(data <= 3 * MiB, `${fmt} ${ops.join(' ')}: ${data} bytes allocated, the source holds about 2 MiB of data`);
      }
    }
  }
});

test('dd: skip= and count= copy count blocks after the skipped ones (POSIX dd, qemu-img dd --help)', async (t) => {
  const dir = await tmpDir(t);
  const { path: src, model } = await source(dir.path, 'vhdx');
  const out = join(dir.path, 'part.vdi');
  const args = ['dd', `if=${src}`, `of=${out}`, 'bs=512', 'skip=3000', 'count=16000'];
  const r = await runVdkit(args, dir.path);
  assert.equal(r.code, 0, describeRun('vdkit', args, r));
  assert.match(r.stdout, /copied 8192000 bytes/);
  const got = await readAll(out);
  assert.equal(got.length, 16000 * 512);
  assert.ok(got.equals(model.subarray(3000 * 512, 19000 * 512)), 'content of the copied range');
  // count running past the end: the copy stops at the end of the disk
  const tail = join(dir.path, 'tail.raw');
  const r2 = await runVdkit(['dd', `if=${src}`, `of=${tail}`, 'bs=1M', 'skip=9', 'count=100'], dir.path);
  assert.equal(r2.code, 0, r2.stderr);
  assert.ok((await readAll(tail)).equals(model.subarray(9 * MiB)));
});

test('dd: usage and range errors say what is wrong and leave no output behind', async (t) => {
  const dir = await tmpDir(t);
  const { path: src } = await source(dir.path);
  const cases: [string[], number, RegExp][] = [
    [['dd', `if=${src}`], 2, /if= and of= are both required/],
    [['dd', `if=${src}`, 'of=x.raw', 'foo=1'], 2, /unrecognized operand "foo=1"/],
    [['dd', `if=${src}`, 'of=x.raw', 'bs=0'], 2, /bs=0: must be between 1 and 2147483647/],
    [['dd', `if=${src}`, 'of=x.raw', 'bs=1M', 'bs=2M'], 2, /bs= given twice/],
    [['dd', `if=${src}`, 'of=x.raw', 'bs=1M', 'skip=17'], 1, /cannot skip 17 blocks of 1048576 bytes: the disk holds 16777216 bytes/],
  ];
  for (const [args, code, message] of cases) {
    const r = await runVdkit(args, dir.path);
    assert.equal(r.code, code, describeRun('vdkit', args, r));
    assert.match(r.stderr, message);
  }
  await assert.rejects(access(join(dir.path, 'x.raw')), 'no output file after a refused dd');
  // an existing output is not replaced unless --overwrite
  const keep = join(dir.path, 'keep.raw');
  assert.equal((await runVdkit(['dd', `if=${src}`, `of=${keep}`, 'bs=1M', 'count=1'], dir.path)).code, 0);
  const again = await runVdkit(['dd', `if=${src}`, `of=${keep}`, 'bs=1M', 'count=2'], dir.path);
  assert.notEqual(again.code, 0, 'an existing output is refused');
  assert.equal((await stat(keep)).size, MiB, 'and left as it was');
  assert.equal((await runVdkit(['dd', '--overwrite', `if=${src}`, `of=${keep}`, 'bs=1M', 'count=2'], dir.path)).code, 0);
  assert.equal((await stat(keep)).size, 2 * MiB);
});

test('bench: read and write requests reach the disk, reported as qemu-img bench does', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = await tmpDir(t);
  const img = join(dir.path, 'b.qcow2');
  assert.equal((await run('qemu-img', ['create', '-f', 'qcow2', img, '8M'])).code, 0);
  const r = await runVdkit(['bench', '-c', '500', '-d', '8', '-s', '4k', img], dir.path);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^Sending 500 read requests, 4096 bytes each, 8 in parallel \(starting at offset 0, step size 4096\)\nRun completed in \d+\.\d{3} seconds\./);
  // 20 writes of 64 KiB from 1 MiB, step 128 KiB, pattern 7: every other 64 KiB of 1 MiB..3.5 MiB
  const w = await runVdkit(['bench', '-w', '-c', '20', '-s', '64k', '-S', '128k', '-o', '1M', '--pattern', '7', '--flush-interval', '5', img], dir.path);
  assert.equal(w.code, 0, w.stderr);
  const checks = ['-c', 'read -P 0 0 1M', '-c', 'read -P 7 1M 64k', '-c', 'read -P 0 1088k 64k', '-c', `read -P 7 ${1024 + 19 * 128}k 64k`, '-c', `read -P 0 ${1024 + 19 * 128 + 64}k 64k`];
  const io = await run('qemu-io', ['-f', 'qcow2', ...checks, img]);
  assert.doesNotMatch(io.stdout + io.stderr, /Pattern verification failed|error/i, io.stdout + io.stderr);
  assert.equal((await run('qemu-img', ['check', img])).code, 0);
  // requests past the end wrap around: 200 writes of 64 KiB cover the 8 MiB disk
  const wrap = await runVdkit(['bench', '-w', '-c', '200', '-s', '64k', '--pattern', '9', img], dir.path);
  assert.equal(wrap.code, 0, wrap.stderr);
  assert.doesNotMatch((await run('qemu-io', ['-f', 'qcow2', '-c', 'read -P 9 0 8M', img])).stdout, /failed/i);
  // random offsets, JSON result
  const j = await runVdkit(['bench', '--random', '--seed', '5', '-c', '300', '-s', '8k', '--json', img], dir.path);
  assert.equal(j.code, 0, j.stderr);
  const res = JSON.parse(j.stdout) as { requests: number; bytes: number; seconds: number };
  assert.equal(res.requests, 300);
  assert.equal(res.bytes, 300 * 8192);
  // what qemu-img offers and vdkit cannot do is refused, not ignored
  for (const [args, message] of [
    [['bench', '-n', img], /O_DIRECT/],
    [['bench', '-t', 'none', img], /O_DIRECT/],
    [['bench', '-i', 'native', img], /AIO/],
    [['bench', '--flush-interval', '2', img], /write requests/],
    [['bench', '-s', '16M', img], /do not fit/],
  ] as const) {
    const e = await runVdkit([...args], dir.path);
    assert.notEqual(e.code, 0, describeRun('vdkit', args, e));
    assert.match(e.stderr, message);
  }
});
