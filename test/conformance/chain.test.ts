import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, DiskError } from '../../src/index.js';
import { createChild, defaultChildPath } from '../../src/ops/child.js';
import { describeChain } from '../../src/ops/chain-list.js';
import { tmpDir } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';

const MiB = 2 ** 20;

async function base(dir: string, capacity = 8 * MiB, type = 'monolithicSparse'): Promise<string> {
  const p = join(dir, 'base.vmdk');
  const d = await Disk.create(p, { capacity, type });
  await d.write(0, xorshiftBytes(3 * 65536, 1));
  await d.write(5 * MiB + 7, xorshiftBytes(1000, 2));
  await d.close();
  return p;
}

test('child: VMware naming, parent hint and CID, metadata inherited, reads fall through', async (t) => {
  const dir = (await tmpDir(t)).path;
  const b = await base(dir);
  assert.equal(await defaultChildPath(b), join(dir, 'base-000001.vmdk'));
  const parent = await Disk.open(b, { readOnly: true });
  const pinfo = await parent.info();
  const uuid = parent.readMetadata('uuid');
  const before = await parent.read(0, 8 * MiB);
  await parent.close();

  const c = await createChild(b);
  assert.equal(c.path, join(dir, 'base-000001.vmdk'));
  const info = await c.info();
  assert.equal(info.numLinks, 2);
  assert.equal(info.parent, 'base.vmdk');
  assert.equal(info.parentCid, pinfo.cid);
  assert.notEqual(info.cid, pinfo.cid);
  assert.equal(c.readMetadata('uuid'), uuid);
  assert.equal(info.allocatedBytes, 0);
  assert.ok((await c.read(0, 8 * MiB)).equals(before), 'an empty child reads as its parent');
  await c.close();
  assert.equal(await defaultChildPath(join(dir, 'base-000001.vmdk')), join(dir, 'base-000002.vmdk'));
  const desc = (await readFile(join(dir, 'base-000001.vmdk'))).subarray(512, 512 * 21).toString('latin1');
  assert.match(desc, /^parentFileNameHint="base\.vmdk"$/m);
  assert.match(desc, new RegExp(`^parentCID=${pinfo.cid}$`, 'm'));
});

test('copy-on-write: partial writes to a child keep the parent bytes around them; block status names the link', async (t) => {
  const dir = (await tmpDir(t)).path;
  const b = await base(dir);
  const model = await (await Disk.open(b, { readOnly: true }).then(async (d) => { const x = await d.read(0, 8 * MiB); await d.close(); return x; }));
  const c = await createChild(b, join(dir, 'c.vmdk'), { type: 'twoGbMaxExtentSparse' });
  const writes: [number, Buffer][] = [
    [100, Buffer.alloc(10, 0xc1)], // inside a parent grain
    [65536 - 5, Buffer.alloc(10, 0xc2)], // across two parent grains
    [4 * MiB + 3, Buffer.alloc(70000, 0xc3)], // unallocated below
    [8 * MiB - 1, Buffer.alloc(1, 0xc4)], // last byte
  ];
  for (const [o, d] of writes) {
    await c.write(o, d);
    d.copy(model, o);
  }
  assert.ok((await c.read(0, 8 * MiB)).equals(model));
  await c.close();
  const r = await Disk.open(join(dir, 'c.vmdk'), { readOnly: true });
  assert.ok((await r.read(0, 8 * MiB)).equals(model), 'after reopen');
  const st = await r.blockStatus();
  const at = (x: number) => st.find((e) => e.offset <= x && x < e.offset + e.length)!;
  assert.equal(at(100).depth, 0);
  assert.equal(at(2 * 65536 + 1).depth, 1, 'third grain still comes from the parent');
  assert.equal(at(5 * MiB + 10).depth, 1);
  assert.equal(at(3 * MiB).state, 'unallocated');
  await r.close();
  // the parent is unchanged
  const p = await Disk.open(b, { readOnly: true, singleLink: true });
  assert.deepEqual(await p.read(100, 10), xorshiftBytes(3 * 65536, 1).subarray(100, 110));
  await p.close();
});

test('a parent with a child refuses read-write opens unless forced; then the child sees CID_MISMATCH', async (t) => {
  const dir = (await tmpDir(t)).path;
  const b = await base(dir);
  const c = await createChild(b);
  await c.close();
  await assert.rejects(Disk.open(b), (e: DiskError) => e.code === 'RDONLY' && e.message.includes('base-000001.vmdk'));
  const forced = await Disk.open(b, { force: true });
  const oldCid = (await forced.info()).cid;
  await forced.write(0, Buffer.alloc(512, 9));
  const newCid = (await forced.info()).cid;
  await forced.close();
  assert.notEqual(oldCid, newCid);
  await assert.rejects(Disk.open(c.path, { readOnly: true }), (e: DiskError) => e.code === 'CID_MISMATCH' && e.details.expected === oldCid && e.details.found === newCid);
  const listed = await describeChain(c.path);
  assert.equal(listed.links.length, 2);
  assert.equal(listed.break?.code, 'CID_MISMATCH');
});

test('broken chains: missing parent, capacity mismatch, hosted over ESX, cycle, depth limit, untrusted hints', async (t) => {
  const dir = (await tmpDir(t)).path;
  const b = await base(dir);
  const c = await createChild(b);
  await c.close();
  const childText = async () => (await readFile(c.path)).subarray(512, 512 * 21).toString('latin1');

  // missing parent, named in the error
  await rename(b, join(dir, 'elsewhere.vmdk'));
  await assert.rejects(Disk.open(c.path, { readOnly: true }), (e: DiskError) => e.code === 'OPENPARENT' && e.message.includes(join(dir, 'base.vmdk')));
  await rename(join(dir, 'elsewhere.vmdk'), b);

  // capacity mismatch: a parent of another size with the right CID
  const cid = (await Disk.open(b, { readOnly: true, singleLink: true }).then(async (d) => { const i = await d.info(); await d.close(); return i.cid!; }));
  const other = await Disk.create(join(dir, 'small.vmdk'), { capacity: 4 * MiB, type: 'twoGbMaxExtentSparse' });
  await other.close();
  await writeFile(join(dir, 'small.vmdk'), (await readFile(join(dir, 'small.vmdk'), 'utf8')).replace(/^CID=.*$/m, `CID=${cid}`));
  const pointAt = async (hint: string) => {
    const text = (await childText()).replace(/parentFileNameHint="[^"]*"/, `parentFileNameHint="${hint}"`);
    const buf = await readFile(c.path);
    Buffer.from(text.padEnd(20 * 512, '\0'), 'latin1').copy(buf, 512);
    await writeFile(c.path, buf);
  };
  await pointAt('small.vmdk');
  await assert.rejects(Disk.open(c.path, { readOnly: true }), (e: DiskError) => e.code === 'INVALIDCHAIN' && e.details.field === 'capacity');

  // hosted child over an ESX (vmfs) parent
  const esx = await Disk.create(join(dir, 'esx.vmdk'), { capacity: 8 * MiB, type: 'vmfs' });
  await esx.close();
  await writeFile(join(dir, 'esx.vmdk'), (await readFile(join(dir, 'esx.vmdk'), 'utf8')).replace(/^CID=.*$/m, `CID=${cid}`));
  await pointAt('esx.vmdk');
  await assert.rejects(Disk.open(c.path, { readOnly: true }), (e: DiskError) => e.code === 'INVALIDCHAIN' && e.details.field === 'createType');

  // a cycle: the child names itself
  await pointAt('base-000001.vmdk');
  const started = performance.now();
  await assert.rejects(Disk.open(c.path, { readOnly: true }), (e: DiskError) => e.code === 'INVALIDCHAIN' && /loops/.test(e.message));
  assert.ok(performance.now() - started < 1000);
  assert.equal((await describeChain(c.path)).break?.code, 'INVALIDCHAIN');

  // untrusted: an absolute hint or one leaving the folder is refused; by default it is followed
  await pointAt(b);
  const ok = await Disk.open(c.path, { readOnly: true });
  assert.equal((await ok.info()).numLinks, 2);
  await ok.close();
  await assert.rejects(Disk.open(c.path, { readOnly: true, untrusted: true }), (e: DiskError) => e.code === 'EXTERNALEXTENT');
  await pointAt('../x/base.vmdk');
  await assert.rejects(Disk.open(c.path, { readOnly: true, untrusted: true }), (e: DiskError) => e.code === 'EXTERNALEXTENT');
  // (without untrusted, the parent is also looked for beside the child under its own name)
  const moved = await Disk.open(c.path, { readOnly: true });
  assert.equal((await moved.info()).numLinks, 2);
  await moved.close();

  // depth limit
  await pointAt('base.vmdk');
  await assert.rejects(Disk.open(c.path, { readOnly: true, maxDepth: 1 }), (e: DiskError) => e.code === 'TOOMANYREDO');
});

test('a chain of 64 links reads every generation correctly', async (t) => {
  const dir = (await tmpDir(t)).path;
  const capacity = 4 * MiB;
  const model = Buffer.alloc(capacity);
  let top = join(dir, 'g.vmdk');
  const d0 = await Disk.create(top, { capacity });
  await d0.write(0, Buffer.alloc(1000, 1));
  Buffer.alloc(1000, 1).copy(model, 0);
  await d0.close();
  for (let i = 1; i < 64; i++) {
    const c = await createChild(top);
    const off = (i * 40961) % (capacity - 100);
    const data = Buffer.alloc(100, i + 1);
    await c.write(off, data);
    data.copy(model, off);
    top = c.path;
    await c.close();
  }
  const d = await Disk.open(top, { readOnly: true });
  assert.equal((await d.info()).numLinks, 64);
  assert.ok((await d.read(0, capacity)).equals(model));
  await d.close();
  await assert.rejects(Disk.open(top, { readOnly: true, maxDepth: 63 }), (e: DiskError) => e.code === 'TOOMANYREDO');
});
