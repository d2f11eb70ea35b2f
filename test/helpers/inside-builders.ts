/**
 * Hand-built partition tables and LVM PVs for tests, from the published layouts (UEFI GPT,
 * the MBR/EBR layout, LVM2's label and metadata area). The interop tests check the parsers
 * against sfdisk/sgdisk/mmls/blkid; these builders reach what those tools will not make:
 * 4096-byte sectors, damaged and hostile tables, striped LVs.
 */
import { crc32 } from '../../src/binary/crc32.js';
import { guidFromText } from '../../src/binary/guid.js';
import { lvmCrc } from '../../src/inside/lvm/label.js';
import type { ByteSource } from '../../src/inside/source.js';

/** a Buffer as a ByteSource, counting the bytes read */
export function memSource(buf: Buffer): ByteSource & { bytesRead: number } {
  const s = {
    capacity: buf.length,
    bytesRead: 0,
    async read(offset: number, length: number): Promise<Buffer> {
      if (offset < 0 || offset + length > buf.length) throw new RangeError(`read ${offset}+${length} past ${buf.length}`);
      s.bytesRead += length;
      return Buffer.from(buf.subarray(offset, offset + length));
    },
  };
  return s;
}

export interface MbrEntrySpec {
  type: number;
  lba: number;
  sectors: number;
  status?: number;
}

/** write a 4-entry table and 55 AA into the 512 bytes at `at` */
export function writeMbr(buf: Buffer, at: number, entries: readonly (MbrEntrySpec | undefined)[], diskSig = 0x12345678): void {
  if (at === 0) buf.writeUInt32LE(diskSig, 440);
  entries.forEach((e, i) => {
    if (!e) return;
    const o = at + 446 + 16 * i;
    buf[o] = e.status ?? 0;
    buf[o + 4] = e.type;
    buf.writeUInt32LE(e.lba, o + 8);
    buf.writeUInt32LE(e.sectors, o + 12);
  });
  buf.writeUInt16LE(0xaa55, at + 510);
}

export interface GptPartSpec {
  type: string;
  first: number;
  last: number;
  name?: string;
  uuid?: string;
  attributes?: bigint;
  /** entry slot (default: the order given) */
  slot?: number;
}

export interface GptSpec {
  sectorSize: 512 | 4096;
  /** disk size in sectors */
  sectors: number;
  parts: readonly GptPartSpec[];
  entries?: number;
  entrySize?: number;
  diskGuid?: string;
  /** what to put in sector 0: a protective MBR (default), a hybrid one, or nothing */
  mbr?: 'protective' | 'hybrid' | 'none';
}

/** A disk with a GPT: protective MBR, primary header + array at LBA 1/2, backup array + header at the end. */
export function buildGpt(spec: GptSpec): Buffer {
  const ss = spec.sectorSize;
  const n = spec.entries ?? 128;
  const esize = spec.entrySize ?? 128;
  const disk = Buffer.alloc(spec.sectors * ss);
  const arraySectors = Math.ceil((n * esize) / ss);
  const lastLba = spec.sectors - 1;
  const array = Buffer.alloc(n * esize);
  spec.parts.forEach((p, i) => {
    const o = (p.slot ?? i) * esize;
    guidFromText(p.type, 'le')!.copy(array, o);
    guidFromText(p.uuid ?? `00000000-0000-4000-8000-${(i + 1).toString(16).padStart(12, '0')}`, 'le')!.copy(array, o + 16);
    array.writeBigUInt64LE(BigInt(p.first), o + 32);
    array.writeBigUInt64LE(BigInt(p.last), o + 40);
    array.writeBigUInt64LE(p.attributes ?? 0n, o + 48);
    Buffer.from(p.name ?? '', 'utf16le').copy(array, o + 56, 0, 72);
  });
  const firstUsable = 2 + arraySectors;
  const lastUsable = lastLba - 1 - arraySectors;
  const header = (my: number, alt: number, arrayAt: number): Buffer => {
    const h = Buffer.alloc(ss);
    h.write('EFI PART', 0, 'latin1');
    h.writeUInt32LE(0x10000, 8);
    h.writeUInt32LE(92, 12);
    h.writeBigUInt64LE(BigInt(my), 24);
    h.writeBigUInt64LE(BigInt(alt), 32);
    h.writeBigUInt64LE(BigInt(firstUsable), 40);
    h.writeBigUInt64LE(BigInt(lastUsable), 48);
    guidFromText(spec.diskGuid ?? '11111111-2222-4333-8444-555555555555', 'le')!.copy(h, 56);
    h.writeBigUInt64LE(BigInt(arrayAt), 72);
    h.writeUInt32LE(n, 80);
    h.writeUInt32LE(esize, 84);
    h.writeUInt32LE(crc32(array), 88);
    h.writeUInt32LE(crc32(h.subarray(0, 92)), 16);
    return h;
  };
  header(1, lastLba, 2).copy(disk, ss);
  array.copy(disk, 2 * ss);
  array.copy(disk, (lastLba - arraySectors) * ss);
  header(lastLba, 1, lastLba - arraySectors).copy(disk, lastLba * ss);
  const mbr = spec.mbr ?? 'protective';
  if (mbr !== 'none') {
    const pmbr = { type: 0xee, lba: 1, sectors: Math.min(spec.sectors - 1, 0xffffffff) };
    const p0 = spec.parts[0];
    writeMbr(disk, 0, mbr === 'hybrid' && p0 ? [pmbr, { type: 0x83, lba: p0.first, sectors: p0.last - p0.first + 1 }] : [pmbr]);
  }
  return disk;
}

/** Recompute a GPT header's CRC after a test changed a field (the header at `lba`). */
export function resealGptHeader(disk: Buffer, lba: number, ss: number): void {
  const at = lba * ss;
  const size = disk.readUInt32LE(at + 12);
  disk.writeUInt32LE(0, at + 16);
  disk.writeUInt32LE(crc32(disk.subarray(at, at + size)), at + 16);
}

const LVM_ID_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
/** a 32-character LVM id from a seed; `lvmDashed` prints it as LVM does */
export function lvmId(seed: number): string {
  let s = '';
  for (let i = 0; i < 32; i++) s += LVM_ID_CHARS[(seed * 7 + i * 13) % LVM_ID_CHARS.length];
  return s;
}
export function lvmDashed(id: string): string {
  return [id.slice(0, 6), id.slice(6, 10), id.slice(10, 14), id.slice(14, 18), id.slice(18, 22), id.slice(22, 26), id.slice(26)].join('-');
}

/**
 * Write an LVM2 PV into `buf` at `at` (its first byte): the label in sector 1, one metadata area
 * of `mdaSize` bytes at 4096 holding `text` (at `textOffset` within the area, wrapping as LVM's
 * ring does), and the data area at `peStartSectors`.
 */
export function writePv(buf: Buffer, at: number, opts: { id: string; size: number; text: string; mdaSize?: number; textOffset?: number; peStartSectors?: number }): void {
  const mdaAt = 4096;
  const mdaSize = opts.mdaSize ?? 1024 * 1024 - 4096;
  const label = Buffer.alloc(512);
  label.write('LABELONE', 0, 'latin1');
  label.writeBigUInt64LE(1n, 8);
  label.writeUInt32LE(32, 20);
  label.write('LVM2 001', 24, 'latin1');
  let o = 32;
  label.write(opts.id, o, 'latin1');
  o += 32;
  label.writeBigUInt64LE(BigInt(opts.size), o);
  o += 8;
  label.writeBigUInt64LE(BigInt((opts.peStartSectors ?? 2048) * 512), o); // data area
  o += 32; // its size (0 = to the end) and the terminator
  label.writeBigUInt64LE(BigInt(mdaAt), o);
  label.writeBigUInt64LE(BigInt(mdaSize), o + 8);
  label.writeUInt32LE(lvmCrc(label.subarray(20)), 16);
  label.copy(buf, at + 512);

  const text = Buffer.from(opts.text, 'utf8');
  const off = opts.textOffset ?? 512;
  const first = Math.min(text.length, mdaSize - off);
  text.copy(buf, at + mdaAt + off, 0, first);
  if (first < text.length) text.copy(buf, at + mdaAt + 512, first);
  const h = Buffer.alloc(512);
  h.write(' LVM2 x[5A%r0N*>', 4, 'latin1');
  h.writeUInt32LE(1, 20);
  h.writeBigUInt64LE(BigInt(mdaAt), 24);
  h.writeBigUInt64LE(BigInt(mdaSize), 32);
  h.writeBigUInt64LE(BigInt(off), 40);
  h.writeBigUInt64LE(BigInt(text.length), 48);
  h.writeUInt32LE(lvmCrc(text), 56);
  h.writeUInt32LE(lvmCrc(h.subarray(4)), 0);
  h.copy(buf, at + mdaAt);
}
