/**
 * Malformed VDI images, made here by creating a small dynamic image and poking bytes at the
 * header offsets of vdi.md §2-3 or into its block map. Each must be refused with the DiskError
 * code named in the case, naming the file and the field, within 100 ms and without a big
 * allocation (a crafted 2 GiB block map costs nothing: it is checked against the file size
 * first). A refused open must not modify the file. Then the allocated-count policy (tolerated
 * read-only with a warning, repaired or refused read-write) and legacy v0 images (read-only).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Disk, DiskError, type ErrorCode } from '../../src/index.js';
import { VdiHeaderV1Plus, type VdiHeaderField } from '../../src/formats/vdi/structs.js';
import { hasTool, run } from '../helpers/tools.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { expectFailure, poke, readAt, removeTempDirs, sha, tempDir, u32le, u64le } from './support.js';

const off = (f: VdiHeaderField) => VdiHeaderV1Plus.offsetOf(f);
const MiB = 2 ** 20;
const BLOCK = MiB;
const MAP = 0x100000;
const DATA = 0x200000;

let dir: string;
let base: string;
let n = 0;
const blockA = xorshiftBytes(BLOCK, 1);
const blockB = xorshiftBytes(BLOCK, 2);
const blockC = xorshiftBytes(BLOCK, 3);

before(async () => {
  dir = tempDir('corpus-vdi');
  base = join(dir, 'base.vdi');
  // 8 blocks; blocks 0, 3 and 5 allocated as physical blocks 0, 1 and 2
  const d = await Disk.create(base, { format: 'vdi', capacity: 8 * MiB });
  await d.write(0, blockA);
  await d.write(3 * BLOCK, blockB);
  await d.write(5 * BLOCK, blockC);
  await d.close();
});
after(() => removeTempDirs());

function copy(): string {
  const p = join(dir, `bad-${++n}.vdi`);
  copyFileSync(base, p);
  return p;
}

const entry = (i: number) => MAP + 4 * i;

interface Case {
  name: string;
  damage: (path: string) => Promise<void> | void;
  code: ErrorCode;
  field: string | RegExp;
  message?: RegExp;
  /** open as a chain (default: the image alone, read-only, format vdi) */
  chain?: boolean;
}

const CASES: Case[] = [
  { name: 'wrong signature', damage: (p) => poke(p, off('signature'), u32le(0x12345678)), code: 'INVALIDDISK', field: 'signature', message: /signature/ },
  { name: 'version 2.0', damage: (p) => poke(p, off('version'), u32le(0x00020000)), code: 'UNSUPPORTEDDISKVERSION', field: 'version' },
  { name: 'version 0.0 (only 0.2 is a legacy header)', damage: (p) => poke(p, off('version'), u32le(0)), code: 'UNSUPPORTEDDISKVERSION', field: 'version' },
  { name: 'cbHeader below 0x180', damage: (p) => poke(p, off('cbHeader'), u32le(0x17f)), code: 'CORRUPT', field: 'cbHeader' },
  { name: 'cbHeader 0', damage: (p) => poke(p, off('cbHeader'), u32le(0)), code: 'CORRUPT', field: 'cbHeader' },
  { name: 'type 0', damage: (p) => poke(p, off('type'), u32le(0)), code: 'CORRUPT', field: 'type' },
  { name: 'type 5', damage: (p) => poke(p, off('type'), u32le(5)), code: 'CORRUPT', field: 'type' },
  { name: 'unknown flag 0x2', damage: (p) => poke(p, off('flags'), u32le(2)), code: 'UNSUPPORTEDFEATURE', field: 'flags' },
  { name: 'LCHS sector size 4096', damage: (p) => poke(p, off('lchsSectorSize'), u32le(4096)), code: 'CORRUPT', field: 'lchsSectorSize' },
  { name: 'disk size 0', damage: (p) => poke(p, off('cbDisk'), u64le(0n)), code: 'CORRUPT', field: 'cbDisk' },
  { name: 'disk size over the format limit (2^60)', damage: (p) => poke(p, off('cbDisk'), u64le(2n ** 60n)), code: 'CORRUPT', field: 'cbDisk', message: /limit/ },
  { name: 'disk size larger than its blocks', damage: (p) => poke(p, off('cbDisk'), u64le(9n * 2n ** 20n)), code: 'CORRUPT', field: 'cBlocks' },
  { name: 'block size 0', damage: (p) => poke(p, off('cbBlock'), u32le(0)), code: 'CORRUPT', field: 'cbBlock' },
  { name: 'block size not a power of two', damage: (p) => poke(p, off('cbBlock'), u32le(3 * 2 ** 19)), code: 'CORRUPT', field: 'cbBlock' },
  { name: 'block size above the 32 MiB cap', damage: (p) => poke(p, off('cbBlock'), u32le(2 ** 26)), code: 'CORRUPT', field: 'cbBlock' },
  { name: 'block size below a sector', damage: (p) => poke(p, off('cbBlock'), u32le(256)), code: 'CORRUPT', field: 'cbBlock' },
  { name: 'block extra data not a power of two', damage: (p) => poke(p, off('cbBlockExtra'), u32le(3)), code: 'CORRUPT', field: 'cbBlockExtra' },
  { name: 'block count 0', damage: (p) => poke(p, off('cBlocks'), u32le(0)), code: 'CORRUPT', field: 'cBlocks' },
  { name: 'block count one short of the disk size', damage: (p) => poke(p, off('cBlocks'), u32le(7)), code: 'CORRUPT', field: 'cBlocks' },
  { name: 'block count one over the disk size', damage: (p) => poke(p, off('cBlocks'), u32le(9)), code: 'CORRUPT', field: 'cBlocks' },
  {
    name: 'more blocks than QEMU/vdkit allow (0x1FFFFF81)',
    damage: async (p) => {
      await poke(p, off('cbDisk'), u64le(0x1fffff81n * 2n ** 20n));
      await poke(p, off('cBlocks'), u32le(0x1fffff81));
    },
    code: 'CORRUPT',
    field: 'cBlocks',
  },
  {
    name: '2 GiB block map in a 5 MiB file (bounded by the file size before any allocation)',
    damage: async (p) => {
      await poke(p, off('cbDisk'), u64le(0x1fffff80n * 2n ** 20n));
      await poke(p, off('cBlocks'), u32le(0x1fffff80));
      await poke(p, off('offData'), u32le(MAP + 0x80000000));
    },
    code: 'CORRUPT',
    field: 'offBlocks',
    message: /past the end of the file/,
  },
  {
    name: '2 TiB disk: its 8 MiB map runs past the end of the file',
    damage: async (p) => {
      await poke(p, off('cbDisk'), u64le(2n ** 41n));
      await poke(p, off('cBlocks'), u32le(2 ** 21));
      await poke(p, off('offData'), u32le(MAP + 8 * MiB));
    },
    code: 'CORRUPT',
    field: 'offBlocks',
  },
  { name: 'more blocks allocated than the disk has', damage: (p) => poke(p, off('cBlocksAllocated'), u32le(9)), code: 'CORRUPT', field: 'cBlocksAllocated' },
  { name: 'block map inside the header', damage: (p) => poke(p, off('offBlocks'), u32le(0x100)), code: 'CORRUPT', field: 'offBlocks' },
  { name: 'data area overlapping the block map', damage: (p) => poke(p, off('offData'), u32le(MAP + 4)), code: 'CORRUPT', field: 'offData' },
  {
    name: 'block map past the end of the file',
    damage: async (p) => {
      await poke(p, off('offBlocks'), u32le(0x10000000));
      await poke(p, off('offData'), u32le(0x10100000));
    },
    code: 'CORRUPT',
    field: 'offBlocks',
  },
  { name: 'null creation UUID', damage: (p) => poke(p, off('uuidCreate'), Buffer.alloc(16)), code: 'CORRUPT', field: 'uuidCreate' },
  { name: 'null modification UUID', damage: (p) => poke(p, off('uuidModify'), Buffer.alloc(16)), code: 'CORRUPT', field: 'uuidModify' },
  { name: 'map entry past the data area (>= cBlocks)', damage: (p) => poke(p, entry(1), u32le(8)), code: 'CORRUPT', field: 'blockMap[1]', message: /data area/ },
  { name: 'map entry 0x80000000', damage: (p) => poke(p, entry(6), u32le(0x80000000)), code: 'CORRUPT', field: 'blockMap[6]' },
  { name: 'map entry past the end of the file', damage: (p) => poke(p, entry(1), u32le(5)), code: 'CORRUPT', field: 'blockMap[1]', message: /end of the file/ },
  { name: 'two entries pointing at the same block', damage: (p) => poke(p, entry(5), u32le(0)), code: 'CORRUPT', field: 'blockMap[5]', message: /same physical block/ },
  {
    name: 'more allocated entries than blocks in the file',
    damage: async (p) => {
      await poke(p, entry(1), u32le(0));
      await poke(p, entry(2), u32le(1));
    },
    code: 'CORRUPT',
    field: 'blockMap',
  },
  { name: 'file truncated in the data area', damage: (p) => truncateSync(p, DATA + BLOCK + BLOCK / 2), code: 'CORRUPT', field: 'blockMap[3]', message: /end of the file/ },
  { name: 'file truncated inside the block map', damage: (p) => truncateSync(p, MAP + 10), code: 'CORRUPT', field: 'offBlocks' },
  { name: 'file truncated inside the header', damage: (p) => truncateSync(p, 0x100), code: 'CORRUPT', field: 'cbHeader' },
  { name: 'file truncated before the signature', damage: (p) => truncateSync(p, 40), code: 'INVALIDDISK', field: 'signature' },
  { name: 'empty file', damage: (p) => truncateSync(p, 0), code: 'INVALIDDISK', field: 'signature' },
  { name: 'differencing image without a parent UUID', damage: (p) => poke(p, off('type'), u32le(4)), code: 'OPENPARENT', field: 'uuidLinkage', chain: true },
];

for (const c of CASES) {
  test(`bad VDI: ${c.name} -> ${c.code} (${String(c.field)})`, async () => {
    const p = copy();
    await c.damage(p);
    const before = sha(p);
    const openIt = c.chain ? () => Disk.open(p, { readOnly: true }) : () => Disk.open(p, { readOnly: true, format: 'vdi', singleLink: true });
    await expectFailure(openIt, { code: c.code, path: p, field: c.field, message: c.message });
    // read-write too (the checks come before anything is written), and the file is untouched
    await expectFailure(c.chain ? () => Disk.open(p) : () => Disk.open(p, { format: 'vdi', singleLink: true }), { code: c.code, path: p, field: c.field, message: c.message });
    assert.equal(sha(p), before, 'a refused open must not modify the file');
  });
}

async function headerCount(p: string): Promise<number> {
  return (await readAt(p, off('cBlocksAllocated'), 4)).readUInt32LE(0);
}

async function qemuCheckIfThere(p: string): Promise<void> {
  if (!hasTool('qemu-img')) return;
  const r = await run('qemu-img', ['check', '-f', 'vdi', p]);
  assert.equal(r.code, 0, `qemu-img check after repair: ${r.stdout} ${r.stderr}`);
}

for (const [label, count] of [
  ['one short (a crash between map entry and header, vdkit order)', 2],
  ['one over (a crash between header and map entry, VirtualBox order)', 4],
] as const) {
  test(`allocated count ${label}: read-only tolerates it with a warning, read-write repairs it from the map`, async () => {
    const p = copy();
    await poke(p, off('cBlocksAllocated'), u32le(count));
    const before = sha(p);
    const r = await Disk.open(p, { readOnly: true });
    const info = await r.info();
    assert.ok(info.warnings?.some((w) => w.includes(`cBlocksAllocated is ${count}`) && w.includes('3 allocated')), JSON.stringify(info.warnings));
    assert.deepEqual(await r.read(5 * BLOCK, BLOCK), blockC);
    await r.close();
    assert.equal(sha(p), before, 'a read-only open leaves the count alone');

    const w = await Disk.open(p);
    assert.ok((await w.info()).warnings?.some((x) => x.endsWith('repaired')));
    assert.equal(await headerCount(p), 3, 'the count is taken from the map');
    // the next block goes after the three in use: nothing is overwritten
    await w.write(7 * BLOCK, Buffer.alloc(BLOCK, 0x77));
    await w.close();
    assert.equal(await headerCount(p), 4);
    assert.equal((await readAt(p, entry(7), 4)).readUInt32LE(0), 3);
    const again = await Disk.open(p, { readOnly: true });
    assert.equal((await again.info()).warnings, undefined);
    assert.deepEqual(await again.read(0, BLOCK), blockA);
    assert.deepEqual(await again.read(3 * BLOCK, BLOCK), blockB);
    assert.deepEqual(await again.read(5 * BLOCK, BLOCK), blockC);
    assert.deepEqual(await again.read(7 * BLOCK, BLOCK), Buffer.alloc(BLOCK, 0x77));
    await again.close();
    await qemuCheckIfThere(p);
  });
}

test('a data area with an unused slot: read-only with a warning, read-write refused (NEEDSREPAIR)', async () => {
  const p = copy();
  await poke(p, entry(3), u32le(0xffffffff)); // physical block 1 no longer used; 0 and 2 are
  await poke(p, off('cBlocksAllocated'), u32le(2));
  const r = await Disk.open(p, { readOnly: true });
  assert.ok((await r.info()).warnings?.some((w) => w.includes('unused slots')));
  assert.deepEqual(await r.read(5 * BLOCK, BLOCK), blockC);
  assert.deepEqual(await r.read(3 * BLOCK, BLOCK), Buffer.alloc(BLOCK));
  await r.close();
  await expectFailure(() => Disk.open(p), { code: 'NEEDSREPAIR', path: p, field: 'cBlocksAllocated' });
});

test('legacy v0 image (version 0x00000002): read, never written', async () => {
  // pre-header + v0 header (vdi.md §4), map right after it at 0x1A4, data right after the map
  const cBlocks = 3;
  const head = Buffer.alloc(0x1a4 + 4 * cBlocks);
  head.write('<<< innotek VirtualBox Disk Image >>>\n', 0, 'latin1');
  head.writeUInt32LE(0xbeda107f, 0x40);
  head.writeUInt32LE(0x00000002, 0x44);
  head.writeUInt32LE(1, 0x48); // normal
  head.writeUInt32LE(512, 0x15c); // legacy cbSector
  head.writeBigUInt64LE(BigInt(3 * BLOCK), 0x160);
  head.writeUInt32LE(BLOCK, 0x168);
  head.writeUInt32LE(cBlocks, 0x16c);
  head.writeUInt32LE(1, 0x170); // allocated
  head.fill(0x11, 0x174, 0x184); // uuidCreate
  head.fill(0x22, 0x184, 0x194); // uuidModify
  head.writeUInt32LE(0xffffffff, 0x1a4);
  head.writeUInt32LE(0, 0x1a8);
  head.writeUInt32LE(0xfffffffe, 0x1ac);
  const p = join(dir, 'legacy.vdi');
  writeFileSync(p, Buffer.concat([head, blockB]));
  const r = await Disk.open(p, { readOnly: true });
  assert.equal(r.capacity, 3 * BLOCK);
  assert.deepEqual(await r.read(0, BLOCK), Buffer.alloc(BLOCK));
  assert.deepEqual(await r.read(BLOCK, BLOCK), blockB);
  assert.deepEqual(await r.blockStatus(), [
    { offset: 0, length: BLOCK, state: 'unallocated' },
    { offset: BLOCK, length: BLOCK, state: 'data' },
    { offset: 2 * BLOCK, length: BLOCK, state: 'zero' },
  ]);
  const info = await r.info();
  assert.equal(info.version, 0);
  assert.equal(info.uuid, '11111111-1111-1111-1111-111111111111');
  await r.close();
  await expectFailure(() => Disk.open(p), { code: 'UNSUPPORTEDDISKVERSION', path: p, field: 'version' });
});

test('a differencing image with no parent UUID opens alone read-only; its backing() says what is missing', async () => {
  const p = copy();
  await poke(p, off('type'), u32le(4));
  const d = await Disk.open(p, { readOnly: true, singleLink: true });
  assert.throws(() => d.image.backing(), (e: DiskError) => e.code === 'OPENPARENT' && e.details.field === 'uuidLinkage');
  assert.deepEqual(await d.read(0, BLOCK), blockA);
  await d.close();
});
