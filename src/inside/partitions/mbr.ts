/**
 * MBR (DOS) partition tables: four primary entries in sector 0, and for an extended partition a
 * chain of EBRs, each holding one logical partition (entry 0, relative to that EBR) and the
 * link to the next EBR (entry 1, relative to the start of the extended partition). Numbering is
 * Linux's: primaries 1-4 by slot, logicals 5.. in chain order.
 *
 * Untrusted input: a chain that comes back to an EBR already read, or longer than
 * MAX_LOGICAL, is a DiskError naming the EBR field; an EBR past the disk end or without its
 * signature ends the chain with a warning.
 */
import { DiskError } from '../../core/errors.js';
import { Struct, bytes, reserved, u16, u32, u8 } from '../../binary/struct.js';
import type { ByteSource } from '../source.js';
import { warning, type InsideWarning, type Partition, type PartitionTable } from '../types.js';
import { layoutWarnings } from './check.js';
import { MBR_EXTENDED, MBR_PROTECTIVE, mbrTypeName } from './type-names.js';

export const MbrEntry = new Struct(
  'MBR entry',
  'le',
  [
    { name: 'status', type: u8 },
    { name: 'chsFirst', type: bytes(3) },
    { name: 'type', type: u8 },
    { name: 'chsLast', type: bytes(3) },
    { name: 'lbaFirst', type: u32 },
    { name: 'sectors', type: u32 },
  ] as const,
  16,
);

export const MbrSector = new Struct(
  'MBR',
  'le',
  [
    { name: 'bootstrap', type: reserved(440) },
    { name: 'diskSignature', type: u32 },
    { name: 'copyProtect', type: u16 },
    { name: 'entries', type: bytes(64) },
    { name: 'signature', type: u16 },
  ] as const,
  512,
);

export const MBR_SIGNATURE = 0xaa55;
/** more logical partitions than any tool makes (Linux stops far lower); past it the chain is hostile */
export const MAX_LOGICAL = 1024;

export type MbrEntryValue = ReturnType<typeof MbrEntry.decode>;

export function mbrEntries(sector: Buffer): MbrEntryValue[] {
  const s = MbrSector.decode(sector);
  return [0, 1, 2, 3].map((i) => MbrEntry.decode(s.entries, i * 16));
}

/** a filesystem boot sector (FAT, NTFS, exFAT) also ends in 55 AA: its OEM/FS-type text tells it apart */
function looksLikeBootSector(sector: Buffer): boolean {
  const oem = sector.toString('latin1', 3, 11);
  if (oem === 'NTFS    ' || oem === 'EXFAT   ') return true;
  return sector.toString('latin1', 54, 59) === 'FAT12' || sector.toString('latin1', 54, 59) === 'FAT16' || sector.toString('latin1', 82, 87) === 'FAT32';
}

/**
 * Whether sector 0 holds an MBR partition table: the signature, every status byte 0x00 or 0x80
 * (boot code in a filesystem boot sector fails this), and not a FAT/NTFS boot sector with no entries.
 */
export function isMbr(sector: Buffer): boolean {
  if (sector.length < 512 || sector.readUInt16LE(510) !== MBR_SIGNATURE) return false;
  const entries = mbrEntries(sector);
  if (entries.some((e) => e.status !== 0 && e.status !== 0x80)) return false;
  const used = entries.filter((e) => e.type !== 0);
  if (used.length === 0 && looksLikeBootSector(sector)) return false;
  // a filesystem boot sector with plausible-looking bytes in the entry area: its entries point nowhere sane
  if (looksLikeBootSector(sector) && used.some((e) => e.sectors === 0 || e.lbaFirst === 0)) return false;
  return true;
}

export function hasProtectiveEntry(sector: Buffer): 'protective' | 'hybrid' | 'none' {
  if (!isMbr(sector)) return 'none';
  const used = mbrEntries(sector).filter((e) => e.type !== 0);
  if (!used.some((e) => e.type === MBR_PROTECTIVE)) return 'none';
  return used.length === 1 ? 'protective' : 'hybrid';
}

function entryPartition(e: MbrEntryValue, number: number, kind: Partition['kind'], base: number, sectorSize: number): Partition {
  const type = `0x${e.type.toString(16).padStart(2, '0')}`;
  return {
    number,
    kind,
    offset: (base + e.lbaFirst) * sectorSize,
    length: e.sectors * sectorSize,
    type,
    typeName: mbrTypeName(e.type),
    bootable: e.status === 0x80,
  };
}

export interface MbrReadOptions {
  /** the sector size the LBAs count in (512 unless the disk is known to have 4 KiB sectors) */
  sectorSize?: number;
  /** names the image in errors */
  path?: string;
}

/**
 * The MBR table of `src` (sector 0 already read as `sector0`), with its logical partitions, or
 * undefined when sector 0 is not an MBR table.
 */
export async function readMbr(src: ByteSource, sector0: Buffer, opts: MbrReadOptions = {}): Promise<{ table: PartitionTable; warnings: InsideWarning[] } | undefined> {
  if (!isMbr(sector0)) return undefined;
  const ss = opts.sectorSize ?? 512;
  const warnings: InsideWarning[] = [];
  const parts: Partition[] = [];
  const entries = mbrEntries(sector0);
  let extended: { start: number; sectors: number } | undefined;
  entries.forEach((e, i) => {
    if (e.type === 0) return;
    if (e.sectors === 0) {
      warnings.push(warning(`entry ${i + 1} has type 0x${e.type.toString(16)} but no sectors: left out`, 'MBR', `entry[${i}].sectors`));
      return;
    }
    const isExt = MBR_EXTENDED.has(e.type);
    if (isExt && extended) {
      warnings.push(warning(`a second extended partition (entry ${i + 1}): its logical partitions are not read`, 'MBR', `entry[${i}].type`));
    } else if (isExt) {
      extended = { start: e.lbaFirst, sectors: e.sectors };
    }
    parts.push(entryPartition(e, i + 1, isExt ? 'extended' : 'primary', 0, ss));
  });
  if (extended) parts.push(...(await readLogicals(src, extended, ss, warnings, opts.path)));
  // primaries are MBR entries; a logical is entry 0 of its EBR
  warnings.push(...layoutWarnings(parts, src.capacity, 'MBR', (p, end) => `${p.kind === 'logical' ? 'EBR ' : ''}entry[${p.kind === 'logical' ? 0 : p.number - 1}].${end ? 'sectors' : 'lbaFirst'}`));
  const diskId = sector0.readUInt32LE(440).toString(16).padStart(8, '0');
  return { table: { scheme: 'mbr', sectorSize: ss, diskId, partitions: parts }, warnings };
}

async function readLogicals(src: ByteSource, ext: { start: number; sectors: number }, ss: number, warnings: InsideWarning[], path?: string): Promise<Partition[]> {
  const out: Partition[] = [];
  const seen = new Set<number>();
  let ebr = ext.start;
  for (let hop = 0; ; hop++) {
    if (seen.has(ebr)) {
      throw new DiskError('INVALIDPARTITIONTABLE', `the EBR chain comes back to sector ${ebr} after ${hop} links`, { path, struct: 'EBR', field: 'entry[1].lbaFirst', found: ebr });
    }
    if (hop >= MAX_LOGICAL) {
      throw new DiskError('INVALIDPARTITIONTABLE', `the EBR chain is longer than ${MAX_LOGICAL} links`, { path, struct: 'EBR', field: 'entry[1].lbaFirst', expected: `<= ${MAX_LOGICAL}` });
    }
    seen.add(ebr);
    if ((ebr + 1) * ss > src.capacity) {
      warnings.push(warning(`EBR at sector ${ebr} lies past the disk end: the chain stops there`, 'EBR', 'entry[1].lbaFirst'));
      break;
    }
    const sector = await src.read(ebr * ss, 512);
    if (sector.readUInt16LE(510) !== MBR_SIGNATURE) {
      // an empty extended partition has a zeroed first EBR: only a link that led here is damage
      if (hop > 0) warnings.push(warning(`EBR at sector ${ebr} has no 55 AA signature: the chain stops there`, 'EBR', 'signature'));
      break;
    }
    const [cur, next] = mbrEntries(sector) as [MbrEntryValue, MbrEntryValue];
    if (cur.type !== 0 && cur.sectors > 0) out.push(entryPartition(cur, 5 + out.length, 'logical', ebr, ss));
    if (next.type === 0 || next.sectors === 0) break;
    if (!MBR_EXTENDED.has(next.type)) {
      warnings.push(warning(`EBR at sector ${ebr} links with type 0x${next.type.toString(16)}, not an extended id: the chain stops there`, 'EBR', 'entry[1].type'));
      break;
    }
    ebr = ext.start + next.lbaFirst;
  }
  return out;
}

/** One entry to write: LBAs relative to what the entry is read against (sector 0, or per MBR rules the EBR/extended start). */
export interface MbrEntryInput {
  type: number;
  lbaFirst: number;
  sectors: number;
  active?: boolean;
  /** absolute LBAs of the first and last sector, for the CHS fields (default: lbaFirst and its end) */
  chsFirst?: number;
  chsLast?: number;
}

export interface MbrEncodeOptions {
  /** bytes 0..445 (boot code, disk signature, copy-protect word) from this; longer input is cut there */
  bootcode?: Buffer;
  /** the disk signature at 440 (default: what the boot code has there, else 0) */
  diskSignature?: number;
  /** heads and sectors per track for the CHS fields (default 255/63, fdisk's) */
  heads?: number;
  sectorsPerTrack?: number;
  /** names the image and the structure in errors (`MBR`, `EBR at 2048`) */
  path?: string;
  struct?: string;
}

/** where a CHS address cannot reach (past cylinder 1023) fdisk and the UEFI spec write 1023/254/63 */
const CHS_MAX = Buffer.from([0xfe, 0xff, 0xff]);

/** CHS bytes as the entry stores them: head, sector with the cylinder's top two bits, cylinder low byte */
export function chsBytes(lba: number, heads: number, sectorsPerTrack: number): Buffer {
  const cyl = Math.floor(lba / (heads * sectorsPerTrack));
  if (cyl > 1023) return Buffer.from(CHS_MAX);
  const head = Math.floor(lba / sectorsPerTrack) % heads;
  const sector = (lba % sectorsPerTrack) + 1;
  return Buffer.from([head, sector | ((cyl >> 2) & 0xc0), cyl & 0xff]);
}

/**
 * A 512-byte MBR (or EBR) sector holding `entries` in slots 0..3 (undefined leaves a slot
 * empty), through the same field tables the reader decodes. An LBA or count that does not fit
 * 32 bits is a DiskError naming the entry field.
 */
export function encodeMbrSector(entries: readonly (MbrEntryInput | undefined)[], opts: MbrEncodeOptions = {}): Buffer {
  const struct = opts.struct ?? 'MBR';
  if (entries.length > 4) throw new DiskError('INVAL', `an MBR holds 4 entries, not ${entries.length}`, { path: opts.path, struct, field: 'entries', expected: '<= 4', found: entries.length });
  const heads = opts.heads ?? 255;
  const spt = opts.sectorsPerTrack ?? 63;
  const table = Buffer.alloc(64);
  entries.forEach((e, i) => {
    if (!e) return;
    for (const field of ['lbaFirst', 'sectors'] as const) {
      if (!Number.isSafeInteger(e[field]) || e[field] < 0 || e[field] > 0xffffffff) {
        throw new DiskError('INVAL', `${field} ${e[field]} does not fit the 32 bits of an MBR entry (sectors past 2 TiB at 512 bytes need GPT)`, { path: opts.path, struct, field: `entry[${i}].${field}`, expected: '<= 4294967295', found: e[field] });
      }
    }
    const first = e.chsFirst ?? e.lbaFirst;
    const last = e.chsLast ?? e.lbaFirst + e.sectors - 1;
    MbrEntry.encode({ status: e.active ? 0x80 : 0, chsFirst: chsBytes(first, heads, spt), type: e.type, chsLast: chsBytes(last, heads, spt), lbaFirst: e.lbaFirst, sectors: e.sectors }, table, i * 16);
  });
  const sector = Buffer.alloc(512);
  const boot = opts.bootcode?.subarray(0, MbrSector.offsetOf('entries'));
  MbrSector.encode({ diskSignature: 0, copyProtect: 0, entries: table, signature: MBR_SIGNATURE }, sector);
  // the boot code is the bytes the table leaves free: everything before the entries (its disk
  // signature too, unless one is given)
  if (boot) boot.copy(sector, 0);
  if (opts.diskSignature !== undefined) sector.writeUInt32LE(opts.diskSignature, MbrSector.offsetOf('diskSignature'));
  return sector;
}
