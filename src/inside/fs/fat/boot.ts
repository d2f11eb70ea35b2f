/**
 * The boot sector's BPB turned into byte offsets and the FAT type, with every field checked
 * before it is used (see NOTES.md, "Untrusted metadata"). The type comes from the cluster
 * count as the spec's rule says (< 4085 FAT12, < 65525 FAT16, else FAT32), never from the
 * BS_FilSysType text; a BPB in the FAT32 layout (BPB_FATSz16 = 0, BPB_RootEntCnt = 0) with
 * fewer clusters is still FAT32, as Linux and mtools read it (mkfs.fat -F 32 on a small volume
 * makes one), with a warning.
 */
import { DiskError } from '../../../core/errors.js';
import type { FsSource, FsWarning } from '../types.js';
import { BootTail, Bpb, Fat32Ext, TAIL_AT_FAT16, TAIL_AT_FAT32 } from './structs.js';
import { cp437 } from './names.js';
import { fat } from '../../detect/dos.js';

export type FatType = 'FAT12' | 'FAT16' | 'FAT32';

/** the spec's limits: a volume with fewer clusters than these is FAT12, resp. FAT16 */
const FAT12_CLUSTERS = 4085;
const FAT16_CLUSTERS = 65525;
/** FAT32 entries are 28 bits; 0x0FFFFFF7 and up are reserved values */
const FAT32_MAX_CLUSTERS = 0x0ffffff5;
/** cluster sizes above 32 KiB break the spec but Windows NT made 64 KiB ones */
const MAX_CLUSTER_BYTES = 64 * 1024;

export interface FatGeometry {
  readonly type: FatType;
  readonly sectorSize: number;
  readonly clusterSize: number;
  /** bytes: where the first FAT starts, and one FAT's length */
  readonly fatStart: number;
  readonly fatBytes: number;
  readonly fats: number;
  /** the FAT copy read (FAT32 with mirroring off names one; else the first) */
  readonly activeFat: number;
  /** FAT12/16: the fixed root directory area (bytes); FAT32: 0 and 0 */
  readonly rootStart: number;
  readonly rootBytes: number;
  /** FAT32: the root directory's first cluster; FAT12/16: 0 */
  readonly rootCluster: number;
  /** byte offset of cluster 2 */
  readonly dataStart: number;
  /** data clusters: valid cluster numbers are 2 .. clusters + 1 */
  readonly clusters: number;
  readonly volumeBytes: number;
  /** BS_VolID as blkid prints it (XXXX-XXXX), when the boot signature says it is there */
  readonly serial: string;
  /** BS_VolLab, trimmed ('' when absent or "NO NAME") */
  readonly bootLabel: string;
  readonly warnings: FsWarning[];
}

const isPow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;

/** Decode and check the boot sector (`raw` holds its first 512 bytes) of a volume of `capacity` bytes. */
export function parseBoot(raw: Buffer, capacity: number, name: string | undefined): FatGeometry {
  const bad = (field: string, message: string, expected: unknown, found: unknown) =>
    new DiskError('CORRUPT', `FAT boot sector: ${message}`, { path: name, struct: 'FAT BPB', field, expected, found });
  const b = Bpb.decode(raw, 0, name);
  const ss = b.bytsPerSec;
  if (![512, 1024, 2048, 4096].includes(ss)) throw bad('BPB_BytsPerSec', 'bytes per sector must be 512, 1024, 2048 or 4096', '512..4096', ss);
  if (!isPow2(b.secPerClus) || b.secPerClus * ss > MAX_CLUSTER_BYTES) throw bad('BPB_SecPerClus', 'sectors per cluster must be a power of two with clusters of at most 64 KiB', `1..${MAX_CLUSTER_BYTES / ss}`, b.secPerClus);
  if (b.rsvdSecCnt === 0) throw bad('BPB_RsvdSecCnt', 'no reserved sectors (the boot sector is one)', '>= 1', 0);
  if (b.numFats < 1 || b.numFats > 4) throw bad('BPB_NumFATs', 'number of FATs out of range', '1..4', b.numFats);
  const fat32Layout = b.fatSz16 === 0;
  const ext = fat32Layout ? Fat32Ext.decode(raw, Bpb.size, name) : undefined;
  const fatSectors = fat32Layout ? ext!.fatSz32 : b.fatSz16;
  if (fatSectors === 0) throw bad('BPB_FATSz32', 'FAT length is zero', '>= 1', 0);
  if (fat32Layout && b.rootEntCnt !== 0) throw bad('BPB_RootEntCnt', 'a FAT32 BPB (BPB_FATSz16 = 0) with a fixed root directory', 0, b.rootEntCnt);
  const totalSectors = b.totSec16 !== 0 ? b.totSec16 : b.totSec32;
  if (totalSectors === 0) throw bad('BPB_TotSec32', 'total sector count is zero', '>= 1', 0);
  const volumeBytes = totalSectors * ss;
  if (volumeBytes > capacity) throw bad(b.totSec16 !== 0 ? 'BPB_TotSec16' : 'BPB_TotSec32', 'the volume is larger than the disk or partition it is on', `<= ${Math.floor(capacity / ss)} sectors`, totalSectors);
  const rootBytes = b.rootEntCnt * 32;
  const rootSectors = Math.ceil(rootBytes / ss);
  const dataSector = b.rsvdSecCnt + b.numFats * fatSectors + rootSectors;
  if (dataSector >= totalSectors) throw bad('BPB_FATSz16', 'reserved sectors, FATs and root directory leave no data area', `< ${totalSectors} sectors`, dataSector);
  const clusters = Math.floor((totalSectors - dataSector) / b.secPerClus);
  const warnings: FsWarning[] = [];
  let type: FatType = clusters < FAT12_CLUSTERS ? 'FAT12' : clusters < FAT16_CLUSTERS ? 'FAT16' : 'FAT32';
  if (fat32Layout && type !== 'FAT32') {
    warnings.push({ field: 'BPB_FATSz16', text: `a FAT32 BPB with only ${clusters} clusters (the spec would say ${type}): read as FAT32, as Linux and mtools do` });
    type = 'FAT32';
  } else if (!fat32Layout && type === 'FAT32') {
    throw bad('BPB_FATSz16', `${clusters} clusters need FAT32, but the BPB has FAT12/16 fields`, `< ${FAT16_CLUSTERS} clusters`, clusters);
  }
  if (type === 'FAT32' && clusters > FAT32_MAX_CLUSTERS) throw bad('BPB_TotSec32', 'more clusters than FAT32 can number', `<= ${FAT32_MAX_CLUSTERS}`, clusters);
  const bits = type === 'FAT12' ? 12 : type === 'FAT16' ? 16 : 32;
  const fatBytes = fatSectors * ss;
  // entries 0 and 1 are reserved, so the FAT must hold clusters + 2 entries
  if (Math.floor((fatBytes * 8) / bits) < clusters + 2) throw bad(fat32Layout ? 'BPB_FATSz32' : 'BPB_FATSz16', `the FAT is too short for ${clusters} clusters`, `>= ${Math.ceil(((clusters + 2) * bits) / 8 / ss)} sectors`, fatSectors);
  let activeFat = 0;
  let rootCluster = 0;
  if (ext) {
    if (ext.rootClus < 2 || ext.rootClus > clusters + 1) throw new DiskError('CORRUPT', 'FAT boot sector: root directory cluster outside the data area', { path: name, struct: 'FAT32 BPB', field: 'BPB_RootClus', expected: `2..${clusters + 1}`, found: ext.rootClus });
    rootCluster = ext.rootClus;
    if (ext.extFlags & 0x80) {
      activeFat = ext.extFlags & 0x0f;
      if (activeFat >= b.numFats) throw new DiskError('CORRUPT', 'FAT boot sector: the active FAT does not exist', { path: name, struct: 'FAT32 BPB', field: 'BPB_ExtFlags', expected: `< ${b.numFats}`, found: activeFat });
    }
  }
  const tail = BootTail.decode(raw, fat32Layout ? TAIL_AT_FAT32 : TAIL_AT_FAT16, name);
  const hasSerial = tail.bootSig === 0x29 || tail.bootSig === 0x28;
  const v = tail.volId.toString(16).toUpperCase().padStart(8, '0');
  const label = tail.bootSig === 0x29 ? cp437(tail.volLab).trimEnd() : '';
  return {
    type,
    sectorSize: ss,
    clusterSize: b.secPerClus * ss,
    fatStart: b.rsvdSecCnt * ss,
    fatBytes,
    fats: b.numFats,
    activeFat,
    rootStart: fat32Layout ? 0 : (b.rsvdSecCnt + b.numFats * fatSectors) * ss,
    rootBytes: fat32Layout ? 0 : rootBytes,
    rootCluster,
    dataStart: dataSector * ss,
    clusters,
    volumeBytes,
    serial: hasSerial ? `${v.slice(0, 4)}-${v.slice(4)}` : '',
    bootLabel: label === 'NO NAME' ? '' : label,
    warnings,
  };
}

/** Whether `source` starts with a FAT boot sector: the same loose test as blkid's (detect/dos.ts). */
export async function looksLikeFat(source: FsSource): Promise<boolean> {
  return (await fat.probe(source)) !== undefined;
}
