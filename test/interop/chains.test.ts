import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Disk } from '../../src/index.js';
import { createChild } from '../../src/ops/child.js';
import { rebase } from '../../src/ops/rebase.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';
import { MiB, RawModel, Rng, assertWholeDiskEqual, planWrites, runOk, seedOf } from './support.js';

for (const depth of [1, 2, 5]) {
  test(`qemu-img reads a vdkit chain of depth ${depth} exactly as vdkit wrote it`, async (t) => {
    if (!skipUnless(t, 'qemu-img')) return;
    const dir = (await tmpDir(t)).path;
    const capacity = 96 * MiB;
    const rng = new Rng(seedOf(t.name));
    const model = await RawModel.create(join(dir, 'model.raw'), capacity);
    let top = join(dir, 'base.vmdk');
    let d = await Disk.create(top, { capacity, type: depth % 2 ? 'monolithicSparse' : 'twoGbMaxExtentSparse' });
    for (let level = 0; level < depth; level++) {
      if (level > 0) {
        await d.close();
        d = await createChild(top, undefined, { type: level % 2 ? 'twoGbMaxExtentSparse' : 'monolithicSparse' });
        top = d.path;
      }
      for (const w of planWrites(rng, capacity, [65536, 32 * MiB], 12)) {
        await d.write(w.offset, w.data);
        await model.write(w.offset, w.data);
      }
    }
    assert.equal((await d.info()).numLinks, depth);
    await d.close();
    await model.close();
    const info = await runOk('qemu-img', ['info', '--backing-chain', '--output=json', top], 'qemu-img info');
    assert.equal((JSON.parse(info.stdout) as unknown[]).length, depth, 'qemu-img sees every link');
    const cmp = await run('qemu-img', ['compare', '-f', 'vmdk', '-F', 'raw', top, model.path]);
    assert.equal(cmp.code, 0, `qemu-img compare: ${cmp.stdout}${cmp.stderr}`);
    for (const f of [top]) {
      const chk = await run('qemu-img', ['check', '-f', 'vmdk', f]);
      assert.equal(chk.code, 0, chk.stdout + chk.stderr);
    }
    const r = await Disk.open(top, { readOnly: true });
    await assertWholeDiskEqual(r, model.path, `vdkit chain depth ${depth}`);
    await r.close();
  });
}

test('vdkit reads and writes chains qemu-img makes (qemu-img create -b -F vmdk)', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'base.vmdk');
  await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', base, '64M'], 'create base');
  await runOk('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0x11 0 192k', '-c', 'write -P 0x12 10M 4k', base], 'write base');
  const mid = join(dir, 'mid.vmdk');
  await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-b', 'base.vmdk', '-F', 'vmdk', mid], 'create mid');
  await runOk('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0x21 4k 1k', '-c', 'write -P 0x22 20M 64k', mid], 'write mid');
  const top = join(dir, 'top.vmdk');
  await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', '-b', 'mid.vmdk', '-F', 'vmdk', top], 'create top');
  await runOk('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0x31 100k 3k', '-c', 'write -P 0x32 63M 512', top], 'write top');
  const raw = join(dir, 'top.raw');
  await runOk('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', top, raw], 'convert');

  const d = await Disk.open(top);
  const info = await d.info();
  assert.equal(info.numLinks, 3);
  assert.equal(info.parent, 'mid.vmdk');
  await assertWholeDiskEqual(d, raw, 'qemu-made chain');
  // vdkit writes into qemu's chain (partial grains over the parents), mirrored into the raw copy
  const model = await RawModel.open(raw);
  for (const [off, len, val] of [[4096 + 10, 20, 0x41], [10 * MiB + 100, 5000, 0x42], [33 * MiB - 3, 9, 0x43]] as const) {
    const buf = Buffer.alloc(len, val);
    await d.write(off, buf);
    await model.write(off, buf);
  }
  await d.close();
  await model.close();
  const cmp = await run('qemu-img', ['compare', '-f', 'vmdk', '-F', 'raw', top, raw]);
  assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);
  const chk = await run('qemu-img', ['check', '-f', 'vmdk', top]);
  assert.equal(chk.code, 0, chk.stdout + chk.stderr);
});

test('qemu-img agrees after vdkit commits, merges and rebases a chain', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const { commit, mergeIntoTop } = await import('../../src/ops/commit.js');
  const { rebase } = await import('../../src/ops/rebase.js');
  const dir = (await tmpDir(t)).path;
  const capacity = 48 * MiB;
  const rng = new Rng(seedOf(t.name));
  const model = await RawModel.create(join(dir, 'model.raw'), capacity);
  let top = join(dir, 'l0.vmdk');
  let d = await Disk.create(top, { capacity });
  for (let level = 0; level < 4; level++) {
    if (level > 0) {
      await d.close();
      d = await createChild(top, join(dir, `l${level}.vmdk`));
      top = d.path;
    }
    for (const w of planWrites(rng, capacity, [65536, 32 * MiB], 8)) {
      await d.write(w.offset, w.data);
      await model.write(w.offset, w.data);
    }
  }
  await d.close();
  await model.close();
  const same = async (what: string) => {
    const cmp = await run('qemu-img', ['compare', '-f', 'vmdk', '-F', 'raw', top, model.path]);
    assert.equal(cmp.code, 0, `${what}: ${cmp.stdout}${cmp.stderr}`);
    const chk = await run('qemu-img', ['check', '-f', 'vmdk', top]);
    assert.equal(chk.code, 0, `${what}: ${chk.stdout}${chk.stderr}`);
  };
  await same('before');
  await commit(top); // l3 into l2
  await same('after commit into the parent');
  await mergeIntoTop(top); // l2... into l3: l3 now on l0
  await same('after merging into the top');
  await rebase(top, undefined); // standalone
  await same('after rebasing onto nothing');
  const info = JSON.parse((await runOk('qemu-img', ['info', '--backing-chain', '--output=json', top], 'info')).stdout) as unknown[];
  assert.equal(info.length, 1);
});

test('safe rebase of a qcow2 child with 2 MiB clusters keeps what it reads (whole clusters are copied, never half)', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const a = join(dir, 'A.qcow2');
  const b = join(dir, 'B.qcow2');
  const c = join(dir, 'C.qcow2');
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', a, '4M'], 'rebase 2M step 1');
  await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xaa 0 4M', a], 'rebase 2M step 2');
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', b, '4M'], 'rebase 2M step 3');
  // B differs from A only in the first 64 KiB of the first 2 MiB cluster
  await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xaa 0 4M', '-c', 'write -P 0xbb 0 64k', b], 'rebase 2M step 4');
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2M', '-b', 'A.qcow2', '-F', 'qcow2', c], 'rebase 2M step 5');
  const r = await rebase(c, b);
  assert.equal(r.bytesCopied, 2 * MiB, 'one whole 2 MiB cluster is copied into the child');
  // what the child read through A it still reads through B: 0xaa everywhere
  await runOk('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0xaa 0 4M', c], 'rebase 2M step 6');
  await runOk('qemu-img', ['check', '-q', c], 'rebase 2M step 7');
});
