/**
 * Every pair of (vmdk: each type, vdi fixed/dynamic, vhd fixed/dynamic, vhdx fixed/dynamic,
 * qcow2, raw) converts, qemu-img compare finds source and target identical, and the target
 * passes qemu-img check where qemu checks that format.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Disk, convert } from '../../src/index.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';

const MiB = 2 ** 20;
const KINDS: { name: string; format: string; type?: string; qemu: string; check: boolean }[] = [
  { name: 'vmdk-sparse', format: 'vmdk', type: 'monolithicSparse', qemu: 'vmdk', check: true },
  { name: 'vmdk-flat', format: 'vmdk', type: 'monolithicFlat', qemu: 'vmdk', check: true },
  { name: 'vmdk-split-sparse', format: 'vmdk', type: 'twoGbMaxExtentSparse', qemu: 'vmdk', check: true },
  { name: 'vmdk-split-flat', format: 'vmdk', type: 'twoGbMaxExtentFlat', qemu: 'vmdk', check: true },
  { name: 'vmdk-vmfs', format: 'vmdk', type: 'vmfs', qemu: 'vmdk', check: true },
  { name: 'vmdk-stream', format: 'vmdk', type: 'streamOptimized', qemu: 'vmdk', check: true },
  { name: 'vdi-dynamic', format: 'vdi', type: 'dynamic', qemu: 'vdi', check: true },
  { name: 'vdi-fixed', format: 'vdi', type: 'fixed', qemu: 'vdi', check: true },
  { name: 'vhd-dynamic', format: 'vhd', type: 'dynamic', qemu: 'vpc', check: false },
  { name: 'vhd-fixed', format: 'vhd', type: 'fixed', qemu: 'vpc', check: false },
  { name: 'vhdx-dynamic', format: 'vhdx', type: 'dynamic', qemu: 'vhdx', check: true },
  { name: 'vhdx-fixed', format: 'vhdx', type: 'fixed', qemu: 'vhdx', check: true },
  { name: 'qcow2', format: 'qcow2', qemu: 'qcow2', check: true },
  { name: 'raw', format: 'raw', qemu: 'raw', check: false },
];
const ext = (f: string) => (f === 'raw' ? 'img' : f);

test('convert matrix: every format and type to every other, checked by qemu-img', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const capacity = 24 * MiB;
  // sources of every kind holding the same content: data, written zeros, a partial grain, the end
  const sources: string[] = [];
  const streams: [string, typeof KINDS[number]][] = [];
  for (const k of KINDS) {
    const p = join(dir, `src-${k.name}.${ext(k.format)}`);
    sources.push(p);
    // a stream is only ever written whole, by conversion: made below from the raw source
    if (k.type === 'streamOptimized') {
      streams.push([p, k]);
      continue;
    }
    const d = await Disk.create(p, { format: k.format, type: k.type, capacity });
    await d.write(7, xorshiftBytes(200 * 1024, 1));
    await d.write(9 * MiB - 333, xorshiftBytes(3 * MiB, 2));
    await d.write(15 * MiB, Buffer.alloc(2 * MiB));
    await d.write(capacity - 512, Buffer.alloc(512, 0xfe));
    await d.close();
  }
  for (const [p, k] of streams) {
    const raw = await Disk.open(sources[KINDS.findIndex((x) => x.format === 'raw')]!, { readOnly: true, format: 'raw' });
    await convert(raw, p, { format: k.format, type: k.type });
    await raw.close();
  }
  let pairs = 0;
  for (const [i, from] of KINDS.entries()) {
    const src = await Disk.open(sources[i]!, { readOnly: true });
    for (const to of KINDS) {
      const out = join(dir, `${from.name}-to-${to.name}.${ext(to.format)}`);
      await convert(src, out, { format: to.format, type: to.type });
      const cmp = await run('qemu-img', ['compare', '-f', from.qemu, '-F', to.qemu, sources[i]!, out]);
      assert.equal(cmp.code, 0, `${from.name} -> ${to.name}: ${cmp.stdout}${cmp.stderr}`);
      if (to.check) {
        const chk = await run('qemu-img', ['check', '-f', to.qemu, out]);
        assert.equal(chk.code, 0, `${from.name} -> ${to.name}: qemu-img check: ${chk.stdout}${chk.stderr}`);
      }
      pairs++;
    }
    await src.close();
  }
  assert.equal(pairs, KINDS.length * KINDS.length);
  t.diagnostic(`${pairs} pairs converted and compared`);
});
