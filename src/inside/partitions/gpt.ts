/**
 * GPT (UEFI spec, chapter 5): a header at LBA 1 and its backup at the last LBA, each pointing at
 * an array of partition entries; the header and the array carry CRC-32s. The logical sector
 * size is not recorded anywhere, so both 512 and 4096 are tried (the header sits at byte 512 or
 * 4096). A damaged primary (bad signature, CRC, or fields) falls back to the backup with a
 * warning; a damaged backup beside a good primary is a warning only.
 *
 * Untrusted input: entry counts and sizes are capped (MAX_ENTRY_BYTES) before the array is read.
 */
import { DiskError } from '../../core/errors.js';
import { Struct, ascii, bytes, reserved, u32, u64 } from '../../binary/struct.js';
import { crc32 } from '../../binary/crc32.js';
import { guidFromText, guidText, isNullGuid, newGuid } from '../../binary/guid.js';
import type { ByteSource } from '../source.js';
import { warning, type InsideWarning, type Partition, type PartitionTable } from '../types.js';
import { layoutWarnings } from './check.js';
import { gptTypeName } from './type-names.js';

export const GptHeader = new Struct(
  'GPT header',
  'le',
  [
    { name: 'signature', type: ascii(8) },
    { name: 'revision', type: u32 },
    { name: 'headerSize', type: u32 },
    { name: 'headerCrc32', type: u32 },
    { name: 'reserved0', type: reserved(4) },
    { name: 'myLba', type: u64 },
    { name: 'alternateLba', type: u64 },
    { name: 'firstUsableLba', type: u64 },
    { name: 'lastUsableLba', type: u64 },
    { name: 'diskGuid', type: bytes(16) },
    { name: 'partitionEntryLba', type: u64 },
    { name: 'numberOfPartitionEntries', type: u32 },
    { name: 'sizeOfPartitionEntry', type: u32 },
    { name: 'partitionEntryArrayCrc32', type: u32 },
  ] as const,
  92,
);

export const GptEntry = new Struct(
  'GPT entry',
  'le',
  [
    { name: 'typeGuid', type: bytes(16) },
    { name: 'uniqueGuid', type: bytes(16) },
    { name: 'firstLba', type: u64 },
    { name: 'lastLba', type: u64 },
    { name: 'attributes', type: u64 },
    { name: 'name', type: bytes(72) },
  ] as const,
  128,
);

export const GPT_SIGNATURE = 'EFI PART';
/** the largest entry array read: 16384 entries of 256 bytes; sgdisk's default is 128 x 128 */
export const MAX_ENTRY_BYTES = 4 * 1024 * 1024;
export const SECTOR_SIZES = [512, 4096] as const;

type HeaderValue = ReturnType<typeof GptHeader.decode>;

interface GoodHeader {
  h: HeaderValue;
  entries: Buffer;
}

/** a header that passed every check, with its entry array; or the reason it did not */
type HeaderResult = GoodHeader | { bad: string; field: string; signature: boolean };

function lba(v: bigint, field: string, path?: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new DiskError('INVALIDPARTITIONTABLE', 'LBA too large', { path, struct: 'GPT header', field, found: v });
  return Number(v);
}

/** Read and check the header at sector `at` (and its entry array). */
async function readHeader(src: ByteSource, at: number, ss: number, path?: string): Promise<HeaderResult> {
  if ((at + 1) * ss > src.capacity || at < 0) return { bad: `sector ${at} is past the disk end`, field: 'myLba', signature: false };
  const sector = await src.read(at * ss, ss);
  const h = GptHeader.decode(sector);
  if (h.signature !== GPT_SIGNATURE) return { bad: 'no "EFI PART" signature', field: 'signature', signature: false };
  const fail = (bad: string, field: string): HeaderResult => ({ bad, field, signature: true });
  if (h.headerSize < 92 || h.headerSize > ss) return fail(`header size ${h.headerSize} is not in 92..${ss}`, 'headerSize');
  const copy = Buffer.from(sector.subarray(0, h.headerSize));
  copy.writeUInt32LE(0, GptHeader.offsetOf('headerCrc32'));
  if (crc32(copy) !== h.headerCrc32) return fail(`CRC-32 mismatch (stored 0x${h.headerCrc32.toString(16)}, computed 0x${crc32(copy).toString(16)})`, 'headerCrc32');
  if (h.myLba !== BigInt(at)) return fail(`says it is at LBA ${h.myLba}, read at ${at}`, 'myLba');
  const size = h.sizeOfPartitionEntry;
  if (size < 128 || size % 8 !== 0) return fail(`entry size ${size} is not a multiple of 8 of at least 128`, 'sizeOfPartitionEntry');
  const arrayBytes = h.numberOfPartitionEntries * size;
  if (arrayBytes > MAX_ENTRY_BYTES) return fail(`${h.numberOfPartitionEntries} entries of ${size} bytes is more than ${MAX_ENTRY_BYTES} bytes`, 'numberOfPartitionEntries');
  const sectors = src.capacity / ss;
  const first = lba(h.firstUsableLba, 'firstUsableLba', path);
  const last = lba(h.lastUsableLba, 'lastUsableLba', path);
  if (first > last + 1 || last >= sectors) return fail(`usable sectors ${first}..${last} do not fit a disk of ${sectors} sectors`, 'lastUsableLba');
  const arrayAt = lba(h.partitionEntryLba, 'partitionEntryLba', path);
  if (arrayAt * ss + arrayBytes > src.capacity || arrayAt < 1) return fail(`the entry array at LBA ${arrayAt} lies outside the disk`, 'partitionEntryLba');
  const entries = await src.read(arrayAt * ss, arrayBytes);
  if (crc32(entries) !== h.partitionEntryArrayCrc32) return fail(`entry array CRC-32 mismatch (stored 0x${h.partitionEntryArrayCrc32.toString(16)}, computed 0x${crc32(entries).toString(16)})`, 'partitionEntryArrayCrc32');
  return { h, entries };
}

const isGood = (r: HeaderResult): r is GoodHeader => 'h' in r;

export interface GptReadOptions {
  path?: string;
  /** what sector 0 holds, for the table's `mbr` field */
  mbr?: 'protective' | 'hybrid' | 'none';
}

/**
 * The GPT of `src`, or undefined when neither sector size shows a GPT header (primary or backup).
 * A header with the signature but no good copy at all is a DiskError naming the field that failed.
 */
export async function readGpt(src: ByteSource, opts: GptReadOptions = {}): Promise<{ table: PartitionTable; warnings: InsideWarning[] } | undefined> {
  let damaged: { bad: string; field: string; ss: number; which: string } | undefined;
  for (const ss of SECTOR_SIZES) {
    if (src.capacity < 3 * ss || src.capacity % ss !== 0) continue;
    const lastLba = src.capacity / ss - 1;
    const primary = await readHeader(src, 1, ss, opts.path);
    const backupAt = isGood(primary) ? lba(primary.h.alternateLba, 'alternateLba', opts.path) : lastLba;
    const backup = await readHeader(src, backupAt, ss, opts.path);
    const warnings: InsideWarning[] = [];
    let use: GoodHeader;
    let which: 'primary' | 'backup' = 'primary';
    if (isGood(primary)) {
      use = primary;
      if (!isGood(backup)) warnings.push(warning(`the backup header at LBA ${backupAt} is damaged: ${backup.bad}`, 'GPT backup header', backup.field));
      else if (!backup.entries.equals(primary.entries)) warnings.push(warning('the backup entry array differs from the primary', 'GPT backup header', 'partitionEntryArrayCrc32'));
    } else if (isGood(backup)) {
      use = backup;
      which = 'backup';
      warnings.push(warning(`the primary header is damaged (${primary.bad}): read from the backup at LBA ${backupAt}`, 'GPT header', primary.field));
    } else {
      if (primary.signature) damaged ??= { ...primary, ss, which: 'GPT header' };
      else if (backup.signature) damaged ??= { ...backup, ss, which: 'GPT backup header' };
      continue;
    }
    return { table: decodeTable(src, use, ss, which, opts, warnings), warnings };
  }
  if (damaged) {
    throw new DiskError('INVALIDPARTITIONTABLE', `no good GPT header (${damaged.bad}; the backup is damaged too)`, { path: opts.path, struct: damaged.which, field: damaged.field, sectorSize: damaged.ss });
  }
  return undefined;
}

function decodeTable(src: ByteSource, g: GoodHeader, ss: number, which: 'primary' | 'backup', opts: GptReadOptions, warnings: InsideWarning[]): PartitionTable {
  const { h, entries } = g;
  const first = Number(h.firstUsableLba);
  const last = Number(h.lastUsableLba);
  const parts: Partition[] = [];
  for (let i = 0; i < h.numberOfPartitionEntries; i++) {
    const at = i * h.sizeOfPartitionEntry;
    if (isNullGuid(entries, at)) continue;
    const e = GptEntry.decode(entries, at);
    const field = `entry[${i}]`;
    if (e.lastLba < e.firstLba) {
      warnings.push(warning(`entry ${i + 1} ends (LBA ${e.lastLba}) before it starts (LBA ${e.firstLba}): left out`, 'GPT entry', `${field}.lastLba`));
      continue;
    }
    if (e.lastLba > BigInt(Number.MAX_SAFE_INTEGER) / BigInt(ss)) {
      warnings.push(warning(`entry ${i + 1} ends at LBA ${e.lastLba}, far past any disk: left out`, 'GPT entry', `${field}.lastLba`));
      continue;
    }
    const firstLba = Number(e.firstLba);
    const lastLba = Number(e.lastLba);
    if (firstLba < first || lastLba > last) warnings.push(warning(`entry ${i + 1} (LBA ${firstLba}..${lastLba}) is outside the usable sectors ${first}..${last}`, 'GPT entry', `${field}.firstLba`));
    const nameRaw = e.name;
    let end = 0;
    while (end + 1 < nameRaw.length && (nameRaw[end] !== 0 || nameRaw[end + 1] !== 0)) end += 2;
    const type = guidText(e.typeGuid, 'le');
    parts.push({
      number: i + 1,
      kind: 'gpt',
      offset: firstLba * ss,
      length: (lastLba - firstLba + 1) * ss,
      type,
      typeName: gptTypeName(type),
      name: nameRaw.toString('utf16le', 0, end),
      uuid: guidText(e.uniqueGuid, 'le'),
      bootable: (e.attributes & 4n) !== 0n,
      attributes: e.attributes.toString(16).padStart(16, '0'),
    });
  }
  warnings.push(...layoutWarnings(parts, src.capacity, 'GPT entry', (p, end) => `entry[${p.number - 1}].${end ? 'lastLba' : 'firstLba'}`));
  return {
    scheme: 'gpt',
    sectorSize: ss,
    diskId: guidText(h.diskGuid, 'le'),
    partitions: parts,
    mbr: opts.mbr ?? 'none',
    header: which,
    firstUsable: first * ss,
    lastUsable: (last + 1) * ss - 1,
  };
}

/** sgdisk's, sfdisk's and mkimg's array: 128 entries of 128 bytes (16 KiB) */
export const DEFAULT_ENTRY_COUNT = 128;
const ENTRY_SIZE = GptEntry.size;
/** the UTF-16 code units of a partition name */
export const MAX_NAME_UNITS = 36;

/** Sectors the entry array takes, and the usable range it leaves on a disk of `totalSectors`. */
export function gptLayout(sectorSize: number, totalSectors: number, entryCount = DEFAULT_ENTRY_COUNT): { arraySectors: number; firstUsable: number; lastUsable: number } {
  const arraySectors = Math.ceil((entryCount * ENTRY_SIZE) / sectorSize);
  // LBA 0 protective MBR, LBA 1 header, then the array; at the end the backup array and header
  return { arraySectors, firstUsable: 2 + arraySectors, lastUsable: totalSectors - 2 - arraySectors };
}

export interface GptEntryInput {
  /** entry slot, 0-based (the partition number less one) */
  index: number;
  /** type GUID text */
  type: string;
  /** unique partition GUID text (default: a random one) */
  uuid?: string;
  firstLba: number;
  lastLba: number;
  attributes?: bigint;
  /** up to 36 UTF-16 code units */
  name?: string;
}

export interface GptEncodeOptions {
  sectorSize: number;
  totalSectors: number;
  /** entries in the array (default 128, more when an index needs it) */
  entryCount?: number;
  /** disk GUID text (default: a random one) */
  diskGuid?: string;
  path?: string;
}

export interface EncodedGpt {
  /** LBA 1 onwards: the primary header sector and the entry array */
  primary: Buffer;
  /** from LBA `backupLba` to the last sector: the backup entry array and header */
  backup: Buffer;
  backupLba: number;
  firstUsable: number;
  lastUsable: number;
  diskGuid: string;
}

function guidBytes(text: string, path: string | undefined, struct: string, field: string): Buffer {
  const b = guidFromText(text, 'le');
  if (!b) throw new DiskError('INVAL', `${JSON.stringify(text)} is not a GUID`, { path, struct, field, found: text });
  return b;
}

/**
 * The primary and backup GPT for `entries` (each CRC filled in), through the header and entry
 * tables the reader checks. Entries must lie in the usable range and not overlap: a caller's
 * layout error is a DiskError naming the entry, never a table a reader would warn about.
 */
export function encodeGpt(entries: readonly GptEntryInput[], opts: GptEncodeOptions): EncodedGpt {
  const ss = opts.sectorSize;
  const count = Math.max(opts.entryCount ?? DEFAULT_ENTRY_COUNT, ...entries.map((e) => e.index + 1));
  if (count * ENTRY_SIZE > MAX_ENTRY_BYTES) throw new DiskError('INVAL', `${count} GPT entries is more than ${MAX_ENTRY_BYTES / ENTRY_SIZE}`, { path: opts.path, struct: 'GPT header', field: 'numberOfPartitionEntries', expected: `<= ${MAX_ENTRY_BYTES / ENTRY_SIZE}`, found: count });
  const { arraySectors, firstUsable, lastUsable } = gptLayout(ss, opts.totalSectors, count);
  if (lastUsable < firstUsable) throw new DiskError('INVAL', `a disk of ${opts.totalSectors} sectors has no room for a GPT`, { path: opts.path, struct: 'GPT header', field: 'lastUsableLba', found: opts.totalSectors });
  const array = Buffer.alloc(arraySectors * ss);
  const sorted = [...entries].sort((a, b) => a.firstLba - b.firstLba);
  sorted.forEach((e, i) => {
    const field = `entry[${e.index}]`;
    if (e.firstLba < firstUsable || e.lastLba > lastUsable || e.lastLba < e.firstLba) {
      throw new DiskError('INVAL', `partition ${e.index + 1} (LBA ${e.firstLba}..${e.lastLba}) is outside the usable sectors ${firstUsable}..${lastUsable}`, { path: opts.path, struct: 'GPT entry', field: `${field}.lastLba`, expected: `${firstUsable}..${lastUsable}`, found: e.lastLba });
    }
    const prev = sorted[i - 1];
    if (prev && prev.lastLba >= e.firstLba) throw new DiskError('INVAL', `partitions ${prev.index + 1} and ${e.index + 1} overlap`, { path: opts.path, struct: 'GPT entry', field: `${field}.firstLba`, found: e.firstLba });
    const name = Buffer.from(e.name ?? '', 'utf16le');
    if (name.length > MAX_NAME_UNITS * 2) throw new DiskError('INVAL', `the name ${JSON.stringify(e.name)} is longer than ${MAX_NAME_UNITS} UTF-16 units`, { path: opts.path, struct: 'GPT entry', field: `${field}.name`, expected: `<= ${MAX_NAME_UNITS}`, found: name.length / 2 });
    if (array.subarray(e.index * ENTRY_SIZE, (e.index + 1) * ENTRY_SIZE).some((b) => b !== 0)) throw new DiskError('INVAL', `two partitions in entry ${e.index + 1}`, { path: opts.path, struct: 'GPT entry', field });
    GptEntry.encode(
      {
        typeGuid: guidBytes(e.type, opts.path, 'GPT entry', `${field}.typeGuid`),
        uniqueGuid: e.uuid ? guidBytes(e.uuid, opts.path, 'GPT entry', `${field}.uniqueGuid`) : newGuid('le'),
        firstLba: BigInt(e.firstLba),
        lastLba: BigInt(e.lastLba),
        attributes: e.attributes ?? 0n,
        name,
      },
      array,
      e.index * ENTRY_SIZE,
    );
  });
  const arrayCrc = crc32(array.subarray(0, count * ENTRY_SIZE));
  const diskGuid = opts.diskGuid !== undefined ? guidBytes(opts.diskGuid, opts.path, 'GPT header', 'diskGuid') : newGuid('le');
  const lastLba = opts.totalSectors - 1;
  const header = (myLba: number, alternateLba: number, partitionEntryLba: number): Buffer => {
    const sector = Buffer.alloc(ss);
    GptHeader.encode(
      {
        signature: GPT_SIGNATURE,
        revision: 0x00010000,
        headerSize: GptHeader.size,
        headerCrc32: 0,
        myLba: BigInt(myLba),
        alternateLba: BigInt(alternateLba),
        firstUsableLba: BigInt(firstUsable),
        lastUsableLba: BigInt(lastUsable),
        diskGuid,
        partitionEntryLba: BigInt(partitionEntryLba),
        numberOfPartitionEntries: count,
        sizeOfPartitionEntry: ENTRY_SIZE,
        partitionEntryArrayCrc32: arrayCrc,
      },
      sector,
    );
    sector.writeUInt32LE(crc32(sector.subarray(0, GptHeader.size)), GptHeader.offsetOf('headerCrc32'));
    return sector;
  };
  const backupLba = lastUsable + 1;
  return {
    primary: Buffer.concat([header(1, lastLba, 2), array]),
    backup: Buffer.concat([array, header(lastLba, 1, backupLba)]),
    backupLba,
    firstUsable,
    lastUsable,
    diskGuid: guidText(diskGuid, 'le'),
  };
}
