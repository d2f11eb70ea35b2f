/**
 * From a file's logical blocks to the filesystem's blocks: extent trees (ext4) and the legacy
 * direct/indirect/double/triple block map (ext2/3). Both answer for a window of logical blocks
 * only, so reading 4 KiB of a huge file reads only the tree nodes on its path.
 *
 * Extent trees are untrusted: each node's header must have the magic, entries <= max, entries
 * inside the node, and a depth of exactly its parent's minus one; the root's depth is at most 5
 * (the kernel's limit). Strictly falling depths make the recursion finite whatever the pointers
 * say, so a node pointing at itself or an ancestor is an error rather than a loop.
 */
import { DiskError } from '../../../core/errors.js';
import { EXTENT_MAGIC, Extent, ExtentHeader, ExtentIndex } from './structs.js';

/** a piece of a file: `count` blocks from logical `logical` at `physical` (0: a hole) */
export interface Run {
  readonly logical: number;
  readonly physical: number;
  readonly count: number;
  /** an uninitialized (preallocated) extent: reads as zeros */
  readonly uninit: boolean;
}

/** what the mappers need from the reader */
export interface BlockAccess {
  /** the image (and partition), for errors */
  readonly name?: string;
  readonly blockSize: number;
  readonly blocksCount: number;
  readBlock(block: number, why: { inode: number; field: string }): Promise<Buffer>;
}

export const MAX_EXTENT_DEPTH = 5;
/** an uninitialized extent's ee_len is its length plus this */
const EXT_INIT_MAX_LEN = 32768;

function corrupt(io: BlockAccess, inode: number, field: string, message: string, expected?: unknown, found?: unknown): DiskError {
  return new DiskError('CORRUPT', `inode ${inode}: ${message}`, { path: io.name, struct: 'ext extent tree', field, inode, expected, found });
}

/** the extents of `root` (i_block) that overlap logical blocks [first, first + count), in order */
export async function mapExtents(io: BlockAccess, inode: number, root: Buffer, first: number, count: number): Promise<Run[]> {
  const out: Run[] = [];
  const end = first + count;
  const walk = async (node: Buffer, depth: number | undefined): Promise<void> => {
    const h = ExtentHeader.decode(node, 0);
    if (h.magic !== EXTENT_MAGIC) throw corrupt(io, inode, 'eh_magic', 'extent node without its magic', EXTENT_MAGIC, h.magic);
    const room = Math.floor((node.length - ExtentHeader.size) / 12);
    if (h.entries > h.max || h.max > room) throw corrupt(io, inode, 'eh_entries', 'more extent entries than the node holds', `<= ${Math.min(h.max, room)}`, h.entries);
    if (depth === undefined) {
      if (h.depth > MAX_EXTENT_DEPTH) throw corrupt(io, inode, 'eh_depth', 'extent tree too deep', `<= ${MAX_EXTENT_DEPTH}`, h.depth);
    } else if (h.depth !== depth) {
      throw corrupt(io, inode, 'eh_depth', 'extent node at the wrong depth (a loop or a misplaced node)', depth, h.depth);
    }
    let prev = -1;
    for (let i = 0; i < h.entries; i++) {
      const at = ExtentHeader.size + i * 12;
      if (h.depth === 0) {
        const e = Extent.decode(node, at);
        const uninit = e.len > EXT_INIT_MAX_LEN;
        const len = uninit ? e.len - EXT_INIT_MAX_LEN : e.len;
        if (e.block <= prev && i > 0) throw corrupt(io, inode, 'ee_block', 'extents out of order', `> ${prev}`, e.block);
        prev = e.block + len - 1;
        const physical = e.startLo + e.startHi * 2 ** 32;
        if (len === 0) continue;
        if (physical === 0 || physical + len > io.blocksCount) {
          throw corrupt(io, inode, 'ee_start', 'extent outside the filesystem', `1..${io.blocksCount - len}`, physical);
        }
        if (e.block + len <= first || e.block >= end) continue;
        out.push({ logical: e.block, physical, count: len, uninit });
      } else {
        const ix = ExtentIndex.decode(node, at);
        if (ix.block <= prev && i > 0) throw corrupt(io, inode, 'ei_block', 'extent index entries out of order', `> ${prev}`, ix.block);
        prev = ix.block;
        const next = i + 1 < h.entries ? ExtentIndex.decode(node, at + 12).block : Infinity;
        if (next <= first || ix.block >= end) continue;
        const leaf = ix.leafLo + ix.leafHi * 2 ** 32;
        if (leaf === 0 || leaf >= io.blocksCount) throw corrupt(io, inode, 'ei_leaf', 'extent index points outside the filesystem', `1..${io.blocksCount - 1}`, leaf);
        await walk(await io.readBlock(leaf, { inode, field: 'ei_leaf' }), h.depth - 1);
      }
    }
  };
  await walk(root, undefined);
  return out;
}

/**
 * The legacy map for logical blocks [first, first + count): i_block[0..11] are direct,
 * [12] single, [13] double, [14] triple indirect. A zero pointer anywhere is a hole (of the whole
 * subtree under it). Adjacent blocks are joined into runs.
 */
export async function mapBlocks(io: BlockAccess, inode: number, iblock: Buffer, first: number, count: number): Promise<Run[]> {
  const per = io.blockSize / 4;
  const out: Run[] = [];
  const push = (logical: number, physical: number) => {
    const last = out[out.length - 1];
    if (last && last.logical + last.count === logical && ((physical === 0 && last.physical === 0) || (physical !== 0 && last.physical + last.count === physical))) {
      out[out.length - 1] = { ...last, count: last.count + 1 };
    } else {
      out.push({ logical, physical, count: 1, uninit: false });
    }
  };
  const check = (b: number, field: string) => {
    if (b >= io.blocksCount) throw new DiskError('CORRUPT', `inode ${inode}: block pointer outside the filesystem`, { path: io.name, struct: 'ext inode', field, inode, expected: `< ${io.blocksCount}`, found: b });
    return b;
  };
  const pointer = async (table: number, index: number, field: string): Promise<number> => {
    if (table === 0) return 0;
    const buf = await io.readBlock(check(table, field), { inode, field });
    return buf.readUInt32LE(index * 4);
  };
  const maxBlocks = 12 + per + per * per + per * per * per;
  const end = Math.min(first + count, maxBlocks);
  for (let l = first; l < end; l++) {
    let b: number;
    if (l < 12) b = iblock.readUInt32LE(l * 4);
    else if (l < 12 + per) b = await pointer(iblock.readUInt32LE(48), l - 12, 'i_block[12]');
    else if (l < 12 + per + per * per) {
      const k = l - 12 - per;
      const ind = await pointer(iblock.readUInt32LE(52), Math.floor(k / per), 'i_block[13]');
      b = await pointer(ind, k % per, 'double indirect block');
    } else {
      const k = l - 12 - per - per * per;
      const dind = await pointer(iblock.readUInt32LE(56), Math.floor(k / (per * per)), 'i_block[14]');
      const ind = await pointer(dind, Math.floor(k / per) % per, 'triple indirect block');
      b = await pointer(ind, k % per, 'triple indirect block');
    }
    push(l, b === 0 ? 0 : check(b, 'i_block'));
  }
  return out;
}

/** the largest file each mapping can address, in blocks */
export function maxFileBlocks(extents: boolean, blockSize: number): number {
  if (extents) return 2 ** 32;
  const per = blockSize / 4;
  return 12 + per + per * per + per * per * per;
}
