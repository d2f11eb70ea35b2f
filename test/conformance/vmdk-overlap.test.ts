/**
 * Issue 14 (fuzzer): VMDK writes that were silently lost because new data was allocated on
 * top of sectors existing metadata or entries still name, plus the extent-list blow-up and
 * leaked descriptors on failed opens. Every image is a small monolithicSparse or split sparse
 * disk made here and damaged by a few bytes (header offsets of vmdk.md §3.2).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, linkSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Disk, DiskError, checkDisk, openFindings } from '../../src/index.js';
import { SparseExtentHeader } from '../../src/formats/vmdk/structs.js';
import { poke, readAt, removeTempDirs, tempDir, u32le, u64le } from '../corpus/support.js';

const off = (f: Parameters<typeof SparseExtentHeader.offsetOf>[0]) => SparseExtentHeader.offsetOf(f);
const MiB = 2 ** 20;
const G = 65536;
const pat = (b: number) => Buffer.alloc(G, b);
// 64 MiB monolithicSparse as vdkit lays it out: descriptor 1..20, RGD 21, RGTs 22..29, GD 30,
// GTs 31..38, overHead 128; grain 0 at sector 128, grain 1 at 256
const GD = 30;
const GT0 = 31;

after(() => removeTempDirs());
const dir = tempDir('vmdk-overlap');
let n = 0;

async function base(type: 'monolithicSparse' | 'twoGbMaxExtentSparse' = 'monolithicSparse'): Promise<string> {
  const p = join(dir, `d${++n}.vmdk`);
  const d = await Disk.create(p, { type, capacity: 64 * MiB });
  await d.write(0, pat(1));
  await d.write(G, pat(2));
  await d.close();
  return p;
}

async function rejects(fn: () => Promise<unknown>, code: string, message?: RegExp): Promise<DiskError> {
  try {
    const d = await fn();
    if (d instanceof Disk) await d.close();
  } catch (err) {
    assert.ok(err instanceof DiskError, String(err));
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected ${code}, the call succeeded`);
}

async function readGrains(p: string, grains: number[]): Promise<number[]> {
  const d = await Disk.open(p, { readOnly: true });
  try {
    const out: number[] = [];
    for (const g of grains) {
      const b = await d.read(g * G, G);
      out.push(b.every((x) => x === b[0]) ? b[0]! : -1);
    }
    return out;
  } finally {
    await d.close();
  }
}

async function writeGrain(p: string, g: number, byte: number): Promise<void> {
  const d = await Disk.open(p);
  try {
    await d.write(g * G, pat(byte));
  } finally {
    await d.close();
  }
}

test('embedded descriptor running over the RGD, GD and GTs: read-write open refused, check reports it, repair shrinks it, writes then read back', async () => {
  const p = await base();
  await poke(p, off('descriptorSize'), u64le(38n)); // sectors 1..38: over RGD, RGTs, GD and GTs
  await rejects(() => Disk.open(p), 'NEEDSREPAIR', /embedded descriptor .* overlaps/);
  assert.deepEqual(await readGrains(p, [0, 1]), [1, 2], 'read-only stays possible');
  const r = await checkDisk(p, { repair: false });
  assert.ok(r.findings.some((f) => f.kind === 'corruption' && /embedded descriptor/.test(f.message)), JSON.stringify(r.findings));
  const fixed = await checkDisk(p, { repair: true });
  assert.deepEqual(openFindings(fixed), { corruptions: 0, leaks: 0 }, JSON.stringify(fixed.findings));
  assert.equal((await readAt(p, off('descriptorSize'), 8)).readBigUInt64LE(0), 20n);
  // two sessions: each renews the CID (rewrites the descriptor) and writes a grain
  await writeGrain(p, 2, 3);
  await writeGrain(p, 3, 4);
  assert.deepEqual(await readGrains(p, [0, 1, 2, 3]), [1, 2, 3, 4]);
  assert.deepEqual((await checkDisk(p, { repair: false })).findings, []);
});

test('embedded descriptor whose text runs into the GD: check says it cannot repair it, read-write stays refused', async () => {
  const p = await base();
  await poke(p, off('descriptorSize'), u64le(38n));
  // a comment line after the text, up to sector 21: no NUL before the RGD
  const end = (await readAt(p, 512, 20 * 512)).indexOf(0);
  await poke(p, 512 + end, Buffer.alloc(20 * 512 - end, 0x23));
  const r = await checkDisk(p, { repair: true });
  const f = r.findings.find((x) => /embedded descriptor/.test(x.message));
  assert.ok(f?.notRepairable, JSON.stringify(r.findings));
  await rejects(() => Disk.open(p), 'NEEDSREPAIR');
});

test('redundant GD on the primary GT: read-write open refused (it wrote redundant entries into grain 0), repair rebuilds the copy, writes read back', async () => {
  const p = await base();
  await poke(p, off('rgdOffset'), u64le(BigInt(GT0))); // RGD = GT 0: its entries (128, 256) become "redundant tables" over grains 0 and 1
  await rejects(() => Disk.open(p), 'NEEDSREPAIR', /redundant grain directory .* overlaps grain table 0/);
  const r = await checkDisk(p, { repair: false });
  assert.ok(r.findings.filter((f) => f.kind === 'corruption').length >= 1);
  assert.ok(!r.findings.some((f) => /differs/.test(f.message)), 'the overlapping copy is not compared (a repair would have written it over the primary)');
  const dry = await checkDisk(p, { repair: true, dryRun: true });
  assert.ok(dry.findings.every((f) => f.kind !== 'corruption' || f.wouldRepair), JSON.stringify(dry.findings));
  const fixed = await checkDisk(p, { repair: true });
  assert.deepEqual(openFindings(fixed), { corruptions: 0, leaks: 0 }, JSON.stringify(fixed.findings));
  assert.deepEqual(await readGrains(p, [0, 1]), [1, 2]);
  await writeGrain(p, 5, 7);
  await writeGrain(p, 0x200, 8); // second grain table
  assert.deepEqual(await readGrains(p, [0, 1, 5, 0x200]), [1, 2, 7, 8]);
  assert.deepEqual((await checkDisk(p, { repair: false })).findings, []);
});

test('a primary GT over the start of the descriptor: check says it cannot repair it, read-write stays refused', async () => {
  const p = await base();
  await poke(p, GD * 512 + 4, u32le(1)); // GT 1 at sectors 1..4, where the descriptor text is
  await rejects(() => Disk.open(p), 'NEEDSREPAIR', /embedded descriptor .* overlaps grain table 1/);
  const r = await checkDisk(p, { repair: true });
  const f = r.findings.find((x) => /overlaps grain table 1/.test(x.message));
  assert.ok(f?.notRepairable && !f.repaired, JSON.stringify(r.findings));
  await rejects(() => Disk.open(p), 'NEEDSREPAIR');
  assert.deepEqual(await readGrains(p, [0, 1]), [1, 2], 'read-only stays possible');
});

test('truncated file: an entry past the end refuses the read-write open (the next grain went there)', async () => {
  const p = await base();
  truncateSync(p, 256 * 512); // grain 1 at sector 256 is now past the end
  await rejects(() => Disk.open(p), 'NEEDSREPAIR', /past the end of the file/);
  const d = await Disk.open(p, { readOnly: true });
  assert.ok((await d.read(0, G)).equals(pat(1)));
  await d.close();
  const r = await checkDisk(p, { repair: true });
  assert.ok(r.findings.some((f) => f.kind === 'corruption' && f.notRepairable), JSON.stringify(r.findings));
});

test('truncated file cutting an unaligned last grain: new grains go past every sector an entry names', async () => {
  const p = await base();
  // grain 1 moved to sector 300 (any sector after overHead is legal), file cut at 384: the
  // grain covers 300..427, past the end; the old allocator put the next grain at 384
  const gt = (await readAt(p, GD * 512, 4)).readUInt32LE(0);
  const body = await readAt(p, 256 * 512, 128 * 512);
  await poke(p, 300 * 512, body.subarray(0, 84 * 512));
  truncateSync(p, 384 * 512);
  await poke(p, gt * 512 + 4, u32le(300));
  await writeGrain(p, 5, 9);
  await writeGrain(p, 1, 10);
  assert.deepEqual(await readGrains(p, [0, 1, 5]), [1, 10, 9]);
});

test('the same sparse extent file listed twice is refused (two writes in one open shared a sector)', async () => {
  const p = await base('twoGbMaxExtentSparse');
  const text = readFileSync(p, 'utf8');
  const line = text.split('\n').find((l) => l.startsWith('RW '))!;
  const file = /"([^"]+)"/.exec(line)![1]!;
  const half = `RW 65536 SPARSE "${file}"`;
  writeFileSync(p, text.replace(line, `${half}\n${half}`));
  await rejects(() => Disk.open(p), 'BADDESCRIPTOR', /extents 1 and 2 name the same file/);
  await rejects(() => Disk.open(p, { readOnly: true }), 'BADDESCRIPTOR', /same file/);
  // a hard link to it is the same file too; a copy is another file
  linkSync(join(dir, file), join(dir, `link-${n}.vmdk`));
  writeFileSync(p, text.replace(line, `${half}\nRW 65536 SPARSE "link-${n}.vmdk"`));
  await rejects(() => Disk.open(p, { readOnly: true }), 'BADDESCRIPTOR', /same file/);
  copyFileSync(join(dir, file), join(dir, `copy-${n}.vmdk`));
  writeFileSync(p, text.replace(line, `${half}\nRW 65536 SPARSE "copy-${n}.vmdk"`));
  await (await Disk.open(p, { readOnly: true })).close();
});

test('a descriptor naming one extent 5,000 times is refused at once; more extent lines than the cap are refused', async () => {
  const p = await base('twoGbMaxExtentSparse');
  const text = readFileSync(p, 'utf8');
  const line = text.split('\n').find((l) => l.startsWith('RW '))!;
  const file = /"([^"]+)"/.exec(line)![1]!;
  writeFileSync(p, text.replace(line, Array.from({ length: 5000 }, () => `RW 128 SPARSE "${file}"`).join('\n')));
  const t0 = performance.now();
  await rejects(() => Disk.open(p, { readOnly: true }), 'BADDESCRIPTOR', /too many extents|same file/);
  assert.ok(performance.now() - t0 < 1000, `took ${performance.now() - t0} ms`);
  writeFileSync(p, text.replace(line, Array.from({ length: 4201 }, () => 'RW 128 ZERO').join('\n')));
  await rejects(() => Disk.open(p, { readOnly: true }), 'BADDESCRIPTOR', /too many extents/);
});

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

test('1,000 failed opens of each kind leave no file descriptor open', { skip: process.platform !== 'linux' && 'needs /proc/self/fd' }, async () => {
  const kinds: { name: string; path: string; readOnly: boolean; code: string }[] = [];
  // a child whose parentCID is not hex, opened read-write alone
  const child = await base('twoGbMaxExtentSparse');
  writeFileSync(child, readFileSync(child, 'utf8').replace(/parentCID=\w+/, 'parentCID=zz'));
  kinds.push({ name: 'bad parentCID', path: child, readOnly: false, code: 'BADDESCRIPTOR' });
  const overlap = await base();
  await poke(overlap, off('rgdOffset'), u64le(BigInt(GT0)));
  kinds.push({ name: 'overlapping metadata', path: overlap, readOnly: false, code: 'NEEDSREPAIR' });
  const split = await base('twoGbMaxExtentSparse');
  const s001 = join(dir, /SPARSE "([^"]+)"/.exec(readFileSync(split, 'utf8'))![1]!);
  await poke(s001, off('rgdOffset'), u64le(BigInt((await readAt(s001, off('gdOffset'), 8)).readBigUInt64LE(0)) + 1n));
  kinds.push({ name: 'overlapping metadata in an extent file', path: split, readOnly: false, code: 'NEEDSREPAIR' });
  const trunc = await base();
  truncateSync(trunc, 256 * 512);
  kinds.push({ name: 'truncated', path: trunc, readOnly: false, code: 'NEEDSREPAIR' });
  const dup = await base('twoGbMaxExtentSparse');
  const dt = readFileSync(dup, 'utf8');
  const dl = dt.split('\n').find((l) => l.startsWith('RW '))!;
  writeFileSync(dup, dt.replace(dl, `${dl}\n${dl}`));
  kinds.push({ name: 'extent twice', path: dup, readOnly: true, code: 'BADDESCRIPTOR' });
  const badHeader = await base('twoGbMaxExtentSparse');
  await poke(join(dir, /SPARSE "([^"]+)"/.exec(readFileSync(badHeader, 'utf8'))![1]!), off('numGTEsPerGT'), u32le(3));
  kinds.push({ name: 'bad extent header', path: badHeader, readOnly: true, code: 'CORRUPT' });

  for (const k of kinds) {
    const before = openFds();
    for (let i = 0; i < 1000; i++) {
      try {
        const d = await Disk.open(k.path, { readOnly: k.readOnly, singleLink: true });
        await d.close();
        assert.fail(`${k.name}: the open succeeded`);
      } catch (err) {
        assert.ok(err instanceof DiskError && err.code === k.code, `${k.name}: ${String(err)}`);
      }
    }
    assert.equal(openFds(), before, `${k.name}: descriptors leaked by 1,000 failed opens`);
  }
});
