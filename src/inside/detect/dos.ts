/**
 * Boot-sector volume types: FAT12/16/32, exFAT and NTFS (Microsoft's published specifications:
 * the FAT32 File System Specification, the exFAT specification, and NTFS's boot sector and MFT
 * record layout). Labels live outside the boot sector: FAT's in the root directory (the boot
 * sector copy is the fallback, as blkid does), exFAT's in a root directory entry, NTFS's in the
 * $VOLUME_NAME attribute of MFT record 3 ($Volume). Each of those reads is one bounded block.
 */
import { Struct, ascii, bytes, reserved, u16, u32, u64, u8 } from '../../binary/struct.js';
import { readIfThere } from '../source.js';
import type { Probe } from './types.js';

export const FatBootSector = new Struct(
  'FAT boot sector',
  'le',
  [
    { name: 'jump', type: bytes(3) },
    { name: 'oem', type: ascii(8) },
    { name: 'bytesPerSector', type: u16 },
    { name: 'sectorsPerCluster', type: u8 },
    { name: 'reservedSectors', type: u16 },
    { name: 'fats', type: u8 },
    { name: 'rootEntries', type: u16 },
    { name: 'sectors16', type: u16 },
    { name: 'media', type: u8 },
    { name: 'fatLength16', type: u16 },
    { name: 'gap0', type: reserved(8) },
    { name: 'sectors32', type: u32 },
    /** FAT12/16: drive, reserved, boot signature, serial, label, type; FAT32: these 28 bytes first */
    { name: 'fat32Length', type: u32 },
    { name: 'gap1', type: reserved(4) },
    { name: 'rootCluster', type: u32 },
    { name: 'gap2', type: reserved(16) },
    { name: 'fat32Ext', type: bytes(26) },
  ] as const,
  90,
);

const FAT12_MAX = 0xff4;
/** the label FAT writes when there is none */
const NO_NAME = 'NO NAME';

function serialText(b: Buffer, at: number): string {
  const v = b.readUInt32LE(at).toString(16).toUpperCase().padStart(8, '0');
  return `${v.slice(0, 4)}-${v.slice(4)}`;
}

/** the volume label entry of a directory block (attribute 0x08, not a long-name part), or undefined */
function dirLabel(block: Buffer): string | undefined {
  for (let at = 0; at + 32 <= block.length; at += 32) {
    const first = block[at]!;
    if (first === 0) break;
    if (first === 0xe5) continue;
    const attr = block[at + 11]!;
    if (attr === 0x0f || (attr & 0x08) === 0) continue;
    return block.toString('latin1', at, at + 11).trimEnd();
  }
  return undefined;
}

const isPow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;

export const fat: Probe = {
  type: 'vfat',
  async probe(src) {
    const b = await readIfThere(src, 0, 512);
    if (!b || b.readUInt16LE(510) !== 0xaa55) return undefined;
    if (b[0] !== 0xeb && b[0] !== 0xe9) return undefined;
    const bs = FatBootSector.decode(b);
    const ss = bs.bytesPerSector;
    if (![512, 1024, 2048, 4096].includes(ss) || !isPow2(bs.sectorsPerCluster) || bs.reservedSectors === 0 || bs.fats === 0 || bs.fats > 4) return undefined;
    if (bs.media !== 0xf0 && bs.media < 0xf8) return undefined;
    const fat32 = bs.fatLength16 === 0;
    if (fat32 && bs.fat32Length === 0) return undefined;
    const fatLength = fat32 ? bs.fat32Length : bs.fatLength16;
    const sectors = bs.sectors16 || bs.sectors32;
    const rootDirSectors = Math.ceil((bs.rootEntries * 32) / ss);
    const dataStart = bs.reservedSectors + bs.fats * fatLength + rootDirSectors;
    if (sectors <= dataStart) return undefined;
    const clusters = Math.floor((sectors - dataStart) / bs.sectorsPerCluster);
    const version = fat32 ? 'FAT32' : clusters > FAT12_MAX ? 'FAT16' : 'FAT12';
    // the extended BPB: at 36 for FAT12/16, at 64 for FAT32 (boot signature 0x29 or 0x28 first)
    const ext = fat32 ? 64 : 36;
    const hasExt = b[ext + 2] === 0x29 || b[ext + 2] === 0x28;
    const bootLabel = hasExt && b[ext + 2] === 0x29 ? b.toString('latin1', ext + 7, ext + 18).trimEnd() : '';
    const uuid = hasExt ? serialText(b, ext + 3) : undefined;
    // the root directory's first block holds the label mkfs.fat and Windows write
    const clusterBytes = bs.sectorsPerCluster * ss;
    const rootAt = fat32 ? (dataStart + (bs.rootCluster - 2) * bs.sectorsPerCluster) * ss : (bs.reservedSectors + bs.fats * fatLength) * ss;
    const rootLen = Math.min(fat32 ? clusterBytes : rootDirSectors * ss, 64 * 1024);
    const root = fat32 && bs.rootCluster < 2 ? undefined : await readIfThere(src, rootAt, rootLen);
    const dir = root ? dirLabel(root) : undefined;
    const label = dir ?? (bootLabel && bootLabel !== NO_NAME ? bootLabel : undefined);
    return { type: 'vfat', usage: 'filesystem', label: label || undefined, uuid, version, size: sectors * ss, blockSize: ss };
  },
};

export const ExfatBootSector = new Struct(
  'exFAT boot sector',
  'le',
  [
    { name: 'jump', type: bytes(3) },
    { name: 'name', type: ascii(8) },
    { name: 'zero', type: reserved(53) },
    { name: 'partitionOffset', type: u64 },
    { name: 'volumeLength', type: u64 },
    { name: 'fatOffset', type: u32 },
    { name: 'fatLength', type: u32 },
    { name: 'clusterHeapOffset', type: u32 },
    { name: 'clusterCount', type: u32 },
    { name: 'rootDirectoryCluster', type: u32 },
    { name: 'volumeSerialNumber', type: u32 },
    { name: 'revisionMinor', type: u8 },
    { name: 'revisionMajor', type: u8 },
    { name: 'volumeFlags', type: u16 },
    { name: 'bytesPerSectorShift', type: u8 },
    { name: 'sectorsPerClusterShift', type: u8 },
    { name: 'numberOfFats', type: u8 },
  ] as const,
  111,
);

export const exfat: Probe = {
  type: 'exfat',
  async probe(src) {
    const b = await readIfThere(src, 0, 512);
    if (!b || b.toString('latin1', 3, 11) !== 'EXFAT   ') return undefined;
    const bs = ExfatBootSector.decode(b);
    if (bs.bytesPerSectorShift < 9 || bs.bytesPerSectorShift > 12 || bs.sectorsPerClusterShift > 25 - bs.bytesPerSectorShift) return undefined;
    const ss = 2 ** bs.bytesPerSectorShift;
    const cluster = ss * 2 ** bs.sectorsPerClusterShift;
    let label: string | undefined;
    if (bs.rootDirectoryCluster >= 2) {
      const at = bs.clusterHeapOffset * ss + (bs.rootDirectoryCluster - 2) * cluster;
      const root = await readIfThere(src, at, Math.min(cluster, 64 * 1024));
      for (let o = 0; root && o + 32 <= root.length; o += 32) {
        const type = root[o]!;
        if (type === 0) break;
        if (type !== 0x83) continue;
        const n = Math.min(root[o + 1]!, 11);
        label = root.toString('utf16le', o + 2, o + 2 + 2 * n);
        break;
      }
    }
    return {
      type: 'exfat',
      usage: 'filesystem',
      label: label || undefined,
      uuid: serialText(b, 100),
      version: `${bs.revisionMajor}.${bs.revisionMinor}`,
      size: Number(bs.volumeLength) * ss,
      blockSize: ss,
    };
  },
};

export const NtfsBootSector = new Struct(
  'NTFS boot sector',
  'le',
  [
    { name: 'jump', type: bytes(3) },
    { name: 'oem', type: ascii(8) },
    { name: 'bytesPerSector', type: u16 },
    { name: 'sectorsPerCluster', type: u8 },
    { name: 'gap0', type: reserved(26) },
    { name: 'totalSectors', type: u64 },
    { name: 'mftLcn', type: u64 },
    { name: 'mftMirrLcn', type: u64 },
    { name: 'clustersPerMftRecord', type: u8 },
    { name: 'gap1', type: reserved(3) },
    { name: 'clustersPerIndexRecord', type: u8 },
    { name: 'gap2', type: reserved(3) },
    { name: 'serial', type: u64 },
  ] as const,
  80,
);

const VOLUME_RECORD = 3;
const AT_VOLUME_NAME = 0x60;
const AT_END = 0xffffffff;

/** the $VOLUME_NAME of an MFT record (fixups applied), or undefined */
function volumeName(rec: Buffer, stride: number): string | undefined {
  if (rec.toString('latin1', 0, 4) !== 'FILE') return undefined;
  const usaOffset = rec.readUInt16LE(4);
  const usaCount = rec.readUInt16LE(6);
  if (usaCount < 1 || usaOffset + usaCount * 2 > rec.length || (usaCount - 1) * stride > rec.length) return undefined;
  // update sequence: the last two bytes of each sector hold the check value; the array holds the real bytes
  const check = rec.readUInt16LE(usaOffset);
  for (let i = 1; i < usaCount; i++) {
    const at = i * stride - 2;
    if (rec.readUInt16LE(at) !== check) return undefined;
    rec.writeUInt16LE(rec.readUInt16LE(usaOffset + 2 * i), at);
  }
  let at = rec.readUInt16LE(0x14);
  for (let n = 0; n < 64 && at + 24 <= rec.length; n++) {
    const type = rec.readUInt32LE(at);
    const len = rec.readUInt32LE(at + 4);
    if (type === AT_END || len < 24 || at + len > rec.length) return undefined;
    if (type === AT_VOLUME_NAME && rec[at + 8] === 0) {
      const vlen = rec.readUInt32LE(at + 0x10);
      const voff = rec.readUInt16LE(at + 0x14);
      if (voff + vlen > len) return undefined;
      return rec.toString('utf16le', at + voff, at + voff + vlen);
    }
    at += len;
  }
  return undefined;
}

export const ntfs: Probe = {
  type: 'ntfs',
  async probe(src) {
    const b = await readIfThere(src, 0, 512);
    if (!b || b.toString('latin1', 3, 11) !== 'NTFS    ') return undefined;
    const bs = NtfsBootSector.decode(b);
    const ss = bs.bytesPerSector;
    if (![256, 512, 1024, 2048, 4096].includes(ss)) return undefined;
    // sectors per cluster above 0x80 is a negative power of two: 2^(256 - n)
    const spc = bs.sectorsPerCluster > 0x80 ? 2 ** (256 - bs.sectorsPerCluster) : bs.sectorsPerCluster;
    if (!isPow2(spc)) return undefined;
    const cluster = ss * spc;
    const cpr = bs.clustersPerMftRecord;
    const recordSize = cpr > 0x80 ? 2 ** (256 - cpr) : cpr * cluster;
    if (!isPow2(recordSize) || recordSize > 65536 || recordSize < 256) return undefined;
    const uuid = bs.serial.toString(16).toUpperCase().padStart(16, '0');
    let label: string | undefined;
    const recAt = Number(bs.mftLcn) * cluster + VOLUME_RECORD * recordSize;
    const rec = Number.isSafeInteger(recAt) ? await readIfThere(src, recAt, recordSize) : undefined;
    // the update sequence stride is 512 bytes whatever the sector size
    if (rec) label = volumeName(rec, 512);
    return { type: 'ntfs', usage: 'filesystem', label: label || undefined, uuid, size: Number(bs.totalSectors) * ss, blockSize: ss };
  },
};
