/**
 * Malformed VHDX files: copies of a small dynamic image (and of a differencing child) with bytes
 * poked at the offsets of vhd.md §16. Checksummed structures (headers, region tables, log
 * entries) are changed with their CRC-32C recomputed, so each case reaches the check it is about
 * (unless the case is the checksum). Each must be refused with the DiskError named in the case —
 * naming the file and the field — within 100 ms and without a big allocation, and a refused
 * open must not modify the file. Then the fallbacks: a damaged current header or first region
 * table is survived (the other copy is used, check() says so, a read-write open mends it).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, statSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { Disk, type ErrorCode } from '../../src/index.js';
import { createChild } from '../../src/ops/child.js';
import { crc32c } from '../../src/binary/crc32c.js';
import { vhdxLogHooks } from '../../src/formats/vhdx/log.js';
import { expectFailure, poke, readAt, removeTempDirs, sha, tempDir, u16le, u32le, u64le } from './support.js';

const MiB = 2 ** 20;
const CAPACITY = 64 * MiB;
const H = [64 * 1024, 128 * 1024];
const RT = [192 * 1024, 256 * 1024];

let dir: string;
let base: string;
let child: string;
let pending: string;
let n = 0;
const A = Buffer.alloc(65536, 0xa5);

/** CRC-32C of a structure with its checksum field zeroed, stored at offset 4 */
function recrc(b: Buffer): Buffer {
  b.fill(0, 4, 8);
  b.writeUInt32LE(crc32c(b), 4);
  return b;
}

before(async () => {
  dir = tempDir('corpus-vhdx');
  base = join(dir, 'base.vhdx');
  const d = await Disk.create(base, { format: 'vhdx', capacity: CAPACITY, blockSize: MiB });
  await d.write(0, A);
  await d.write(20 * MiB, A);
  await d.write(40 * MiB + 512, A.subarray(0, 1000));
  await d.close();
  mkdirSync(join(dir, 'kids'));
  child = join(dir, 'kids', 'child.vhdx');
  await (await createChild(base, child)).close();
  const c = await Disk.open(child);
  await c.write(4096, A.subarray(0, 4096));
  await c.close();
  // a writer stopped after flushing its second log entry: two entries, the second not applied
  pending = join(dir, 'pending.vhdx');
  const p = await Disk.create(pending, { format: 'vhdx', capacity: 16 * MiB, blockSize: MiB });
  await p.write(0, A);
  await p.flush();
  await p.write(5 * MiB, A);
  vhdxLogHooks.afterLogFlush = () => {
    throw new Error('stop');
  };
  await p.flush().catch(() => {});
  vhdxLogHooks.afterLogFlush = undefined;
  await p.close();
});
after(() => removeTempDirs());

function copy(from: string): string {
  const p = join(from === child ? join(dir, 'kids') : dir, `bad-${++n}.vhdx`);
  copyFileSync(from, p);
  return p;
}

/** the current header slot (valid, higher sequence) */
async function currentSlot(p: string): Promise<number> {
  const a = await readAt(p, H[0]!, 4096);
  const b = await readAt(p, H[1]!, 4096);
  return a.readBigUInt64LE(8) >= b.readBigUInt64LE(8) ? 0 : 1;
}

/** change bytes of header slot(s), checksum recomputed unless asked not to */
async function pokeHeader(p: string, at: number, data: Buffer, opts: { slots?: number[]; keepChecksum?: boolean } = {}): Promise<void> {
  for (const s of opts.slots ?? [0, 1]) {
    const h = await readAt(p, H[s]!, 4096);
    data.copy(h, at);
    if (!opts.keepChecksum) recrc(h);
    await poke(p, H[s]!, h);
  }
}

/** change bytes of both region tables, checksum recomputed unless asked not to */
async function pokeRegions(p: string, at: number, data: Buffer, opts: { tables?: number[]; keepChecksum?: boolean } = {}): Promise<void> {
  for (const s of opts.tables ?? [0, 1]) {
    const t = await readAt(p, RT[s]!, 65536);
    data.copy(t, at);
    if (!opts.keepChecksum) recrc(t);
    await poke(p, RT[s]!, t);
  }
}

/** the regions and metadata items of a file: offsets for the pokes */
async function layout(p: string) {
  const rt = await readAt(p, RT[0]!, 65536);
  const regions: { guid: string; offset: number; length: number; at: number }[] = [];
  for (let i = 0; i < rt.readUInt32LE(8); i++) regions.push({ guid: rt.subarray(16 + i * 32, 32 + i * 32).toString('hex'), offset: Number(rt.readBigUInt64LE(32 + i * 32)), length: rt.readUInt32LE(40 + i * 32), at: 16 + i * 32 });
  const bat = regions.find((r) => r.guid.startsWith('6677c22d'))!;
  const md = regions.find((r) => r.guid.startsWith('06a27c8b'))!;
  const table = await readAt(p, md.offset, 65536);
  const items = new Map<string, { entry: number; offset: number; length: number; abs: number }>();
  const names: Record<string, string> = {
    '3767a1ca36fa434db3b633f0aa44e76b': 'fileParameters',
    '2442a52f1bcd7648b2115dbed83bf4b8': 'virtualDiskSize',
    'ab12cabee6b2234593efc309e000c746': 'virtualDiskId',
    '1dbf41816fa90947ba47f233a8faab5f': 'logicalSectorSize',
    c748a3cd5d4471449cc9e9885251c556: 'physicalSectorSize',
    '2d5fd3a80bb34d45abf7d3d84834ab0c': 'parentLocator',
  };
  for (let i = 0; i < table.readUInt16LE(10); i++) {
    const e = table.subarray(32 + i * 32, 64 + i * 32);
    const name = names[e.subarray(0, 16).toString('hex')] ?? `item${i}`;
    items.set(name, { entry: md.offset + 32 + i * 32, offset: e.readUInt32LE(16), length: e.readUInt32LE(20), abs: md.offset + e.readUInt32LE(16) });
  }
  return { bat, md, items };
}

async function pokeBat(p: string, index: number, value: bigint): Promise<void> {
  const { bat } = await layout(p);
  await poke(p, bat.offset + index * 8, u64le(value));
}

async function batValue(p: string, index: number): Promise<bigint> {
  const { bat } = await layout(p);
  return (await readAt(p, bat.offset + index * 8, 8)).readBigUInt64LE(0);
}

/** the pending image's log: the header's LogGuid is set; entries at 0 and 8192 of the log */
const LOG = MiB;

interface Case {
  name: string;
  from?: () => string;
  damage: (path: string) => Promise<void> | void;
  code: ErrorCode;
  field?: string | RegExp;
  message?: RegExp;
  opts?: Record<string, unknown>;
}

const CASES: Case[] = [
  // ---- file type identifier
  { name: 'no "vhdxfile" signature', damage: (p) => poke(p, 0, Buffer.from('vhdxfilX')), code: 'INVALIDDISK', field: 'signature' },
  { name: 'empty file', damage: (p) => truncateSync(p, 0), code: 'INVALIDDISK', field: 'signature' },
  { name: 'truncated inside the header section', damage: (p) => truncateSync(p, 300 * 1024), code: 'CORRUPT', field: 'length', message: /too short/ },
  // ---- headers
  { name: 'both headers: checksum wrong', damage: (p) => pokeHeader(p, 4, u32le(0x12345678), { keepChecksum: true }), code: 'CORRUPT', field: 'checksum', message: /neither header is valid/ },
  { name: 'both headers: a byte changed, checksum not', damage: (p) => pokeHeader(p, 2000, Buffer.from([1]), { keepChecksum: true }), code: 'CORRUPT', field: 'checksum' },
  { name: 'both headers: bad signature', damage: (p) => pokeHeader(p, 0, Buffer.from('HEAD')), code: 'CORRUPT', field: 'signature' },
  { name: 'both headers: version 2', damage: (p) => pokeHeader(p, 66, u16le(2)), code: 'UNSUPPORTEDDISKVERSION', field: 'version' },
  {
    name: 'equal sequence numbers, different contents',
    damage: async (p) => {
      const seq = (await readAt(p, H[await currentSlot(p)]!, 16)).subarray(8, 16);
      await pokeHeader(p, 8, seq);
      await pokeHeader(p, 16, Buffer.alloc(16, 0x42), { slots: [0] });
    },
    code: 'CORRUPT',
    field: 'sequenceNumber',
  },
  { name: 'log version 1', damage: (p) => pokeHeader(p, 64, u16le(1)), code: 'UNSUPPORTEDDISKVERSION', field: 'logVersion' },
  { name: 'log length not a MiB multiple', damage: (p) => pokeHeader(p, 68, u32le(MiB + 4096)), code: 'CORRUPT', field: 'logLength' },
  { name: 'log offset misaligned', damage: (p) => pokeHeader(p, 72, u64le(BigInt(MiB + 4096))), code: 'CORRUPT', field: 'logOffset' },
  { name: 'log offset inside the header section', damage: (p) => pokeHeader(p, 72, u64le(0n)), code: 'CORRUPT', field: 'logOffset' },
  { name: 'log past the end of the file', damage: (p) => pokeHeader(p, 72, u64le(1n << 40n)), code: 'CORRUPT', field: 'logOffset', message: /past the end/ },
  { name: 'log offset 2^62 (not a safe integer)', damage: (p) => pokeHeader(p, 72, u64le(2n ** 62n)), code: 'CORRUPT', field: 'logOffset' },
  // ---- the log (the pending image: entry 1 applied, entry 2 not)
  {
    name: 'log: the active sequence broken (the head needs an entry whose CRC is bad)',
    from: () => pending,
    damage: async (p) => {
      // entry 2 (at 8192) claims entry 1 (at 0) as its tail; entry 1 damaged
      const e2 = await readAt(p, LOG + 8192, 8192);
      e2.writeUInt32LE(0, 12);
      await poke(p, LOG + 8192, recrc(e2));
      await poke(p, LOG + 4096 + 100, Buffer.from([0xee]));
    },
    code: 'CORRUPT',
    field: 'log',
    message: /no complete sequence/,
  },
  { name: 'log: file shorter than FlushedFileOffset (truncated after the log was written)', from: () => pending, damage: async (p) => truncateSync(p, statSync(p).size - MiB), code: 'CORRUPT', field: 'flushedFileOffset' },
  {
    name: 'log: a descriptor writing past LastFileOffset',
    from: () => pending,
    damage: async (p) => {
      const e2 = await readAt(p, LOG + 8192, 8192);
      e2.writeBigUInt64LE(1n << 40n, 64 + 16);
      await poke(p, LOG + 8192, recrc(e2));
    },
    code: 'CORRUPT',
    field: 'descriptor[0].fileOffset',
  },
  {
    name: 'log: longer than 32 MiB',
    from: () => pending,
    damage: async (p) => {
      truncateSync(p, 64 * MiB);
      await pokeHeader(p, 68, u32le(40 * MiB), { slots: [await currentSlot(p)] });
    },
    code: 'UNSUPPORTEDFEATURE',
    field: 'logLength',
  },
  // ---- region tables
  { name: 'both region tables: checksum wrong', damage: (p) => pokeRegions(p, 4, u32le(1), { keepChecksum: true }), code: 'CORRUPT', field: 'checksum', message: /region table checksum/ },
  { name: 'both region tables: bad signature', damage: (p) => pokeRegions(p, 0, Buffer.from('REGI')), code: 'CORRUPT', field: 'signature' },
  { name: 'region table entry count 3000', damage: (p) => pokeRegions(p, 8, u32le(3000)), code: 'CORRUPT', field: 'entryCount' },
  { name: 'metadata region past the end of the file', damage: (p) => pokeRegions(p, 48 + 16, u64le(1n << 30n)), code: 'CORRUPT', field: 'regionTable[1].fileOffset', message: /past the end/ },
  { name: 'regions overlapping each other', damage: (p) => pokeRegions(p, 48 + 16, u64le(BigInt(2 * MiB))), code: 'CORRUPT', field: 'regionTable[1].fileOffset', message: /overlaps the BAT region/ },
  { name: 'a region over the log', damage: (p) => pokeRegions(p, 16 + 16, u64le(BigInt(MiB))), code: 'CORRUPT', field: 'regionTable[0].fileOffset', message: /overlaps the log/ },
  { name: 'a region offset not MiB aligned', damage: (p) => pokeRegions(p, 16 + 16, u64le(BigInt(2 * MiB + 4096))), code: 'CORRUPT', field: 'regionTable[0].fileOffset' },
  { name: 'a region of length 0', damage: (p) => pokeRegions(p, 16 + 24, u32le(0)), code: 'CORRUPT', field: 'regionTable[0].length' },
  { name: 'a region offset 2^63 (not a safe integer)', damage: (p) => pokeRegions(p, 16 + 16, u64le(2n ** 63n)), code: 'CORRUPT', field: 'regionTable[0].fileOffset' },
  {
    name: 'an unknown required region',
    damage: async (p) => {
      const e = Buffer.alloc(32);
      e.fill(0x77, 0, 16);
      e.writeBigUInt64LE(BigInt(6 * MiB), 16);
      e.writeUInt32LE(MiB, 24);
      e.writeUInt32LE(1, 28);
      await pokeRegions(p, 80, e);
      await pokeRegions(p, 8, u32le(3));
    },
    code: 'UNSUPPORTEDFEATURE',
    field: 'regionTable[2].guid',
  },
  { name: 'no BAT region', damage: (p) => pokeRegions(p, 16, Buffer.alloc(16, 0x11)), code: 'UNSUPPORTEDFEATURE', field: 'regionTable[0].guid' },
  {
    name: 'no BAT region (the entry unknown and not required)',
    damage: async (p) => {
      await pokeRegions(p, 16, Buffer.alloc(16, 0x11));
      await pokeRegions(p, 16 + 28, u32le(0));
    },
    code: 'CORRUPT',
    field: 'BAT',
  },
  // ---- metadata table and items
  { name: 'metadata table signature', damage: async (p) => poke(p, (await layout(p)).md.offset, Buffer.from('metaXXXX')), code: 'CORRUPT', field: 'signature' },
  { name: 'metadata table entry count 3000', damage: async (p) => poke(p, (await layout(p)).md.offset + 10, u16le(3000)), code: 'CORRUPT', field: 'entryCount' },
  { name: 'an item past the end of the metadata region', damage: async (p) => poke(p, (await layout(p)).items.get('virtualDiskSize')!.entry + 16, u32le(MiB - 4)), code: 'CORRUPT', field: 'virtualDiskSize.offset', message: /outside the metadata region/ },
  { name: 'an item longer than 1 MiB', damage: async (p) => poke(p, (await layout(p)).items.get('virtualDiskSize')!.entry + 20, u32le(2 * MiB)), code: 'CORRUPT', field: 'virtualDiskSize.length' },
  { name: 'an item inside the metadata table', damage: async (p) => poke(p, (await layout(p)).items.get('virtualDiskSize')!.entry + 16, u32le(100)), code: 'CORRUPT', field: 'virtualDiskSize.offset' },
  { name: 'two items overlapping', damage: async (p) => poke(p, (await layout(p)).items.get('virtualDiskSize')!.entry + 16, u32le(65536 + 4)), code: 'CORRUPT', field: 'virtualDiskSize.offset', message: /overlaps fileParameters/ },
  {
    name: 'a required item missing (its entry now an unknown optional item)',
    damage: async (p) => {
      const e = (await layout(p)).items.get('logicalSectorSize')!.entry;
      await poke(p, e, Buffer.alloc(16, 0x55));
      await poke(p, e + 24, u32le(0));
    },
    code: 'CORRUPT',
    field: 'logicalSectorSize',
    message: /missing/,
  },
  {
    name: 'an unknown required item',
    damage: async (p) => {
      const e = (await layout(p)).items.get('logicalSectorSize')!.entry;
      await poke(p, e, Buffer.alloc(16, 0x55));
      await poke(p, e + 24, u32le(4));
    },
    code: 'UNSUPPORTEDFEATURE',
    field: 'metadataTable[3].itemId',
  },
  { name: 'block size 3 MiB (not a power of two)', damage: async (p) => poke(p, (await layout(p)).items.get('fileParameters')!.abs, u32le(3 * MiB)), code: 'CORRUPT', field: 'blockSize' },
  { name: 'block size 512 KiB', damage: async (p) => poke(p, (await layout(p)).items.get('fileParameters')!.abs, u32le(MiB / 2)), code: 'CORRUPT', field: 'blockSize' },
  { name: 'block size 512 MiB', damage: async (p) => poke(p, (await layout(p)).items.get('fileParameters')!.abs, u32le(512 * MiB)), code: 'CORRUPT', field: 'blockSize' },
  { name: 'virtual size 0', damage: async (p) => poke(p, (await layout(p)).items.get('virtualDiskSize')!.abs, u64le(0n)), code: 'CORRUPT', field: 'virtualDiskSize' },
  { name: 'virtual size 65 TiB', damage: async (p) => poke(p, (await layout(p)).items.get('virtualDiskSize')!.abs, u64le(65n * 2n ** 40n)), code: 'CORRUPT', field: 'virtualDiskSize', message: /64 TiB/ },
  { name: 'virtual size 2^63', damage: async (p) => poke(p, (await layout(p)).items.get('virtualDiskSize')!.abs, u64le(2n ** 63n)), code: 'CORRUPT', field: 'virtualDiskSize' },
  { name: 'virtual size not whole sectors', damage: async (p) => poke(p, (await layout(p)).items.get('virtualDiskSize')!.abs, u64le(BigInt(CAPACITY - 100))), code: 'CORRUPT', field: 'virtualDiskSize' },
  { name: 'logical sector size 1024', damage: async (p) => poke(p, (await layout(p)).items.get('logicalSectorSize')!.abs, u32le(1024)), code: 'CORRUPT', field: 'logicalSectorSize' },
  { name: 'physical sector size 100', damage: async (p) => poke(p, (await layout(p)).items.get('physicalSectorSize')!.abs, u32le(100)), code: 'CORRUPT', field: 'physicalSectorSize' },
  { name: 'HasParent without a parent locator', damage: async (p) => poke(p, (await layout(p)).items.get('fileParameters')!.abs + 4, u32le(2)), code: 'CORRUPT', field: 'parentLocator', message: /missing/ },
  // ---- BAT (base: 1 MiB blocks, chunk ratio 4096: payload block n at BAT index n; blocks 0, 20, 40 allocated)
  { name: 'BAT larger than its region (200 GiB with 1 MiB blocks)', damage: async (p) => poke(p, (await layout(p)).items.get('virtualDiskSize')!.abs, u64le(200n * 2n ** 30n)), code: 'CORRUPT', field: 'BAT.length' },
  { name: 'a block past the end of the file', damage: (p) => pokeBat(p, 5, (1000n << 20n) | 6n), code: 'CORRUPT', field: 'BAT[5]', message: /past the end/ },
  { name: 'a block in the header section', damage: (p) => pokeBat(p, 5, 6n), code: 'CORRUPT', field: 'BAT[5]', message: /header section/ },
  { name: 'a block offset of 2^63', damage: (p) => pokeBat(p, 5, (2n ** 63n) | 6n), code: 'CORRUPT', field: 'BAT[5]' },
  { name: 'two blocks at the same offset', damage: async (p) => pokeBat(p, 20, await batValue(p, 0)), code: 'CORRUPT', field: /^BAT\[(0|20)\]$/, message: /overlaps the block of/ },
  { name: 'a block over the metadata region', damage: (p) => pokeBat(p, 20, (3n << 20n) | 6n), code: 'CORRUPT', field: 'BAT[20]', message: /metadata region/ },
  { name: 'a block over the log', damage: (p) => pokeBat(p, 20, (1n << 20n) | 6n), code: 'CORRUPT', field: 'BAT[20]', message: /the log/ },
  { name: 'payload state 4', damage: (p) => pokeBat(p, 7, 4n), code: 'CORRUPT', field: 'BAT[7]', message: /invalid payload block state/ },
  { name: 'PARTIALLY_PRESENT in a dynamic image', damage: async (p) => pokeBat(p, 0, ((await batValue(p, 0)) & ~7n) | 7n), code: 'CORRUPT', field: 'BAT[0]' },
  {
    name: 'every entry names a block inside the file: more blocks than fit (counted before sorting)',
    damage: async (p) => {
      const v = await batValue(p, 0);
      const { bat } = await layout(p);
      const all = Buffer.alloc(64 * 8);
      for (let i = 0; i < 64; i++) all.writeBigUInt64LE(v, i * 8);
      await poke(p, bat.offset, all);
    },
    code: 'CORRUPT',
    field: 'BAT',
    message: /more blocks than fit/,
  },
  // ---- the differencing child (2 MiB blocks, chunk ratio 2048: the sector bitmap entry is BAT[2048])
  { name: 'sector bitmap state 3', from: () => child, damage: (p) => pokeBat(p, 2048, 3n), code: 'CORRUPT', field: 'BAT[2048]', message: /sector bitmap block state/ },
  { name: 'a partially present block without its sector bitmap', from: () => child, damage: (p) => pokeBat(p, 2048, 0n), code: 'CORRUPT', field: 'BAT[0]', message: /no sector bitmap/ },
  { name: 'a sector bitmap block past the end', from: () => child, damage: (p) => pokeBat(p, 2048, (4096n << 20n) | 6n), code: 'CORRUPT', field: 'BAT[2048]' },
  { name: 'parent locator: 5000 key/value pairs', from: () => child, damage: async (p) => poke(p, (await layout(p)).items.get('parentLocator')!.abs + 18, u16le(5000)), code: 'CORRUPT', field: 'parentLocator.keyValueCount' },
  { name: 'parent locator: a value 65534 bytes long', from: () => child, damage: async (p) => poke(p, (await layout(p)).items.get('parentLocator')!.abs + 20 + 10, u16le(0xfffe)), code: 'CORRUPT', field: 'parentLocator.entry[0].valueOffset' },
  { name: 'parent locator: a key offset past the item', from: () => child, damage: async (p) => poke(p, (await layout(p)).items.get('parentLocator')!.abs + 20, u32le(0xfffffff0)), code: 'CORRUPT', field: 'parentLocator.entry[0].keyOffset' },
  { name: 'parent locator: item shorter than its header', from: () => child, damage: async (p) => poke(p, (await layout(p)).items.get('parentLocator')!.entry + 20, u32le(10)), code: 'CORRUPT', field: 'parentLocator.length' },
  {
    name: 'parent locator: no parent_linkage',
    from: () => child,
    damage: async (p) => {
      const at = (await layout(p)).items.get('parentLocator')!.abs;
      await poke(p, at + 56, Buffer.from('X', 'utf16le')); // first key "parent_linkage" -> "Xarent_linkage"
    },
    code: 'CORRUPT',
    field: 'parent_linkage',
    message: /no parent_linkage/,
  },
  {
    name: 'parent locator: parent_linkage is not a GUID',
    from: () => child,
    damage: async (p) => {
      const at = (await layout(p)).items.get('parentLocator')!.abs;
      await poke(p, at + 56 + 28 + 2, Buffer.from('zz', 'utf16le'));
    },
    code: 'CORRUPT',
    field: 'parent_linkage',
    message: /not a GUID/,
  },
  { name: 'parent locator: an unknown locator type', from: () => child, damage: async (p) => poke(p, (await layout(p)).items.get('parentLocator')!.abs, Buffer.alloc(16, 0x99)), code: 'UNSUPPORTEDFEATURE', field: 'parentLocator.locatorType' },
  { name: "untrusted: a relative_path that leaves the child's folder", from: () => child, damage: () => {}, code: 'EXTERNALEXTENT', field: 'parent hint', opts: { singleLink: false, untrusted: true } },
];

for (const c of CASES) {
  test(`refused: ${c.name} -> ${c.code}${c.field ? ` (${c.field})` : ''}`, async () => {
    const p = copy(c.from?.() ?? base);
    await c.damage(p);
    const before = sha(p);
    const opts = { readOnly: true, singleLink: true, format: 'vhdx', ...(c.opts ?? {}) };
    await expectFailure(() => Disk.open(p, opts), { code: c.code, path: p, field: c.field, message: c.message });
    assert.equal(sha(p), before, 'a refused open leaves the file as it was');
  });
}

test('refused read-write too, without writing (the session header is written only after every check)', async () => {
  const p = copy(base);
  await pokeBat(p, 5, (1000n << 20n) | 6n);
  const before = sha(p);
  await expectFailure(() => Disk.open(p, { format: 'vhdx', singleLink: true }), { code: 'CORRUPT', path: p, field: 'BAT[5]' });
  assert.equal(sha(p), before);
});

test('fallback: a damaged current header -> the other copy; check warns; a read-write open rewrites it', async () => {
  const p = copy(base);
  const cur = await currentSlot(p);
  await poke(p, H[cur]! + 1000, Buffer.from([0xff]));
  const d = await Disk.open(p, { readOnly: true });
  assert.deepEqual(await d.read(20 * MiB, 65536), A);
  const f = (await d.image.maintenance().check!({ repair: false })).findings;
  assert.ok(f.some((x) => x.kind === 'warning' && x.struct === 'header' && x.field === 'checksum'), JSON.stringify(f));
  await d.close();
  await (await Disk.open(p)).close();
  const a = await readAt(p, H[0]!, 4096);
  const b = await readAt(p, H[1]!, 4096);
  const ok = (h: Buffer) => {
    const z = Buffer.from(h);
    z.fill(0, 4, 8);
    return crc32c(z) === h.readUInt32LE(4);
  };
  assert.ok(ok(a) && ok(b), 'both headers valid again');
});

test('fallback: a damaged first region table -> the second; a read-write open rewrites the first', async () => {
  const p = copy(base);
  await pokeRegions(p, 30000, Buffer.from([1]), { tables: [0], keepChecksum: true });
  const d = await Disk.open(p, { readOnly: true });
  assert.deepEqual(await d.read(40 * MiB + 512, 1000), A.subarray(0, 1000));
  const f = (await d.image.maintenance().check!({ repair: false })).findings;
  assert.ok(f.some((x) => x.struct === 'regionTable' && x.field === 'checksum' && !x.repaired), JSON.stringify(f));
  await d.close();
  await (await Disk.open(p)).close();
  assert.deepEqual(await readAt(p, RT[0]!, 65536), await readAt(p, RT[1]!, 65536), 'rewritten from the good copy');
});

test('a torn last log entry (bad CRC) is not replayed: the image opens with what was applied before', async () => {
  const p = copy(pending);
  await poke(p, LOG + 8192 + 4096 + 7, Buffer.from([0x01]));
  const d = await Disk.open(p, { readOnly: true });
  assert.deepEqual(await d.read(0, 65536), A, 'the first (applied) entry');
  assert.deepEqual(await d.read(5 * MiB, 65536), Buffer.alloc(65536), 'the torn entry is not replayed');
  await d.close();
  // and the intact pending image replays its second entry
  const q = await Disk.open(copy(pending), { readOnly: true });
  assert.deepEqual(await q.read(5 * MiB, 65536), A);
  await q.close();
});
