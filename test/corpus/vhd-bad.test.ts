/**
 * Malformed VHD files: copies of a small dynamic image (and of a differencing child) with bytes
 * poked at the offsets of vhd.md §2-§5. Fields other than the checksum are changed with the
 * checksum recomputed, so each case reaches the check it is about. Each must be refused with the
 * DiskError named in the case — naming the file and the field — within 100 ms and without a big
 * allocation, and a refused open must not modify the file. Then the recovery option:
 * `ignoreChecksums` opens a damaged image read-only, and only read-only.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { Disk, DiskError, type ErrorCode } from '../../src/index.js';
import { createChild } from '../../src/ops/child.js';
import { DynamicHeader, Footer, ParentLocatorEntry, vhdChecksum } from '../../src/formats/vhd/structs.js';
import { expectFailure, poke, readAt, removeTempDirs, sha, tempDir } from './support.js';

const MiB = 2 ** 20;
const CAPACITY = 64 * MiB;
const BAT = 1536;
const fo = (f: Parameters<typeof Footer.offsetOf>[0]) => Footer.offsetOf(f);
const ho = (f: Parameters<typeof DynamicHeader.offsetOf>[0]) => 512 + DynamicHeader.offsetOf(f);
const lo = (i: number, f: Parameters<typeof ParentLocatorEntry.offsetOf>[0]) => 512 + DynamicHeader.offsetOf('parentLocators') + i * 24 + ParentLocatorEntry.offsetOf(f);

let dir: string;
let base: string;
let child: string;
let fixed: string;
let n = 0;
const A = Buffer.alloc(65536, 0xa5);

before(async () => {
  dir = tempDir('corpus-vhd');
  base = join(dir, 'base.vhd');
  const d = await Disk.create(base, { format: 'vhd', capacity: CAPACITY });
  await d.write(0, A);
  await d.write(20 * MiB, A);
  await d.write(40 * MiB + 512, A.subarray(0, 1000));
  await d.close();
  mkdirSync(join(dir, 'kids'));
  child = join(dir, 'kids', 'child.vhd');
  await (await createChild(base, child)).close();
  const c = await Disk.open(child);
  await c.write(4096, A.subarray(0, 4096));
  await c.close();
  fixed = join(dir, 'fixed.vhd');
  const f = await Disk.create(fixed, { format: 'vhd', type: 'fixed', capacity: 4 * MiB });
  await f.write(0, A);
  await f.close();
});
after(() => removeTempDirs());

function copy(from: string): string {
  const p = join(from === child ? join(dir, 'kids') : dir, `bad-${++n}.vhd`);
  copyFileSync(from, p);
  return p;
}

const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
};
const u64 = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
};

async function fileSize(p: string): Promise<number> {
  const { statSync } = await import('node:fs');
  return statSync(p).size;
}

/** change end footer bytes (and the copy at 0 of a dynamic image), checksum recomputed */
async function pokeFooter(p: string, at: number, data: Buffer, opts: { keepChecksum?: boolean } = {}): Promise<void> {
  const size = await fileSize(p);
  const f = await readAt(p, size - 512, 512);
  data.copy(f, at);
  if (!opts.keepChecksum) f.writeUInt32BE(vhdChecksum(f, 64), 64);
  await poke(p, size - 512, f);
  if (f.readUInt32BE(60) !== 2) await poke(p, 0, f);
}

/** change dynamic header bytes (absolute offset `at`), checksum recomputed */
async function pokeHeader(p: string, at: number, data: Buffer, opts: { keepChecksum?: boolean } = {}): Promise<void> {
  const h = await readAt(p, 512, 1024);
  data.copy(h, at - 512);
  if (!opts.keepChecksum) h.writeUInt32BE(vhdChecksum(h, 36), 36);
  await poke(p, 512, h);
}

interface Case {
  name: string;
  from?: () => string;
  damage: (path: string) => Promise<void> | void;
  code: ErrorCode;
  field?: string | RegExp;
  message?: RegExp;
  /** open with format 'vhd' (detection sees raw) */
  forceVhd?: boolean;
  /** open the chain (the parent must be found) instead of the link alone */
  opts?: Record<string, unknown>;
}

const CASES: Case[] = [
  // ---- footer
  { name: 'no cookie at the end nor at the start', damage: async (p) => { await poke(p, (await fileSize(p)) - 512, Buffer.from('XXXXXXXX')); await poke(p, 0, Buffer.from('XXXXXXXX')); }, code: 'INVALIDDISK', field: 'cookie', forceVhd: true },
  { name: 'end footer gone, copy at 0 intact (truncated by 512 bytes)', damage: async (p) => truncateSync(p, (await fileSize(p)) - 512), code: 'CORRUPT', field: 'cookie', message: /copy at offset 0 is intact/ },
  { name: 'footer checksum wrong', damage: (p) => pokeFooter(p, fo('checksum'), u32(0x12345678), { keepChecksum: true }), code: 'CORRUPT', field: 'checksum', message: /footer checksum mismatch/ },
  { name: 'footer byte changed, checksum not', damage: (p) => pokeFooter(p, fo('savedState'), Buffer.from([1]), { keepChecksum: true }), code: 'CORRUPT', field: 'checksum' },
  { name: 'file format version 2.0', damage: (p) => pokeFooter(p, fo('fileFormatVersion'), u32(0x00020000)), code: 'UNSUPPORTEDDISKVERSION', field: 'fileFormatVersion' },
  { name: 'disk type 5 (reserved)', damage: (p) => pokeFooter(p, fo('diskType'), u32(5)), code: 'UNSUPPORTEDFEATURE', field: 'diskType' },
  { name: 'disk type 0', damage: (p) => pokeFooter(p, fo('diskType'), u32(0)), code: 'UNSUPPORTEDFEATURE', field: 'diskType' },
  { name: 'current size 3 TiB (over the 2040 GiB limit)', damage: (p) => pokeFooter(p, fo('currentSize'), u64(3n * 2n ** 40n)), code: 'CORRUPT', field: 'currentSize', message: /2040 GiB/ },
  { name: 'current size 2^63', damage: (p) => pokeFooter(p, fo('currentSize'), u64(2n ** 63n)), code: 'CORRUPT', field: 'currentSize' },
  { name: 'dynamic header offset past EOF', damage: (p) => pokeFooter(p, fo('dataOffset'), u64(1n << 40n)), code: 'CORRUPT', field: 'dataOffset', message: /outside the file/ },
  { name: 'dynamic header offset misaligned', damage: (p) => pokeFooter(p, fo('dataOffset'), u64(513n)), code: 'CORRUPT', field: 'dataOffset', message: /aligned/ },
  { name: 'dynamic header offset 0 (over the footer copy)', damage: (p) => pokeFooter(p, fo('dataOffset'), u64(0n)), code: 'CORRUPT', field: 'dataOffset' },
  { name: 'dynamic image without a header offset', damage: (p) => pokeFooter(p, fo('dataOffset'), u64(2n ** 64n - 1n)), code: 'CORRUPT', field: 'dataOffset' },
  { name: 'dynamic header offset 2^62 (unsafe integer)', damage: (p) => pokeFooter(p, fo('dataOffset'), u64(2n ** 62n)), code: 'CORRUPT', field: 'dataOffset' },
  // ---- dynamic header
  { name: 'dynamic header cookie', damage: (p) => pokeHeader(p, ho('cookie'), Buffer.from('cxspXXXX')), code: 'INVALIDDISK', field: 'cookie', message: /dynamicHeader/ },
  { name: 'dynamic header checksum wrong', damage: (p) => pokeHeader(p, ho('checksum'), u32(1), { keepChecksum: true }), code: 'CORRUPT', field: 'checksum', message: /dynamicHeader checksum mismatch/ },
  { name: 'dynamic header version 2.0', damage: (p) => pokeHeader(p, ho('headerVersion'), u32(0x00020000)), code: 'UNSUPPORTEDDISKVERSION', field: 'headerVersion' },
  { name: 'block size 3 MiB (not a power of two)', damage: (p) => pokeHeader(p, ho('blockSize'), u32(3 * MiB)), code: 'CORRUPT', field: 'blockSize' },
  { name: 'block size 0', damage: (p) => pokeHeader(p, ho('blockSize'), u32(0)), code: 'CORRUPT', field: 'blockSize' },
  { name: 'block size 256 bytes', damage: (p) => pokeHeader(p, ho('blockSize'), u32(256)), code: 'CORRUPT', field: 'blockSize' },
  { name: 'block size 2 GiB (too big)', damage: (p) => pokeHeader(p, ho('blockSize'), u32(2 ** 31)), code: 'CORRUPT', field: 'blockSize' },
  { name: 'max table entries 2^32-1 (refused by the file size, nothing allocated)', damage: (p) => pokeHeader(p, ho('maxTableEntries'), u32(0xffffffff)), code: 'CORRUPT', field: 'maxTableEntries', message: /past the end/ },
  { name: 'max table entries too few for the size', damage: (p) => pokeHeader(p, ho('maxTableEntries'), u32(3)), code: 'CORRUPT', field: 'maxTableEntries' },
  {
    name: 'block size 512 with a 64 MiB disk: 131072 entries the file cannot hold',
    damage: (p) => pokeHeader(p, ho('blockSize'), u32(512)),
    code: 'CORRUPT',
    field: 'maxTableEntries',
  },
  { name: 'BAT offset past EOF', damage: (p) => pokeHeader(p, ho('tableOffset'), u64(1n << 40n)), code: 'CORRUPT', field: 'tableOffset' },
  { name: 'BAT offset 2^62 (unsafe integer)', damage: (p) => pokeHeader(p, ho('tableOffset'), u64(2n ** 62n)), code: 'CORRUPT', field: 'tableOffset' },
  // ---- BAT (base: blocks 0, 10 and 20 allocated; a changed entry replaces block 10 so the count stays)
  { name: 'BAT entry past EOF', damage: (p) => poke(p, BAT + 5 * 4, u32(0x00ffffff)), code: 'CORRUPT', field: 'BAT[5]', message: /past the end/ },
  { name: 'BAT entry 0xfffffffe', damage: (p) => poke(p, BAT + 31 * 4, u32(0xfffffffe)), code: 'CORRUPT', field: 'BAT[31]' },
  {
    name: 'two BAT entries name the same block',
    damage: async (p) => poke(p, BAT + 10 * 4, await readAt(p, BAT, 4)),
    code: 'CORRUPT',
    field: 'BAT',
    message: /same or overlapping/,
  },
  {
    name: 'a BAT entry half-way into another block',
    damage: async (p) => poke(p, BAT + 10 * 4, u32((await readAt(p, BAT, 4)).readUInt32BE(0) + 100)),
    code: 'CORRUPT',
    field: 'BAT',
  },
  { name: 'a block over the dynamic header (block 0 moved to sector 1)', damage: (p) => poke(p, BAT, u32(1)), code: 'CORRUPT', field: 'BAT', message: /dynamic header/ },
  { name: 'a block over the BAT', damage: (p) => poke(p, BAT + 10 * 4, u32(3)), code: 'CORRUPT', field: 'BAT', message: /BAT/ },
  {
    name: 'every entry names one valid block: more blocks than the file holds (counted before sorting)',
    damage: async (p) => {
      const first = await readAt(p, BAT, 4);
      await poke(p, BAT, Buffer.concat(Array.from({ length: 32 }, () => first)));
    },
    code: 'CORRUPT',
    field: 'BAT',
    message: /more blocks than fit/,
  },
  // ---- parent locators (the differencing child)
  { name: 'locator length 2^31', from: () => child, damage: (p) => pokeHeader(p, lo(0, 'platformDataLength'), u32(2 ** 31)), code: 'CORRUPT', field: 'parentLocator[0].platformDataLength' },
  { name: 'locator data past EOF', from: () => child, damage: (p) => pokeHeader(p, lo(1, 'platformDataOffset'), u64(1n << 40n)), code: 'CORRUPT', field: 'parentLocator[1].platformDataOffset' },
  { name: 'locator offset 2^63 (unsafe integer)', from: () => child, damage: (p) => pokeHeader(p, lo(0, 'platformDataOffset'), u64(2n ** 63n)), code: 'CORRUPT', field: 'parentLocator[0].platformDataOffset' },
  { name: 'locator data over the footer copy', from: () => child, damage: (p) => pokeHeader(p, lo(0, 'platformDataOffset'), u64(0n)), code: 'CORRUPT', field: 'parentLocator[0].platformDataOffset' },
  {
    name: 'a block over the locator data',
    from: () => child,
    damage: async (p) => {
      const off = Number((await readAt(p, lo(1, 'platformDataOffset'), 8)).readBigUInt64BE(0));
      await poke(p, BAT, u32(off / 512)); // the child's one block (block 0) moved onto it
    },
    code: 'CORRUPT',
    field: 'BAT',
    message: /parent locator data/,
  },
  {
    name: 'untrusted: a relative locator that leaves the child\'s folder',
    from: () => child,
    damage: () => {},
    code: 'EXTERNALEXTENT',
    field: 'parent hint',
    opts: { readOnly: true, untrusted: true, singleLink: false },
  },
  // ---- truncated files
  { name: 'truncated to 100 bytes', damage: (p) => truncateSync(p, 100), code: 'INVALIDDISK', field: 'cookie', message: /too short/, forceVhd: true },
  { name: 'empty file', damage: (p) => truncateSync(p, 0), code: 'INVALIDDISK', forceVhd: true },
  { name: 'truncated inside the BAT (copy at 0 intact)', damage: (p) => truncateSync(p, 1600), code: 'CORRUPT', field: 'cookie' },
  { name: 'fixed: cut in the middle of its data', from: () => fixed, damage: (p) => truncateSync(p, 2 * MiB), code: 'INVALIDDISK', field: 'cookie', forceVhd: true },
  { name: 'fixed: current size larger than the data area', from: () => fixed, damage: (p) => pokeFooter(p, fo('currentSize'), u64(8n * BigInt(MiB))), code: 'CORRUPT', field: 'currentSize', message: /truncated/ },
];

for (const c of CASES) {
  test(`refused: ${c.name} -> ${c.code}${c.field ? ` (${c.field})` : ''}`, async () => {
    const p = copy(c.from?.() ?? base);
    await c.damage(p);
    const before = sha(p);
    const opts = { readOnly: true, singleLink: true, ...(c.forceVhd ? { format: 'vhd' } : {}), ...(c.opts ?? {}) };
    await expectFailure(() => Disk.open(p, opts), { code: c.code, path: p, field: c.field, message: c.message });
    assert.equal(sha(p), before, 'a refused open leaves the file as it was');
  });
}

test('recovery: ignoreChecksums opens a bad-checksum image read-only, with warnings; read-write is refused', async () => {
  for (const [what, damage] of [
    ['footer', (p: string) => pokeFooter(p, fo('checksum'), u32(0x12345678), { keepChecksum: true })],
    ['dynamicHeader', (p: string) => pokeHeader(p, ho('checksum'), u32(1), { keepChecksum: true })],
  ] as const) {
    const p = copy(base);
    await damage(p);
    const before = sha(p);
    // read-write, even asking for recovery: refused
    await expectFailure(() => Disk.open(p, { ignoreChecksums: true }), { code: 'CORRUPT', path: p, field: 'checksum', message: /read-only only/ });
    await expectFailure(() => Disk.open(p), { code: 'CORRUPT', path: p, field: 'checksum', message: /ignoreChecksums/ });
    const d = await Disk.open(p, { readOnly: true, ignoreChecksums: true });
    assert.equal(d.readOnly, true);
    assert.equal(d.capacity, CAPACITY);
    assert.deepEqual(await d.read(20 * MiB, 65536), A, `${what}: data readable`);
    assert.deepEqual(await d.read(40 * MiB + 512, 1000), A.subarray(0, 1000));
    assert.ok((await d.info()).warnings?.some((w) => w.startsWith(what === 'footer' ? 'footer checksum' : 'dynamic header checksum')), 'info says what was ignored');
    await assert.rejects(d.write(0, Buffer.alloc(512)), (e: DiskError) => e.code === 'RDONLY');
    await d.close();
    assert.equal(sha(p), before, 'nothing written');
  }
  // the end footer lost: the copy at offset 0 carries the read
  const p = copy(base);
  truncateSync(p, (await fileSize(p)) - 512);
  const d = await Disk.open(p, { readOnly: true, ignoreChecksums: true });
  assert.deepEqual(await d.read(0, 65536), A);
  assert.ok((await d.info()).warnings?.some((w) => /copy at offset 0/.test(w)));
  await d.close();
});

test('recovery reaches every link: a differencing VHD whose parent also has a bad footer checksum opens with ignoreChecksums (API and CLI)', async () => {
  // the chain as a whole folder (base.vhd and kids/child.vhd), both footers damaged
  const top = join(dir, `chain-${++n}`);
  mkdirSync(join(top, 'kids'), { recursive: true });
  const b = join(top, 'base.vhd');
  const c = join(top, 'kids', 'child.vhd');
  copyFileSync(base, b);
  copyFileSync(child, c);
  await pokeFooter(b, fo('checksum'), u32(0x12345678), { keepChecksum: true });
  await pokeFooter(c, fo('checksum'), u32(0x0badf00d), { keepChecksum: true });
  const before = [sha(b), sha(c)];
  await expectFailure(() => Disk.open(c, { readOnly: true }), { code: 'CORRUPT', path: c, field: 'checksum' });
  // read-write stays refused, even asking for recovery (the top is checked first)
  await expectFailure(() => Disk.open(c, { ignoreChecksums: true }), { code: 'CORRUPT', path: c, field: 'checksum', message: /read-only only/ });
  const d = await Disk.open(c, { readOnly: true, ignoreChecksums: true });
  assert.equal((await d.info()).numLinks, 2);
  assert.deepEqual(await d.read(0, 4096), A.subarray(0, 4096), "the parent's data under the child");
  assert.deepEqual(await d.read(4096, 4096), A.subarray(0, 4096), "the child's data");
  assert.deepEqual(await d.read(20 * MiB, 65536), A, 'parent data deeper in');
  await d.close();
  // the CLI's --ignore-checksums: same reach
  const { run, describeRun, repoRoot } = await import('../helpers/tools.js');
  const out = join(top, 'out.raw');
  const refused = [join(repoRoot(), 'bin', 'vdkit.js'), 'convert', '-O', 'raw', c, join(top, 'refused.raw')];
  const no = await run(process.execPath, refused);
  assert.notEqual(no.code, 0, 'without --ignore-checksums the CLI refuses the chain');
  assert.match(no.stderr, /checksum/);
  const args = [join(repoRoot(), 'bin', 'vdkit.js'), 'convert', '--ignore-checksums', '-O', 'raw', c, out];
  const r = await run(process.execPath, args);
  assert.equal(r.code, 0, describeRun('vdkit', args.slice(1), r));
  const back = await readAt(out, 20 * MiB, 65536);
  assert.deepEqual(back, A);
  assert.deepEqual([sha(b), sha(c)], before, 'nothing written to either link');
});

test('a footer copy at offset 0 that differs from the end footer is repaired by a read-write open', async () => {
  const p = copy(base);
  await poke(p, 0, Buffer.alloc(512, 0x11));
  const ro = await Disk.open(p, { readOnly: true });
  assert.equal(ro.capacity, CAPACITY, 'the end footer is authoritative');
  await ro.close();
  const size = await fileSize(p);
  const rw = await Disk.open(p);
  await rw.close();
  assert.deepEqual(await readAt(p, 0, 512), await readAt(p, size - 512, 512));
});

test('a VHD file smaller than one block: the error for a used BAT entry names no negative bound', async () => {
  const p = join(dir, 'tiny.vhd');
  await (await Disk.create(p, { format: 'vhd', capacity: 4 * MiB })).close(); // no block: the file is a few KiB
  const at = Number((await readAt(p, 512 + 16, 8)).readBigUInt64BE(0)); // the BAT offset
  await poke(p, at, u32(3));
  const err = await Disk.open(p, { readOnly: true, singleLink: true }).then(
    () => assert.fail('opened'),
    (e: unknown) => e as DiskError,
  );
  assert.ok(err instanceof DiskError, String(err));
  assert.equal(err.details.field, 'BAT[0]');
  assert.doesNotMatch(String(err.details.expected), /-\d/, `expected: ${err.details.expected}`);
  assert.doesNotMatch(err.message, /<= -\d/);
});
