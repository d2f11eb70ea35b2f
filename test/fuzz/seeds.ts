/**
 * Seed images for the fuzzer: every format and subformat vdkit makes, the ESXi deltas the test
 * builders make, images qemu-img makes (when present) and the outside images (when present).
 * All are small (a few MiB virtual) and made at the start of a run into a temp folder, each seed
 * in its own folder (a child with its parent, a descriptor with its extents), deterministically
 * from the run's seed.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Disk, convert, createChild } from '../../src/index.js';
import { BuildRng, buildCowd, buildSeSparse, esxDescriptor, writeExtent } from '../helpers/esx-sparse-builder.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { hasTool, repoRoot } from '../helpers/tools.js';
import { layoutOf, type FileLayout } from './layout.js';

export const FORMATS = ['vmdk', 'vdi', 'vhd', 'vhdx', 'qcow2'] as const;
export type FuzzFormat = (typeof FORMATS)[number];

export interface Seed {
  name: string;
  format: FuzzFormat;
  /** the seed's own folder */
  dir: string;
  /** the file to open, relative to dir */
  main: string;
  /** every file of the seed, relative to dir, with its layout */
  files: { name: string; layout: FileLayout }[];
  source: 'vdkit' | 'builder' | 'qemu-img' | 'outside';
}

const MiB = 1024 * 1024;
const CAPACITY = 3 * MiB;

/**
 * Deterministic data that gzip shrinks (kept corpus cases stay small): one random sector
 * repeated, each copy stamped with its disk offset, so a sector read from the wrong place shows
 */
export function pattern(at: number, length: number, seed: number): Buffer {
  const sector = xorshiftBytes(512, seed);
  const b = Buffer.alloc(length);
  for (let o = 0; o < length; o += 512) {
    sector.copy(b, o, 0, Math.min(512, length - o));
    if (o + 8 <= length) b.writeDoubleLE(at + o, o);
  }
  return b;
}

/** a few runs of data: start, middle (unaligned), end */
async function fill(d: Disk, seed: number): Promise<void> {
  const cap = d.capacity;
  const at = [0, Math.floor(cap / 3 / 512) * 512 + 4096, cap - 8192];
  for (let i = 0; i < at.length; i++) await d.write(at[i]!, pattern(at[i]!, Math.min(i === 0 ? 65536 : 8192, cap - at[i]!), seed + i));
}

async function made(path: string, opts: Parameters<typeof Disk.create>[1], seed: number): Promise<void> {
  const d = await Disk.create(path, { overwrite: true, ...opts });
  try {
    await fill(d, seed);
  } finally {
    await d.close();
  }
}

async function child(parent: string, path: string, seed: number, createOptions?: Record<string, unknown>): Promise<void> {
  const d = await createChild(parent, path, { overwrite: true, createOptions });
  try {
    await d.write(4096, pattern(4096, 4096, seed));
    await d.write(d.capacity - 512, pattern(d.capacity - 512, 512, seed + 1));
  } finally {
    await d.close();
  }
}

type Maker = { name: string; format: FuzzFormat; main: string; make: (dir: string, seed: number) => Promise<void> };

const VDKIT: Maker[] = [
  { name: 'vmdk-monolithicSparse', format: 'vmdk', main: 'a.vmdk', make: (d, s) => made(join(d, 'a.vmdk'), { format: 'vmdk', type: 'monolithicSparse', capacity: CAPACITY }, s) },
  { name: 'vmdk-twoGbMaxExtentSparse', format: 'vmdk', main: 'a.vmdk', make: (d, s) => made(join(d, 'a.vmdk'), { format: 'vmdk', type: 'twoGbMaxExtentSparse', capacity: CAPACITY }, s) },
  { name: 'vmdk-monolithicFlat', format: 'vmdk', main: 'a.vmdk', make: (d, s) => made(join(d, 'a.vmdk'), { format: 'vmdk', type: 'monolithicFlat', capacity: CAPACITY }, s) },
  {
    name: 'vmdk-streamOptimized',
    format: 'vmdk',
    main: 'a.vmdk',
    make: async (d, s) => {
      await made(join(d, 'src.raw'), { format: 'raw', capacity: CAPACITY }, s);
      const src = await Disk.open(join(d, 'src.raw'), { readOnly: true });
      try {
        await convert(src, join(d, 'a.vmdk'), { format: 'vmdk', type: 'streamOptimized', workers: 1 });
      } finally {
        await src.close();
      }
      execFileSync('rm', ['-f', join(d, 'src.raw')]);
    },
  },
  {
    name: 'vmdk-child',
    format: 'vmdk',
    main: 'b.vmdk',
    make: async (d, s) => {
      await made(join(d, 'a.vmdk'), { format: 'vmdk', type: 'monolithicSparse', capacity: CAPACITY }, s);
      await child(join(d, 'a.vmdk'), join(d, 'b.vmdk'), s + 7);
    },
  },
  { name: 'vdi-dynamic', format: 'vdi', main: 'a.vdi', make: (d, s) => made(join(d, 'a.vdi'), { format: 'vdi', type: 'dynamic', capacity: CAPACITY }, s) },
  { name: 'vdi-fixed', format: 'vdi', main: 'a.vdi', make: (d, s) => made(join(d, 'a.vdi'), { format: 'vdi', type: 'fixed', capacity: CAPACITY }, s) },
  {
    name: 'vdi-differencing',
    format: 'vdi',
    main: 'b.vdi',
    make: async (d, s) => {
      await made(join(d, 'a.vdi'), { format: 'vdi', capacity: CAPACITY }, s);
      await child(join(d, 'a.vdi'), join(d, 'b.vdi'), s + 7);
    },
  },
  { name: 'vhd-dynamic', format: 'vhd', main: 'a.vhd', make: (d, s) => made(join(d, 'a.vhd'), { format: 'vhd', type: 'dynamic', capacity: CAPACITY }, s) },
  { name: 'vhd-fixed', format: 'vhd', main: 'a.vhd', make: (d, s) => made(join(d, 'a.vhd'), { format: 'vhd', type: 'fixed', capacity: CAPACITY }, s) },
  {
    name: 'vhd-differencing',
    format: 'vhd',
    main: 'b.vhd',
    make: async (d, s) => {
      await made(join(d, 'a.vhd'), { format: 'vhd', capacity: CAPACITY }, s);
      await child(join(d, 'a.vhd'), join(d, 'b.vhd'), s + 7);
    },
  },
  { name: 'vhdx-dynamic', format: 'vhdx', main: 'a.vhdx', make: (d, s) => made(join(d, 'a.vhdx'), { format: 'vhdx', type: 'dynamic', capacity: CAPACITY, blockSize: MiB }, s) },
  { name: 'vhdx-fixed', format: 'vhdx', main: 'a.vhdx', make: (d, s) => made(join(d, 'a.vhdx'), { format: 'vhdx', type: 'fixed', capacity: CAPACITY, blockSize: MiB }, s) },
  {
    name: 'vhdx-differencing',
    format: 'vhdx',
    main: 'b.vhdx',
    make: async (d, s) => {
      await made(join(d, 'a.vhdx'), { format: 'vhdx', capacity: CAPACITY, blockSize: MiB }, s);
      await child(join(d, 'a.vhdx'), join(d, 'b.vhdx'), s + 7, { blockSize: MiB });
    },
  },
  { name: 'qcow2-v3', format: 'qcow2', main: 'a.qcow2', make: (d, s) => made(join(d, 'a.qcow2'), { format: 'qcow2', type: 'v3', capacity: CAPACITY, clusterSize: 4096 }, s) },
  { name: 'qcow2-v2', format: 'qcow2', main: 'a.qcow2', make: (d, s) => made(join(d, 'a.qcow2'), { format: 'qcow2', type: 'v2', capacity: CAPACITY }, s) },
  {
    name: 'qcow2-backing',
    format: 'qcow2',
    main: 'b.qcow2',
    make: async (d, s) => {
      await made(join(d, 'a.qcow2'), { format: 'qcow2', capacity: CAPACITY, clusterSize: 4096 }, s);
      await child(join(d, 'a.qcow2'), join(d, 'b.qcow2'), s + 7, { clusterSize: 4096 });
    },
  },
];

const BUILDER: Maker[] = [
  {
    name: 'vmdk-vmfsSparse',
    format: 'vmdk',
    main: 'c.vmdk',
    make: async (d, s) => {
      const x = buildCowd(new BuildRng(s), { capacitySectors: 5 * 2048, grainSectors: 1, fill: 0.2 });
      await writeExtent(join(d, 'c-delta.vmdk'), x);
      writeFileSync(join(d, 'c.vmdk'), esxDescriptor({ cid: '00c0d000', createType: 'vmfsSparse', extents: [{ sectors: x.capacitySectors, type: 'VMFSSPARSE', file: 'c-delta.vmdk' }] }));
    },
  },
  {
    name: 'vmdk-seSparse',
    format: 'vmdk',
    main: 's.vmdk',
    make: async (d, s) => {
      const x = buildSeSparse(new BuildRng(s), { capacitySectors: 4 * 2048, data: 0.1, zero: 0.1, unmapped: 0.05, maxSlot: 1023 });
      await writeExtent(join(d, 's-sesparse.vmdk'), x);
      writeFileSync(join(d, 's.vmdk'), esxDescriptor({ cid: '005e5000', createType: 'seSparse', extents: [{ sectors: x.capacitySectors, type: 'SESPARSE', file: 's-sesparse.vmdk' }] }));
    },
  },
];

/** qemu-img images: qcow2 with compressed clusters, and each format as QEMU lays it out */
const QEMU: Maker[] = (
  [
    ['qemu-qcow2-compressed', 'qcow2', 'a.qcow2', ['-c', '-O', 'qcow2', '-o', 'cluster_size=4096']],
    ['qemu-qcow2-v2', 'qcow2', 'a.qcow2', ['-O', 'qcow2', '-o', 'compat=0.10']],
    ['qemu-vmdk-stream', 'vmdk', 'a.vmdk', ['-O', 'vmdk', '-o', 'subformat=streamOptimized']],
    ['qemu-vmdk-sparse', 'vmdk', 'a.vmdk', ['-O', 'vmdk']],
    ['qemu-vpc', 'vhd', 'a.vhd', ['-O', 'vpc']],
    ['qemu-vhdx', 'vhdx', 'a.vhdx', ['-O', 'vhdx', '-o', 'block_size=1M']],
    ['qemu-vdi', 'vdi', 'a.vdi', ['-O', 'vdi']],
  ] as const
).map(([name, format, main, args]) => ({
  name,
  format,
  main,
  make: async (d: string, s: number) => {
    await made(join(d, 'src.raw'), { format: 'raw', capacity: CAPACITY }, s);
    execFileSync('qemu-img', ['convert', '-f', 'raw', ...args, join(d, 'src.raw'), join(d, main)], { stdio: 'ignore' });
    execFileSync('rm', ['-f', join(d, 'src.raw')]);
  },
}));

const OUTSIDE_FORMAT: Record<string, FuzzFormat> = { vmdk: 'vmdk', img: 'vmdk', vhd: 'vhd', vhdx: 'vhdx', vdi: 'vdi', qcow2: 'qcow2' };
/** outside images larger than this (decompressed, apparent size) are left out: seeds stay small */
const OUTSIDE_MAX = 8 * MiB;

export function outsideDir(): string {
  return resolve(repoRoot(), '..', 'shared', 'testdata');
}

export interface SeedOptions {
  /** run seed: data patterns and builder layouts follow it */
  seed: number;
  /** formats wanted (default all) */
  formats?: readonly string[];
  /** add qemu-img seeds when qemu-img is installed (default true) */
  qemu?: boolean;
  /** add the outside images when present (default true) */
  outside?: boolean;
  /** say why something was left out */
  log?: (line: string) => void;
}

/** Make the seeds into `root` (an empty folder). */
export async function makeSeeds(root: string, opts: SeedOptions): Promise<Seed[]> {
  const want = (f: string) => !opts.formats || opts.formats.includes(f);
  const log = opts.log ?? (() => {});
  const seeds: Seed[] = [];
  const add = async (m: Maker, source: Seed['source']) => {
    if (!want(m.format)) return;
    const dir = join(root, m.name);
    mkdirSync(dir, { recursive: true });
    await m.make(dir, opts.seed);
    seeds.push(describe(m.name, m.format, dir, m.main, source));
  };
  for (const m of VDKIT) await add(m, 'vdkit');
  for (const m of BUILDER) await add(m, 'builder');
  if (opts.qemu !== false) {
    if (hasTool('qemu-img')) for (const m of QEMU) await add(m, 'qemu-img');
    else log('qemu-img not installed: no qemu-img seeds');
  }
  if (opts.outside !== false) {
    const top = outsideDir();
    if (!existsSync(top)) log(`${top} not present: no outside seeds`);
    else if (!hasTool('bunzip2')) log('bunzip2 not installed: no outside seeds');
    else {
      for (const sub of ['outside', 'wild']) {
        const from = join(top, sub);
        if (!existsSync(from)) continue;
        for (const f of readdirSync(from).sort()) {
          const m = /^(.*)\.([a-z0-9]+)\.bz2$/.exec(f);
          const format = m && OUTSIDE_FORMAT[m[2]!];
          if (!m || !format || !want(format)) continue;
          const name = `outside-${m[1]}.${m[2]}`;
          const dir = join(root, name);
          mkdirSync(dir, { recursive: true });
          const main = `${m[1]}.${m[2]}`;
          // at most one byte over the cap is decompressed: a big image costs nothing
          const data = execFileSync('sh', ['-c', `bunzip2 -c "$0" | head -c ${OUTSIDE_MAX + 1}`, join(from, f)], { maxBuffer: OUTSIDE_MAX + 2 });
          if (data.length > OUTSIDE_MAX) {
            log(`${sub}/${f}: over ${OUTSIDE_MAX} bytes decompressed: left out`);
            continue;
          }
          writeFileSync(join(dir, main), data);
          seeds.push(describe(name, format, dir, main, 'outside'));
        }
      }
    }
  }
  return seeds;
}

function describe(name: string, format: FuzzFormat, dir: string, main: string, source: Seed['source']): Seed {
  const files = readdirSync(dir)
    .sort()
    .filter((f) => statSync(join(dir, f)).isFile())
    .map((f) => ({ name: f, layout: layoutOf(readFileSync(join(dir, f))) }));
  return { name, format, dir, main, files, source };
}
