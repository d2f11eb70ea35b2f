/**
 * Directory blocks, read linearly. Hashed (htree) directories need nothing special: their root
 * block starts with ordinary `.` and `..` entries whose `..` rec_len spans the index, and every
 * interior index block starts with an empty entry (inode 0) spanning the whole block, so a
 * linear walk sees exactly the leaf entries, as e2fsck's pass 2 does. The metadata_csum tail
 * (a 12-byte entry with inode 0) is skipped the same way.
 */
import { DiskError } from '../../../core/errors.js';
import type { FsDirEntry } from '../types.js';
import { TYPE_OF_DIRENT } from './inode.js';
import { DirEntry } from './structs.js';

export interface DirParseContext {
  /** the image (and partition), for errors */
  readonly path?: string;
  readonly inode: number;
  /** the logical block or `inline` (for error messages) */
  readonly where: string;
  readonly blockSize: number;
  readonly filetype: boolean;
  readonly inodesCount: number;
}

/** rec_len as stored: 65536-byte blocks keep 65536 as 0 or 65535 (ext4_rec_len_from_disk) */
function recLenOf(raw: number, blockSize: number): number {
  if (blockSize < 65536) return raw;
  if (raw === 65535 || raw === 0) return 65536;
  return (raw & 65532) | ((raw & 3) << 16);
}

/** Append the entries of one directory block (or inline area) to `out`; `.` and `..` are left out. */
export function parseDirBlock(buf: Buffer, ctx: DirParseContext, out: FsDirEntry[]): void {
  const bad = (field: string, message: string, expected: unknown, found: unknown) =>
    new DiskError('CORRUPT', `directory inode ${ctx.inode}, block ${ctx.where}: ${message}`, { path: ctx.path, struct: 'ext directory entry', field, inode: ctx.inode, expected, found });
  let pos = 0;
  while (pos < buf.length) {
    if (pos + DirEntry.size > buf.length) throw bad('rec_len', 'entry runs past the block', `<= ${buf.length - DirEntry.size}`, pos);
    const e = DirEntry.decode(buf, pos);
    const recLen = recLenOf(e.recLen, ctx.blockSize);
    const nameLen = ctx.filetype ? e.nameLen : e.nameLen | (e.fileType << 8);
    if (recLen < DirEntry.size || recLen % 4 !== 0 || pos + recLen > buf.length) {
      throw bad('rec_len', 'record length out of range', `a multiple of 4 from 8 to ${buf.length - pos}`, recLen);
    }
    if (DirEntry.size + nameLen > recLen) throw bad('name_len', 'name longer than its record', `<= ${recLen - DirEntry.size}`, nameLen);
    if (e.inode !== 0 && nameLen > 0) {
      if (e.inode > ctx.inodesCount) throw bad('inode', 'entry names an inode past the last one', `<= ${ctx.inodesCount}`, e.inode);
      const raw = buf.subarray(pos + DirEntry.size, pos + DirEntry.size + nameLen);
      const dot = nameLen <= 2 && raw[0] === 0x2e && (nameLen === 1 || raw[1] === 0x2e);
      if (!dot) {
        out.push({ name: raw.toString('utf8'), ino: e.inode, type: ctx.filetype ? (TYPE_OF_DIRENT[e.fileType & 7] ?? 'unknown') : 'unknown' });
      }
    }
    pos += recLen;
  }
}
