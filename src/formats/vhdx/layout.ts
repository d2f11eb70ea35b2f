/**
 * VHDX layout facts the open, the data path, the checker and maintenance all need: the parsed
 * shapes (regions, metadata items, header slots, file parameters), header and region table
 * decoding, the structure ranges of a file and the overlap check of its blocks, and the
 * sector-bitmap bit order. Pure functions over bytes and tables; no image state.
 */
import { Bitmap } from '../../binary/bitmap.js';
import { DiskError } from '../../core/errors.js';
import { guidFromText, guidText } from '../../binary/guid.js';
import {
  BITMAP,
  BITMAP_BLOCK_SIZE,
  FileParameters,
  GUIDS,
  HAS_PARENT,
  HEADER_SECTION,
  HEADER_SIGNATURE,
  Header,
  LEAVE_BLOCKS_ALLOCATED,
  MAX_REGION_ENTRIES,
  MiB,
  PAYLOAD,
  REGION_REQUIRED,
  REGION_SIGNATURE,
  RegionTableEntry,
  RegionTableHeader,
  bitmapIndex,
  payloadIndex,
  vhdxChecksum,
  withChecksum,
  type HeaderValue,
} from './structs.js';

/** cached sector-bitmap slices, in bytes */
export const BITMAP_CACHE_BYTES = 16 * MiB;
/** bytes of the BAT read per request at open */
export const BAT_READ_CHUNK = MiB;

export interface Region {
  guid: string;
  offset: number;
  length: number;
  required: boolean;
}

export interface MetaItem {
  id: string;
  offset: number;
  length: number;
  flags: number;
}

export interface HeaderSlot {
  value?: HeaderValue;
  /** why the slot is not usable (for findings) */
  problem?: string;
}


export interface VhdxParams {
  blockSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  leaveBlocksAllocated: boolean;
  hasParent: boolean;
}

export function isPow2(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

export function decodeHeaderSlot(b: Buffer, path: string): HeaderSlot {
  const v = Header.decode(b, 0, path);
  if (v.signature !== HEADER_SIGNATURE) return { problem: 'signature is not "head"' };
  if (vhdxChecksum(b) !== v.checksum) return { problem: 'checksum mismatch' };
  if (v.version !== 1) return { value: v, problem: `version ${v.version}` };
  return { value: v };
}

/** the current header (vhd.md §16.1): the valid one with the larger sequence number */
export function chooseHeader(slots: HeaderSlot[], path: string): number {
  const ok = slots.map((s) => s.value !== undefined && s.problem === undefined);
  if (ok[0] && ok[1]) {
    const a = slots[0]!.value!;
    const b = slots[1]!.value!;
    if (a.sequenceNumber > b.sequenceNumber) return 0;
    if (b.sequenceNumber > a.sequenceNumber) return 1;
    // Disk2vhd writes two identical headers with the same sequence number
    if (Header.encode(a).equals(Header.encode(b))) return 0;
    throw new DiskError('CORRUPT', 'both headers have the same sequence number but different contents', { path, struct: 'header', field: 'sequenceNumber', found: a.sequenceNumber });
  }
  if (ok[0]) return 0;
  if (ok[1]) return 1;
  const versions = slots.filter((s) => s.value && s.problem?.startsWith('version'));
  if (versions.length > 0) {
    throw new DiskError('UNSUPPORTEDDISKVERSION', 'unsupported VHDX header version', { path, struct: 'header', field: 'version', expected: 1, found: versions[0]!.value!.version });
  }
  const field = slots.every((s) => s.problem?.startsWith('signature')) ? 'signature' : 'checksum';
  throw new DiskError('CORRUPT', `neither header is valid (header 1: ${slots[0]!.problem}; header 2: ${slots[1]!.problem})`, { path, struct: 'header', field, expected: field === 'signature' ? HEADER_SIGNATURE : 'a CRC-32C matching the header' });
}

export function decodeRegionTable(b: Buffer, path: string): { bytes: Buffer; regions?: Region[]; error?: DiskError } {
  const h = RegionTableHeader.decode(b, 0, path);
  const bad = (field: string, message: string, expected: unknown, found: unknown) => ({ bytes: b, error: new DiskError('CORRUPT', message, { path, struct: 'regionTable', field, expected, found }) });
  if (h.signature !== REGION_SIGNATURE) return bad('signature', 'bad region table signature', REGION_SIGNATURE, h.signature);
  if (vhdxChecksum(b) !== h.checksum) return bad('checksum', 'region table checksum mismatch', `0x${vhdxChecksum(b).toString(16).padStart(8, '0')}`, `0x${h.checksum.toString(16).padStart(8, '0')}`);
  if (h.entryCount > MAX_REGION_ENTRIES) return bad('entryCount', 'too many region table entries', `<= ${MAX_REGION_ENTRIES}`, h.entryCount);
  const regions: Region[] = [];
  for (let i = 0; i < h.entryCount; i++) {
    const e = RegionTableEntry.decode(b, 16 + i * 32, path);
    const offset = e.fileOffset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(e.fileOffset);
    regions.push({ guid: guidText(e.guid, 'le'), offset, length: e.length, required: (e.flags & REGION_REQUIRED) !== 0 });
  }
  return { bytes: b, regions };
}

/** The region table for `regions` over `into` (the bytes past the entries are kept), checksummed. */
export function encodeRegionTable(into: Buffer, regions: readonly Region[]): Buffer {
  RegionTableHeader.encode({ signature: REGION_SIGNATURE, checksum: 0, entryCount: regions.length }, into, 0);
  regions.forEach((r, i) => RegionTableEntry.encode({ guid: guidFromText(r.guid, 'le')!, fileOffset: BigInt(r.offset), length: r.length, flags: r.required ? REGION_REQUIRED : 0 }, into, 16 + i * 32));
  withChecksum(into);
  return into;
}

export function fileParametersBytes(p: VhdxParams): Buffer {
  return FileParameters.encode({ blockSize: p.blockSize, flags: (p.leaveBlocksAllocated ? LEAVE_BLOCKS_ALLOCATED : 0) | (p.hasParent ? HAS_PARENT : 0) });
}

/** a structure of the file (bytes [start, end)) */
export interface StructureRange {
  start: number;
  end: number;
  name: string;
}

/** the structures of the file: header section, log, regions */
export function structureRanges(regions: readonly Region[], logOffset: number, logLength: number): StructureRange[] {
  const out = [{ start: 0, end: HEADER_SECTION, name: 'the header section' }];
  if (logLength > 0) out.push({ start: logOffset, end: logOffset + logLength, name: 'the log' });
  for (const r of regions) out.push({ start: r.offset, end: r.offset + r.length, name: r.guid === GUIDS.BAT_REGION ? 'the BAT region' : r.guid === GUIDS.METADATA_REGION ? 'the metadata region' : `region ${r.guid}` });
  return out;
}

/** no two blocks overlap, and no block overlaps a structure (sorted starts, one pass) */
export function checkOverlaps(pState: Uint8Array, pOff: Uint32Array, bState: Uint8Array, bOff: Uint32Array, blockSize: number, cr: number, used: StructureRange[], path: string): void {
  const starts: number[] = [];
  const ends: number[] = [];
  const names: string[] = [];
  for (const u of used) {
    starts.push(u.start);
    ends.push(u.end);
    names.push(u.name);
  }
  const firstBlock = starts.length;
  for (let n = 0; n < pState.length; n++) {
    if (pState[n] !== PAYLOAD.FULLY_PRESENT && pState[n] !== PAYLOAD.PARTIALLY_PRESENT) continue;
    starts.push(pOff[n]! * MiB);
    ends.push(pOff[n]! * MiB + blockSize);
    names.push(`BAT[${payloadIndex(n, cr)}]`);
  }
  for (let k = 0; k < bState.length; k++) {
    if (bState[k] !== BITMAP.PRESENT) continue;
    starts.push(bOff[k]! * MiB);
    ends.push(bOff[k]! * MiB + BITMAP_BLOCK_SIZE);
    names.push(`BAT[${bitmapIndex(k, cr)}]`);
  }
  const order = Array.from({ length: starts.length }, (_, i) => i).sort((a, b) => starts[a]! - starts[b]! || a - b);
  for (let j = 1; j < order.length; j++) {
    const a = order[j - 1]!;
    const b = order[j]!;
    if (starts[b]! < ends[a]!) {
      // name the BAT entry (the structures themselves were checked against each other before)
      const [entry, other] = b >= firstBlock ? [b, a] : [a, b];
      throw new DiskError('CORRUPT', `${names[entry]} overlaps ${other >= firstBlock ? `the block of ${names[other]}` : names[other]}`, {
        path,
        struct: 'BAT',
        field: names[entry],
        expected: `no overlap with ${starts[other]}..${ends[other]! - 1}`,
        found: `${starts[entry]}..${ends[entry]! - 1}`,
      });
    }
  }
}

export const BITS = new Bitmap('lsb');
export const setBits = (bm: Buffer, s0: number, s1: number): void => BITS.set(bm, s0, s1);
/** Runs of equal bits over sectors [s0, s1): [from, to, set]. */
export const sectorRuns = (bm: Buffer, s0: number, s1: number): [number, number, boolean][] => BITS.runs(bm, s0, s1);
