/**
 * Where the data blocks of a VDI or VHD file sit, read with plain fs from the spec's offsets
 * (vdi.md §4, vhd.md §2/§4), so the defragment tests do not trust vdkit's parsers. "In virtual
 * order" means what defragment promises: the allocated blocks, taken by virtual index, sit in
 * consecutive slots from the start of the data area, and the file ends right after the last
 * one (VHD: after the footer that follows it).
 */
import { open, readFile, writeFile } from 'node:fs/promises';

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

/**
 * Rewrite a dynamic VHD (no parent locators) with its blocks in a random order at unaligned
 * places: gaps of a few sectors (Virtual PC's spare sector, Hyper-V's padding) and now and then
 * of more than a block, the footer after the last one. Plain fs; the disk reads the same.
 */
export async function scatterVhdBlocks(path: string, rnd: () => number): Promise<void> {
  const f = await readFile(path);
  const footer = f.subarray(f.length - 512);
  const headerAt = Number(footer.readBigUInt64BE(16));
  const h = f.subarray(headerAt, headerAt + 1024);
  const tableOffset = Number(h.readBigUInt64BE(16));
  const entries = h.readUInt32BE(28);
  const blockSize = h.readUInt32BE(32);
  const stride = Math.ceil(blockSize / 512 / 8 / 512) * 512 + blockSize;
  const metaEnd = Math.ceil((tableOffset + entries * 4) / 512) * 512;
  const used: { i: number; data: Buffer }[] = [];
  for (let i = 0; i < entries; i++) {
    const e = f.readUInt32BE(tableOffset + 4 * i);
    if (e !== 0xffffffff) used.push({ i, data: Buffer.from(f.subarray(e * 512, e * 512 + stride)) });
  }
  for (let i = used.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [used[i], used[j]] = [used[j]!, used[i]!];
  }
  let at = metaEnd + Math.floor(rnd() * 3) * 512;
  const places: number[] = [];
  for (const _ of used) {
    places.push(at);
    const r = rnd();
    at += stride + (r < 0.5 ? Math.floor(rnd() * 4) * 512 : r < 0.65 ? Math.floor((rnd() * 2 * stride) / 512) * 512 : 0);
  }
  const out = Buffer.alloc(at + 512);
  f.copy(out, 0, 0, metaEnd);
  used.forEach((u, k) => {
    u.data.copy(out, places[k]!);
    out.writeUInt32BE(places[k]! / 512, tableOffset + 4 * u.i);
  });
  footer.copy(out, at);
  await writeFile(path, out);
}
