/**
 * compact, defragment and discard of hosted sparse VMDKs, with qemu-img as the oracle: every
 * result is compared (qemu-img compare) with a raw file holding the expected content, checked
 * by qemu-img check and by vdkit check, and the grain tables are read with plain fs
 * (test/helpers/sparse-tables.ts) to see where the grains went.
 */
import assert from 'node:assert/strict';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { Disk, DiskError, checkDisk, compact, createDisk, defragment, discard } from '../../src/index.js';
import { sparseFiles, sparseTables, vmdkBytes } from '../helpers/sparse-tables.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';
import { GRAIN, MiB, Rng, runOk, seedOf } from './support.js';

const BIN = new URL('../../../bin/vdkit.js', import.meta.url).pathname;

async function same(rawPath: string, img: string, what: string): Promise<void> {
  const args = ['compare', '-q', '-f', 'raw', '-F', 'vmdk', rawPath, img];
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, `${what}: ${describeRun('qemu-img', args, r)}`);
}

async function qemuCheck(img: string): Promise<void> {
  await runOk('qemu-img', ['check', '-q', '-f', 'vmdk', img], `qemu-img check ${img}`);
}

/** vdkit check of this link alone: no corruption and no leaked grains */
async function vdkitClean(img: string, leaksAllowed = false): Promise<void> {
  const r = await checkDisk(img, { repair: false, chain: false });
  const bad = r.findings.filter((f) => f.kind === 'corruption' || (!leaksAllowed && f.kind === 'leak'));
  assert.deepEqual(bad, [], `vdkit check ${img}`);
}

async function rejects(p: Promise<unknown>, code: string, text?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof DiskError, `expected a DiskError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (text) assert.match(err.message, text);
    return true;
  });
}

const TYPES = ['monolithicSparse', 'twoGbMaxExtentSparse'] as const;

test('compact: half the data zeroed gives back at least 40 % of the file, content and checks intact', { concurrency: true }, async (t) => {
  const cases = TYPES.flatMap((type) => (['qemu', 'vdkit'] as const).map((maker) => ({ type, maker })));
  await Promise.all(cases.map(({ type, maker }) => t.test(`${maker}-made ${type}`, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
    const dir = (await tmpDir(t)).path;
    const rng = new Rng(seedOf(`${type}${maker}`));
    const size = 32 * MiB;
    const expected = Buffer.alloc(size);
    // 16 chunks of 1 MiB of data at random places, written in a random order
    const chunks = [...Array(32).keys()].sort(() => rng.float() - 0.5).slice(0, 16);
    for (const c of chunks) rng.bytes(MiB).copy(expected, c * MiB);
    const zeroed = chunks.filter((_, i) => i % 2 === 0);
    const img = join(dir, 'd.vmdk');
    const ref = join(dir, 'ref.raw');
    if (maker === 'qemu') {
      await writeFile(ref, expected);
      await runOk('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'vmdk', '-o', `subformat=${type}`, ref, img], 'qemu-img convert');
      // pattern 0: zeros written as data (what a guest zeroing its files does)
      await runOk('qemu-io', ['-f', 'vmdk', ...zeroed.flatMap((c) => ['-c', `write -P 0 ${c * MiB} ${MiB}`]), img], 'qemu-io write');
    } else {
      const d = await createDisk(img, { type, capacity: size });
      for (const c of chunks) await d.write(c * MiB, expected.subarray(c * MiB, (c + 1) * MiB));
      for (const c of zeroed) await d.write(c * MiB, Buffer.alloc(MiB));
      await d.close();
    }
    for (const c of zeroed) expected.fill(0, c * MiB, (c + 1) * MiB);
    await writeFile(ref, expected);
    await same(ref, img, 'before compact');
    const before = await vmdkBytes(img);
    assert.ok(before >= 16 * MiB, `the zeros take space before compacting (${before} bytes)`);
    let result: { fileBytesBefore: number; fileBytesAfter: number };
    if (maker === 'qemu') {
      let calls = 0;
      let last = [0, 0];
      result = await compact(img, { onProgress: (done, total) => ((calls += 1), (last = [done, total])) });
      assert.ok(calls > 1 && last[0] === last[1] && last[1] === 256, `progress reported each data grain (${calls} calls, last ${last})`);
    } else {
      const r = await run(process.execPath, [BIN, 'compact', img]);
      assert.equal(r.code, 0, describeRun('vdkit', ['compact', img], r));
      assert.match(r.stdout, /given back/);
      result = { fileBytesBefore: before, fileBytesAfter: await vmdkBytes(img) };
    }
    const after = await vmdkBytes(img);
    assert.equal(result.fileBytesBefore, before);
    assert.equal(result.fileBytesAfter, after);
    t.diagnostic(`${before} -> ${after} bytes (${Math.round((100 * (before - after)) / before)} % given back)`);
    assert.ok(after <= before * 0.6, `file shrank by at least 40 %: ${before} -> ${after}`);
    await same(ref, img, 'after compact');
    await qemuCheck(img);
    await vdkitClean(img);
    // exactly the data grains are left, each in a slot of its own, packed after overHead
    for (const f of await sparseFiles(img)) {
      const st = await sparseTables(f);
      const used = st.gte.filter((e) => e > 1).sort((a, b) => a - b);
      assert.equal(used.length, (8 * MiB) / GRAIN, `${f}: data grains left`);
      used.forEach((e, i) => assert.equal(e, st.overHead + i * st.grainSectors, `${f}: grains packed`));
      assert.deepEqual(st.rgte, st.gte, `${f}: redundant tables follow`);
    }
    // a second run has nothing left to give back
    const again = await compact(img);
    assert.equal(again.fileBytesAfter, after);
  })));
});

/** true when the data grains of every extent sit in virtual order, back to back from overHead */
async function inVirtualOrder(img: string): Promise<boolean> {
  for (const f of await sparseFiles(img)) {
    const st = await sparseTables(f);
    const used = st.gte.filter((e) => e > 1);
    if (!used.every((e, i) => e === st.overHead + i * st.grainSectors)) return false;
  }
  return true;
}

test('defragment puts the grains of a fragmented VMDK in virtual order', { concurrency: true }, async (t) => {
  await Promise.all(TYPES.flatMap((type) => (['vdkit random', 'qemu reverse'] as const).map((how) => t.test(`${type}, ${how} order`, async (t) => {
    if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
    const dir = (await tmpDir(t)).path;
    const img = join(dir, 'd.vmdk');
    const ref = join(dir, 'ref.raw');
    const size = 8 * MiB;
    const grains = [...Array(size / GRAIN).keys()].filter((g) => g % 4 !== 1);
    if (how === 'qemu reverse') {
      await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', `subformat=${type}`, img, String(size)], 'qemu-img create');
      const cmds = grains.reverse().flatMap((g) => ['-c', `write -P ${(g % 250) + 1} ${g * GRAIN} ${GRAIN}`]);
      await runOk('qemu-io', ['-f', 'vmdk', ...cmds, img], 'qemu-io write');
    } else {
      const rng = new Rng(seedOf(type));
      const d = await createDisk(img, { type, capacity: size });
      for (const g of grains.sort(() => rng.float() - 0.5)) await d.write(g * GRAIN + rng.int(0, 4) * 512, rng.bytes(rng.int(1, 2) * 4096));
      await d.close();
    }
    await runOk('qemu-img', ['convert', '-q', '-f', 'vmdk', '-O', 'raw', img, ref], 'qemu-img convert');
    assert.equal(await inVirtualOrder(img), false, 'the image starts fragmented');
    const before = await vmdkBytes(img);
    const r = await defragment(img);
    assert.equal(r.fileBytesBefore, before);
    assert.equal(r.fileBytesAfter, await vmdkBytes(img));
    assert.ok(r.fileBytesAfter <= before, 'defragment does not leave the file larger');
    assert.equal(await inVirtualOrder(img), true, 'grains in virtual order after defragment');
    for (const f of await sparseFiles(img)) {
      const st = await sparseTables(f);
      assert.deepEqual(st.rgte, st.gte, `${f}: redundant tables follow`);
      assert.equal(st.gte.filter((e) => e > 1).length, grains.length, 'every grain kept');
    }
    await same(ref, img, 'after defragment');
    await qemuCheck(img);
    await vdkitClean(img);
  }))));
});

test('discard: a base frees whole grains, a child reads zeros (not its parent) in the range', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const size = 4 * MiB;
  const at = 1000000;
  const len = 1500000;
  const firstWhole = Math.ceil(at / GRAIN);
  const endWhole = Math.floor((at + len) / GRAIN);
  const base = join(dir, 'base.vmdk');
  const baseRef = join(dir, 'base.raw');
  const full = Buffer.alloc(size, 0x22);
  await writeFile(baseRef, full);

  await t.test('base', async () => {
    const img = join(dir, 'b.vmdk');
    await runOk('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'vmdk', baseRef, img], 'qemu-img convert');
    const r = await discard(img, at, len);
    assert.equal(r.unitBytes, (endWhole - firstWhole) * GRAIN);
    assert.equal(r.zeroedBytes, len - r.unitBytes);
    const expected = Buffer.from(full).fill(0, at, at + len);
    await writeFile(join(dir, 'b.raw'), expected);
    await same(join(dir, 'b.raw'), img, 'discarded base');
    const st = await sparseTables(img);
    for (let g = 0; g < st.gte.length; g++) {
      const inside = g >= firstWhole && g < endWhole;
      assert.equal(st.gte[g] === 0, inside, `grain ${g}: unallocated exactly when wholly discarded`);
    }
    await qemuCheck(img);
    const before = await vmdkBytes(img);
    await compact(img);
    assert.equal(before - (await vmdkBytes(img)), (endWhole - firstWhole) * GRAIN, 'compact gives back the discarded grains');
    await same(join(dir, 'b.raw'), img, 'compacted base');
    await vdkitClean(img);
  });

  await runOk('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'vmdk', baseRef, base], 'qemu-img convert');
  for (const zeroedGrain of [false, true]) {
    await t.test(`child, header version ${zeroedGrain ? '2 (zeroed-grain GTE)' : '1'}`, async () => {
      const child = join(dir, `child${zeroedGrain ? 2 : 1}.vmdk`);
      await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', ...(zeroedGrain ? ['-o', 'zeroed_grain=on'] : []), '-b', 'base.vmdk', '-F', 'vmdk', child], 'qemu-img create child');
      await runOk('qemu-io', ['-f', 'vmdk', '-c', `write -P 0x33 ${MiB} ${GRAIN}`, '-c', `write -P 0x44 ${3 * MiB} ${GRAIN}`, child], 'qemu-io write');
      const expected = Buffer.from(full);
      expected.fill(0x33, MiB, MiB + GRAIN).fill(0x44, 3 * MiB, 3 * MiB + GRAIN).fill(0, at, at + len);
      const ref = join(dir, `child${zeroedGrain ? 2 : 1}.raw`);
      await writeFile(ref, expected);
      const r = await discard(child, at, len);
      assert.ok(r.unitBytes > 0 && r.zeroedBytes > 0, 'both whole grains and parts of grains');
      await same(ref, child, 'child after discard');
      await same(baseRef, base, 'the parent is untouched');
      const st = await sparseTables(child);
      for (let g = firstWhole; g < endWhole; g++) {
        if (zeroedGrain) assert.equal(st.gte[g], 1, `grain ${g}: zeroed-grain marker`);
        else assert.ok(st.gte[g]! > 1, `grain ${g}: a version-1 child stores zeros`);
      }
      await qemuCheck(child);
      // the child's own grains inside the range are leaked until a compact gives them back
      await vdkitClean(child, true);
      await compact(child);
      await same(ref, child, 'child after discard and compact');
      await vdkitClean(child);
    });
  }

  await t.test('a disk with a child is refused unless forced', async () => {
    await rejects(discard(base, 0, GRAIN), 'RDONLY', /child/);
    await rejects(discard(join(dir, 'b.vmdk'), size - 512, 1024), 'OUTOFRANGE');
  });
});

test('compact of a parent or a middle link keeps what the children read', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  for (const zeroedGrain of [false, true]) {
    await t.test(`middle link version ${zeroedGrain ? 2 : 1}`, async (t) => {
      const dir = (await tmpDir(t)).path;
      const base = join(dir, 'base.vmdk');
      const mid = join(dir, 'mid.vmdk');
      const top = join(dir, 'top.vmdk');
      await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', base, String(4 * MiB)], 'create base');
      await runOk('qemu-io', ['-f', 'vmdk', '-c', `write -P 0x22 0 ${4 * MiB}`, '-c', `write -P 0 ${MiB} ${MiB}`, base], 'write base');
      await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', ...(zeroedGrain ? ['-o', 'zeroed_grain=on'] : []), '-b', 'base.vmdk', '-F', 'vmdk', mid], 'create mid');
      // zeros stored in the middle link hide the base's 0x22: compact must not unhide it
      await runOk('qemu-io', ['-f', 'vmdk', '-c', `write -P 0 0 ${MiB}`, '-c', `write -P 0x44 ${3 * MiB} ${GRAIN}`, mid], 'write mid');
      await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-b', 'mid.vmdk', '-F', 'vmdk', top], 'create top');
      await runOk('qemu-io', ['-f', 'vmdk', '-c', `write -P 0x55 ${2 * MiB} ${GRAIN}`, top], 'write top');
      const expected = Buffer.alloc(4 * MiB, 0x22);
      expected.fill(0, 0, 2 * MiB).fill(0x55, 2 * MiB, 2 * MiB + GRAIN).fill(0x44, 3 * MiB, 3 * MiB + GRAIN);
      const ref = join(dir, 'top.raw');
      await writeFile(ref, expected);
      await same(ref, top, 'before');

      const b = await compact(base);
      assert.equal(b.fileBytesBefore - b.fileBytesAfter, MiB, 'the base gives back its zero grains');
      await same(ref, top, 'after compacting the base');
      const m = await compact(mid);
      // a version-1 link has no zero marker: its zero grains stay (GTE 0 would show the base)
      assert.equal(m.fileBytesBefore - m.fileBytesAfter, zeroedGrain ? MiB : 0, 'what the middle link gives back');
      const st = await sparseTables(mid);
      for (let g = 0; g < MiB / GRAIN; g++) assert.ok(zeroedGrain ? st.gte[g] === 1 : st.gte[g]! > 1, `mid grain ${g}: ${st.gte[g]}`);
      await same(ref, top, 'after compacting the middle link');
      await compact(top);
      await defragment(mid);
      await same(ref, top, 'after compacting the top and defragmenting the middle');
      for (const f of [base, mid, top]) {
        await qemuCheck(f);
        await vdkitClean(f);
      }
      // the chain still opens (CIDs unchanged) and vdkit reads what qemu reads
      const d = await Disk.open(top, { readOnly: true });
      assert.ok((await d.read(0, 4 * MiB)).equals(expected), 'vdkit reads the chain the same');
      await d.close();
    });
  }
});

test('compact, defragment and discard refuse what they cannot do, naming the format', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t)).path;
  const flat = join(dir, 'flat.vmdk');
  await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', flat, String(MiB)], 'create flat');
  await rejects(compact(flat), 'NOTSUPPORTED', /vmdk monolithicFlat/);
  await rejects(defragment(flat), 'NOTSUPPORTED', /vmdk monolithicFlat/);
  await rejects(discard(flat, 0, 512), 'NOTSUPPORTED', /vmdk monolithicFlat/);
  const stream = join(dir, 'stream.vmdk');
  await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=streamOptimized', stream, String(MiB)], 'create stream');
  await rejects(compact(stream), 'NOTSUPPORTED', /streamOptimized/);
  const raw = join(dir, 'r.img');
  await writeFile(raw, Buffer.alloc(MiB));
  await rejects(compact(raw, { format: 'raw' }), 'NOTSUPPORTED', /raw/);
  // an extent file of a split disk alone does not say whether the disk is a child
  const split = join(dir, 'split.vmdk');
  await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', split, String(MiB)], 'create split');
  await rejects(compact(join(dir, 'split-s001.vmdk')), 'NOTSUPPORTED', /bare extent/);
  const ac = new AbortController();
  ac.abort();
  const sparse = join(dir, 's.vmdk');
  await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', sparse, String(MiB)], 'create sparse');
  await rejects(compact(sparse, { signal: ac.signal }), 'CANCELLED');
  for (const args of [['discard', sparse, '--offset', '64K', '--length', '128K'], ['defrag', sparse]]) {
    const r = await run(process.execPath, [BIN, ...args]);
    assert.equal(r.code, 0, describeRun('vdkit', args, r));
  }
  for (const args of [['compact', flat], ['defrag', flat], ['discard', flat, '--offset', '0', '--length', '512']]) {
    const r = await run(process.execPath, [BIN, ...args]);
    assert.equal(r.code, 1, describeRun('vdkit', args, r));
    assert.match(r.stderr, /NOTSUPPORTED.*monolithicFlat/s, describeRun('vdkit', args, r));
  }
});

test('check: a redundant table naming a copy of the grain (a move killed between the tables) is a warning; another grain is corruption', async (t) => {
  const dir = (await tmpDir(t)).path;
  const img = join(dir, 'd.vmdk');
  const d = await createDisk(img, { capacity: MiB });
  await d.write(0, Buffer.alloc(GRAIN, 0x11));
  await d.write(GRAIN, Buffer.alloc(GRAIN, 0x22));
  await d.close();
  const fh = await open(img, 'r+');
  try {
    const h = Buffer.alloc(512);
    await fh.read(h, 0, 512, 0);
    const rgd = Number(h.readBigUInt64LE(48));
    const entry = Buffer.alloc(4);
    await fh.read(entry, 0, 4, rgd * 512);
    const rgtAt = entry.readUInt32LE(0) * 512;
    const st = await sparseTables(img);
    const end = (await fh.stat()).size;
    // a copy of grain 0 at the end of the file, named by the redundant table only
    await fh.write(Buffer.alloc(GRAIN, 0x11), 0, GRAIN, end);
    entry.writeUInt32LE(end / 512, 0);
    await fh.write(entry, 0, 4, rgtAt);
    await fh.sync();
    let r = await checkDisk(img, { repair: false });
    assert.deepEqual(r.findings.filter((f) => f.kind === 'corruption'), [], 'same bytes: no corruption');
    assert.ok(r.findings.some((f) => f.kind === 'warning' && /lags/.test(f.message)), 'reported as a lagging copy');
    // the redundant table naming grain 1 for grain 0: different bytes
    entry.writeUInt32LE(st.gte[1]!, 0);
    await fh.write(entry, 0, 4, rgtAt);
    await fh.sync();
    r = await checkDisk(img, { repair: false });
    assert.ok(r.findings.some((f) => f.kind === 'corruption' && /differs/.test(f.message)), 'different bytes: corruption');
  } finally {
    await fh.close();
  }
});
