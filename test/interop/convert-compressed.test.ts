/**
 * `vdkit convert -c` against `qemu-img convert -c` on the same mixed source (random, text-like,
 * zeros, and 64 KiB pieces of random and text taking turns): qemu-img check must find vdkit's
 * qcow2 clean, qemu-img compare must find it equal to the source, it must be at most 1.05x the
 * size of qemu-img's, and vdkit must read back both its own and qemu's compressed output.
 * Also: the library path with other cluster sizes and v2, -c -O vmdk (streamOptimized), and
 * the usage errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, convert } from '../../src/index.js';
import { compressClusters, STORED_CLUSTER, ZERO_CLUSTER } from '../../src/formats/qcow2/compress-worker.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { runOk } from './support.js';

const MiB = 2 ** 20;
const KiB = 1024;
const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;
const vdkit = (...args: string[]) => run(process.execPath, [BIN, ...args]);

/** lines of a few words and numbers: compresses about 4:1, like logs or source text */
function textLike(length: number, seed: number): Buffer {
  const words = ['disk', 'image', 'cluster', 'table', 'refcount', 'sector', 'grain', 'zlib', 'the', 'of', 'and', 'data', 'offset'];
  const rnd = xorshiftBytes(length, seed);
  const out = Buffer.alloc(length);
  let at = 0;
  for (let i = 0; at < length; i += 3) {
    const line = `${i} ${words[rnd[i % length]! % words.length]} ${words[rnd[(i + 1) % length]! % words.length]} ${rnd.readUInt16LE(i % (length - 2))}\n`;
    at += out.write(line, at);
  }
  return out;
}

/** 24 MiB: random 0-6, zeros 6-8, text 8-18, zeros, random/text taking turns per 64 KiB 20-23, one tail sector */
function mixedSource(): Buffer {
  const b = Buffer.alloc(24 * MiB);
  xorshiftBytes(6 * MiB, 1).copy(b, 0);
  textLike(10 * MiB, 2).copy(b, 8 * MiB);
  const text = textLike(64 * KiB, 3);
  for (let o = 20 * MiB; o < 23 * MiB; o += 128 * KiB) {
    xorshiftBytes(64 * KiB, o).copy(b, o);
    text.copy(b, o + 64 * KiB);
  }
  b.write('the last sector', b.length - 100);
  return b;
}

test('convert -c -O qcow2: qemu-img check clean, equal, at most 1.05x qemu-img convert -c, both read back', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const raw = join(dir, 'src.raw');
  const source = mixedSource();
  await writeFile(raw, source);
  const ours = join(dir, 'vdkit.qcow2');
  const theirs = join(dir, 'qemu.qcow2');
  const r = await vdkit('convert', '-c', '-O', 'qcow2', raw, ours);
  assert.equal(r.code, 0, r.stderr);
  await runOk('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', raw, theirs], 'qemu-img convert -c');

  const check = await run('qemu-img', ['check', ours]);
  assert.equal(check.code, 0, check.stdout + check.stderr);
  assert.match(check.stdout, /No errors were found/);
  // most of the text clusters were written compressed (qemu-img check counts them)
  assert.match(check.stdout, /[1-9][0-9.]*% compressed clusters/);
  const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', raw, ours]);
  assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);

  const [mine, qemu] = [(await stat(ours)).size, (await stat(theirs)).size];
  t.diagnostic(`vdkit ${mine} bytes, qemu-img ${qemu} bytes: ${(mine / qemu).toFixed(3)}x`);
  assert.ok(mine <= 1.05 * qemu, `vdkit's ${mine} bytes exceed 1.05 x qemu-img's ${qemu}`);
  assert.ok(mine < 0.6 * source.length, 'the output is compressed');

  // vdkit reads its own and qemu's compressed clusters
  for (const file of [ours, theirs]) {
    const d = await Disk.open(file, { readOnly: true });
    try {
      assert.equal(d.capacity, source.length);
      const back = Buffer.alloc(source.length);
      await d.readInto(back, 0);
      assert.ok(back.equals(source), `${file} reads back as the source`);
    } finally {
      await d.close();
    }
    const c = await vdkit('compare', raw, file);
    assert.equal(c.code, 0, c.stdout + c.stderr);
  }
});

test('convert -c through the library: 512-byte and 2 MiB clusters, v2, an odd size; qemu-img check and compare', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const srcPath = join(dir, 'src.qcow2');
  const src = await Disk.create(srcPath, { format: 'qcow2', capacity: 5 * MiB });
  await src.write(1000, textLike(700 * KiB, 4));
  await src.write(3 * MiB - 5, xorshiftBytes(300 * KiB, 5));
  await src.write(5 * MiB - 512, Buffer.alloc(512, 0x41));
  await src.close();
  const raw = join(dir, 'src.raw');
  await runOk('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', srcPath, raw], 'to raw');
  const cases = [
    { name: 'c512', clusterSize: 512 },
    { name: 'c2m', clusterSize: 2 * MiB },
    { name: 'v2', type: 'v2' },
    { name: 'one-thread', workers: 1 },
  ];
  const d = await Disk.open(srcPath, { readOnly: true });
  try {
    const outputs = new Map<string, Buffer>();
    for (const c of cases) {
      const out = join(dir, `${c.name}.qcow2`);
      await convert(d, out, { format: 'qcow2', compress: true, ...c });
      const check = await run('qemu-img', ['check', out]);
      assert.equal(check.code, 0, `${c.name}: ${check.stdout}${check.stderr}`);
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', raw, out]);
      assert.equal(cmp.code, 0, `${c.name}: ${cmp.stdout}${cmp.stderr}`);
      outputs.set(c.name, await readFile(out));
    }
    const info = JSON.parse((await runOk('qemu-img', ['info', '--output=json', join(dir, 'v2.qcow2')], 'info')).stdout);
    assert.equal(info['format-specific'].data.compat, '0.10');
    // an odd size is rounded up to whole sectors
    const odd = join(dir, 'odd.qcow2');
    await convert(d, odd, { format: 'qcow2', compress: true, capacity: 3 * MiB + 1 });
    const check = await run('qemu-img', ['check', odd]);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    const o = await Disk.open(odd, { readOnly: true });
    assert.equal(o.capacity, 3 * MiB + 512);
    await o.close();
    // the thread count does not change the bytes
    const again = join(dir, 'four.qcow2');
    await convert(d, again, { format: 'qcow2', compress: true, workers: 4 });
    assert.ok((await readFile(again)).equals(outputs.get('one-thread')!), '1 and 4 threads write the same file');
  } finally {
    await d.close();
  }
});

test('compressClusters: zero clusters skipped, random ones stored, the rest raw deflate QEMU inflates with a 4 KiB window', async () => {
  const { inflateRawSync } = await import('node:zlib');
  const cs = 64 * KiB;
  const data = Buffer.alloc(3 * cs);
  xorshiftBytes(cs, 9).copy(data, cs);
  textLike(cs, 10).copy(data, 2 * cs);
  const r = compressClusters({ id: 1, data: new Uint8Array(data.buffer, data.byteOffset, data.length), clusterSize: cs, level: 6 });
  assert.equal(r.sizes[0], ZERO_CLUSTER);
  assert.equal(r.sizes[1], STORED_CLUSTER);
  assert.ok(r.sizes[2]! > 0 && r.sizes[2]! < cs / 2);
  assert.equal(r.out.length, r.sizes[2]);
  const back = inflateRawSync(Buffer.from(r.out), { windowBits: 12 });
  assert.ok(back.equals(data.subarray(2 * cs)), 'inflates with windowBits 12, as qcow2_decompress');
});

test('convert -c -O vmdk writes streamOptimized; other formats and a non-stream vmdk type are usage errors', async (t) => {
  const dir = (await tmpDir(t)).path;
  const raw = join(dir, 'src.raw');
  await writeFile(raw, Buffer.concat([textLike(MiB, 11), Buffer.alloc(MiB)]));
  const vmdk = join(dir, 'out.vmdk');
  const r = await vdkit('convert', '-c', '-O', 'vmdk', raw, vmdk);
  assert.equal(r.code, 0, r.stderr);
  const info = await vdkit('info', '--json', vmdk);
  assert.equal(JSON.parse(info.stdout).type, 'streamOptimized');
  assert.ok((await stat(vmdk)).size < MiB);
  for (const fmt of ['vdi', 'vhd', 'vhdx', 'raw']) {
    const bad = await vdkit('convert', '-c', '-O', fmt, raw, join(dir, `out.${fmt}`));
    assert.equal(bad.code, 2, `${fmt}: ${bad.stderr}`);
    assert.match(bad.stderr, /qcow2.*vmdk/, fmt);
  }
  const typed = await vdkit('convert', '-c', '-O', 'vmdk', '-t', 'monolithicSparse', raw, join(dir, 'sparse.vmdk'));
  assert.equal(typed.code, 2, typed.stderr);
  const piped = await vdkit('convert', '-c', '-O', 'qcow2', raw, '-');
  assert.equal(piped.code, 2, piped.stderr);
});
