/**
 * Chain-keeping clone (cloneChain, `vdkit convert --keep-chain`): chains made by qemu-img/qemu-io
 * (here; vdkit's in clone-chain-vdkit.test.ts) are cloned into every format that has children, and
 * the new chain is checked link
 * by link: (a) as many links, named as documented; (b) the new top reads as the old one (qemu-img
 * compare where qemu opens the format's chains, else vdkit reads against a raw reference qemu-img
 * or a mirror of every write made), and every new link read as a chain equals its source link;
 * (c) each new link holds only what its source link holds (qemu-img map depth 0, or vdkit's block
 * status of the link alone), rounded to the target's clusters; (d) qemu-img check (vdkit check
 * where qemu cannot open the link); (e) the recorded parent names are the final ones (qemu-img
 * info --backing-chain, vhdiinfo) and no file mentions a temporary name. Then from/to, links of
 * different sizes, and resizing a chain.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readdir, truncate } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Disk, DiskError, cloneChain, describeChain } from '../../src/index.js';
import { run, skipUnless, tmpDir } from '../helpers/tools.js';
import { KiB, MiB, assertWholeDiskEqual, runOk } from './support.js';
import { QEMU_CHAINS, TARGETS, cloneAndCheck, qemuIo, qemuQcow2Chain, qemuVmdkChain, sameContent } from './clone-chain-support.js';

test('keep-chain: a qcow2 chain made by qemu-img/qemu-io, cloned into every format with children', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io', 'vhdiinfo')) return;
  const dir = (await tmpDir(t)).path;
  const src = await qemuQcow2Chain(dir);
  for (const f of TARGETS) await cloneAndCheck(t, dir, src, f, 'qemu-qcow2');
});

test('keep-chain: a VMDK chain made by qemu-img create -b, cloned into every format with children', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io', 'vhdiinfo')) return;
  const dir = (await tmpDir(t)).path;
  const src = await qemuVmdkChain(dir);
  for (const f of TARGETS) await cloneAndCheck(t, dir, src, f, 'qemu-vmdk');
});

test('keep-chain: from/to pick links; what lies below `from` is flattened into the new base', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const src = await qemuQcow2Chain(dir);
  const cases: { from?: number; to?: number; links: number; top: number }[] = [
    { from: 1, links: 2, top: 2 },
    { from: 1, to: 1, links: 1, top: 1 },
    { to: 1, links: 2, top: 1 },
    { from: 2, to: 2, links: 1, top: 2 },
  ];
  for (const [i, c] of cases.entries()) {
    const dst = join(dir, `ft${i}.vmdk`);
    const r = await cloneChain(src.top, dst, { format: 'vmdk', from: c.from, to: c.to });
    assert.equal(r.links.length, c.links, `case ${JSON.stringify(c)}: links`);
    const listed = await describeChain(dst);
    assert.equal(listed.links.length, c.links, `case ${JSON.stringify(c)}: links found from the top`);
    // the new top reads as source link `top` read as a chain (qemu-img is the reader of both)
    const cmp = await run('qemu-img', ['compare', '-f', 'vmdk', '-F', 'qcow2', dst, src.links[c.top]!]);
    assert.equal(cmp.code, 0, `case ${JSON.stringify(c)}: ${cmp.stdout}${cmp.stderr}`);
    // the new base is the source chain up to `from`, flattened
    await sameContent(r.links[0]!, src.links[c.from ?? 0]!, `case ${JSON.stringify(c)}: base`);
    if (c.links === 1) assert.deepEqual((await readdir(dir)).filter((x) => x.startsWith(`ft${i}-base`)), [], 'one link: no lower links');
  }
  const top = await Disk.open(src.top, { readOnly: true });
  try {
    for (const bad of [{ from: 2, to: 1 }, { from: 3 }, { to: -1 }, { from: 0.5 }]) {
      await assert.rejects(cloneChain(top, join(dir, 'bad.vmdk'), { format: 'vmdk', ...bad }), (e: unknown) => e instanceof DiskError && e.code === 'INVAL', JSON.stringify(bad));
    }
  } finally {
    await top.close();
  }
  assert.equal((await readdir(dir)).some((x) => x.startsWith('bad')), false, 'refused clones leave nothing');
});

test('keep-chain: links of different sizes (qcow2) keep their sizes in qcow2 and take the top size where children must match', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'base.qcow2');
  const mid = join(dir, 'mid.qcow2');
  const top = join(dir, 'top.qcow2');
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', base, '24M'], 'create base');
  // data in the base past the mid link's end: the chain reads zeros there (past a link's end)
  await qemuIo('qcow2', base, ['write -P 0x11 0 64k', 'write -P 0x12 20M 64k']);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', mid, '16M'], 'create mid');
  await qemuIo('qcow2', mid, ['write -P 0x21 1M 64k']);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', top, '24M'], 'create top');
  await qemuIo('qcow2', top, ['write -P 0x31 2M 4k']);
  for (const format of ['qcow2', 'vmdk', 'vhdx']) {
    const dst = join(dir, `out-${format}.${format}`);
    const r = await cloneChain(top, dst, { format });
    const sizes: number[] = [];
    for (const l of r.links) {
      const d = await Disk.open(l, { readOnly: true, singleLink: true });
      sizes.push(d.capacity);
      await d.close();
    }
    assert.deepEqual(sizes, format === 'qcow2' ? [24 * MiB, 16 * MiB, 24 * MiB] : [24 * MiB, 24 * MiB, 24 * MiB], `${format}: link sizes`);
    if (QEMU_CHAINS.has(format)) {
      const cmp = await run('qemu-img', ['compare', '-f', format, '-F', 'qcow2', dst, top]);
      assert.equal(cmp.code, 0, `${format}: ${cmp.stdout}${cmp.stderr}`);
    } else await sameContent(dst, top, format);
    const d = await Disk.open(dst, { readOnly: true });
    assert.ok((await d.read(20 * MiB, 64 * KiB)).every((b) => b === 0), `${format}: what the mid link hid reads as zeros`);
    await d.close();
  }
});

test('keep-chain: resized (grown and shrunk) chains read as the source cut or extended with zeros', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const src = await qemuQcow2Chain(dir);
  for (const [format, size] of [['vmdk', 10 * MiB], ['qcow2', 24 * MiB], ['vhdx', 12 * MiB + 512], ['vdi', 20 * MiB], ['vhd', 11 * MiB]] as const) {
    const dst = join(dir, `rs-${format}.${format}`);
    const r = await cloneChain(src.top, dst, { format, capacity: size });
    assert.equal(r.links.length, 3, `${format} ${size}: links`);
    const ref = join(dir, `rs-${format}.raw`);
    await copyFile(src.raw, ref);
    await truncate(ref, size);
    for (const l of r.links) {
      const d = await Disk.open(l, { readOnly: true, singleLink: true });
      assert.equal(d.capacity, size, `${format}: ${basename(l)} size`);
      await d.close();
    }
    if (QEMU_CHAINS.has(format)) {
      const info = JSON.parse((await runOk('qemu-img', ['info', '--output=json', dst], 'info')).stdout) as { 'virtual-size': number };
      assert.equal(info['virtual-size'], size, `${format}: qemu-img sees the new size`);
      const cmp = await run('qemu-img', ['compare', '-f', format, '-F', 'raw', dst, ref]);
      assert.equal(cmp.code, 0, `${format} ${size}: ${cmp.stdout}${cmp.stderr}`);
    } else {
      const d = await Disk.open(dst, { readOnly: true });
      await assertWholeDiskEqual(d, ref, `${format} ${size}`);
      await d.close();
    }
  }
});

