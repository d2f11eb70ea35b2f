/** What a probe reports about the start of a volume, in blkid's terms. */
import type { ByteSource } from '../source.js';

export interface Detected {
  /** blkid's TYPE: ext2, ext3, ext4, xfs, btrfs, vfat, exfat, ntfs, swap, crypto_LUKS, LVM2_member, iso9660 */
  readonly type: string;
  /** blkid's USAGE: filesystem, raid (LVM), crypto, other (swap) */
  readonly usage: 'filesystem' | 'raid' | 'crypto' | 'other';
  readonly label?: string;
  /** as blkid prints it (a GUID, `XXXX-XXXX` for FAT, 16 hex digits for NTFS, LVM's dashed id) */
  readonly uuid?: string;
  /** blkid's VERSION where it has one (FAT12/FAT16/FAT32, 1.0, LVM2 001 ...) */
  readonly version?: string;
  /** bytes the filesystem says it spans, when its superblock says */
  readonly size?: number;
  /** blkid's BLOCK_SIZE where it has one */
  readonly blockSize?: number;
}

/** One detector: looks at fixed offsets of `src` and answers undefined when its magic is not there. */
export interface Probe {
  readonly type: string;
  probe(src: ByteSource): Promise<Detected | undefined>;
}
