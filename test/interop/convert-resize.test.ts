/**
 * convert with a new size (ConvertOptions.capacity, `vdkit convert --size`) into every format and
 * type: shrinking drops what lies past the new end, growing adds a tail that reads as zeros, and a
 * size that is not whole sectors is rounded up to one for every format but raw. qemu-img compares
 * each target with the source's raw bytes cut or extended to the expected size, and qemu-img info
 * must report that size.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, convert } from '../../src/index.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { runOk } from './support.js';

const MiB = 2 ** 20;
const KINDS: { name: string; format: string; type?: string; qemu: string }[] = [
  { name: 'vmdk-sparse', format: 'vmdk', type: 'monolithicSparse', qemu: 'vmdk' },
  { name: 'vmdk-flat', format: 'vmdk', type: 'monolithicFlat', qemu: 'vmdk' },
  { name: 'vmdk-split-sparse', format: 'vmdk', type: 'twoGbMaxExtentSparse', qemu: 'vmdk' },
  { name: 'vdi-dynamic', format: 'vdi', type: 'dynamic', qemu: 'vdi' },
  { name: 'vdi-fixed', format: 'vdi', type: 'fixed', qemu: 'vdi' },
  { name: 'vhd-dynamic', format: 'vhd', type: 'dynamic', qemu: 'vpc' },
  { name: 'vhd-fixed', format: 'vhd', type: 'fixed', qemu: 'vpc' },
  { name: 'vhdx-dynamic', format: 'vhdx', type: 'dynamic', qemu: 'vhdx' },
  { name: 'vhdx-fixed', format: 'vhdx', type: 'fixed', qemu: 'vhdx' },
  { name: 'qcow2', format: 'qcow2', qemu: 'qcow2' },
  { name: 'raw', format: 'raw', qemu: 'raw' },
];
const ext = (f: string) => (f === 'raw' ? 'img' : f);

test('convert --size: grow, shrink and odd sizes into every format, compared by qemu-img', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const capacity = 16 * MiB;
  const src = join(dir, 'src.vmdk');
  const d = await Disk.create(src, { capacity });
  await d.write(7, xorshiftBytes(200 * 1024, 1));
  await d.write(9 * MiB - 333, xorshiftBytes(MiB, 2)); // cut by the 9 MiB size
  await d.write(12 * MiB + 5, xorshiftBytes(70_000, 3)); // cut by the odd size
  await d.write(capacity - 512, Buffer.alloc(512, 0xfe)); // the last sector: gone when shrunk, kept when grown
  await d.close();
  const srcRaw = join(dir, 'src.raw');
  await runOk('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', src, srcRaw], 'convert to raw');
  const sizes = [9 * MiB, 20 * MiB, 12 * MiB + 7777];
  const source = await Disk.open(src, { readOnly: true });
  try {
    for (const size of sizes) {
      for (const k of KINDS) {
        const want = k.format === 'raw' ? size : Math.ceil(size / 512) * 512;
        const ref = join(dir, `ref-${want}.raw`);
        await copyFile(srcRaw, ref);
        await truncate(ref, want);
        const out = join(dir, `${k.name}-${size}.${ext(k.format)}`);
        await convert(source, out, { format: k.format, type: k.type, capacity: size });
        const got = await Disk.open(out, { readOnly: true });
        assert.equal(got.capacity, want, `${k.name} ${size}: vdkit capacity`);
        await got.close();
        if (k.format === 'raw') assert.equal((await stat(out)).size, size, `raw ${size}: file size`);
        else {
          const info = JSON.parse((await runOk('qemu-img', ['info', '-f', k.qemu, '--output=json', out], 'info')).stdout) as { 'virtual-size': number };
          assert.equal(info['virtual-size'], want, `${k.name} ${size}: qemu-img info virtual size`);
        }
        const cmp = await run('qemu-img', ['compare', '-f', k.qemu, '-F', 'raw', out, ref]);
        assert.equal(cmp.code, 0, `${k.name} ${size}: qemu-img compare: ${cmp.stdout}${cmp.stderr}`);
      }
    }
  } finally {
    await source.close();
  }
  // a raw source whose size is not whole sectors: every other format rounds it up (once refused by qcow2, VHD, VHDX)
  const odd = join(dir, 'odd.img');
  await writeFile(odd, xorshiftBytes(1_000_001, 4));
  const r = await Disk.open(odd, { readOnly: true, format: 'raw' });
  try {
    for (const k of KINDS.filter((x) => x.format !== 'raw')) {
      const out = join(dir, `odd-${k.name}.${ext(k.format)}`);
      await convert(r, out, { format: k.format, type: k.type });
      const cmp = await run('qemu-img', ['compare', '-f', k.qemu, '-F', 'raw', out, odd]);
      assert.equal(cmp.code, 0, `odd raw -> ${k.name}: ${cmp.stdout}${cmp.stderr}`);
      const got = await Disk.open(out, { readOnly: true });
      assert.equal(got.capacity, 1_000_448, `odd raw -> ${k.name}: rounded up to whole sectors`);
      await got.close();
    }
  } finally {
    await r.close();
  }
});
