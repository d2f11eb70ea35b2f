/**
 * LVM2 on-disk label (lib/format_text/layout.h in LVM's sources, described in its docs):
 *
 * - a label header in one of sectors 0-3 (512 bytes each): "LABELONE", its own sector number,
 *   a CRC, the offset of the PV header within the sector, and "LVM2 001";
 * - the PV header: the PV uuid (32 characters), the device size, then two lists of
 *   {offset, size} byte pairs ended by a zero pair: data areas, then metadata areas;
 * - each metadata area starts with a 512-byte header (CRC, " LVM2 x[5A%r0N*>", version 1, its
 *   start and size) and a list of raw locations, the first naming the current metadata text
 *   (offset from the area start, size, CRC). The text area is a ring: text that runs past the
 *   area end goes on right after the 512-byte header.
 *
 * LVM's CRC is the CRC-32 table with initial value 0xF597A6CF and no final XOR.
 */
import { DiskError } from '../../core/errors.js';
import { Struct, ascii, u32, u64 } from '../../binary/struct.js';
import { crc32Update } from '../../binary/crc32.js';
import type { ByteSource } from '../source.js';
import { readIfThere } from '../source.js';
import { warning, type InsideWarning } from '../types.js';
import { MAX_TEXT } from './text.js';

export const LabelHeader = new Struct(
  'LVM label',
  'le',
  [
    { name: 'id', type: ascii(8) },
    { name: 'sector', type: u64 },
    { name: 'crc', type: u32 },
    { name: 'offset', type: u32 },
    { name: 'type', type: ascii(8) },
  ] as const,
  32,
);

export const MdaHeader = new Struct(
  'LVM metadata area header',
  'le',
  [
    { name: 'checksum', type: u32 },
    { name: 'magic', type: ascii(16) },
    { name: 'version', type: u32 },
    { name: 'start', type: u64 },
    { name: 'size', type: u64 },
  ] as const,
  40,
);

export const RawLocation = new Struct(
  'LVM raw location',
  'le',
  [
    { name: 'offset', type: u64 },
    { name: 'size', type: u64 },
    { name: 'checksum', type: u32 },
    { name: 'flags', type: u32 },
  ] as const,
  24,
);

export const LABEL_ID = 'LABELONE';
export const LABEL_TYPE = 'LVM2 001';
export const MDA_MAGIC = ' LVM2 x[5A%r0N*>';
const INITIAL_CRC = 0xf597a6cf;
const MDA_HEADER_SIZE = 512;
/** a location flagged IGNORED holds no metadata (it lives in another area) */
const RAW_LOCN_IGNORED = 1;

export function lvmCrc(buf: Uint8Array): number {
  return crc32Update(INITIAL_CRC, buf);
}

/** LVM prints 32-character ids in groups of 6-4-4-4-4-4-6 */
export function lvmUuid(raw: string): string {
  if (raw.length !== 32) return raw;
  const cuts = [6, 4, 4, 4, 4, 4, 6];
  const parts: string[] = [];
  let at = 0;
  for (const c of cuts) {
    parts.push(raw.slice(at, at + c));
    at += c;
  }
  return parts.join('-');
}

export interface DiskArea {
  readonly offset: number;
  readonly size: number;
}

export interface PvLabel {
  /** the uuid as LVM prints it (dashed) */
  readonly uuid: string;
  readonly labelSector: number;
  readonly deviceSize: number;
  readonly dataAreas: readonly DiskArea[];
  readonly metadataAreas: readonly DiskArea[];
}

/** the label of a PV in `src`'s first four sectors, or undefined when there is none */
export async function readPvLabel(src: ByteSource, warnings: InsideWarning[] = []): Promise<PvLabel | undefined> {
  const head = await readIfThere(src, 0, 2048);
  if (!head) return undefined;
  for (let s = 0; s < 4; s++) {
    const sector = head.subarray(s * 512, s * 512 + 512);
    const l = LabelHeader.decode(sector);
    if (l.id !== LABEL_ID) continue;
    if (l.type !== LABEL_TYPE) {
      warnings.push(warning(`label type ${JSON.stringify(l.type)} is not "${LABEL_TYPE}"`, 'LVM label', 'type'));
      return undefined;
    }
    if (l.sector !== BigInt(s)) warnings.push(warning(`label in sector ${s} says sector ${l.sector}`, 'LVM label', 'sector'));
    const crc = lvmCrc(sector.subarray(20));
    if (crc !== l.crc) warnings.push(warning(`CRC mismatch (stored 0x${l.crc.toString(16)}, computed 0x${crc.toString(16)})`, 'LVM label', 'crc'));
    if (l.offset < 32 || l.offset > 512 - 48) {
      throw new DiskError('CORRUPT', `PV header offset ${l.offset} is outside the label sector`, { struct: 'LVM label', field: 'offset', found: l.offset });
    }
    let at = l.offset;
    const uuid = lvmUuid(sector.toString('latin1', at, at + 32));
    at += 32;
    const deviceSize = Number(sector.readBigUInt64LE(at));
    at += 8;
    const lists: DiskArea[][] = [[], []];
    for (const list of lists) {
      for (;;) {
        if (at + 16 > 512) throw new DiskError('CORRUPT', 'the PV header area list runs past the label sector', { struct: 'LVM PV header', field: 'disk_areas' });
        const offset = sector.readBigUInt64LE(at);
        const size = sector.readBigUInt64LE(at + 8);
        at += 16;
        if (offset === 0n) break;
        if (offset > BigInt(Number.MAX_SAFE_INTEGER) || size > BigInt(Number.MAX_SAFE_INTEGER)) {
          throw new DiskError('CORRUPT', 'area offset or size too large', { struct: 'LVM PV header', field: 'disk_areas', found: offset });
        }
        list.push({ offset: Number(offset), size: Number(size) });
      }
    }
    return { uuid, labelSector: s, deviceSize, dataAreas: lists[0]!, metadataAreas: lists[1]! };
  }
  return undefined;
}

/**
 * The current metadata text of the first readable metadata area, or undefined (with a warning)
 * when none holds any.
 */
export async function readMetadataText(src: ByteSource, label: PvLabel, warnings: InsideWarning[]): Promise<string | undefined> {
  for (const [i, mda] of label.metadataAreas.entries()) {
    const field = `metadataAreas[${i}]`;
    if (mda.size < MDA_HEADER_SIZE || mda.offset + mda.size > src.capacity) {
      warnings.push(warning(`metadata area at ${mda.offset} (${mda.size} bytes) does not fit the PV`, 'LVM PV header', field));
      continue;
    }
    const hdr = await src.read(mda.offset, MDA_HEADER_SIZE);
    const h = MdaHeader.decode(hdr);
    if (h.magic !== MDA_MAGIC) {
      warnings.push(warning('metadata area header has no magic', 'LVM metadata area header', 'magic'));
      continue;
    }
    const crc = lvmCrc(hdr.subarray(4));
    if (crc !== h.checksum) warnings.push(warning(`CRC mismatch (stored 0x${h.checksum.toString(16)}, computed 0x${crc.toString(16)})`, 'LVM metadata area header', 'checksum'));
    if (h.version !== 1) warnings.push(warning(`version ${h.version}, read as 1`, 'LVM metadata area header', 'version'));
    const loc = RawLocation.decode(hdr, MdaHeader.size);
    if (loc.offset === 0n || loc.size === 0n || (loc.flags & RAW_LOCN_IGNORED) !== 0) continue;
    const areaSize = mda.size;
    if (loc.size > BigInt(Math.min(MAX_TEXT, areaSize - MDA_HEADER_SIZE)) || loc.offset < BigInt(MDA_HEADER_SIZE) || loc.offset >= BigInt(areaSize)) {
      throw new DiskError('CORRUPT', `metadata text of ${loc.size} bytes at ${loc.offset} does not fit the ${areaSize}-byte area`, { struct: 'LVM raw location', field: 'size', found: loc.size });
    }
    const off = Number(loc.offset);
    const size = Number(loc.size);
    // the ring: what runs past the area end continues after the header
    const first = Math.min(size, areaSize - off);
    let text = await src.read(mda.offset + off, first);
    if (first < size) text = Buffer.concat([text, await src.read(mda.offset + MDA_HEADER_SIZE, size - first)]);
    const tcrc = lvmCrc(text);
    if (tcrc !== loc.checksum) warnings.push(warning(`metadata text CRC mismatch (stored 0x${loc.checksum.toString(16)}, computed 0x${tcrc.toString(16)})`, 'LVM raw location', 'checksum'));
    return text.toString('utf8');
  }
  if (label.metadataAreas.length > 0) warnings.push(warning(`PV ${label.uuid} has no readable metadata`, 'LVM PV header', 'metadataAreas'));
  return undefined;
}
