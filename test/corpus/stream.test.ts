/**
 * The VMware-made streamOptimized sample (iotest-version3.vmdk from QEMU's sample images,
 * layout in vmdk.md §4.3 (A): GD at the end, footer + EOS) as a good input, and damaged copies
 * of it: wrong marker LBA, oversized marker, broken zlib data, missing EOS.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, statSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { Disk } from '../../src/index.js';
import { haveTestdata } from '../helpers/tools.js';
import { SHARED, bunzip, expectFailure, poke, removeTempDirs, sha, tempDir, u32le, u64le } from './support.js';

const FIRST_MARKER = 128 * 512; // overHead 128: the first grain marker (GTE of grain 0)
let dir: string;
let sample: string;
let n = 0;

const SAMPLE_BZ2 = join(SHARED, 'testdata', 'outside', 'iotest-version3.vmdk.bz2');
before(() => {
  dir = tempDir('corpus-stream');
  if (existsSync(SAMPLE_BZ2)) sample = bunzip(SAMPLE_BZ2, dir, 'iotest-version3.vmdk');
});
after(() => removeTempDirs());

function copy(): string {
  const p = join(dir, `s${++n}.vmdk`);
  copyFileSync(sample, p);
  return p;
}

test('iotest-version3.vmdk opens read-only: 16 GiB streamOptimized, version 3, VMware geometry', async (t) => {
  if (!haveTestdata(t, SAMPLE_BZ2)) return;
  assert.equal(statSync(sample).size, 282624);
  const digest = sha(sample);
  const d = await Disk.open(sample, { readOnly: true });
  try {
    assert.equal(d.capacity, 17179869184);
    assert.equal(d.format, 'vmdk');
    const info = await d.info();
    assert.equal(info.type, 'streamOptimized');
    assert.equal(info.version, 3);
    assert.equal(info.compressed, true);
    assert.equal(info.adapterType, 'lsilogic');
    assert.deepEqual(info.geometry, { cylinders: 2088, heads: 255, sectors: 63 });
    assert.equal(info.cid, 'a454774a');
    const status = await d.blockStatus();
    let pos = 0;
    let data = 0;
    for (const r of status) {
      assert.equal(r.offset, pos);
      pos += r.length;
      if (r.state === 'data') {
        data += r.length;
        await d.read(r.offset, r.length); // inflates without error
      } else {
        assert.ok((await d.read(r.offset, Math.min(r.length, 1 << 20))).every((b) => b === 0));
      }
    }
    assert.equal(pos, d.capacity);
    assert.equal(data, info.allocatedBytes);
    assert.ok(data > 0 && data % 65536 === 0);
  } finally {
    await d.close();
  }
  assert.equal(sha(sample), digest, 'reading never writes');
});

test('opening the stream read-write -> CMPRDONLY', async (t) => {
  if (!haveTestdata(t, SAMPLE_BZ2)) return;
  await expectFailure(() => Disk.open(sample), { code: 'CMPRDONLY', path: sample });
});

test('a grain marker naming another LBA -> CORRUPT lba', async (t) => {
  if (!haveTestdata(t, SAMPLE_BZ2)) return;
  const p = copy();
  await poke(p, FIRST_MARKER, u64le(128n));
  const d = await Disk.open(p, { readOnly: true });
  try {
    await expectFailure(() => d.read(0, 512), { code: 'CORRUPT', path: p, field: 'lba' });
  } finally {
    await d.close();
  }
});

test('a grain marker with an absurd size -> CORRUPT size (no huge read)', async (t) => {
  if (!haveTestdata(t, SAMPLE_BZ2)) return;
  const p = copy();
  await poke(p, FIRST_MARKER + 8, u32le(0x7fffffff));
  const d = await Disk.open(p, { readOnly: true });
  try {
    await expectFailure(() => d.read(0, 512), { code: 'CORRUPT', path: p, field: 'size' });
  } finally {
    await d.close();
  }
});

test('damaged zlib data -> ZLIB', async (t) => {
  if (!haveTestdata(t, SAMPLE_BZ2)) return;
  const p = copy();
  await poke(p, FIRST_MARKER + 12, Buffer.alloc(64, 0xff));
  const d = await Disk.open(p, { readOnly: true });
  try {
    await expectFailure(() => d.read(0, 512), { code: 'ZLIB', path: p, field: 'data' });
  } finally {
    await d.close();
  }
});

test('a stream cut before its end-of-stream marker -> CORRUPT footer', async (t) => {
  if (!haveTestdata(t, SAMPLE_BZ2)) return;
  const p = copy();
  truncateSync(p, 282624 - 512);
  await expectFailure(() => Disk.open(p, { readOnly: true }), { code: 'CORRUPT', path: p, field: 'footer' });
  truncateSync(p, 282624 - 100);
  await expectFailure(() => Disk.open(p, { readOnly: true }), { code: 'CORRUPT', path: p, field: 'footer' });
});

test('a QEMU-made stream whose descriptor is wiped and whose file ends before overHead -> CORRUPT overHead (qemu-img refuses it too)', async (t) => {
  const { run, skipUnless } = await import('../helpers/tools.js');
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  // QEMU's layout: header, descriptor (sectors 1-20), GD and GTs before overHead (128), grains after
  for (const withData of [false, true]) {
    const p = join(dir, `q${++n}.vmdk`);
    assert.equal((await run('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=streamOptimized', p, '64M'])).code, 0);
    if (withData) assert.equal((await run('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0x5a 0 64k', p])).code, 0);
    // untouched, it opens (an empty one is exactly overHead long)
    const ok = await Disk.open(p, { readOnly: true });
    await ok.close();
    await poke(p, 512, Buffer.alloc(20 * 512));
    truncateSync(p, 32768);
    const digest = sha(p);
    await expectFailure(() => Disk.open(p, { readOnly: true }), { code: 'CORRUPT', path: p, field: 'overHead', message: /truncated/ });
    const q = await run('qemu-img', ['info', p]);
    assert.notEqual(q.code, 0, 'qemu-img refuses it');
    assert.match(q.stderr, /truncated/);
    assert.equal(sha(p), digest);
  }
});

test('a vdkit-made stream whose descriptor is wiped and whose file ends before overHead -> CORRUPT overHead, not a clean empty disk', async (t) => {
  const { Disk: D, convert } = await import('../../src/index.js');
  const { readFileSync, writeFileSync } = await import('node:fs');
  const src = join(dir, `v${++n}.vmdk`);
  const s = await D.create(src, { capacity: 16 * 1024 * 1024 });
  await s.write(5 * 65536 + 7, Buffer.alloc(200000, 0x5a));
  const stream = join(dir, `v${++n}-stream.vmdk`);
  await convert(s, stream, { type: 'streamOptimized' });
  await s.close();
  const whole = readFileSync(stream);
  assert.equal(whole.readBigUInt64LE(64), 128n, 'overHead of a vdkit stream: 128 sectors');
  const descriptorSectors = Number(whole.readBigUInt64LE(36));
  // the header sector and a wiped descriptor, cut at 32 KiB, then the footer marker, footer and
  // EOS of the stream; the footer's grain directory moved to a zero sector inside the cut file,
  // so every other check passes and only the length tells the file lost its grains
  const head = Buffer.alloc(32768);
  whole.copy(head, 0, 0, 512);
  const tail = Buffer.from(whole.subarray(whole.length - 3 * 512));
  tail.writeBigUInt64LE(BigInt(1 + descriptorSectors + 4), 512 + 56); // footer gdOffset
  const p = join(dir, `v${++n}-cut.vmdk`);
  writeFileSync(p, Buffer.concat([head, tail]));
  const digest = sha(p);
  await expectFailure(() => Disk.open(p, { readOnly: true }), { code: 'CORRUPT', path: p, field: 'overHead', message: /truncated/ });
  // cut without keeping the footer: the stream's end is missing
  const q = join(dir, `v${++n}-cut.vmdk`);
  writeFileSync(q, head);
  await expectFailure(() => Disk.open(q, { readOnly: true }), { code: 'CORRUPT', path: q, field: /footer|overHead/ });
  assert.equal(sha(p), digest, 'a refused open writes nothing');
  const { run, skipUnless } = await import('../helpers/tools.js');
  if (skipUnless(t, 'qemu-img')) {
    const r = await run('qemu-img', ['info', '-f', 'vmdk', p]);
    assert.notEqual(r.code, 0, 'qemu-img refuses it too');
  }
});
