/**
 * The grain tables of a disk's hosted sparse (KDMV) extents, read with plain fs from the
 * header fields (vmdk.md §3.2), so tests of compact and defragment do not trust vdkit's parser.
 */
import { open, readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export interface SparseTables {
  file: string;
  overHead: number;
  grainSectors: number;
  /** GTE of each grain of the extent, primary and redundant */
  gte: number[];
  rgte: number[];
}

async function readAt(path: string, at: number, n: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(n);
    await fh.read(b, 0, n, at);
    return b;
  } finally {
    await fh.close();
  }
}

export async function sparseTables(file: string): Promise<SparseTables> {
  const h = await readAt(file, 0, 512);
  if (h.toString('latin1', 0, 4) !== 'KDMV') throw new Error(`${file}: not a hosted sparse extent`);
  const capacity = Number(h.readBigUInt64LE(12));
  const grainSectors = Number(h.readBigUInt64LE(20));
  const numGTEs = h.readUInt32LE(44);
  const rgdOffset = Number(h.readBigUInt64LE(48));
  const gdOffset = Number(h.readBigUInt64LE(56));
  const overHead = Number(h.readBigUInt64LE(64));
  const grains = Math.ceil(capacity / grainSectors);
  const gdEntries = Math.ceil(grains / numGTEs);
  const table = async (dirAt: number) => {
    const gd = await readAt(file, dirAt * 512, gdEntries * 4);
    const out: number[] = [];
    for (let g = 0; g < gdEntries; g++) {
      const gt = await readAt(file, gd.readUInt32LE(g * 4) * 512, numGTEs * 4);
      for (let i = 0; i < numGTEs && out.length < grains; i++) out.push(gd.readUInt32LE(g * 4) === 0 ? 0 : gt.readUInt32LE(i * 4));
    }
    return out;
  };
  return { file, overHead, grainSectors, gte: await table(gdOffset), rgte: rgdOffset ? await table(rgdOffset) : [] };
}

/** the sparse extent files of a VMDK (the file itself when monolithic) */
export async function sparseFiles(path: string): Promise<string[]> {
  const head = await readAt(path, 0, 4);
  if (head.toString('latin1') === 'KDMV') return [path];
  const text = await readFile(path, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/^\s*RW\s+\d+\s+SPARSE\s+"([^"]+)"/gm)) out.push(join(dirname(path), m[1]!));
  return out;
}

/** sum of the lengths of a VMDK's files (descriptor and extents) */
export async function vmdkBytes(path: string): Promise<number> {
  const files = new Set([path, ...(await sparseFiles(path))]);
  let n = 0;
  for (const f of files) n += (await stat(f)).size;
  return n;
}
