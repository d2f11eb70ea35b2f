/**
 * Where the data blocks of a VDI or VHD file sit, read with plain fs from the spec's offsets
 * (vdi.md §4, vhd.md §2/§4), so the defragment tests do not trust vdkit's parsers. "In virtual
 * order" means what defragment promises: the allocated blocks, taken by virtual index, sit in
 * consecutive slots from the start of the data area, and the file ends right after the last
 * one (VHD: after the footer that follows it).
 */
import { open } from 'node:fs/promises';

export interface BlockOrder {
  /** file offset of each allocated block, in virtual order */
  offsets: number[];
  inOrder: boolean;
}

async function readAt(path: string, at: number, n: number): Promise<{ buf: Buffer; size: number }> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(n);
    await fh.read(buf, 0, n, at);
    return { buf, size: (await fh.stat()).size };
  } finally {
    await fh.close();
  }
}

/** VDI: map entries (u32 LE at offBlocks 0x154; FREE/ZERO >= 0xFFFFFFFE) must be 0, 1, 2, ... */
export async function vdiBlockOrder(path: string): Promise<BlockOrder> {
  const { buf: h } = await readAt(path, 0, 0x190);
  const offBlocks = h.readUInt32LE(0x154);
  const offData = h.readUInt32LE(0x158);
  const stride = h.readUInt32LE(0x178) + h.readUInt32LE(0x17c);
  const cBlocks = h.readUInt32LE(0x180);
  const { buf: map, size } = await readAt(path, offBlocks, 4 * cBlocks);
  const offsets: number[] = [];
  let inOrder = true;
  for (let i = 0; i < cBlocks; i++) {
    const e = map.readUInt32LE(4 * i);
    if (e >= 0xfffffffe) continue;
    if (e !== offsets.length) inOrder = false;
    offsets.push(offData + e * stride);
  }
  if (size !== offData + offsets.length * stride) inOrder = false;
  return { offsets, inOrder };
}

/**
 * VHD (dynamic or differencing): BAT entries (u32 BE sectors) must be consecutive blocks
 * (bitmap + data) starting right after the BAT and any parent locator data, and the footer must
 * follow the last one.
 */
export async function vhdBlockOrder(path: string): Promise<BlockOrder> {
  const fh = await open(path, 'r');
  let size: number;
  let footer: Buffer;
  try {
    size = (await fh.stat()).size;
    footer = Buffer.alloc(512);
    await fh.read(footer, 0, 512, size - 512);
  } finally {
    await fh.close();
  }
  const headerAt = Number(footer.readBigUInt64BE(16));
  const { buf: h } = await readAt(path, headerAt, 1024);
  const tableOffset = Number(h.readBigUInt64BE(16));
  const entries = h.readUInt32BE(28);
  const blockSize = h.readUInt32BE(32);
  const bitmap = Math.ceil(blockSize / 512 / 8 / 512) * 512;
  const stride = bitmap + blockSize;
  let metaEnd = Math.max(headerAt + 1024, tableOffset + entries * 4);
  for (let i = 0; i < 8; i++) {
    const at = 576 + 24 * i;
    if (h.readUInt32BE(at) === 0) continue;
    const space = h.readUInt32BE(at + 4);
    const length = h.readUInt32BE(at + 8);
    // space in bytes (what Hyper-V, VirtualBox and vdkit write) or in sectors (the spec)
    metaEnd = Math.max(metaEnd, Number(h.readBigUInt64BE(at + 16)) + Math.max(length, space >= length ? space : space * 512));
  }
  metaEnd = Math.ceil(metaEnd / 512) * 512;
  const used = entries;
  const { buf: bat } = await readAt(path, tableOffset, 4 * used);
  const offsets: number[] = [];
  let inOrder = true;
  for (let i = 0; i < used; i++) {
    const e = bat.readUInt32BE(4 * i);
    if (e === 0xffffffff) continue;
    if (e * 512 !== metaEnd + offsets.length * stride) inOrder = false;
    offsets.push(e * 512);
  }
  if (size !== metaEnd + offsets.length * stride + 512) inOrder = false;
  return { offsets, inOrder };
}
