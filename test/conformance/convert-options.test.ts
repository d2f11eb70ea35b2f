/**
 * The library side of convert's qemu-img options, without outside tools (test/interop compares
 * them with qemu-img): `existing` (-n) and `targetIsZero`, `backing` (-B), `sparseSize` (-S) and
 * their refusals, on a memory namespace.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Disk } from '../../src/disk.js';
import { convert } from '../../src/ops/convert.js';
import { MemoryNamespace } from '../../src/storage/memory.js';
import { xorshiftBytes } from '../helpers/prng.js';

const KiB = 1024;
const MiB = 1024 * KiB;

async function rawDisk(ns: MemoryNamespace, name: string, content: Buffer): Promise<Disk> {
  const d = await Disk.create(name, { format: 'raw', capacity: content.length, namespace: ns });
  await d.write(0, content);
  return d;
}

const dataBytes = async (d: Disk) => (await d.blockStatus()).filter((e) => e.state === 'data').reduce((n, e) => n + e.length, 0);

test('existing: the target is written in place, zeros where the source is zero, its tail kept; targetIsZero skips the zeros', async () => {
  const ns = new MemoryNamespace();
  const content = Buffer.alloc(2 * MiB);
  xorshiftBytes(64 * KiB, 1).copy(content, 512 * KiB);
  const src = await rawDisk(ns, 'src.raw', content);
  for (const targetIsZero of [false, true]) {
    const t = await Disk.create(`t${targetIsZero}.qcow2`, { format: 'qcow2', capacity: 3 * MiB, namespace: ns });
    await t.write(0, Buffer.alloc(3 * MiB, 0x99));
    await t.close();
    await convert(src, `t${targetIsZero}.qcow2`, { namespace: ns, existing: true, targetIsZero });
    const back = await Disk.open(`t${targetIsZero}.qcow2`, { namespace: ns, readOnly: true });
    const got = await back.read(0, 3 * MiB);
    await back.close();
    assert.ok(got.subarray(512 * KiB, 576 * KiB).equals(content.subarray(512 * KiB, 576 * KiB)));
    assert.ok(got.subarray(2 * MiB).every((x) => x === 0x99), 'the tail past the source changed');
    if (targetIsZero) assert.equal(got[0], 0x99, 'targetIsZero wrote zeros');
    else assert.ok(got.subarray(0, 2 * MiB).equals(content));
  }
  await Disk.create('small.qcow2', { format: 'qcow2', capacity: MiB, namespace: ns }).then((d) => d.close());
  await assert.rejects(convert(src, 'small.qcow2', { namespace: ns, existing: true }), { code: 'INVAL', message: /smaller than the source/ });
  await assert.rejects(convert(src, 'x.qcow2', { namespace: ns, format: 'qcow2', targetIsZero: true }), { code: 'INVAL' });
  await assert.rejects(convert(src, 'x.qcow2', { namespace: ns, format: 'qcow2', existing: true, backing: { path: 'src.raw' } }), { code: 'INVAL' });
  await src.close();
});

test('backing: a child that reads as the source and holds only the blocks that differ', async () => {
  const ns = new MemoryNamespace();
  const base = xorshiftBytes(4 * MiB, 3);
  await (await rawDisk(ns, 'base.raw', base)).close();
  const mod = Buffer.from(base);
  mod.fill(7, MiB, MiB + 64 * KiB);
  mod.fill(0, 2 * MiB, 2 * MiB + 64 * KiB);
  const src = await rawDisk(ns, 'mod.raw', mod);
  const r = await convert(src, 'child.qcow2', { namespace: ns, format: 'qcow2', backing: { path: 'base.raw', format: 'raw' } });
  assert.equal(r.bytesWritten, 128 * KiB);
  const child = await Disk.open('child.qcow2', { namespace: ns, readOnly: true });
  assert.ok((await child.read(0, 4 * MiB)).equals(mod));
  await child.close();
  const alone = await Disk.open('child.qcow2', { namespace: ns, readOnly: true, singleLink: true });
  assert.equal(alone.image.backing()?.hint, 'base.raw');
  assert.equal(await dataBytes(alone), 64 * KiB); // the zeroed block is a zero cluster
  await alone.close();
  await assert.rejects(convert(src, 'child.raw', { namespace: ns, format: 'raw', backing: { path: 'base.raw' } }), { code: 'NOTSUPPORTED' });
  await src.close();
});

test('sparseSize: 0 allocates every cluster; a size is checked as qemu-img checks -S', async () => {
  const ns = new MemoryNamespace();
  const content = Buffer.alloc(MiB);
  content.fill(1, 0, 4 * KiB);
  const src = await rawDisk(ns, 'src.raw', content);
  await convert(src, 'full.qcow2', { namespace: ns, format: 'qcow2', sparseSize: 0 });
  await convert(src, 'sparse.qcow2', { namespace: ns, format: 'qcow2', sparseSize: 4096 });
  for (const [name, want] of [['full.qcow2', MiB], ['sparse.qcow2', 64 * KiB]] as const) {
    const d = await Disk.open(name, { namespace: ns, readOnly: true });
    assert.equal(await dataBytes(d), want, name);
    assert.ok((await d.read(0, MiB)).equals(content), name);
    await d.close();
  }
  for (const sparseSize of [100, 32 * MiB, -512]) await assert.rejects(convert(src, 'x.qcow2', { namespace: ns, format: 'qcow2', sparseSize }), { code: 'INVAL' });
  await assert.rejects(convert(src, 'x.qcow2', { namespace: ns, format: 'qcow2', inFlight: 0 }), { code: 'INVAL' });
  await assert.rejects(convert(src, 'x.qcow2', { namespace: ns, format: 'qcow2', compress: true, outOfOrder: true }), { code: 'INVAL' });
  await src.close();
});

test('snapshot: refused for a format without internal snapshots (naming it), for a write open, and for a qcow2 without that snapshot', async () => {
  const ns = new MemoryNamespace();
  await Disk.create('d.vmdk', { format: 'vmdk', capacity: MiB, namespace: ns }).then((d) => d.close());
  await assert.rejects(Disk.open('d.vmdk', { namespace: ns, readOnly: true, snapshot: { idOrName: '1' } }), { code: 'NOTSUPPORTED', message: /vmdk images have no internal snapshots/ });
  await Disk.create('d.qcow2', { format: 'qcow2', capacity: MiB, namespace: ns }).then((d) => d.close());
  await assert.rejects(Disk.open('d.qcow2', { namespace: ns, snapshot: { idOrName: '1' } }), { code: 'RDONLY' });
  await assert.rejects(Disk.open('d.qcow2', { namespace: ns, readOnly: true, snapshot: { name: 'x' } }), { code: 'INVAL', message: /no internal snapshot with name "x" \(the image has none\)/ });
});
