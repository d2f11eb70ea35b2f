/**
 * defragment of VHDX and qcow2 images, with qemu-img as the oracle: fragmented images made by
 * qemu-img + qemu-io (units written in reverse virtual order) and by vdkit (units written in a
 * random order) are defragmented through the library, the CLI (`vdkit defrag`, `vdkit
 * vdiskmanager -d`) and VixDiskLib_Defragment; afterwards `qemu-img compare` finds no difference
 * with a copy taken before, the BAT / L1+L2 tables read with plain fs
 * (test/helpers/defrag-layout.ts) put the data in virtual order, `qemu-img check` and vdkit check
 * are clean, and the file is no larger than before. Differencing children (a VHDX child with
 * partially present blocks and their sector bitmap; a qcow2 child of a backing file) still read
 * their parent exactly where they did. Internal snapshots are refused; compressed clusters stay
 * where they are.
 */
import assert from 'node:assert/strict';
import { copyFile, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { Disk, DiskError, checkDisk, createChild, defragment } from '../../src/index.js';
import * as V from '../../src/compat/vixdisklib.js';
import { qcow2InOrder, qcow2Layout, vhdxInOrder, vhdxLayout } from '../helpers/defrag-layout.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;
const KiB = 1024;
const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;

async function ok(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  assert.equal(r.code, 0, describeRun(cmd, args, r));
  return r.stdout;
}

const inOrder = (format: string, path: string, packed = true) => (format === 'vhdx' ? vhdxInOrder(path, { packed }) : qcow2InOrder(path));

/** vdkit check of this link alone: no corruption, no leak */
async function vdkitClean(path: string): Promise<void> {
  const r = await checkDisk(path, { repair: false, chain: false });
  assert.deepEqual(r.findings.filter((f) => f.kind !== 'warning'), [], `vdkit check ${path}`);
}

/** qemu-io commands writing the units (all but every fourth) from the last to the first, each its own pattern */
function reverseWrites(unit: number, units: number, compressEvery = 0): string[] {
  const cmds: string[] = [];
  for (let u = units - 1; u >= 0; u--) {
    if (u % 4 === 1) continue;
    const c = compressEvery > 0 && u % compressEvery === 0 ? ' -c' : '';
    cmds.push('-c', `write${c} -P ${(u % 250) + 1} ${u * unit} ${unit}`);
  }
  return cmds;
}

/** a vdkit-made image with the units (all but every fourth) written in a random order, some only in part */
async function vdkitRandom(path: string, format: string, create: Record<string, unknown>, unit: number, units: number, seed: number): Promise<void> {
  const rnd = mulberry32(seed);
  const d = await Disk.create(path, { format, capacity: unit * units, ...create });
  const order = [...Array(units).keys()].filter((u) => u % 4 !== 3).sort(() => rnd() - 0.5);
  for (const u of order) {
    const part = rnd() < 0.3 ? unit / 2 : unit;
    await d.write(u * unit + (unit - part), xorshiftBytes(part, seed + u));
  }
  await d.close();
}

interface BaseCase {
  label: string;
  format: 'vhdx' | 'qcow2';
  /** makes the fragmented image */
  make: (path: string) => Promise<void>;
  /** how it is defragmented */
  via: 'library' | 'cli' | 'vdiskmanager' | 'vixdisklib';
  /** already in virtual order (fixed VHDX): nothing moves */
  ordered?: boolean;
}

const qemuMade = (format: string, opts: string[], size: number, cmds: string[]) => async (path: string) => {
  await ok('qemu-img', ['create', '-q', '-f', format, ...opts, path, String(size)]);
  if (cmds.length > 0) await ok('qemu-io', ['-f', format, ...cmds, path]);
};

const CASES: BaseCase[] = [
  { label: 'qcow2 qemu reverse', format: 'qcow2', via: 'library', make: qemuMade('qcow2', [], 8 * MiB, reverseWrites(64 * KiB, 128)) },
  { label: 'qcow2 v2 qemu reverse', format: 'qcow2', via: 'library', make: qemuMade('qcow2', ['-o', 'compat=0.10'], 8 * MiB, reverseWrites(64 * KiB, 128)) },
  // 512-byte clusters: a refcount block covers 128 KiB, so moving past the end needs new ones
  { label: 'qcow2 512-byte clusters qemu reverse', format: 'qcow2', via: 'library', make: qemuMade('qcow2', ['-o', 'cluster_size=512'], 2 * MiB, reverseWrites(4 * KiB, 512)) },
  { label: 'qcow2 qemu reverse with compressed clusters', format: 'qcow2', via: 'library', make: qemuMade('qcow2', [], 8 * MiB, reverseWrites(64 * KiB, 128, 5)) },
  { label: 'qcow2 vdkit random', format: 'qcow2', via: 'cli', make: (p) => vdkitRandom(p, 'qcow2', {}, 64 * KiB, 128, 11) },
  { label: 'vhdx qemu reverse', format: 'vhdx', via: 'library', make: qemuMade('vhdx', ['-o', 'block_size=1M'], 24 * MiB, reverseWrites(MiB, 24)) },
  { label: 'vhdx vdkit random', format: 'vhdx', via: 'vdiskmanager', make: (p) => vdkitRandom(p, 'vhdx', { blockSize: MiB }, MiB, 24, 12) },
  { label: 'vhdx qemu fixed', format: 'vhdx', via: 'vixdisklib', ordered: true, make: qemuMade('vhdx', ['-o', 'subformat=fixed,block_size=1M'], 8 * MiB, ['-c', 'write -P 7 1M 3M']) },
];

async function runDefrag(c: BaseCase, path: string, dir: string): Promise<void> {
  if (c.via === 'library') {
    const before = (await stat(path)).size;
    const seen: number[] = [];
    const r = await defragment(path, { onProgress: (d, t) => void seen.push(d / Math.max(1, t)) });
    assert.equal(r.fileBytesBefore, before);
    assert.equal(r.fileBytesAfter, (await stat(path)).size);
    assert.equal(seen[seen.length - 1], 1, 'progress reaches the total');
    assert.ok(seen.every((p, i) => i === 0 || p >= seen[i - 1]!), 'progress never goes back');
  } else if (c.via === 'cli') {
    await ok(process.execPath, [BIN, 'defrag', path]);
  } else if (c.via === 'vdiskmanager') {
    const r = await run(process.execPath, [BIN, 'vdiskmanager', '-d', path], { cwd: dir });
    assert.equal(r.code, 0, describeRun('vdkit vdiskmanager', ['-d', path], r));
    assert.match(r.stdout, /Defragmentation completed successfully\./);
  } else {
    await V.VixDiskLib_Init(1, 0, null, null, null, null);
    const cnx = await V.VixDiskLib_Connect(null);
    try {
      const h = await V.VixDiskLib_Open(cnx, path, 0);
      const r = await V.VixDiskLib_Defragment(h, null, null);
      assert.equal(r.fileBytesAfter, r.fileBytesBefore);
      await V.VixDiskLib_Close(h);
    } finally {
      await V.VixDiskLib_Disconnect(cnx);
      V.VixDiskLib_Exit();
    }
  }
}

test('defragment puts VHDX blocks and qcow2 clusters in virtual order, content and checks intact', { concurrency: true }, async (t) => {
  await Promise.all(CASES.map((c) => t.test(c.label, async (t: TestContext) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
    const dir = (await tmpDir(t)).path;
    const img = join(dir, `d.${c.format}`);
    const ref = join(dir, 'ref.raw');
    await c.make(img);
    await ok('qemu-img', ['convert', '-q', '-f', c.format, '-O', 'raw', img, ref]);
    assert.equal(await inOrder(c.format, img, !c.ordered), !!c.ordered, c.ordered ? 'the image starts in order' : 'the image starts fragmented');
    const layoutBefore = c.ordered ? await vhdxLayout(img) : undefined;
    const compressedBefore = c.format === 'qcow2' ? (await qcow2Layout(img)).compressed : [];
    const dataBefore = c.format === 'qcow2' ? (await qcow2Layout(img)).data.length : (await vhdxLayout(img)).items.length;
    const before = (await stat(img)).size;
    await runDefrag(c, img, dir);
    assert.ok((await stat(img)).size <= before, `the file is not larger (${(await stat(img)).size} > ${before})`);
    assert.equal(await inOrder(c.format, img, !c.ordered), true, 'data in virtual order after defragment');
    if (layoutBefore) assert.deepEqual(await vhdxLayout(img), layoutBefore, 'a fixed image in order is left as it is');
    if (c.format === 'qcow2') {
      const l = await qcow2Layout(img);
      assert.equal(l.data.length, dataBefore, 'every data cluster kept');
      assert.deepEqual(l.compressed, compressedBefore, 'compressed clusters stay where they were');
      if (c.label.includes('compressed')) assert.ok(compressedBefore.length > 0, 'the image has compressed clusters');
    } else {
      assert.equal((await vhdxLayout(img)).items.length, dataBefore, 'every block kept');
    }
    await ok('qemu-img', ['compare', '-q', '-f', 'raw', '-F', c.format, ref, img]);
    await ok('qemu-img', ['check', '-q', '-f', c.format, img]);
    await vdkitClean(img);
    // a second run finds nothing to move
    const again = await defragment(img);
    assert.equal(again.fileBytesAfter, again.fileBytesBefore);
    assert.equal(await inOrder(c.format, img, !c.ordered), true);
  })));
});

test('a defragmented qcow2 child still reads its backing file where it did', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'base.qcow2');
  const child = join(dir, 'child.qcow2');
  const ref = join(dir, 'ref.raw');
  const unit = 64 * KiB;
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(8 * MiB)]);
  await ok('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x55 0 ${8 * MiB}`, base]);
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', child]);
  // every fourth cluster stays the parent's; one is written as zeros (the zero flag hides the parent)
  await ok('qemu-io', ['-f', 'qcow2', ...reverseWrites(unit, 128), '-c', `write -z ${6 * unit} ${unit}`, child]);
  await ok('qemu-img', ['convert', '-q', '-f', 'qcow2', '-O', 'raw', child, ref]);
  // per cluster: which layer it comes from, and whether it is zero / data (qemu-img map merges
  // neighbours whose host offsets follow each other, which defragment changes)
  const mapOf = async () =>
    (JSON.parse(await ok('qemu-img', ['map', '--output=json', '-f', 'qcow2', child])) as { start: number; length: number; depth: number; zero: boolean; data: boolean }[]).flatMap(({ start, length, depth, zero, data }) =>
      Array.from({ length: length / unit }, (_, i) => ({ start: start + i * unit, depth, zero, data })),
    );
  const map = await mapOf();
  assert.ok(map.some((m) => m.depth === 1) && map.some((m) => m.depth === 0 && m.data), 'the child holds some clusters and reads others from its parent');
  const before = (await stat(child)).size;
  const baseBytes = await readFile(base);
  assert.equal(await qcow2InOrder(child), false);
  await defragment(child);
  assert.equal(await qcow2InOrder(child), true);
  assert.ok((await stat(child)).size <= before);
  assert.deepEqual(await mapOf(), map, 'each range still comes from the same layer');
  assert.ok((await readFile(base)).equals(baseBytes), 'the backing file is untouched');
  await ok('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'qcow2', ref, child]);
  await ok('qemu-img', ['check', '-q', '-f', 'qcow2', child]);
});

test('a defragmented VHDX child keeps its sector bitmaps with its blocks and still reads its parent where it did', async (t) => {
  const dir = (await tmpDir(t)).path;
  const base = join(dir, 'base.vhdx');
  const childPath = join(dir, 'child.vhdx');
  const size = 32 * MiB;
  const b = await Disk.create(base, { format: 'vhdx', capacity: size, blockSize: MiB });
  await b.write(0, xorshiftBytes(size, 5));
  await b.close();
  const child = await createChild(base, childPath);
  const bs = Number(child.image.readMetadata?.('blockSize') ?? 0);
  assert.ok(bs >= MiB);
  // blocks in a random order; most written in part (partially present: sector bitmap), some whole, one zeroed
  const rnd = mulberry32(77);
  const blocks = [...Array(size / bs).keys()].filter((n) => n % 3 !== 2).sort(() => rnd() - 0.5);
  for (const n of blocks) {
    if (n % 3 === 0) await child.write(n * bs + 4096 * (1 + (n % 5)), xorshiftBytes(8192 + 512 * n, n));
    else await child.write(n * bs, xorshiftBytes(bs, 100 + n));
  }
  await child.write(blocks[0]! * bs, Buffer.alloc(bs));
  await child.close();
  const readChain = async () => {
    const d = await Disk.open(childPath, { readOnly: true });
    try {
      return await d.read(0, size);
    } finally {
      await d.close();
    }
  };
  const linkStatus = async () => {
    const d = await Disk.open(childPath, { readOnly: true, singleLink: true });
    try {
      return await d.image.blockStatus(0, size);
    } finally {
      await d.close();
    }
  };
  const content = await readChain();
  const status = await linkStatus();
  assert.ok(status.some((s) => s.state === 'unallocated') && status.some((s) => s.state === 'data'));
  const layout = await vhdxLayout(childPath);
  assert.ok(layout.items.some((i) => i.kind === 'bitmap'), 'the child has a sector bitmap block');
  assert.equal(await vhdxInOrder(childPath), false, 'the child starts fragmented (its bitmap block sits after blocks)');
  const before = (await stat(childPath)).size;
  const baseBytes = await readFile(base);
  const parentLink = async () => {
    const d = await Disk.open(childPath, { readOnly: true, singleLink: true });
    const id = d.image.backing()?.parentId;
    await d.close();
    return id;
  };
  const link = await parentLink();
  assert.ok(link);
  await defragment(childPath);
  assert.equal(await vhdxInOrder(childPath), true, 'bitmap block first, then the blocks in virtual order');
  assert.ok((await stat(childPath)).size <= before);
  assert.deepEqual(await linkStatus(), status, 'the same sectors come from the child and from the parent');
  assert.ok((await readChain()).equals(content), 'the chain reads the same');
  assert.ok((await readFile(base)).equals(baseBytes), 'the parent is untouched');
  assert.equal(await parentLink(), link, 'the link to the parent stays');
  const r = await checkDisk(childPath, { repair: false });
  assert.deepEqual(r.findings.filter((f) => f.kind !== 'warning'), []);
});

test('defragment refuses a qcow2 image with internal snapshots and changes nothing', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const img = join(dir, 's.qcow2');
  await qemuMade('qcow2', [], 4 * MiB, reverseWrites(64 * KiB, 32))(img);
  await ok('qemu-img', ['snapshot', '-c', 'first', img]);
  const bytes = await readFile(img);
  await assert.rejects(defragment(img), (e: unknown) => e instanceof DiskError && e.code === 'NOTSUPPORTED' && /internal snapshots/.test(e.message) && e.details.field === 'nb_snapshots');
  assert.ok((await readFile(img)).equals(bytes), 'the file is unchanged');
  const copy = join(dir, 'c.qcow2');
  await copyFile(img, copy);
  const r = await run(process.execPath, [BIN, 'defrag', copy]);
  assert.notEqual(r.code, 0, describeRun('vdkit defrag', [copy], r));
  assert.match(r.stderr, /NOTSUPPORTED/);
});

test('a defragment cancelled on an open handle: later writes on the same handle never land on a parked block', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  for (const [format, create] of [['vhdx', { blockSize: MiB }], ['qcow2', {}]] as const) {
    const unit = format === 'vhdx' ? MiB : 64 * KiB;
    const units = 32;
    const p = join(dir, `c.${format}`);
    const model = Buffer.alloc(units * unit);
    const d = await Disk.create(p, { format, capacity: units * unit, ...create });
    // every other unit, from the last to the first: the whole layout is out of order
    for (let u = units - 2; u >= 0; u -= 2) {
      const data = xorshiftBytes(unit, u + 1);
      data.copy(model, u * unit);
      await d.write(u * unit, data);
    }
    await d.flush();
    const stop = new AbortController();
    let calls = 0;
    await assert.rejects(
      d.image.maintenance().defragment!({ signal: stop.signal, onProgress: () => ++calls >= 2 && stop.abort() }),
      (e: unknown) => e instanceof DiskError && e.code === 'CANCELLED',
      `${format}: the defragment is cancelled`,
    );
    // the gaps get data through the same handle
    for (let u = 1; u < units; u += 2) {
      const data = xorshiftBytes(unit, 100 + u);
      data.copy(model, u * unit);
      await d.write(u * unit, data);
    }
    await d.close();
    const r = await Disk.open(p, { readOnly: true });
    try {
      assert.ok((await r.read(0, units * unit)).equals(model), `${format}: every unit reads what was written`);
    } finally {
      await r.close();
    }
    await ok('qemu-img', ['check', '-q', '-f', format, p]);
    await vdkitClean(p);
  }
});
