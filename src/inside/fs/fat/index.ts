/** The FAT12/16/32 reader's entry point (see NOTES.md). */
import { FileTree } from '../path.js';
import type { Filesystem, FsSource } from '../types.js';
import { FatReader, type FatOpenOptions } from './reader.js';

export type { FatOpenOptions } from './reader.js';
export { looksLikeFat } from './boot.js';

/**
 * Open the FAT12, FAT16 or FAT32 filesystem that `source` holds (a Disk, or a partition or
 * volume of one), read-only, with long file names. A boot sector whose fields do not fit
 * together or the source is a DiskError naming the BPB field; damaged chains and directories
 * are DiskErrors naming the FAT entry or directory field when they are met.
 */
export async function openFat(source: FsSource, opts: FatOpenOptions = {}): Promise<Filesystem> {
  return new FileTree(await FatReader.open(source, opts));
}
