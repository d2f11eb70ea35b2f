/**
 * Where each partition of a mkimg image goes and the table sectors that say so. Pure: sizes
 * in, offsets and encoded sectors out, through the field tables of inside/partitions (the
 * readers' own), so what is written is what vdkit, sfdisk and sgdisk read back.
 */
import { DiskError } from '../../core/errors.js';
import { isPowerOfTwo, roundUp } from '../../core/ints.js';
import { MBR_PROTECTIVE, partitionTypeFor } from '../../inside/partitions/type-names.js';
import { MAX_LOGICAL, encodeMbrSector, type MbrEntryInput } from '../../inside/partitions/mbr.js';
import { DEFAULT_ENTRY_COUNT, encodeGpt, gptLayout } from '../../inside/partitions/gpt.js';

export type Scheme = 'mbr' | 'ebr' | 'gpt';
export const SCHEMES: readonly Scheme[] = ['mbr', 'ebr', 'gpt'];

/** an extended partition's id: DOS's (sfdisk and fdisk make this one) */
const EXTENDED_ID = 0x05;
const MiB = 1024 * 1024;

export interface LayoutEntry {
  type: string;
  label?: string;
  /** bytes the contents take (rounded up to a whole block here) */
  length: number;
  /** GPT: the unique partition GUID (default: random) */
  uuid?: string;
}

export interface LayoutOptions {
  scheme: Scheme;
  /** one per -p, in order; undefined for -p- (an entry left empty) */
  entries: readonly (LayoutEntry | undefined)[];
  sectorSize?: number;
  physicalSectorSize?: number;
  /** partition starts are multiples of this many bytes (default 1 MiB) */
  align?: number;
  /** the disk is at least this big (mkimg -c) */
  capacity?: number;
  /** and at most this big (mkimg -C) */
  maxCapacity?: number;
  /** 1-based index into `entries` of the partition marked active / legacy-BIOS-bootable (-a) */
  active?: number;
  bootcode?: Buffer;
  heads?: number;
  sectorsPerTrack?: number;
  /** MBR: the disk signature; GPT: the disk GUID text */
  diskId?: number | string;
  /** names the output in errors */
  path?: string;
}

export interface PlacedPartition {
  /** the number readers give it: MBR slot + 1, logicals 5.., GPT entry index + 1 */
  number: number;
  /** 0-based index of its -p */
  index: number;
  /** the type written: an MBR id or a GPT type GUID */
  type: number | string;
  label?: string;
  /** bytes from the start of the disk */
  offset: number;
  length: number;
}

export interface Layout {
  scheme: Scheme;
  sectorSize: number;
  capacity: number;
  partitions: PlacedPartition[];
  /** the table sectors, in offset order */
  tables: { offset: number; data: Buffer }[];
  /** MBR signature as 8 hex digits, or the GPT disk GUID */
  diskId: string;
}

function inval(message: string, field: string, path: string | undefined, found?: unknown, expected?: unknown): DiskError {
  return new DiskError('INVAL', message, { path, field, found, expected });
}

function checkSizes(o: LayoutOptions): { ss: number; block: number; align: number } {
  const ss = o.sectorSize ?? 512;
  if (ss !== 512 && ss !== 4096) throw inval('the sector size is 512 or 4096 bytes', 'sectorSize', o.path, ss, '512 or 4096');
  const pss = o.physicalSectorSize ?? ss;
  if (!isPowerOfTwo(pss) || pss < ss || pss > MiB) throw inval(`the physical sector size must be a power of two from the sector size (${ss}) to 1 MiB`, 'physicalSectorSize', o.path, pss);
  const align = o.align ?? MiB;
  if (!Number.isSafeInteger(align) || align < ss || align % ss !== 0) throw inval(`the alignment must be a whole number of ${ss}-byte sectors`, 'align', o.path, align);
  // a start on a physical sector boundary too: the larger of the two when one divides the other
  return { ss, block: pss, align: align % pss === 0 ? align : roundUp(align, pss) };
}

function typeOf(e: LayoutEntry, i: number, scheme: Scheme, path?: string): number | string {
  const family = scheme === 'gpt' ? 'gpt' : 'mbr';
  const t = partitionTypeFor(e.type, family);
  if (t === undefined) {
    throw inval(`partition ${i + 1}: ${JSON.stringify(e.type)} is not ${family === 'gpt' ? 'a GPT' : 'an MBR'} partition type (an alias such as linux-data, efi, freebsd-ufs, ${family === 'gpt' ? 'or a type GUID' : 'or a hex id such as 0x83'})`, `partitions[${i}].type`, path, e.type);
  }
  if (t === MBR_PROTECTIVE && family === 'mbr') throw inval(`partition ${i + 1}: 0xee is GPT's protective entry; use the gpt scheme`, `partitions[${i}].type`, path, e.type);
  return t;
}

/** Place the partitions and encode the tables. Layout errors are DiskErrors naming the partition (`partitions[i].field`). */
export function planLayout(o: LayoutOptions): Layout {
  const { ss, block, align } = checkSizes(o);
  const scheme = o.scheme;
  if (!SCHEMES.includes(scheme)) throw inval(`unknown scheme ${JSON.stringify(scheme)} (known: ${SCHEMES.join(', ')})`, 'scheme', o.path, scheme);
  const limit = scheme === 'mbr' ? 4 : scheme === 'ebr' ? MAX_LOGICAL : MAX_GPT_ENTRIES;
  if (o.entries.length > limit) throw inval(`${o.entries.length} partitions: the ${scheme} scheme holds at most ${limit}`, 'partitions', o.path, o.entries.length, `<= ${limit}`);
  if (o.active !== undefined && (!Number.isInteger(o.active) || o.active < 1 || o.active > o.entries.length || !o.entries[o.active - 1])) {
    throw inval(`the active partition ${o.active} is not one of the partitions given`, 'active', o.path, o.active, `1..${o.entries.length}`);
  }
  const entryCount = Math.max(DEFAULT_ENTRY_COUNT, o.entries.length);
  const arraySectors = scheme === 'gpt' ? gptLayout(ss, 0, entryCount).arraySectors : 0;
  // bytes before the first partition may start: sector 0 (and the GPT header and array)
  let cursor = scheme === 'gpt' ? (2 + arraySectors) * ss : ss;
  const placed: PlacedPartition[] = [];
  /** ebr: where each logical's EBR sits */
  const ebrs: number[] = [];
  o.entries.forEach((e, i) => {
    if (!e) return;
    const type = typeOf(e, i, scheme, o.path);
    if (e.label !== undefined && e.label !== '' && scheme !== 'gpt') throw inval(`partition ${i + 1}: ${scheme.toUpperCase()} partitions have no labels (GPT has)`, `partitions[${i}].label`, o.path, e.label);
    if (!Number.isSafeInteger(e.length) || e.length <= 0) throw inval(`partition ${i + 1} is empty: give contents or a size`, `partitions[${i}].length`, o.path, e.length, '> 0');
    if (scheme === 'ebr') {
      const at = roundUp(cursor, align);
      ebrs.push(at);
      cursor = at + ss;
    }
    const offset = roundUp(cursor, align);
    const length = roundUp(e.length, block);
    cursor = offset + length;
    const number = scheme === 'ebr' ? 5 + placed.length : i + 1;
    placed.push({ number, index: i, type, label: e.label || undefined, offset, length });
  });
  const trailer = scheme === 'gpt' ? (arraySectors + 1) * ss : 0;
  const minimum = o.capacity === undefined ? 0 : roundUp(o.capacity, ss);
  const capacity = Math.max(cursor + trailer, minimum);
  if (o.maxCapacity !== undefined && capacity > o.maxCapacity) {
    const over = placed.find((p) => p.offset + p.length + trailer > o.maxCapacity!);
    if (over) throw inval(`partition ${over.index + 1} ends at byte ${over.offset + over.length}${trailer ? ` (and the backup GPT after it at ${over.offset + over.length + trailer})` : ''}, past the disk's ${o.maxCapacity} bytes`, `partitions[${over.index}]`, o.path, over.offset + over.length + trailer, `<= ${o.maxCapacity}`);
    throw inval(`the capacity ${minimum} is more than the largest allowed, ${o.maxCapacity}`, 'capacity', o.path, minimum, `<= ${o.maxCapacity}`);
  }
  const activeIndex = o.active === undefined ? -1 : o.active - 1;
  const tables = scheme === 'gpt' ? gptTables(o, placed, ss, capacity, entryCount, activeIndex) : mbrTables(o, placed, ebrs, ss, activeIndex);
  return { scheme, sectorSize: ss, capacity, partitions: placed, tables: tables.sectors, diskId: tables.diskId };
}

/** the most GPT entries written: a 4 MiB array, as the reader caps it */
const MAX_GPT_ENTRIES = 32768;

function bootcodeFor(o: LayoutOptions, ss: number): Buffer | undefined {
  if (o.bootcode && o.bootcode.length > ss) throw inval(`the boot code is ${o.bootcode.length} bytes; it goes in the first ${ss}-byte sector (446 bytes of it are used)`, 'bootcode', o.path, o.bootcode.length, `<= ${ss}`);
  return o.bootcode;
}

function mbrSignature(o: LayoutOptions): number | undefined {
  if (o.diskId === undefined) return undefined;
  const n = typeof o.diskId === 'number' ? o.diskId : parseInt(o.diskId.replace(/^0x/i, ''), 16);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff || (typeof o.diskId === 'string' && !/^(0x)?[0-9a-f]{1,8}$/i.test(o.diskId))) throw inval('an MBR disk id is 32 bits (8 hex digits)', 'diskId', o.path, o.diskId);
  return n;
}

function mbrTables(o: LayoutOptions, placed: PlacedPartition[], ebrs: number[], ss: number, active: number): { sectors: { offset: number; data: Buffer }[]; diskId: string } {
  const geo = { heads: o.heads, sectorsPerTrack: o.sectorsPerTrack, path: o.path };
  const lba = (bytes: number) => bytes / ss;
  const entry = (p: PlacedPartition, base: number): MbrEntryInput => ({
    type: p.type as number,
    lbaFirst: lba(p.offset) - base,
    sectors: lba(p.length),
    active: p.index === active,
    chsFirst: lba(p.offset),
    chsLast: lba(p.offset + p.length) - 1,
  });
  const boot = bootcodeFor(o, ss);
  const signature = mbrSignature(o);
  const sectors: { offset: number; data: Buffer }[] = [];
  if (o.scheme === 'mbr') {
    const slots: (MbrEntryInput | undefined)[] = [undefined, undefined, undefined, undefined];
    for (const p of placed) slots[p.index] = entry(p, 0);
    sectors.push({ offset: 0, data: encodeMbrSector(slots, { ...geo, bootcode: boot, diskSignature: signature }) });
  } else {
    const first = ebrs[0];
    const last = placed[placed.length - 1];
    const ext: MbrEntryInput | undefined = first === undefined || !last ? undefined : { type: EXTENDED_ID, lbaFirst: lba(first), sectors: lba(last.offset + last.length - first) };
    sectors.push({ offset: 0, data: encodeMbrSector([ext], { ...geo, bootcode: boot, diskSignature: signature }) });
    placed.forEach((p, k) => {
      const at = ebrs[k]!;
      const next = placed[k + 1];
      const nextAt = ebrs[k + 1];
      // entry 0: the logical, from this EBR; entry 1: the next EBR, from the extended start, covering it and its logical (Linux's rule)
      const link: MbrEntryInput | undefined =
        next && nextAt !== undefined ? { type: EXTENDED_ID, lbaFirst: lba(nextAt - first!), sectors: lba(next.offset + next.length - nextAt), chsFirst: lba(nextAt), chsLast: lba(next.offset + next.length) - 1 } : undefined;
      sectors.push({ offset: at, data: encodeMbrSector([entry(p, lba(at)), link], { ...geo, path: o.path, struct: `EBR at sector ${lba(at)}` }) });
    });
  }
  return { sectors, diskId: sectors[0]!.data.readUInt32LE(440).toString(16).padStart(8, '0') };
}

function gptTables(o: LayoutOptions, placed: PlacedPartition[], ss: number, capacity: number, entryCount: number, active: number): { sectors: { offset: number; data: Buffer }[]; diskId: string } {
  const total = capacity / ss;
  if (o.diskId !== undefined && typeof o.diskId !== 'string') throw inval('a GPT disk id is a GUID', 'diskId', o.path, o.diskId);
  const gpt = encodeGpt(
    placed.map((p) => ({
      index: p.index,
      type: p.type as string,
      uuid: o.entries[p.index]!.uuid,
      firstLba: p.offset / ss,
      lastLba: (p.offset + p.length) / ss - 1,
      // legacy BIOS bootable: what -a means to a BIOS booting a GPT disk (and to sgdisk's attribute 2)
      attributes: p.index === active ? 4n : 0n,
      name: p.label,
    })),
    { sectorSize: ss, totalSectors: total, entryCount, diskGuid: o.diskId as string | undefined, path: o.path },
  );
  const boot = bootcodeFor(o, ss);
  // FreeBSD's mkimg marks the protective entry active when it writes boot code: some BIOSes boot only an active entry
  const pmbr = encodeMbrSector([{ type: MBR_PROTECTIVE, lbaFirst: 1, sectors: Math.min(total - 1, 0xffffffff), active: !!boot, chsLast: Math.min(total - 1, 0xffffffff) }], { bootcode: boot, heads: o.heads, sectorsPerTrack: o.sectorsPerTrack, path: o.path, struct: 'protective MBR' });
  return {
    sectors: [
      { offset: 0, data: pmbr },
      { offset: ss, data: gpt.primary },
      { offset: gpt.backupLba * ss, data: gpt.backup },
    ],
    diskId: gpt.diskGuid,
  };
}
