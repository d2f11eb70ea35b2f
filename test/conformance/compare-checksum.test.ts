import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Disk, checksum, compare, convert } from '../../src/index.js';
import { createChild } from '../../src/ops/child.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';

const MiB = 2 ** 20;
const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;
const vdkit = (args: string[]) => run(process.execPath, [BIN, ...args]);

async function source(dir: string): Promise<string> {
  const p = join(dir, 'src.vmdk');
  const d = await Disk.create(p, { capacity: 12 * MiB });
  await d.write(3, xorshiftBytes(300 * 1024, 1));
  await d.write(5 * MiB - 7, xorshiftBytes(2 * MiB, 2));
  await d.write(11 * MiB, Buffer.alloc(65536)); // written zeros
  await d.close();
  return p;
}

async function digest(path: string): Promise<string> {
  const d = await Disk.open(path, { readOnly: true });
  try {
    return await checksum(d);
  } finally {
    await d.close();
  }
}

test('checksum: one value for the same content in every format, type and chain', async (t) => {
  const dir = (await tmpDir(t)).path;
  const src = await source(dir);
  const want = await digest(src);
  assert.match(want, /^sha256-1m:[0-9a-f]{64}$/);
  const targets: [string, string, string?][] = [
    ['a.vmdk', 'vmdk', 'monolithicFlat'],
    ['b.vmdk', 'vmdk', 'twoGbMaxExtentSparse'],
    ['c.vdi', 'vdi', 'dynamic'],
    ['d.vdi', 'vdi', 'fixed'],
    ['e.vhd', 'vhd', 'dynamic'],
    ['f.vhd', 'vhd', 'fixed'],
    ['g.vhdx', 'vhdx'],
    ['h.qcow2', 'qcow2'],
    ['i.raw', 'raw'],
  ];
  const s = await Disk.open(src, { readOnly: true });
  for (const [name, format, type] of targets) {
    await convert(s, join(dir, name), { format, type });
    assert.equal(await digest(join(dir, name)), want, `${name} (${format} ${type ?? ''})`);
  }
  await s.close();
  // a chain whose top changes nothing yet, and then one that changes a byte
  const child = await createChild(join(dir, 'c.vdi'));
  assert.equal(await checksum(child), want);
  await child.write(4 * MiB, Buffer.from([1]));
  assert.notEqual(await checksum(child), want);
  await child.close();
  // size is part of the content: the same bytes on a larger disk differ
  const big = await Disk.create(join(dir, 'big.qcow2'), { format: 'qcow2', capacity: 13 * MiB });
  const from = await Disk.open(src, { readOnly: true });
  await big.write(0, await from.read(0, 12 * MiB));
  await from.close();
  assert.notEqual(await checksum(big), want);
  await big.close();
});

test('compare: identical across formats, first difference, zeros past a smaller disk, strict', async (t) => {
  const dir = (await tmpDir(t)).path;
  const src = await source(dir);
  const s = await Disk.open(src, { readOnly: true });
  await convert(s, join(dir, 'x.qcow2'), { format: 'qcow2' });
  await convert(s, join(dir, 'y.vhdx'), { format: 'vhdx' });
  await convert(s, join(dir, 'z.vdi'), { format: 'vdi', capacity: 16 * MiB });
  const open = (p: string) => Disk.open(join(dir, p), { readOnly: true });
  const x = await open('x.qcow2');
  assert.deepEqual(await compare(s, x), { identical: true });
  const z = await open('z.vdi');
  assert.deepEqual(await compare(s, z), { identical: true }, 'a larger disk with zeros past the end compares equal');
  assert.equal((await compare(s, z, { strict: true })).identical, false, 'but not in strict mode');
  await x.close();
  await z.close();
  const y = await Disk.open(join(dir, 'y.vhdx'));
  await y.write(7 * MiB + 123, Buffer.from([0xee]));
  const r = await compare(s, y);
  assert.equal(r.identical, false);
  assert.equal(r.offset, 7 * MiB + 123);
  await y.close();
  await s.close();
});

test('vdkit compare exit codes match qemu-img compare (0 same, 1 different, 2 error)', async (t) => {
  const dir = (await tmpDir(t)).path;
  const src = await source(dir);
  const s = await Disk.open(src, { readOnly: true });
  await convert(s, join(dir, 'same.vhd'), { format: 'vhd' });
  await convert(s, join(dir, 'other.qcow2'), { format: 'qcow2' });
  await s.close();
  const o = await Disk.open(join(dir, 'other.qcow2'));
  await o.write(2 * MiB, Buffer.from('changed'));
  await o.close();
  const cases: [string, string, number][] = [
    [src, join(dir, 'same.vhd'), 0],
    [src, join(dir, 'other.qcow2'), 1],
    [src, join(dir, 'missing.vmdk'), 2],
  ];
  for (const [a, b, code] of cases) {
    const r = await vdkit(['compare', a, b]);
    assert.equal(r.code, code, `vdkit compare ${a} ${b}: ${r.stdout}${r.stderr}`);
  }
  assert.match((await vdkit(['compare', src, join(dir, 'other.qcow2')])).stdout, /Content mismatch at offset 2097152!/);
  const sum = await vdkit(['checksum', join(dir, 'same.vhd')]);
  assert.equal(sum.code, 0);
  assert.equal(sum.stdout.split(' ')[0], await digest(src));
  if (!skipUnless(t, 'qemu-img')) return;
  for (const [a, b, code] of cases) {
    const q = await run('qemu-img', ['compare', a, b]);
    assert.equal(q.code, code, `qemu-img compare ${a} ${b}: ${q.stdout}${q.stderr}`);
  }
});
