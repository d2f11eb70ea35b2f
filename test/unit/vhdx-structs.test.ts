/**
 * VHDX on-disk structures and arithmetic (src/formats/vhdx/structs.ts, log.ts) and CRC-32C
 * (src/binary/crc32c.ts) against vhd.md part 2: CRC-32C test vectors (the "123456789" check
 * value and RFC 3720's iSCSI vectors), checksums of golden bytes from the Hyper-V sample
 * (iotest-dynamic-1G.vhdx: header 1 and region table 1, hex below), field offsets of every
 * struct (§16.1-§16.6), GUIDs in Microsoft layout, the BAT arithmetic (chunk ratio, entry
 * indexes and counts, §16.4), QEMU's default block sizes (§17), the parent locator codec with
 * its bounds checks, sector-bitmap runs (least significant bit first), and the log: entries a
 * LogWriter writes are found by scanLog, a bad CRC or a sequence gap stops the active sequence
 * at the last valid entry, and a broken sequence is refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32c, crc32cWithZeroField } from '../../src/binary/crc32c.js';
import { DiskError } from '../../src/index.js';
import { MemoryStore } from '../../src/storage/memory.js';
import { sectorRuns } from '../../src/formats/vhdx/layout.js';
import { LogOverlayStore, LogWriter, replayOf, scanLog } from '../../src/formats/vhdx/log.js';
import { guidFromIdentity, guidFromText, guidText, normalizeGuidText } from '../../src/binary/guid.js';
import {
  FileParameters,
  GUIDS,
  Header,
  IDENTITY_LABEL,
  LogDataDescriptor,
  LogDataSector,
  LogEntryHeader,
  LogZeroDescriptor,
  MetadataTableEntry,
  MetadataTableHeader,
  MiB,
  ParentLocatorEntry,
  ParentLocatorHeader,
  RegionTableEntry,
  RegionTableHeader,
  batEntry,
  batEntryCount,
  bitmapIndex,
  chunkRatio,
  decodeParentLocator,
  defaultBlockSize,
  descriptorSectors,
  encodeParentLocator,
  payloadIndex,
  vhdxChecksum,
} from '../../src/formats/vhdx/structs.js';

const golden = (hex: string, len: number) => {
  const b = Buffer.alloc(len);
  Buffer.from(hex.replace(/\s+/g, ''), 'hex').copy(b);
  return b;
};

// iotest-dynamic-1G.vhdx (Hyper-V, Windows 8): header 1 (first 80 bytes; the rest of the 4 KiB is zero)
const HYPERV_HEADER = golden(
  `68656164 18bbfa37 0e00000000000000 6dea908e36b6491cb7d435109e600c0c b2cb47d2b6154b409133790733d694c0
   00000000000000000000000000000000 0000 0100 00001000 0000100000000000`,
  4096,
);
// ... and region table 1 (first 80 bytes of 64 KiB): BAT @3 MiB, metadata @2 MiB, both Required
const HYPERV_REGIONS = golden(
  `72656769 ae8c6bc6 02000000 00000000
   6677c22d23f600429d64115e9bfd4a08 0000300000000000 00001000 01000000
   06a27c8b90479a4bb8fe575f050f886e 0000200000000000 00001000 01000000`,
  65536,
);

test('CRC-32C: the check value and the RFC 3720 (iSCSI) vectors', () => {
  assert.equal(crc32c(Buffer.from('123456789', 'ascii')), 0xe3069283);
  assert.equal(crc32c(Buffer.alloc(0)), 0);
  assert.equal(crc32c(Buffer.alloc(32, 0)), 0x8a9136aa);
  assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
  assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e);
  assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i))), 0x113fdb5c);
});

test('CRC-32C: pieces chain, every length and alignment agrees with a bitwise reference', () => {
  const ref = (b: Buffer) => {
    let c = 0xffffffff;
    for (const x of b) {
      c ^= x;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    }
    return ~c >>> 0;
  };
  const data = Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 151 + 7) & 0xff));
  for (let len = 0; len <= 40; len++) for (const at of [0, 1, 3, 7]) assert.equal(crc32c(data.subarray(at, at + len)), ref(data.subarray(at, at + len)), `len ${len} at ${at}`);
  assert.equal(crc32c(data), ref(data));
  assert.equal(crc32c(data.subarray(123), crc32c(data.subarray(0, 123))), crc32c(data));
  const withField = Buffer.from(data);
  withField.writeUInt32LE(0xdeadbeef, 4);
  const zeroed = Buffer.from(withField);
  zeroed.fill(0, 4, 8);
  assert.equal(crc32cWithZeroField(withField, 4), crc32c(zeroed));
});

test('checksums of real Hyper-V structures: header (4 KiB) and region table (64 KiB)', () => {
  assert.equal(vhdxChecksum(HYPERV_HEADER), HYPERV_HEADER.readUInt32LE(4));
  assert.equal(vhdxChecksum(HYPERV_REGIONS), HYPERV_REGIONS.readUInt32LE(4));
  const h = Header.decode(HYPERV_HEADER);
  assert.equal(h.signature, 'head');
  assert.equal(h.sequenceNumber, 14n);
  assert.equal(guidText(h.dataWriteGuid, 'le'), 'd247cbb2-15b6-404b-9133-790733d694c0', 'the identifier vhdiinfo prints');
  assert.equal(h.logVersion, 0);
  assert.equal(h.version, 1);
  assert.equal(h.logLength, MiB);
  assert.equal(h.logOffset, BigInt(MiB));
  const rt = RegionTableHeader.decode(HYPERV_REGIONS);
  assert.equal(rt.entryCount, 2);
  const bat = RegionTableEntry.decode(HYPERV_REGIONS, 16);
  assert.equal(guidText(bat.guid, 'le'), GUIDS.BAT_REGION);
  assert.equal(bat.fileOffset, BigInt(3 * MiB));
  assert.equal(bat.flags, 1);
  assert.equal(guidText(RegionTableEntry.decode(HYPERV_REGIONS, 48).guid, 'le'), GUIDS.METADATA_REGION);
  // one flipped bit anywhere in the 4 KiB breaks the header checksum
  const bad = Buffer.from(HYPERV_HEADER);
  bad[4000] ^= 1;
  assert.notEqual(vhdxChecksum(bad), bad.readUInt32LE(4));
});

test('field offsets are those of vhd.md §16', () => {
  const check = (s: { offsetOf(f: string): number; size: number }, size: number, want: [string, number][]) => {
    assert.equal(s.size, size);
    for (const [f, o] of want) assert.equal(s.offsetOf(f), o, f);
  };
  check(Header as never, 4096, [
    ['signature', 0],
    ['checksum', 4],
    ['sequenceNumber', 8],
    ['fileWriteGuid', 16],
    ['dataWriteGuid', 32],
    ['logGuid', 48],
    ['logVersion', 64],
    ['version', 66],
    ['logLength', 68],
    ['logOffset', 72],
  ]);
  check(RegionTableHeader as never, 16, [
    ['signature', 0],
    ['checksum', 4],
    ['entryCount', 8],
  ]);
  check(RegionTableEntry as never, 32, [
    ['guid', 0],
    ['fileOffset', 16],
    ['length', 24],
    ['flags', 28],
  ]);
  check(MetadataTableHeader as never, 32, [
    ['signature', 0],
    ['entryCount', 10],
  ]);
  check(MetadataTableEntry as never, 32, [
    ['itemId', 0],
    ['offset', 16],
    ['length', 20],
    ['flags', 24],
  ]);
  check(FileParameters as never, 8, [
    ['blockSize', 0],
    ['flags', 4],
  ]);
  check(ParentLocatorHeader as never, 20, [
    ['locatorType', 0],
    ['keyValueCount', 18],
  ]);
  check(ParentLocatorEntry as never, 12, [
    ['keyOffset', 0],
    ['valueOffset', 4],
    ['keyLength', 8],
    ['valueLength', 10],
  ]);
  check(LogEntryHeader as never, 64, [
    ['signature', 0],
    ['checksum', 4],
    ['entryLength', 8],
    ['tail', 12],
    ['sequenceNumber', 16],
    ['descriptorCount', 24],
    ['logGuid', 32],
    ['flushedFileOffset', 48],
    ['lastFileOffset', 56],
  ]);
  check(LogDataDescriptor as never, 32, [
    ['trailingBytes', 4],
    ['leadingBytes', 8],
    ['fileOffset', 16],
    ['sequenceNumber', 24],
  ]);
  check(LogZeroDescriptor as never, 32, [
    ['zeroLength', 8],
    ['fileOffset', 16],
    ['sequenceNumber', 24],
  ]);
  check(LogDataSector as never, 4096, [
    ['sequenceHigh', 4],
    ['data', 8],
    ['sequenceLow', 4092],
  ]);
  assert.deepEqual([1, 126, 127, 254, 255].map(descriptorSectors), [1, 1, 2, 2, 3], '126 descriptors share the first sector with the header, then 128 per sector');
});

test('GUIDs in Microsoft layout: text <-> bytes, braces and case, name-based identities', () => {
  const b = guidFromText(GUIDS.BAT_REGION, 'le')!;
  assert.equal(b.toString('hex'), '6677c22d23f600429d64115e9bfd4a08', 'u32 LE, u16 LE, u16 LE, 8 bytes as is');
  assert.equal(guidText(b, 'le'), GUIDS.BAT_REGION);
  assert.deepEqual(guidFromText('{2DC27766-F623-4200-9D64-115E9BFD4A08}', 'le'), b);
  assert.equal(normalizeGuidText('{2DC27766-F623-4200-9D64-115E9BFD4A08}'), GUIDS.BAT_REGION);
  assert.equal(guidFromText('not a guid', 'le'), undefined);
  assert.equal(guidText(guidFromIdentity(GUIDS.METADATA_REGION, 'le', IDENTITY_LABEL), 'le'), GUIDS.METADATA_REGION, 'GUID text is used as it is');
  const named = guidText(guidFromIdentity('abcd1234', 'le', IDENTITY_LABEL), 'le');
  assert.equal(named, guidText(guidFromIdentity('ABCD1234', 'le', IDENTITY_LABEL), 'le'), 'the same text gives the same GUID');
  assert.notEqual(named, guidText(guidFromIdentity('abcd1235', 'le', IDENTITY_LABEL), 'le'));
  assert.equal(named, '89c4d5ad-f1dc-5e40-a4e7-b3628348a56c', 'the GUID earlier releases derived: a child created then still names its parent');
  assert.match(named, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'version 5, RFC variant');
});

test('BAT arithmetic (§16.4): chunk ratio, payload and bitmap indexes, entry counts, entries', () => {
  assert.equal(chunkRatio(512, 8 * MiB), 512);
  assert.equal(chunkRatio(512, 32 * MiB), 128);
  assert.equal(chunkRatio(512, MiB), 4096);
  assert.equal(chunkRatio(512, 256 * MiB), 16);
  assert.equal(chunkRatio(4096, MiB), 32768);
  const cr = 128;
  assert.deepEqual([0, 127, 128, 255, 256].map((n) => payloadIndex(n, cr)), [0, 127, 129, 256, 258]);
  assert.deepEqual([0, 1, 2].map((k) => bitmapIndex(k, cr)), [128, 257, 386]);
  // non-differencing: D + floor((D-1)/CR); differencing: ceil(D/CR)*(CR+1)
  assert.equal(batEntryCount(1, cr, false), 1);
  assert.equal(batEntryCount(128, cr, false), 128);
  assert.equal(batEntryCount(129, cr, false), 130);
  assert.equal(batEntryCount(32, 128, false), 32, '1 GiB with 32 MiB blocks (the Hyper-V sample)');
  assert.equal(batEntryCount(1, cr, true), 129);
  assert.equal(batEntryCount(128, cr, true), 129);
  assert.equal(batEntryCount(129, cr, true), 258);
  assert.equal(batEntry(6, 8), 0x800006n);
  assert.equal(batEntry(2, 0), 2n);
});

test("QEMU's default block sizes (§17)", () => {
  assert.equal(defaultBlockSize(64 * MiB), 8 * MiB);
  assert.equal(defaultBlockSize(1024 * MiB), 8 * MiB);
  assert.equal(defaultBlockSize(1024 * MiB + 512), 16 * MiB);
  assert.equal(defaultBlockSize(100 * 1024 * MiB), 16 * MiB);
  assert.equal(defaultBlockSize(101 * 1024 * MiB), 32 * MiB);
  assert.equal(defaultBlockSize(33 * 2 ** 40), 64 * MiB);
});

test('parent locator: round trip, UTF-16LE without terminators, bounds checks', () => {
  const item = encodeParentLocator([
    ['parent_linkage', '{2dc27766-f623-4200-9d64-115e9bfd4a08}'],
    ['relative_path', '..\\b\\bäse.vhdx'],
  ]);
  const h = ParentLocatorHeader.decode(item);
  assert.equal(guidText(h.locatorType, 'le'), GUIDS.VHDX_PARENT_LOCATOR_TYPE);
  assert.equal(h.keyValueCount, 2);
  const e0 = ParentLocatorEntry.decode(item, 20);
  assert.equal(e0.keyOffset, 20 + 2 * 12, 'strings follow the entry table');
  assert.equal(item.toString('utf16le', e0.keyOffset, e0.keyOffset + e0.keyLength), 'parent_linkage');
  const back = decodeParentLocator(item, 'x.vhdx');
  assert.equal(back.entries.get('relative_path'), '..\\b\\bäse.vhdx');
  assert.equal(back.entries.get('parent_linkage'), '{2dc27766-f623-4200-9d64-115e9bfd4a08}');
  const fails = (b: Buffer, field: RegExp) => assert.throws(() => decodeParentLocator(b, 'x.vhdx'), (e: DiskError) => e.code === 'CORRUPT' && field.test(String(e.details.field)) && e.details.path === 'x.vhdx');
  const tooMany = Buffer.from(item);
  tooMany.writeUInt16LE(5000, 18);
  fails(tooMany, /^parentLocator\.keyValueCount$/);
  const farValue = Buffer.from(item);
  farValue.writeUInt32LE(0xfffffff0, 20 + 4);
  fails(farValue, /^parentLocator\.entry\[0\]\.valueOffset$/);
  const oddLength = Buffer.from(item);
  oddLength.writeUInt16LE(3, 20 + 8);
  fails(oddLength, /^parentLocator\.entry\[0\]\.keyLength$/);
  fails(item.subarray(0, 10), /^parentLocator\.length$/);
});

test('sector bitmap runs: least significant bit first (the opposite of VHD)', () => {
  const bm = Buffer.from([0b00000001, 0xff, 0x00, 0b10000000]);
  assert.deepEqual(sectorRuns(bm, 0, 32), [
    [0, 1, true],
    [1, 8, false],
    [8, 16, true],
    [16, 31, false],
    [31, 32, true],
  ]);
  assert.deepEqual(sectorRuns(bm, 3, 10), [
    [3, 8, false],
    [8, 10, true],
  ]);
});

// ------------------------------------------------------------------ the log

const LOG = { offset: MiB, length: MiB };
const GUID = guidFromText('11111111-2222-3333-4444-555555555555', 'le')!;
const sector = (fill: number) => Buffer.alloc(4096, fill);

async function logWith(entries: [number, Buffer][][], fileSize = 8 * MiB): Promise<{ store: MemoryStore; log: Buffer }> {
  const store = new MemoryStore(fileSize);
  const w = new LogWriter(store, LOG.offset, LOG.length);
  for (const e of entries) await w.writeEntry(GUID, e, fileSize);
  return { store, log: await store.read(LOG.offset, LOG.length) };
}

test('log: entries a LogWriter writes form the active sequence; a foreign LogGuid is ignored', async () => {
  const { store, log } = await logWith([[[4 * MiB, sector(1)]], [[4 * MiB, sector(2)], [5 * MiB + 8192, sector(3)]]]);
  const scan = scanLog(log, GUID, 'x.vhdx');
  // each entry's tail is itself: the highest complete sequence is the last entry alone
  assert.deepEqual(scan.sequence.map((e) => e.seq), [2n]);
  assert.equal(scan.validEntries, 2);
  const first = LogEntryHeader.decode(log, 0);
  assert.equal(first.entryLength, 8192, 'header sector + one data sector');
  assert.equal(first.tail, 0);
  assert.equal(vhdxChecksum(log.subarray(0, 8192)), first.checksum, 'the CRC covers the whole entry');
  const r = replayOf(scan.sequence, 8 * MiB, LOG, 'x.vhdx');
  assert.deepEqual([...r.sectors.keys()], [4 * MiB, 5 * MiB + 8192]);
  assert.deepEqual(r.sectors.get(4 * MiB), sector(2), 'leading 8 and trailing 4 bytes travel in the descriptor');
  const overlay = new LogOverlayStore(store, r, 8 * MiB);
  assert.deepEqual(await overlay.read(4 * MiB - 10, 20), Buffer.concat([Buffer.alloc(10), Buffer.alloc(10, 2)]));
  await assert.rejects(overlay.write(), (e: DiskError) => e.code === 'RDONLY');
  assert.deepEqual(scanLog(log, guidFromText('99999999-2222-3333-4444-555555555555', 'le')!, 'x.vhdx').sequence, [], 'another LogGuid: nothing to replay');
});

test('log: a bad CRC or a sequence gap stops at the last valid sequence; a broken active sequence is refused', async () => {
  // three entries, each one sector + one data sector (8 KiB): at 0, 8192, 16384
  const { log } = await logWith([[[4 * MiB, sector(1)]], [[4 * MiB, sector(2)]], [[4 * MiB, sector(3)]]]);
  // entries 2 and 3 claim the tail at 0, as a writer with unapplied entries would
  const retail = (at: number, tail: number) => {
    log.writeUInt32LE(tail, at + 12);
    log.writeUInt32LE(vhdxChecksum(log.subarray(at, at + 8192)), at + 4);
  };
  retail(8192, 0);
  retail(16384, 0);
  assert.deepEqual(scanLog(log, GUID, 'x.vhdx').sequence.map((e) => e.seq), [1n, 2n, 3n], 'tail -> head, in order');
  // a torn last entry (bad CRC): the sequence ends at entry 2
  const torn = Buffer.from(log);
  torn[16384 + 4096 + 100] ^= 0xff;
  assert.deepEqual(scanLog(torn, GUID, 'x.vhdx').sequence.map((e) => e.seq), [1n, 2n]);
  // a gap: entry 3 renumbered 5
  const gap = Buffer.from(log);
  gap.writeBigUInt64LE(5n, 16384 + 16);
  gap.writeBigUInt64LE(5n, 16384 + 64 + 24);
  gap.writeUInt32LE(0, 16384 + 4096 + 4);
  gap.writeUInt32LE(5, 16384 + 4096 + 4092);
  gap.writeUInt32LE(vhdxChecksum(gap.subarray(16384, 16384 + 8192)), 16384 + 4);
  assert.deepEqual(scanLog(gap, GUID, 'x.vhdx').sequence.map((e) => e.seq), [1n, 2n]);
  // the first entry of the sequence damaged: valid entries remain but none forms a complete sequence
  const broken = Buffer.from(log);
  broken[4096 + 50] ^= 0xff;
  assert.throws(() => scanLog(broken, GUID, 'x.vhdx'), (e: DiskError) => e.code === 'CORRUPT' && e.details.field === 'log' && e.details.path === 'x.vhdx');
});

test('log: replay bounds — a truncated file, targets past the end, over the headers or the log', async () => {
  const entry = async (target: number) => scanLog((await logWith([[[target, sector(9)]]])).log, GUID, 'x.vhdx').sequence;
  const ok = await entry(4 * MiB);
  assert.throws(() => replayOf(ok, 4 * MiB, LOG, 'x.vhdx'), (e: DiskError) => e.code === 'CORRUPT' && e.details.field === 'flushedFileOffset');
  const past = await entry(64 * MiB);
  assert.throws(() => replayOf(past, 8 * MiB, LOG, 'x.vhdx'), (e: DiskError) => e.code === 'CORRUPT' && e.details.field === 'descriptor[0].fileOffset' && /past the end/.test(e.message));
  const headers = await entry(64 * 1024);
  assert.throws(() => replayOf(headers, 8 * MiB, LOG, 'x.vhdx'), (e: DiskError) => /over the headers/.test(e.message));
  const self = await entry(MiB + 8192);
  assert.throws(() => replayOf(self, 8 * MiB, LOG, 'x.vhdx'), (e: DiskError) => /over the log itself/.test(e.message));
});
