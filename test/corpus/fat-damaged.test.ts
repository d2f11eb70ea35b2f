/**
 * Damaged FAT volumes: images made by mkfs.fat + mcopy, then one field broken by hand (a FAT
 * chain looping, running past the last cluster or into a free one, ending early; a directory
 * chain pointing at itself; a size larger than the volume; BPB fields out of range). Each must
 * be a CORRUPT DiskError naming the field, in well under a second, reading a bounded number of
 * bytes (memSource counts them).
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { DiskError, openFat, type Filesystem } from '../../src/index.js';
import { memSource } from '../helpers/inside-builders.js';
import { skipUnless, tmpDir } from '../helpers/tools.js';
import { contentOf } from '../interop/ext-support.js';
import { makeFat, mtool } from '../interop/fat-support.js';

interface Case {
  name: string;
  /** change the image; `at` gives places in it */
  mutate(img: Buffer, at: Places): void;
  /** what to do with the opened filesystem (opening itself may be what fails) */
  act(fs: Filesystem): Promise<unknown>;
  field: RegExp;
}

interface Places {
  /** byte offset of FAT entry n (first FAT) */
  fat(n: number): number;
  width: 2 | 4;
  /** byte offset of the short entry of /a.bin and /sub */
  fileEntry: number;
  dirEntry: number;
  fileClusters: number[];
  dirCluster: number;
}

async function places(img: Buffer, fat32: boolean): Promise<Places> {
  const fs = await openFat(memSource(img));
  const fileEntry = (await fs.stat('/a.bin')).ino;
  const dirEntry = (await fs.stat('/sub')).ino;
  const cluster = (e: number) => img.readUInt16LE(e + 26) + (fat32 ? img.readUInt16LE(e + 20) * 0x10000 : 0);
  const width = fat32 ? 4 : 2;
  const fat = (n: number) => img.readUInt16LE(14) * img.readUInt16LE(11) + n * width;
  const fileClusters = [cluster(fileEntry)];
  for (;;) {
    const v = width === 2 ? img.readUInt16LE(fat(fileClusters.at(-1)!)) : img.readUInt32LE(fat(fileClusters.at(-1)!)) & 0x0fffffff;
    if (v >= (width === 2 ? 0xfff8 : 0x0ffffff8)) break;
    fileClusters.push(v);
  }
  return { fat, width, fileEntry, dirEntry, fileClusters, dirCluster: cluster(dirEntry) };
}

const put = (img: Buffer, p: Places, n: number, v: number) => (p.width === 2 ? img.writeUInt16LE(v, p.fat(n)) : img.writeUInt32LE(v, p.fat(n)));

const CHAIN_CASES: Case[] = [
  { name: 'a file chain that loops back', mutate: (img, p) => put(img, p, p.fileClusters[2]!, p.fileClusters[0]!), act: (fs) => fs.read('/a.bin', 0, 1 << 20), field: /^FAT\[\d+\]$/ },
  { name: 'a file chain pointing past the last cluster', mutate: (img, p) => put(img, p, p.fileClusters[1]!, p.width === 2 ? 0xfff0 : 0x0ffffff0), act: (fs) => fs.read('/a.bin', 0, 1 << 20), field: /^FAT\[\d+\]$/ },
  { name: 'a file chain running into a free cluster', mutate: (img, p) => put(img, p, p.fileClusters[1]!, 0), act: (fs) => fs.read('/a.bin', 0, 1 << 20), field: /^FAT\[\d+\]$/ },
  { name: 'a file chain shorter than the size', mutate: (img, p) => put(img, p, p.fileClusters[1]!, p.width === 2 ? 0xffff : 0x0fffffff), act: (fs) => fs.read('/a.bin', 0, 1 << 20), field: /^FAT\[\d+\]$/ },
  { name: 'a directory chain pointing at itself', mutate: (img, p) => put(img, p, p.dirCluster, p.dirCluster), act: (fs) => fs.readdir('/sub'), field: /^FAT\[\d+\]$/ },
  { name: 'a file size larger than the volume', mutate: (img, p) => img.writeUInt32LE(0xffffffff, p.fileEntry + 28), act: (fs) => fs.read('/a.bin', 0, 10), field: /^DIR_FileSize$/ },
  { name: 'a directory without a first cluster', mutate: (img, p) => (img.writeUInt16LE(0, p.dirEntry + 26), img.writeUInt16LE(0, p.dirEntry + 20)), act: (fs) => fs.readdir('/sub'), field: /^DIR_FstClusLO$/ },
  { name: 'a file starting past the last cluster', mutate: (img, p) => (img.writeUInt16LE(0xfff0, p.fileEntry + 26), img.writeUInt16LE(0x0fff, p.fileEntry + 20)), act: (fs) => fs.read('/a.bin', 0, 10), field: /^DIR_FstClusLO$/ },
];

const BPB_CASES: Case[] = [
  { name: 'sectors per cluster not a power of two', mutate: (img) => (img[13] = 3), act: async () => undefined, field: /^BPB_SecPerClus$/ },
  { name: 'bytes per sector 100', mutate: (img) => img.writeUInt16LE(100, 11), act: async () => undefined, field: /^BPB_BytsPerSec$/ },
  { name: 'no FATs', mutate: (img) => (img[16] = 0), act: async () => undefined, field: /^BPB_NumFATs$/ },
  { name: 'a volume larger than the disk', mutate: (img) => (img.writeUInt16LE(0, 19), img.writeUInt32LE(0xfffffff0, 32)), act: async () => undefined, field: /^BPB_TotSec(16|32)$/ },
];

async function check(img: Buffer, c: Case): Promise<void> {
  const src = memSource(img);
  const t0 = process.cpuUsage();
  await assert.rejects(
    (async () => c.act(await openFat(src, { name: 'damaged.img' })))(),
    (err: unknown) => {
      assert.ok(err instanceof DiskError, `${c.name}: a DiskError, got ${String(err)}`);
      assert.equal(err.code, 'CORRUPT', `${c.name}: ${err.message}`);
      assert.match(String(err.details.field), c.field, `${c.name}: ${err.message} names ${String(err.details.field)}`);
      assert.equal(err.details.path, 'damaged.img');
      return true;
    },
    c.name,
  );
  const cpu = process.cpuUsage(t0);
  assert.ok(cpu.user + cpu.system < 1_000_000, `${c.name}: ${cpu.user + cpu.system} us of CPU`);
  assert.ok(src.bytesRead < 8 * 1024 * 1024, `${c.name}: read ${src.bytesRead} bytes`);
}

for (const bits of [16, 32] as const) {
  test(`damaged FAT${bits}: chains, entries and BPB fields are CORRUPT errors naming the field, fast and bounded`, async (t) => {
    if (!skipUnless(t, 'mkfs.fat', 'mcopy', 'mmd')) return;
    const dir = (await tmpDir(t, `vdkit-fat-damaged-${bits}-`)).path;
    const img = join(dir, 'fs.img');
    await makeFat(img, undefined, { fatBits: bits, size: bits === 16 ? 16 * 1024 * 1024 : 40 * 1024 * 1024, sectorsPerCluster: 1 });
    await writeFile(join(dir, 'a.bin'), contentOf(9, 5 * 512 + 100));
    await mtool('mcopy', ['-i', img, join(dir, 'a.bin'), '::/a.bin']);
    await mtool('mmd', ['-i', img, '::/sub']);
    await mtool('mcopy', ['-i', img, join(dir, 'a.bin'), '::/sub/inner.bin']);
    const clean = await readFile(img);
    const p = await places(clean, bits === 32);
    assert.ok(p.fileClusters.length >= 5, 'a.bin spans several clusters');
    for (const c of [...CHAIN_CASES, ...BPB_CASES]) {
      const img2 = Buffer.from(clean);
      c.mutate(img2, p);
      await check(img2, c);
    }
    if (bits === 32) {
      const rootAt = 44;
      const bad = Buffer.from(clean);
      bad.writeUInt32LE(0x0ffffff0, rootAt);
      await check(bad, { name: 'FAT32 root cluster past the end', mutate: () => undefined, act: async () => undefined, field: /^BPB_RootClus$/ });
      const loop = Buffer.from(clean);
      const root = clean.readUInt32LE(rootAt);
      put(loop, p, root, root);
      await check(loop, { name: 'FAT32 root directory chain looping', mutate: () => undefined, act: async () => undefined, field: /^FAT\[\d+\]$/ });
    }
  });
}
