/** Shapes shared by the partition tables, LVM and the volume listing. */
import type { ByteRange } from './source.js';

/** Something odd a reader got past (a damaged primary GPT, a partition past the disk end). */
export interface InsideWarning {
  /** on-disk structure (`GPT header`, `EBR`, `LVM metadata`) */
  readonly struct?: string;
  /** field within it */
  readonly field?: string;
  /** one sentence, naming the structure and field */
  readonly text: string;
}

export function warning(text: string, struct?: string, field?: string): InsideWarning {
  const where = [struct, field].filter(Boolean).join('.');
  return { struct, field, text: where ? `${where}: ${text}` : text };
}

export type PartitionKind = 'primary' | 'extended' | 'logical' | 'gpt';

/** One entry of a partition table, in bytes from the start of the disk. */
export interface Partition {
  /** 1-4 primary, 5.. logical (Linux's numbering); GPT: entry index + 1 (sgdisk's, sfdisk's) */
  readonly number: number;
  readonly kind: PartitionKind;
  readonly offset: number;
  readonly length: number;
  /** MBR: the system id as `0x83`; GPT: the type GUID, lower case */
  readonly type: string;
  /** a human name for `type`, when it is a known one */
  readonly typeName?: string;
  /** GPT: the partition name */
  readonly name?: string;
  /** GPT: the unique partition GUID */
  readonly uuid?: string;
  /** MBR: the active flag (0x80); GPT: legacy BIOS bootable (attribute bit 2) */
  readonly bootable?: boolean;
  /** GPT: the 64 attribute bits, as hex */
  readonly attributes?: string;
}

export interface PartitionTable {
  readonly scheme: 'mbr' | 'gpt';
  /** the logical sector size the table counts in (GPT: found by trying 512 and 4096) */
  readonly sectorSize: number;
  /** MBR: the disk signature as 8 hex digits; GPT: the disk GUID */
  readonly diskId: string;
  /** in table order (primaries, then logicals; GPT by entry index) */
  readonly partitions: readonly Partition[];
  /** GPT: what sector 0 holds: a protective MBR, a hybrid one (0xEE beside other entries), or neither */
  readonly mbr?: 'protective' | 'hybrid' | 'none';
  /** GPT: which header was used (the backup when the primary is damaged) */
  readonly header?: 'primary' | 'backup';
  /** GPT: the usable sectors, bytes */
  readonly firstUsable?: number;
  readonly lastUsable?: number;
}

/** an LVM2 logical volume mapped onto the disk */
export interface LogicalVolume {
  readonly vg: string;
  readonly name: string;
  readonly uuid: string;
  /** bytes */
  readonly length: number;
  /** where its bytes are on the disk, in order; empty when `complete` is false */
  readonly ranges: readonly ByteRange[];
  /** `linear`, `striped`, or the segment type that is not read (`mirror`, `thin`, ...) */
  readonly layout: string;
  /** false when a segment is on a PV not on this disk or of a type not read */
  readonly complete: boolean;
}

export interface VolumeGroup {
  readonly name: string;
  readonly uuid: string;
  readonly seqno: number;
  /** bytes */
  readonly extentSize: number;
  /** the PV uuids the metadata names, and where on this disk each was found (undefined: not here) */
  readonly pvs: readonly { readonly name: string; readonly uuid: string; readonly offset?: number }[];
  readonly lvs: readonly LogicalVolume[];
}
