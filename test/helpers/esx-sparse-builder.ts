/**
 * Hand-built ESXi delta extents (COWD "vmfsSparse" and SESparse) for tests: qemu-img cannot
 * create either, and no ESXi host is at hand. Each builder lays a file out as ESXi does
 * (vmdk.md §5), with contents, table order and grain placement drawn from a seeded PRNG, and
 * returns what the link must read as (`content`, zeros where it holds nothing) and the state of
 * every grain, so tests can compare vdkit against qemu-img and both against this model.
 *
 * The header bytes are written at the offsets of the spec tables with plain Buffer writes, not
 * with vdkit's struct tables, so a mistake in those tables cannot hide behind a matching one here.
 * Files are written sparse (only the parts that hold something), so a SESparse file whose grain
 * slots reach past 16 MiB costs a few hundred KiB on disk.
 */
import { open } from 'node:fs/promises';
import { Rng } from './prng.js';

export const SECTOR = 512;

/** grain states, per grain of the link */
export const UNALLOCATED = 0;
export const ZERO = 1;
export const DATA = 2;
export type GrainState = typeof UNALLOCATED | typeof ZERO | typeof DATA;

/** COWD header field offsets (vmdk.md §5.1) */
export const COWD = {
  magicNumber: 0,
  version: 4,
  flags: 8,
  numSectors: 12,
  grainSize: 16,
  gdOffset: 20,
  numGDEntries: 24,
  freeSector: 28,
  parentFileName: 32,
  parentGeneration: 1056,
  generation: 1060,
  name: 1064,
  description: 1124,
  savedGeneration: 1636,
  uncleanShutdown: 1648,
  headerBytes: 2048,
} as const;

/** SESparse constant header field offsets (vmdk.md §5.2), all u64 */
export const SES = {
  magic: 0,
  version: 8,
  capacity: 16,
  grainSize: 24,
  grainTableSize: 32,
  flags: 40,
  reserved1: 48,
  reserved2: 56,
  reserved3: 64,
  reserved4: 72,
  volatileHeaderOffset: 80,
  volatileHeaderSize: 88,
  journalHeaderOffset: 96,
  journalHeaderSize: 104,
  journalOffset: 112,
  journalSize: 120,
  grainDirOffset: 128,
  grainDirSize: 136,
  grainTablesOffset: 144,
  grainTablesSize: 152,
  freeBitmapOffset: 160,
  freeBitmapSize: 168,
  backmapOffset: 176,
  backmapSize: 184,
  grainsOffset: 192,
  grainsSize: 200,
  pad: 208,
} as const;
/** SESparse volatile header field offsets */
export const SES_VOLATILE = { magic: 0, freeGtNumber: 8, nextTxnSeqNumber: 16, replayJournal: 24, pad: 32 } as const;

export interface BuiltExtent {
  /** pieces of the file: byte offset and bytes; everything else is a hole (zeros) */
  parts: { offset: number; data: Buffer }[];
  fileLength: number;
  capacitySectors: number;
  grainBytes: number;
  /** state of each grain of the link */
  states: Uint8Array;
  /** what the link reads as on its own (unallocated and zero grains: zeros) */
  content: Buffer;
  /** where things went, for tests that damage them: file byte offsets */
  at: { gd: number; tables: number[]; grains: Map<number, number> };
}

/**
 * The seeded source of the builders: Rng with one byte per draw in `bytes` (the sequence the
 * ESX fixtures and fuzz seeds were made with) and a shuffle.
 */
export class BuildRng extends Rng {
  override bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = (this.next() * 256) & 0xff;
    return b;
  }
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [items[i], items[j]] = [items[j]!, items[i]!];
    }
    return items;
  }
}

export interface CowdSpec {
  capacitySectors: number;
  grainSectors: number;
  /** fraction of grains allocated in tables that exist */
  fill: number;
  /** grain tables left out entirely (GDE 0) */
  missingTables?: number[];
  /** parent's file name for the header union (informational) */
  parentFileName?: string;
}

/**
 * A COWD file as ESXi lays it out: header (4 sectors), GD right after it, then each grain table
 * with the grains it maps after it, tables and grains in random order (ESXi allocates them as
 * the guest writes). A few data grains are all zeros (allocated, so still "data").
 */
export function buildCowd(rng: BuildRng, spec: CowdSpec): BuiltExtent {
  const { capacitySectors, grainSectors } = spec;
  const grainBytes = grainSectors * SECTOR;
  const grains = Math.ceil(capacitySectors / grainSectors);
  const numGD = Math.ceil(capacitySectors / (4096 * grainSectors));
  const gdOffset = 4;
  const gdSectors = Math.ceil((numGD * 4) / SECTOR);
  const states = new Uint8Array(grains);
  const content = Buffer.alloc(capacitySectors * SECTOR);
  const parts: { offset: number; data: Buffer }[] = [];
  const gd = Buffer.alloc(gdSectors * SECTOR);
  const tables: number[] = [];
  const grainAt = new Map<number, number>();
  let next = gdOffset + gdSectors; // next free sector
  for (const g of rng.shuffle([...Array(numGD).keys()])) {
    if (spec.missingTables?.includes(g)) continue;
    const gt = Buffer.alloc(4096 * 4);
    const gtSector = next;
    next += 32;
    gd.writeUInt32LE(gtSector, g * 4);
    tables[g] = gtSector * SECTOR;
    const mine: number[] = [];
    for (let i = 0; i < 4096; i++) {
      const gi = g * 4096 + i;
      if (gi < grains && rng.float() < spec.fill) mine.push(i);
    }
    for (const i of rng.shuffle(mine)) {
      const gi = g * 4096 + i;
      const data = rng.float() < 0.05 ? Buffer.alloc(grainBytes) : rng.bytes(grainBytes);
      gt.writeUInt32LE(next, i * 4);
      parts.push({ offset: next * SECTOR, data });
      grainAt.set(gi, next * SECTOR);
      next += grainSectors;
      states[gi] = DATA;
      const start = gi * grainBytes;
      data.copy(content, start, 0, Math.min(grainBytes, content.length - start));
    }
    parts.push({ offset: gtSector * SECTOR, data: gt });
  }
  parts.push({ offset: gdOffset * SECTOR, data: gd });
  const h = Buffer.alloc(COWD.headerBytes);
  h.write('COWD', COWD.magicNumber, 'latin1');
  h.writeUInt32LE(1, COWD.version);
  h.writeUInt32LE(3, COWD.flags);
  h.writeUInt32LE(capacitySectors, COWD.numSectors);
  h.writeUInt32LE(grainSectors, COWD.grainSize);
  h.writeUInt32LE(gdOffset, COWD.gdOffset);
  h.writeUInt32LE(numGD, COWD.numGDEntries);
  h.writeUInt32LE(next, COWD.freeSector);
  if (spec.parentFileName) h.write(spec.parentFileName, COWD.parentFileName, 'utf8');
  h.writeUInt32LE(1, COWD.parentGeneration);
  h.writeUInt32LE(2, COWD.generation);
  h.write('vdkit test COWD', COWD.name, 'latin1');
  h.write('hand-built by test/helpers/esx-sparse-builder.ts', COWD.description, 'latin1');
  parts.push({ offset: 0, data: h });
  return { parts, fileLength: next * SECTOR, capacitySectors, grainBytes, states, content, at: { gd: gdOffset * SECTOR, tables, grains: grainAt } };
}

export interface SeSparseSpec {
  capacitySectors: number;
  /** fractions of the grains of existing tables that are data, zero and unmapped */
  data: number;
  zero: number;
  unmapped: number;
  missingTables?: number[];
  /** highest grain slot to use (default grains + 4096, so some slots lie past 4096) */
  maxSlot?: number;
}

/**
 * A SESparse file laid out as ESXi's logged example, scaled down: constant header (sector 0),
 * volatile header (1), journal header and journal, GD, the grain-table area (tables placed at
 * random slots, so GD entry i rarely names table i), free bitmap, back map, grains. Grain slots
 * are drawn from [0, grains + 4096] by default, so some lie past 4096 and the split grain index (bits 48-59
 * and 0-47 of an entry) is exercised.
 */
export function buildSeSparse(rng: BuildRng, spec: SeSparseSpec): BuiltExtent {
  const { capacitySectors } = spec;
  const grainSectors = 8;
  const grainBytes = grainSectors * SECTOR;
  const grains = Math.ceil(capacitySectors / grainSectors);
  const numGD = Math.ceil(capacitySectors / (4096 * grainSectors));
  const gtSlots = numGD + 3;
  const layout = {
    volatile: 1,
    journalHeader: 2,
    journal: 4,
    journalSize: 8,
    gd: 16,
    gdSize: Math.ceil((numGD * 8) / SECTOR) + 1, // one spare sector, as ESXi reserves room
    gts: 0,
    gtsSize: gtSlots * 64,
    bitmap: 0,
    backmap: 0,
    grains: 0,
  };
  layout.gts = layout.gd + layout.gdSize;
  layout.bitmap = layout.gts + layout.gtsSize;
  layout.backmap = layout.bitmap + 8;
  layout.grains = layout.backmap + 8;
  const states = new Uint8Array(grains);
  const content = Buffer.alloc(capacitySectors * SECTOR);
  const parts: { offset: number; data: Buffer }[] = [];
  const gd = Buffer.alloc(layout.gdSize * SECTOR);
  const slots = rng.shuffle([...Array(gtSlots).keys()]);
  const tables: number[] = [];
  const grainAt = new Map<number, number>();
  const usedSlots = new Set<number>();
  let maxSlot = -1;
  let usedTables = 0;
  for (let g = 0; g < numGD; g++) {
    if (spec.missingTables?.includes(g)) continue;
    const slot = slots[g]!;
    usedTables++;
    gd.writeBigUInt64LE(0x1000000000000000n | BigInt(slot), g * 8);
    const gt = Buffer.alloc(4096 * 8);
    for (let i = 0; i < 4096; i++) {
      const gi = g * 4096 + i;
      if (gi >= grains) break;
      const r = rng.float();
      if (r < spec.data) {
        let k: number;
        do k = rng.int(0, spec.maxSlot ?? grains + 4096); while (usedSlots.has(k));
        usedSlots.add(k);
        maxSlot = Math.max(maxSlot, k);
        const e = 0x3000000000000000n | (BigInt(k & 0xfff) << 48n) | BigInt(Math.floor(k / 4096));
        gt.writeBigUInt64LE(e, i * 8);
        const data = rng.float() < 0.05 ? Buffer.alloc(grainBytes) : rng.bytes(grainBytes);
        const at = (layout.grains + k * grainSectors) * SECTOR;
        parts.push({ offset: at, data });
        grainAt.set(gi, at);
        states[gi] = DATA;
        const start = gi * grainBytes;
        data.copy(content, start, 0, Math.min(grainBytes, content.length - start));
      } else if (r < spec.data + spec.zero) {
        gt.writeBigUInt64LE(0x2000000000000000n, i * 8);
        states[gi] = ZERO;
      } else if (r < spec.data + spec.zero + spec.unmapped) {
        gt.writeBigUInt64LE(0x1000000000000000n, i * 8);
        states[gi] = ZERO;
      }
    }
    const at = (layout.gts + slot * 64) * SECTOR;
    tables[g] = at;
    parts.push({ offset: at, data: gt });
  }
  parts.push({ offset: layout.gd * SECTOR, data: gd });
  const grainsSize = (maxSlot + 1) * grainSectors;
  const h = Buffer.alloc(SECTOR);
  const put = (field: keyof typeof SES, v: number | bigint) => h.writeBigUInt64LE(BigInt(v), SES[field]);
  put('magic', 0xcafebaben);
  put('version', 0x0000000200000001n);
  put('capacity', capacitySectors);
  put('grainSize', grainSectors);
  put('grainTableSize', 64);
  put('volatileHeaderOffset', layout.volatile);
  put('volatileHeaderSize', 1);
  put('journalHeaderOffset', layout.journalHeader);
  put('journalHeaderSize', 2);
  put('journalOffset', layout.journal);
  put('journalSize', layout.journalSize);
  put('grainDirOffset', layout.gd);
  put('grainDirSize', layout.gdSize);
  put('grainTablesOffset', layout.gts);
  put('grainTablesSize', layout.gtsSize);
  put('freeBitmapOffset', layout.bitmap);
  put('freeBitmapSize', 8);
  put('backmapOffset', layout.backmap);
  put('backmapSize', 8);
  put('grainsOffset', layout.grains);
  put('grainsSize', grainsSize);
  parts.push({ offset: 0, data: h });
  const v = Buffer.alloc(SECTOR);
  v.writeBigUInt64LE(0xcafecafen, SES_VOLATILE.magic);
  v.writeBigUInt64LE(BigInt(usedTables), SES_VOLATILE.freeGtNumber);
  v.writeBigUInt64LE(1n, SES_VOLATILE.nextTxnSeqNumber);
  parts.push({ offset: layout.volatile * SECTOR, data: v });
  const fileLength = (layout.grains + Math.max(grainsSize, 0)) * SECTOR;
  return { parts, fileLength, capacitySectors, grainBytes, states, content, at: { gd: layout.gd * SECTOR, tables, grains: grainAt } };
}

/** Write a built extent to `path` as a sparse file of exactly its length. */
export async function writeExtent(path: string, built: BuiltExtent): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(built.fileLength);
    for (const p of built.parts) await fh.write(p.data, 0, p.data.length, p.offset);
  } finally {
    await fh.close();
  }
}

/** A text descriptor for one extent (every extent line RW: QEMU ignores RDONLY lines). */
export function esxDescriptor(spec: {
  cid: string;
  parentCid?: string;
  parentFileNameHint?: string;
  createType: 'vmfsSparse' | 'seSparse' | 'vmfs';
  extents: { sectors: number; type: 'VMFSSPARSE' | 'SESPARSE' | 'VMFS'; file: string }[];
}): string {
  const lines = ['# Disk DescriptorFile', 'version=1', 'encoding="UTF-8"', `CID=${spec.cid}`, `parentCID=${spec.parentCid ?? 'ffffffff'}`, 'isNativeSnapshot="no"', `createType="${spec.createType}"`];
  if (spec.parentFileNameHint) lines.push(`parentFileNameHint="${spec.parentFileNameHint}"`);
  lines.push('', '# Extent description');
  for (const e of spec.extents) lines.push(`RW ${e.sectors} ${e.type} "${e.file}"`);
  lines.push('', '# The Disk Data Base', '#DDB', '', 'ddb.adapterType = "lsilogic"', 'ddb.virtualHWVersion = "14"', 'ddb.longContentID = "00000000000000000000000000000000"');
  return lines.join('\n') + '\n';
}

/** Grain states as merged block-status ranges over `capacity` bytes. */
export function statesToRanges(states: Uint8Array, grainBytes: number, capacity: number): { offset: number; length: number; state: 'data' | 'zero' | 'unallocated' }[] {
  const name = ['unallocated', 'zero', 'data'] as const;
  const out: { offset: number; length: number; state: 'data' | 'zero' | 'unallocated' }[] = [];
  for (let gi = 0; gi < states.length; gi++) {
    const offset = gi * grainBytes;
    const length = Math.min(grainBytes, capacity - offset);
    const state = name[states[gi]!]!;
    const last = out[out.length - 1];
    if (last && last.state === state) last.length += length;
    else out.push({ offset, length, state });
  }
  return out;
}
