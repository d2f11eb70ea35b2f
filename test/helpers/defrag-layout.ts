/**
 * Where a VHDX's blocks and a qcow2's data clusters sit in the file, read with plain fs from the
 * format references (vhd.md part 2 §16, qcow2.md §§3–7), so the defragment tests do not trust
 * vdkit's parsers. Each kind is one self-contained pair of functions: the layout, and whether it
 * is in virtual order.
 */
import { readAt } from './bytes.js';

const MiB = 2 ** 20;

// ------------------------------------------------------------------ VHDX

/** GUID text -> the 16 bytes as VHDX stores them (first three groups little-endian) */
function guidBytes(text: string): Buffer {
  const h = text.replace(/-/g, '');
  const b = Buffer.from(h, 'hex');
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

const BAT_REGION = guidBytes('2DC27766-F623-4200-9D64-115E9BFD4A08');
const METADATA_REGION = guidBytes('8B7CA206-4790-4B9A-B8FE-575F050F886E');
const FILE_PARAMETERS = guidBytes('CAA16737-FA36-4D43-B3B6-33F0AA44E76B');
const VIRTUAL_DISK_SIZE = guidBytes('2FA54224-CD1B-4876-B211-5DBED83BF4B8');
const LOGICAL_SECTOR_SIZE = guidBytes('8141BF1D-A96F-4709-BA47-F233A8FAAB5F');

export interface VhdxLayout {
  blockSize: number;
  /** end of the last region (BAT, metadata) and of the log, 1 MiB aligned */
  structuresEnd: number;
  /** present blocks in virtual order (per chunk: its sector bitmap, then its payload blocks) */
  items: { kind: 'payload' | 'bitmap'; index: number; offset: number; length: number }[];
}

/** The BAT of a VHDX whose log is empty (region table 1 at 192 KiB, §16.2–16.4). */
export async function vhdxLayout(path: string): Promise<VhdxLayout> {
  const rt = await readAt(path, 192 * 1024, 64 * 1024);
  if (rt.toString('latin1', 0, 4) !== 'regi') throw new Error(`${path}: no region table`);
  const header = await readAt(path, 64 * 1024, 4096);
  const header2 = await readAt(path, 128 * 1024, 4096);
  // the current header has the larger sequence number; its log must be empty (LogGuid 0)
  const cur = header2.readBigUInt64LE(8) > header.readBigUInt64LE(8) ? header2 : header;
  if (!cur.subarray(48, 64).equals(Buffer.alloc(16))) throw new Error(`${path}: the log is not empty`);
  let end = Number(cur.readBigUInt64LE(72)) + cur.readUInt32LE(68);
  let bat = { offset: 0, length: 0 };
  let meta = { offset: 0, length: 0 };
  for (let i = 0; i < rt.readUInt32LE(8); i++) {
    const e = rt.subarray(16 + i * 32, 48 + i * 32);
    const r = { offset: Number(e.readBigUInt64LE(16)), length: e.readUInt32LE(24) };
    end = Math.max(end, r.offset + r.length);
    if (e.subarray(0, 16).equals(BAT_REGION)) bat = r;
    if (e.subarray(0, 16).equals(METADATA_REGION)) meta = r;
  }
  const md = await readAt(path, meta.offset, meta.length);
  const item = (id: Buffer): Buffer => {
    for (let i = 0; i < md.readUInt16LE(10); i++) {
      const e = md.subarray(32 + i * 32, 64 + i * 32);
      if (e.subarray(0, 16).equals(id)) return md.subarray(e.readUInt32LE(16), e.readUInt32LE(16) + e.readUInt32LE(20));
    }
    throw new Error(`${path}: metadata item missing`);
  };
  const blockSize = item(FILE_PARAMETERS).readUInt32LE(0);
  const hasParent = (item(FILE_PARAMETERS).readUInt32LE(4) & 2) !== 0;
  const size = Number(item(VIRTUAL_DISK_SIZE).readBigUInt64LE(0));
  const sector = item(LOGICAL_SECTOR_SIZE).readUInt32LE(0);
  const cr = (2 ** 23 * sector) / blockSize;
  const blocks = Math.ceil(size / blockSize);
  const entries = await readAt(path, bat.offset, bat.length);
  const entry = (i: number) => ({ state: entries.readUInt32LE(i * 8) & 7, offset: Number(entries.readBigUInt64LE(i * 8) >> 20n) * MiB });
  const items: VhdxLayout['items'] = [];
  for (let k = 0; k * cr < blocks; k++) {
    const bm = entry(k * (cr + 1) + cr);
    if (hasParent && bm.state === 6) items.push({ kind: 'bitmap', index: k, offset: bm.offset, length: MiB });
    for (let n = k * cr; n < Math.min(blocks, (k + 1) * cr); n++) {
      const e = entry(n + k);
      if (e.state === 6 || e.state === 7) items.push({ kind: 'payload', index: n, offset: e.offset, length: blockSize });
    }
  }
  return { blockSize, structuresEnd: Math.ceil(end / MiB) * MiB, items };
}

/**
 * Blocks in virtual order: back to back, the first right after the structures (what defragment
 * makes), or with `packed: false` only each after the one before (a fixed image's layout).
 */
export async function vhdxInOrder(path: string, opts: { packed?: boolean } = {}): Promise<boolean> {
  const l = await vhdxLayout(path);
  const packed = opts.packed ?? true;
  let at = l.structuresEnd;
  for (const it of l.items) {
    if (packed ? it.offset !== at : it.offset < at) return false;
    at = it.offset + it.length;
  }
  return true;
}

// ------------------------------------------------------------------ qcow2

export interface Qcow2Layout {
  clusterSize: number;
  /** host offsets of the normal data clusters in guest order */
  data: number[];
  /** clusters that stay where they are: header, L1, L2 tables, refcount table and blocks, compressed and preallocated zero clusters */
  fixed: Set<number>;
  /** the raw L2 entries of the compressed clusters, in guest order */
  compressed: bigint[];
}

const OFFSET_MASK = 0x00fffffffffffe00n;

/** Active L1/L2 tables and refcount structures (qcow2.md §3–7; standard 8-byte L2 entries). */
export async function qcow2Layout(path: string): Promise<Qcow2Layout> {
  const h = await readAt(path, 0, 112);
  if (h.toString('latin1', 0, 4) !== 'QFI\xfb') throw new Error(`${path}: not qcow2`);
  const cs = 2 ** h.readUInt32BE(20);
  const l1Size = h.readUInt32BE(36);
  const l1Offset = Number(h.readBigUInt64BE(40));
  const rtOffset = Number(h.readBigUInt64BE(48));
  const rtClusters = h.readUInt32BE(56);
  const fixed = new Set<number>([0]);
  const compressed: bigint[] = [];
  for (let c = 0; c < Math.ceil((l1Size * 8) / cs); c++) fixed.add(l1Offset / cs + c);
  for (let c = 0; c < rtClusters; c++) fixed.add(rtOffset / cs + c);
  const rt = await readAt(path, rtOffset, rtClusters * cs);
  for (let i = 0; i < rt.length / 8; i++) {
    const off = Number(rt.readBigUInt64BE(i * 8) & ~0x1ffn);
    if (off !== 0) fixed.add(off / cs);
  }
  const l1 = await readAt(path, l1Offset, l1Size * 8);
  const data: number[] = [];
  for (let i = 0; i < l1Size; i++) {
    const l2Offset = Number(l1.readBigUInt64BE(i * 8) & OFFSET_MASK);
    if (l2Offset === 0) continue;
    fixed.add(l2Offset / cs);
    const l2 = await readAt(path, l2Offset, cs);
    for (let j = 0; j < cs / 8; j++) {
      const e = l2.readBigUInt64BE(j * 8);
      if (e & (1n << 62n)) {
        // compressed (§6): x = 62 - (cluster_bits - 8) offset bits, then the extra 512-byte sectors
        const x = 62n - BigInt(Math.log2(cs) - 8);
        const off = Number(e & ((1n << x) - 1n));
        const bytes = (Number((e >> x) & ((1n << BigInt(Math.log2(cs) - 8)) - 1n)) + 1) * 512 - (off % 512);
        for (let c = Math.floor(off / cs); c <= Math.floor((off + bytes - 1) / cs); c++) fixed.add(c);
        compressed.push(e);
        continue;
      }
      const off = Number(e & OFFSET_MASK);
      if (off !== 0 && e & 1n) fixed.add(off / cs); // a preallocated zero cluster stays
      else if (off !== 0) data.push(off);
    }
  }
  return { clusterSize: cs, data, fixed, compressed };
}

/** data clusters in guest order, with nothing but fixed clusters before and between them */
export async function qcow2InOrder(path: string): Promise<boolean> {
  const l = await qcow2Layout(path);
  let c = 0;
  for (const off of l.data) {
    const want = off / l.clusterSize;
    while (c < want && l.fixed.has(c)) c++;
    if (c !== want) return false;
    c++;
  }
  return true;
}
