/**
 * Every format lives entirely inside a MemoryNamespace (issue 12): create, write, chains (a
 * qcow2 over a VMDK, a two-file VMDK, children of every differencing format), convert, clone a
 * chain, compact, defragment, resize, check, commit, rebase and rename, with no file touched:
 * no FileNamespace is ever made (the path API's default would make one) and the process runs in
 * an empty folder that stays empty.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import {
  Disk,
  FileNamespace,
  MemoryNamespace,
  backends,
  checkDisk,
  cloneChain,
  commit,
  compact,
  compare,
  convert,
  createChild,
  defragment,
  describeChain,
  rebase,
  rename,
  resize,
} from '../../src/index.js';
import { tmpDir } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';

const MiB = 2 ** 20;

/** [format, type] pairs: one of every format, both VMDK layouts that are several files */
const IMAGES: [string, string | undefined][] = [
  ['vmdk', 'monolithicSparse'],
  ['vmdk', 'twoGbMaxExtentSparse'], // descriptor + one sparse extent
  ['vmdk', 'monolithicFlat'], // descriptor + flat extent
  ['vdi', undefined],
  ['vhd', undefined],
  ['vhdx', undefined],
  ['qcow2', undefined],
  ['raw', undefined],
];

async function expectSame(a: Disk, b: Disk, what: string): Promise<void> {
  const r = await compare(a, b);
  assert.ok(r.identical, `${what}: differs at ${JSON.stringify(r)}`);
}

test('every format, chains and operations entirely in memory; no file is touched', async (t) => {
  const empty = (await tmpDir(t, 'vdkit-memory-cwd-')).path;
  const cwd = process.cwd();
  process.chdir(empty);
  t.after(() => process.chdir(cwd));
  const fileNamespacesBefore = FileNamespace.instances;

  const ns = new MemoryNamespace();
  const payload = xorshiftBytes(3 * MiB, 12);
  const model = await Disk.create('/model.img', { namespace: ns, format: 'raw', capacity: 8 * MiB });
  await model.write(MiB + 512, payload);

  for (const [format, type] of IMAGES) {
    const label = `${format}${type ? ` ${type}` : ''}`;
    const ext = backends().find((b) => b.name === format)!.extensions[0];
    const dir = `/images/${format}-${type ?? 'default'}`;
    const name = `${dir}/disk.${ext}`;

    // create and write
    const d = await Disk.create(name, { namespace: ns, format, type, capacity: 8 * MiB });
    assert.equal(d.namespace, ns);
    await d.write(MiB + 512, payload);
    await d.close();
    const files = (await (await Disk.open(name, { namespace: ns, readOnly: true })).info()).files;
    if (type === 'twoGbMaxExtentSparse' || type === 'monolithicFlat') assert.equal(files.length, 2, `${label} is two files: ${files}`);
    let r = await Disk.open(name, { namespace: ns, readOnly: true });
    await expectSame(model, r, label);
    await r.close();

    // convert to qcow2 and back to this format
    const src = await Disk.open(name, { namespace: ns, readOnly: true });
    await convert(src, `${dir}/copy.qcow2`, { namespace: ns, format: 'qcow2' });
    await src.close();
    const q = await Disk.open(`${dir}/copy.qcow2`, { namespace: ns, readOnly: true });
    await convert(q, `${dir}/back.${ext}`, { namespace: ns, format, type });
    await expectSame(model, q, `${label} -> qcow2`);
    await q.close();
    r = await Disk.open(`${dir}/back.${ext}`, { namespace: ns, readOnly: true });
    await expectSame(model, r, `${label} -> qcow2 -> ${label}`);
    await r.close();

    const caps = backends().find((b) => b.name === format)!.capabilities;
    // check
    if (caps.check !== 'none') {
      const rep = await checkDisk(name, { repair: false, namespace: ns });
      assert.deepEqual(rep.findings.filter((f) => f.kind !== 'warning'), [], `${label} check`);
    }

    // a chain: a child that writes over part of the data, read through
    if (caps.differencing && format !== 'raw') {
      const kid = await createChild(name, `${dir}/kid.${ext}`, { namespace: ns });
      await kid.write(2 * MiB, Buffer.alloc(4096, 0x5a));
      await kid.close();
      await model.write(2 * MiB, Buffer.alloc(4096, 0x5a));
      r = await Disk.open(`${dir}/kid.${ext}`, { namespace: ns, readOnly: true });
      assert.equal((await r.info()).numLinks, 2);
      await expectSame(model, r, `${label} child`);
      await r.close();
      assert.equal((await describeChain(`${dir}/kid.${ext}`, { namespace: ns })).links.length, 2);
      // keep the chain in a copy, then commit the child into its parent
      await cloneChain(`${dir}/kid.${ext}`, `${dir}/clone.${ext}`, { namespace: ns, format, type });
      r = await Disk.open(`${dir}/clone.${ext}`, { namespace: ns, readOnly: true });
      assert.equal((await r.info()).numLinks, 2, `${label} clone keeps the chain`);
      await expectSame(model, r, `${label} cloned chain`);
      await r.close();
      await commit(`${dir}/kid.${ext}`, { namespace: ns, drop: true });
      assert.equal(await ns.exists(`${dir}/kid.${ext}`), false);
      r = await Disk.open(name, { namespace: ns, readOnly: true });
      await expectSame(model, r, `${label} after commit`);
      await r.close();
      await model.write(2 * MiB, payload.subarray(MiB - 512, MiB - 512 + 4096));
      const fix = await Disk.open(name, { namespace: ns });
      await fix.write(2 * MiB, payload.subarray(MiB - 512, MiB - 512 + 4096));
      await fix.close();
    }

    // compact and defragment after discarding-by-zeros a part, then check again
    if (caps.compact === 'native' && type !== 'monolithicFlat') await compact(name, { namespace: ns });
    if (caps.defragment === 'native' && type !== 'monolithicFlat') await defragment(name, { namespace: ns });
    r = await Disk.open(name, { namespace: ns, readOnly: true });
    await expectSame(model, r, `${label} after compact/defragment`);
    await r.close();

    // resize: grow by 2 MiB; the new tail reads zeros
    if (caps.resize !== 'none') {
      await resize(name, 10 * MiB, { namespace: ns });
      r = await Disk.open(name, { namespace: ns, readOnly: true });
      assert.equal(r.capacity, 10 * MiB, `${label} grown`);
      assert.ok((await r.read(8 * MiB, 2 * MiB)).every((b) => b === 0));
      assert.deepEqual(await r.read(MiB + 512, payload.length), await model.read(MiB + 512, payload.length));
      await r.close();
    }
    if (caps.check !== 'none') {
      const rep = await checkDisk(name, { repair: false, namespace: ns });
      assert.deepEqual(rep.findings.filter((f) => f.kind !== 'warning'), [], `${label} check after the in-place operations`);
    }
    // rename (multi-file VMDKs rename their extents too)
    const moved = await rename(name, `${dir}/renamed.${ext}`, { namespace: ns });
    assert.ok(moved.to.every((f) => f.includes('renamed')), `${label} renamed: ${moved.to}`);
    assert.equal(await ns.exists(name), false);
    r = await Disk.open(`${dir}/renamed.${ext}`, { namespace: ns, readOnly: true });
    assert.deepEqual(await r.read(MiB + 512, payload.length), await model.read(MiB + 512, payload.length));
    await r.close();
    await model.write(2 * MiB, payload.subarray(MiB - 512, MiB - 512 + 4096));
  }

  // a qcow2 over a two-file VMDK, and a rebase of it onto a copy of its base
  const base = '/mixed/base.vmdk';
  const b = await Disk.create(base, { namespace: ns, format: 'vmdk', type: 'twoGbMaxExtentSparse', capacity: 8 * MiB });
  await b.write(0, payload);
  await b.close();
  const top = await createChild(base, '/mixed/top.qcow2', { namespace: ns, format: 'qcow2' });
  await top.write(MiB, Buffer.alloc(MiB, 0x33));
  assert.equal((await top.info()).numLinks, 2);
  const expected = Buffer.from(payload.subarray(0, 3 * MiB));
  Buffer.alloc(MiB, 0x33).copy(expected, MiB);
  assert.deepEqual(await top.read(0, 3 * MiB), expected);
  await top.close();
  const bd = await Disk.open(base, { namespace: ns, readOnly: true });
  await convert(bd, '/mixed/base-copy.vhdx', { namespace: ns, format: 'vhdx' });
  await bd.close();
  await rebase('/mixed/top.qcow2', '/mixed/base-copy.vhdx', { namespace: ns });
  const after = await Disk.open('/mixed/top.qcow2', { namespace: ns, readOnly: true });
  assert.equal((await after.info()).chain?.[1], '/mixed/base-copy.vhdx');
  assert.deepEqual(await after.read(0, 3 * MiB), expected);
  await after.close();
  await model.close();

  assert.equal(FileNamespace.instances, fileNamespacesBefore, 'no file namespace was made');
  assert.deepEqual(await readdir(empty), [], 'nothing was written to the working folder');
  if (process.env.VDKIT_SHOW_NAMES) console.log(ns.names().join('\n'));
  assert.ok(ns.names().length > 30, `the memory namespace holds the images: ${ns.names().length} names`);
});
