/** The ext2/3/4 reader's entry point (see NOTES.md). */
import { FileTree } from '../path.js';
import type { Filesystem, FsSource } from '../types.js';
import { ExtReader, type ExtOpenOptions } from './reader.js';

export type { ExtOpenOptions } from './reader.js';

/**
 * Open the ext2, ext3 or ext4 filesystem that `source` holds (a Disk, or a partition or volume
 * of one), read-only. Refuses, with a DiskError naming the field, a superblock that does not
 * fit the source and INCOMPAT features vdkit cannot read; `statfs().warnings` says when the
 * journal needs recovery (it is not replayed, so recent changes may be missing).
 */
export async function openExt(source: FsSource, opts: ExtOpenOptions = {}): Promise<Filesystem> {
  return new FileTree(await ExtReader.open(source, opts));
}
