/**
 * defragment of VDI and VHD (dynamic and differencing), with qemu-img as the oracle: images made
 * by vdkit (units written in a shuffled order, VHD units only partly written so sector bitmaps
 * must travel with their blocks) and by qemu-img + qemu-io (written in reverse order) start out
 * of virtual order; after `defragment` the map/BAT, parsed by the test itself
 * (test/helpers/block-order.ts), names consecutive slots in virtual order, `qemu-img compare`
 * against a raw copy taken before finds no difference, qemu-img check (VDI) and vdkit check are
 * clean, and the file is not larger. A differencing child still reads its parent where it did.
 * Fixed images and a full VDI out of order are refused (NOTSUPPORTED); a cancel stops between
 * moves and leaves a sound image. The CLI (`vdkit defrag`, `vdkit vdiskmanager -d`) says what
 * it did.
 */
import assert from 'node:assert/strict';
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import * as V from '../../src/compat/vixdisklib.js';
import { Disk, DiskError, checkDisk, createChild, defragment, openFindings } from '../../src/index.js';
import { scatterVhdBlocks, vdiBlockOrder, vhdBlockOrder, type BlockOrder } from '../helpers/block-order.js';
import { mulberry32 } from '../helpers/prng.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';
import { hostFiles } from '../../src/storage/file.js';
import type { Namespace } from '../../src/storage/namespace.js';
import type { ByteStore } from '../../src/storage/store.js';
import { NamespaceWrapper, StoreWrapper } from '../../src/storage/wrappers.js';
import { MiB, Rng, runOk, seedOf } from './support.js';

const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;

/** host files whose stores abort `ac` at their `n`-th flush together: a stop asked for in the middle of a run */
class AbortAtFlush extends NamespaceWrapper {
  private flushes = 0;
  constructor(inner: Namespace, private readonly ac: AbortController, private readonly n: number) {
    super(inner);
  }
  override async open(name: string, opts?: { write?: boolean }): Promise<ByteStore> {
    const store = await this.inner.open(name, opts);
    const ns = this;
    return new (class extends StoreWrapper {
      override flush(): Promise<void> {
        if (++ns.flushes >= ns.n) ns.ac.abort();
        return super.flush();
      }
    })(store);
  }
}

interface Fmt {
  format: 'vdi' | 'vhd';
  qemu: string;
  unit: number;
  units: number;
  qemuCreate: string[];
  qemuCheck: boolean;
  order: (path: string) => Promise<BlockOrder>;
}

const FORMATS: Fmt[] = [
  { format: 'vdi', qemu: 'vdi', unit: MiB, units: 24, qemuCreate: [], qemuCheck: true, order: vdiBlockOrder },
  { format: 'vhd', qemu: 'vpc', unit: 2 * MiB, units: 12, qemuCreate: ['-o', 'force_size=on'], qemuCheck: false, order: vhdBlockOrder },
];

async function same(f: Fmt, ref: string, img: string, what: string): Promise<void> {
  await runOk('qemu-img', ['compare', '-q', '-f', 'raw', '-F', f.qemu, ref, img], `${what}: qemu-img compare`);
}

async function assertClean(f: Fmt, img: string, what: string): Promise<void> {
  if (f.qemuCheck) await runOk('qemu-img', ['check', '-q', '-f', f.qemu, img], `${what}: qemu-img check`);
  const r = await checkDisk(img, { repair: false, chain: false });
  assert.deepEqual(openFindings(r), { corruptions: 0, leaks: 0 }, `${what}: vdkit check ${JSON.stringify(r.findings)}`);
}

async function rejects(p: Promise<unknown>, code: string, text?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof DiskError, `expected a DiskError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (text) assert.match(err.message, text);
    return true;
  });
}

/** every unit but u % 3 === 1, in a shuffled (vdkit) or reversed (qemu) order */
async function fragmented(dir: string, f: Fmt, maker: 'vdkit' | 'qemu', name = 'd'): Promise<string> {
  const img = join(dir, `${name}.${f.format}`);
  const size = f.units * f.unit;
  const units = [...Array(f.units).keys()].filter((u) => u % 3 !== 1);
  if (maker === 'qemu') {
    await runOk('qemu-img', ['create', '-q', '-f', f.qemu, ...f.qemuCreate, img, String(size)], 'qemu-img create');
    const cmds = units.reverse().flatMap((u) => ['-c', `write -P ${(u % 250) + 1} ${u * f.unit} ${f.unit}`]);
    await runOk('qemu-io', ['-f', f.qemu, ...cmds, img], 'qemu-io write');
  } else {
    const rng = new Rng(seedOf(`defrag ${f.format}`));
    const d = await Disk.create(img, { format: f.format, capacity: size });
    for (const u of units.sort(() => rng.float() - 0.5)) {
      // VHD: a few sectors of the block only (its bitmap says which); VDI: whole blocks anyway
      const n = f.format === 'vhd' ? rng.int(1, 64) * 512 : f.unit;
      const at = f.format === 'vhd' ? rng.int(0, (f.unit - n) / 512) * 512 : 0;
      await d.write(u * f.unit + at, rng.bytes(n));
    }
    await d.close();
  }
  return img;
}

for (const f of FORMATS) {
  test(`${f.format}: defragment puts the blocks of a fragmented image in virtual order`, { concurrency: true }, async (t) => {
    await Promise.all((['vdkit', 'qemu'] as const).map((maker) => t.test(`${maker}-made`, async (t) => {
      if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
      const dir = (await tmpDir(t)).path;
      const img = await fragmented(dir, f, maker);
      const ref = join(dir, 'ref.raw');
      await runOk('qemu-img', ['convert', '-q', '-f', f.qemu, '-O', 'raw', img, ref], 'qemu-img convert');
      const start = await f.order(img);
      assert.equal(start.inOrder, false, 'the image starts fragmented');
      const before = (await stat(img)).size;
      let progress = 0;
      const r = await defragment(img, { onProgress: (done, total) => (progress = done / total) });
      assert.equal(r.fileBytesBefore, before);
      assert.equal(r.fileBytesAfter, (await stat(img)).size);
      assert.ok(r.fileBytesAfter <= before, `defragment does not leave the file larger: ${before} -> ${r.fileBytesAfter}`);
      assert.equal(progress, 1, 'progress reaches the total');
      assert.ok((r.moved ?? 0) > 0, 'blocks were moved');
      const end = await f.order(img);
      assert.equal(end.inOrder, true, `blocks in virtual order after defragment: ${JSON.stringify(end.offsets)}`);
      assert.equal(end.offsets.length, start.offsets.length, 'every block kept');
      await same(f, ref, img, 'after defragment');
      await assertClean(f, img, 'after defragment');
      // a second run finds nothing to move; the image stays writable where it was not allocated
      const again = await defragment(img);
      assert.equal(again.moved, 0);
      assert.equal(again.fileBytesAfter, r.fileBytesAfter);
      const w = await Disk.open(img, { singleLink: true });
      await w.write(f.unit, Buffer.alloc(f.unit, 0x5a));
      await w.close();
      const fh = await open(ref, 'r+');
      await fh.write(Buffer.alloc(f.unit, 0x5a), 0, f.unit, f.unit);
      await fh.close();
      await same(f, ref, img, 'written after defragment');
      await assertClean(f, img, 'written after defragment');
      t.diagnostic(`${maker}-made: ${start.offsets.length} blocks, ${r.moved} moves, ${before} -> ${r.fileBytesAfter} bytes`);
    })));
  });

  test(`${f.format}: a defragmented differencing child still reads its parent where it did`, async (t) => {
    if (!skipUnless(t, 'qemu-img')) return;
    const dir = (await tmpDir(t)).path;
    const base = join(dir, `base.${f.format}`);
    const rng = new Rng(seedOf(`defrag child ${f.format}`));
    const size = f.units * f.unit;
    const b = await Disk.create(base, { format: f.format, capacity: size });
    await b.write(0, rng.bytes(size));
    await b.close();
    const childPath = join(dir, `child.${f.format}`);
    const c = await createChild(base, childPath);
    // the child holds some units (parts of them in a VHD: the rest reads from the parent), in reverse order
    for (const u of [9, 7, 6, 4, 2, 0].filter((x) => x < f.units)) {
      const n = f.format === 'vhd' ? 8 * 512 : f.unit;
      await c.write(u * f.unit + (f.format === 'vhd' ? 4096 : 0), rng.bytes(n));
    }
    // zeros over a unit the parent has data in: the child must keep hiding it
    await c.write(5 * f.unit, Buffer.alloc(f.unit));
    await c.close();
    const readChain = async () => {
      const d = await Disk.open(childPath, { readOnly: true });
      try {
        return { data: await d.read(0, size), status: JSON.stringify(await d.image.blockStatus(0, size)) };
      } finally {
        await d.close();
      }
    };
    const childStatus = async () => {
      const d = await Disk.open(childPath, { readOnly: true, singleLink: true });
      try {
        return JSON.stringify(await d.image.blockStatus(0, size));
      } finally {
        await d.close();
      }
    };
    const expected = await readChain();
    const ownBefore = await childStatus();
    assert.equal((await f.order(childPath)).inOrder, false, 'the child starts fragmented');
    const r = await defragment(childPath);
    assert.ok(r.fileBytesAfter <= r.fileBytesBefore);
    assert.equal((await f.order(childPath)).inOrder, true, 'the child is in virtual order');
    assert.equal(await childStatus(), ownBefore, 'the child stores the same ranges (the rest still comes from the parent)');
    const after = await readChain();
    assert.ok(after.data.equals(expected.data), 'the chain reads the same');
    const rep = await checkDisk(childPath, { repair: false, chain: false });
    assert.deepEqual(openFindings(rep), { corruptions: 0, leaks: 0 }, JSON.stringify(rep.findings));
  });
}

test('vhd: blocks at unaligned places with gaps (Virtual PC, Hyper-V layouts) are put in order', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const f = FORMATS.find((x) => x.format === 'vhd')!;
  for (let seed = 1; seed <= 6; seed++) {
    const rnd = mulberry32(seed);
    const img = join(dir, `u${seed}.vhd`);
    const units = 4 + Math.floor(rnd() * 6);
    const d = await Disk.create(img, { format: 'vhd', capacity: units * f.unit });
    for (let u = 0; u < units; u++) if (u === 0 || rnd() < 0.7) await d.write(u * f.unit + Math.floor(rnd() * 4000) * 512, Buffer.alloc(512 * (1 + Math.floor(rnd() * 8)), u + 1));
    await d.close();
    await scatterVhdBlocks(img, rnd);
    assert.equal((await f.order(img)).inOrder, false, `seed ${seed}: scattered`);
    const ref = join(dir, `u${seed}.raw`);
    await runOk('qemu-img', ['convert', '-q', '-f', 'vpc', '-O', 'raw', img, ref], 'qemu-img convert');
    const before = (await stat(img)).size;
    const r = await defragment(img);
    assert.ok(r.fileBytesAfter <= before, `seed ${seed}: ${before} -> ${r.fileBytesAfter}`);
    assert.equal((await f.order(img)).inOrder, true, `seed ${seed}: in virtual order`);
    await same(f, ref, img, `seed ${seed}`);
    await assertClean(f, img, `seed ${seed}`);
  }
});

test('defragment refuses fixed images and a full VDI out of order, and stops cleanly when cancelled', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  for (const [fmt, qemu, opts] of [
    ['vdi', 'vdi', ['-o', 'static=on']],
    ['vhd', 'vpc', ['-o', 'subformat=fixed']],
  ] as const) {
    const img = join(dir, `fixed.${fmt}`);
    await runOk('qemu-img', ['create', '-q', '-f', qemu, ...opts, img, String(4 * MiB)], 'qemu-img create fixed');
    await rejects(defragment(img), 'NOTSUPPORTED', /fixed/);
  }
  // a dynamic VDI with every block allocated has no spare index below cBlocks for a move
  const full = join(dir, 'full.vdi');
  await runOk('qemu-img', ['create', '-q', '-f', 'vdi', full, String(4 * MiB)], 'qemu-img create');
  await runOk('qemu-io', ['-f', 'vdi', '-c', `write -P 4 ${3 * MiB} 1M`, '-c', `write -P 3 ${2 * MiB} 1M`, '-c', 'write -P 2 1M 1M', '-c', 'write -P 1 0 1M', full], 'qemu-io');
  const fullBytes = await readFile(full);
  await rejects(defragment(full), 'NOTSUPPORTED', /every block/);
  assert.ok((await readFile(full)).equals(fullBytes), 'the refused image is unchanged');

  // cancelled after the first block: CANCELLED, and the image reads the same and opens read-write
  for (const f of FORMATS) {
    const img = await fragmented(dir, f, 'qemu', 'cancel');
    const ref = join(dir, `cancel-${f.format}.raw`);
    await runOk('qemu-img', ['convert', '-q', '-f', f.qemu, '-O', 'raw', img, ref], 'qemu-img convert');
    const ac = new AbortController();
    // stopped once the first batch has flushed (not through onProgress: its reports are thinned
    // to every 100 ms and 1 %, so a fast defragment reports only its start and its end)
    await rejects(defragment(img, { signal: ac.signal, namespace: new AbortAtFlush(hostFiles(), ac, 1) }), 'CANCELLED');
    await same(f, ref, img, `${f.format} after a cancel`);
    assert.equal((await f.order(img)).inOrder, false, `${f.format}: the cancel stopped it before the end`);
    const r = await checkDisk(img, { repair: false, chain: false });
    assert.equal(openFindings(r).corruptions, 0, JSON.stringify(r.findings));
    const d = await Disk.open(img, { singleLink: true });
    await d.close();
    // and a new run finishes
    await defragment(img);
    assert.equal((await f.order(img)).inOrder, true);
    await same(f, ref, img, `${f.format} after a cancel and a new run`);
  }
});

test('CLI (vdkit defrag, vdkit vdiskmanager -d) and VixDiskLib_Defragment on VDI and VHD', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  for (const f of FORMATS) {
    const img = await fragmented(dir, f, 'qemu', 'cli');
    const ref = join(dir, `ref-${f.format}.raw`);
    await runOk('qemu-img', ['convert', '-q', '-f', f.qemu, '-O', 'raw', img, ref], 'qemu-img convert');
    const blocks = (await f.order(img)).offsets.length;
    let args = ['defrag', img];
    let r = await run(process.execPath, [BIN, ...args]);
    assert.equal(r.code, 0, describeRun('vdkit', args, r));
    const m = /: (\S+ \S+) -> (\S+ \S+).*, (\d+) data blocks moved\n$/.exec(r.stdout);
    assert.ok(m, `vdkit defrag says what it moved: ${r.stdout}`);
    assert.ok(Number(m[3]) >= blocks / 2, `${m[3]} moves for ${blocks} blocks in reverse order`);
    assert.equal((await f.order(img)).inOrder, true);
    await same(f, ref, img, `vdkit defrag ${f.format}`);
    r = await run(process.execPath, [BIN, ...args]);
    assert.match(r.stdout, /, 0 data blocks moved \(already in virtual order\)\n$/, describeRun('vdkit', args, r));

    // vmware-vdiskmanager -d on a second fragmented copy
    const img2 = await fragmented(dir, f, 'vdkit', 'vdm');
    await runOk('qemu-img', ['convert', '-q', '-f', f.qemu, '-O', 'raw', img2, ref], 'qemu-img convert');
    args = ['vdiskmanager', '-d', img2];
    r = await run(process.execPath, [BIN, ...args]);
    assert.equal(r.code, 0, describeRun('vdkit', args, r));
    assert.match(r.stdout, /Defragmentation completed successfully\./);
    assert.equal((await f.order(img2)).inOrder, true);
    await same(f, ref, img2, `vdiskmanager -d ${f.format}`);

    // VixDiskLib_Defragment on a handle of a third copy, with its progress callback
    const img3 = await fragmented(dir, f, 'vdkit', 'vix');
    await runOk('qemu-img', ['convert', '-q', '-f', f.qemu, '-O', 'raw', img3, ref], 'qemu-img convert');
    await V.VixDiskLib_Init(1, 0, null, null, null, null);
    const cnx = await V.VixDiskLib_Connect(null);
    try {
      const h = await V.VixDiskLib_Open(cnx, img3, 0);
      const seen: number[] = [];
      const res = await V.VixDiskLib_Defragment(h, (_data, percent) => (seen.push(percent), true), null);
      await V.VixDiskLib_Close(h);
      assert.ok((res.moved ?? 0) > 0 && seen.at(-1) === 100, `VixDiskLib_Defragment: ${JSON.stringify(res)}, progress ${seen.join(',')}`);
    } finally {
      await V.VixDiskLib_Disconnect(cnx);
      V.VixDiskLib_Exit();
    }
    await same(f, ref, img3, `VixDiskLib_Defragment ${f.format}`);
    assert.equal((await f.order(img3)).inOrder, true);
  }
});
