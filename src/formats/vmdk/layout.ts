/**
 * What every VMDK role file needs and none owns (NOTES.md "Files"): limits, VMware's geometry
 * and identifiers, the u32 table codec, and the layout of a fresh hosted sparse extent. Pure
 * functions and constants only, so that create, open, image, check and the stream writer can
 * share them without importing one another.
 */
import { randomBytes, randomInt } from '../../core/platform.js';
import { DiskError, atMost } from '../../core/errors.js';
import { SECTOR_SIZE, ceilDiv, roundUp } from '../../core/ints.js';
import type { ByteStore } from '../../storage/store.js';
import type { Geometry } from '../types.js';
import { hex8 } from './descriptor.js';
import { FLAG_REDUNDANT_GD, FLAG_VALID_NEWLINE, SPARSE_MAGIC, SparseExtentHeader, type SparseExtentHeaderValue } from './structs.js';

/** QEMU refuses more than 32 Mi GD entries; we cap at 16 Mi (64 MiB of GD) to bound memory. */
export const MAX_GD_ENTRIES = 16 * 1024 * 1024;
/** grains above 32 MiB would mean per-grain buffers sized by an untrusted field */
export const MAX_GRAIN_SECTORS = 65536;
/** the grain every producer writes by default (VMware, VirtualBox, QEMU): 64 KiB */
export const DEFAULT_GRAIN_SECTORS = 128;
/**
 * the smallest grain we create: the technote asks for a power of two "greater than 8" sectors and
 * libvmdk refuses 8; VirtualBox and QEMU read 8 too, so 8 is only a reader's question (NOTES.md)
 */
export const MIN_GRAIN_SECTORS = 16;
/** VMware's (and VirtualBox's) split size: 2047 MiB. QEMU uses 2 GiB; readers accept any. */
export const SPLIT_EXTENT_SECTORS = 4192256;
export const ADAPTER_TYPES = ['ide', 'buslogic', 'lsilogic', 'pvscsi', 'legacyESX'] as const;

/** parentCID of a link without a parent */
export const NO_PARENT = 0xffffffff;

// ------------------------------------------------------------------ identifiers and geometry

/** A random CID that is neither "no parent" nor VMware's "unassigned" value. */
export function newCid(): number {
  for (;;) {
    const c = randomInt(0, 0x100000000);
    if (c !== 0xffffffff && c !== 0xfffffffe) return c;
  }
}

export function newLongContentId(cid: number): string {
  return randomBytes(12).toString('hex') + hex8(cid);
}

/** 16 random bytes in VMware's ddb.uuid notation ("60 00 C2 xx ...-xx ..."). */
export function newVmwareUuid(): string {
  const b = randomBytes(16);
  b[0] = 0x60;
  b[1] = 0x00;
  b[2] = 0xc2;
  const hex = [...b].map((x, i) => (i === 2 ? 'C2' : x.toString(16).padStart(2, '0')));
  return `${hex.slice(0, 8).join(' ')}-${hex.slice(8).join(' ')}`;
}

/**
 * Geometry as VMware writes it (NOTES.md §6): IDE 16 heads / 63 sectors with cylinders
 * clamped at 16383 on hosted disks; SCSI by VMware KB 1026266 (64/32 below 1 GiB, 128/32
 * below 2 GiB, else 255/63).
 */
export function vmwareGeometry(sectors: number, adapterType: string, esx = false): Geometry {
  let heads: number;
  let spt: number;
  if (adapterType === 'ide') {
    heads = 16;
    spt = 63;
  } else if (sectors * SECTOR_SIZE < 2 ** 30) {
    heads = 64;
    spt = 32;
  } else if (sectors * SECTOR_SIZE < 2 ** 31) {
    heads = 128;
    spt = 32;
  } else {
    heads = 255;
    spt = 63;
  }
  let cylinders = Math.max(1, Math.floor(sectors / (heads * spt)));
  if (adapterType === 'ide' && !esx) cylinders = Math.min(cylinders, 16383);
  return { cylinders, heads, sectors: spt };
}

/**
 * The ddb entries VMware writes for a new disk, in its order: adapter, geometry, content ID
 * (low 32 bits = `cid`), thinProvisioned for a thin vmfs, tools, uuid, hardware version.
 */
export function newDdb(cid: number, sectors: number, opts: { adapterType: string; hwVersion: string; esx?: boolean; thin?: boolean }): [string, string][] {
  const g = vmwareGeometry(sectors, opts.adapterType, opts.esx);
  const ddb: [string, string][] = [
    ['adapterType', opts.adapterType],
    ['geometry.cylinders', String(g.cylinders)],
    ['geometry.heads', String(g.heads)],
    ['geometry.sectors', String(g.sectors)],
    ['longContentID', newLongContentId(cid)],
  ];
  if (opts.thin) ddb.push(['thinProvisioned', '1']);
  ddb.push(['toolsVersion', '2147483647'], ['uuid', newVmwareUuid()], ['virtualHWVersion', opts.hwVersion]);
  return ddb;
}

// ------------------------------------------------------------------ grain tables and directories

/**
 * Grain directory sanity: every table it names must lie inside the file, and no two may
 * overlap (crafted files point many entries at one table to make scans endless). The count
 * check comes first, so a tiny file with a huge directory is refused without sorting it.
 */
export function checkDirectory(dir: Uint32Array, field: 'GDE' | 'RGDE', gtSectors: number, fileSize: number, path: string): void {
  const fileSectors = Math.floor(fileSize / SECTOR_SIZE);
  let used = 0;
  for (let i = 0; i < dir.length; i++) {
    const e = dir[i]!;
    if (e === 0) continue;
    used++;
    if (e + gtSectors > fileSectors) {
      throw new DiskError('CORRUPT', 'grain table lies past the end of the file', { path, struct: field === 'GDE' ? 'grain directory' : 'redundant grain directory', field: `${field}[${i}]`, expected: atMost(fileSectors - gtSectors), found: e });
    }
  }
  if (used * gtSectors > fileSectors) {
    throw new DiskError('CORRUPT', 'grain directory names more grain tables than fit in the file', { path, field, expected: `<= ${Math.floor(fileSectors / gtSectors)}`, found: used });
  }
  const sorted = dir.filter((e) => e !== 0).sort();
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]! - sorted[i - 1]! < gtSectors) {
      throw new DiskError('CORRUPT', 'two grain directory entries name overlapping grain tables', { path, field, found: sorted[i] });
    }
  }
}

// ------------------------------------------------------------------ a fresh hosted sparse extent

/**
 * Change fields of the header in sector 0 with one sector write, then flush: the write that
 * makes a change prepared elsewhere in the file visible (grow, repair). Returns the new header.
 */
export async function rewriteHeader(store: ByteStore, path: string, change: (h: SparseExtentHeaderValue) => void): Promise<SparseExtentHeaderValue> {
  const head = await store.read(0, SECTOR_SIZE);
  const h = SparseExtentHeader.decode(head, 0, path);
  change(h);
  SparseExtentHeader.encode(h, head, 0);
  await store.write(0, head);
  await store.flush();
  return h;
}

/**
 * The grain of a new hosted sparse extent, in sectors, from CreateOptions.grainSize (bytes):
 * a power of two from MIN_GRAIN_SECTORS to MAX_GRAIN_SECTORS sectors (what our own open accepts),
 * default 128.
 */
export function grainSectorsOf(grainSize: number | undefined, path?: string): number {
  if (grainSize === undefined) return DEFAULT_GRAIN_SECTORS;
  const sectors = grainSize / SECTOR_SIZE;
  if (!Number.isSafeInteger(grainSize) || !Number.isInteger(sectors) || sectors < MIN_GRAIN_SECTORS || sectors > MAX_GRAIN_SECTORS || (sectors & (sectors - 1)) !== 0) {
    throw new DiskError('INVAL', 'VMDK grain size must be a power of two from 8 KiB to 32 MiB (16 to 65536 sectors)', {
      path,
      field: 'grainSize',
      expected: `${MIN_GRAIN_SECTORS * SECTOR_SIZE}..${MAX_GRAIN_SECTORS * SECTOR_SIZE} bytes, a power of two`,
      found: grainSize,
    });
  }
  return sectors;
}

/** Layout of a fresh sparse extent (NOTES.md §3.7), shared by create and tests. */
export function freshSparseLayout(capacitySectors: number, opts: { embeddedDescriptorSectors: number; grainSectors?: number; numGTEs?: number }) {
  const grainSectors = opts.grainSectors ?? DEFAULT_GRAIN_SECTORS;
  const numGTEs = opts.numGTEs ?? 512;
  const gtCount = ceilDiv(ceilDiv(capacitySectors, grainSectors), numGTEs);
  const gdSectors = ceilDiv(4 * gtCount, SECTOR_SIZE);
  const gtSectors = ceilDiv(4 * numGTEs, SECTOR_SIZE);
  const descriptorOffset = opts.embeddedDescriptorSectors > 0 ? 1 : 0;
  const rgdOffset = opts.embeddedDescriptorSectors > 0 ? 1 + opts.embeddedDescriptorSectors : 1;
  const gdOffset = rgdOffset + gdSectors + gtSectors * gtCount;
  const overHead = roundUp(gdOffset + gdSectors + gtSectors * gtCount, grainSectors);
  return { grainSectors, numGTEs, gtCount, gdSectors, gtSectors, descriptorOffset, rgdOffset, gdOffset, overHead };
}

/**
 * Write a fresh sparse extent into an empty store: header, embedded descriptor, RGD and GD
 * pointing at their (zero) grain tables, and the file sized to `overHead`. The tables are
 * not built in memory, so a 16 TiB disk costs its directories, not its whole metadata area.
 */
export async function writeFreshSparse(store: ByteStore, capacitySectors: number, opts: { descriptor?: string; descriptorSectors?: number; grainSectors?: number }): Promise<void> {
  const descriptorSectors = opts.descriptor !== undefined ? (opts.descriptorSectors ?? 20) : 0;
  const L = freshSparseLayout(capacitySectors, { embeddedDescriptorSectors: descriptorSectors, grainSectors: opts.grainSectors });
  if (L.gtCount > MAX_GD_ENTRIES) throw new DiskError('INVAL', 'grain directory too large for this capacity and grain size', { path: store.name, field: 'grainSize', expected: `<= ${MAX_GD_ENTRIES} grain tables`, found: L.gtCount });
  if (L.overHead > 0xffffffff) throw new DiskError('INVAL', 'capacity too large for one sparse extent', { found: capacitySectors });
  const head = Buffer.alloc((1 + descriptorSectors) * SECTOR_SIZE);
  SparseExtentHeader.encode(
    {
      magicNumber: SPARSE_MAGIC,
      version: 1,
      flags: FLAG_VALID_NEWLINE | FLAG_REDUNDANT_GD,
      capacity: BigInt(capacitySectors),
      grainSize: BigInt(L.grainSectors),
      descriptorOffset: BigInt(L.descriptorOffset),
      descriptorSize: BigInt(descriptorSectors),
      numGTEsPerGT: L.numGTEs,
      rgdOffset: BigInt(L.rgdOffset),
      gdOffset: BigInt(L.gdOffset),
      overHead: BigInt(L.overHead),
      uncleanShutdown: 0,
      singleEndLineChar: 0x0a,
      nonEndLineChar: 0x20,
      doubleEndLineChar1: 0x0d,
      doubleEndLineChar2: 0x0a,
      compressAlgorithm: 0,
    },
    head,
    0,
  );
  if (opts.descriptor !== undefined) {
    const text = Buffer.from(opts.descriptor, 'utf8');
    if (text.length > descriptorSectors * SECTOR_SIZE) {
      throw new DiskError('INVAL', 'descriptor larger than the space reserved for it', { path: store.name, expected: descriptorSectors * SECTOR_SIZE, found: text.length });
    }
    text.copy(head, SECTOR_SIZE);
  }
  const rgd = Buffer.alloc(L.gdSectors * SECTOR_SIZE);
  const gd = Buffer.alloc(L.gdSectors * SECTOR_SIZE);
  for (let i = 0; i < L.gtCount; i++) {
    rgd.writeUInt32LE(L.rgdOffset + L.gdSectors + L.gtSectors * i, i * 4);
    gd.writeUInt32LE(L.gdOffset + L.gdSectors + L.gtSectors * i, i * 4);
  }
  await store.truncate(L.overHead * SECTOR_SIZE);
  await store.write(0, head);
  await store.write(L.rgdOffset * SECTOR_SIZE, rgd);
  await store.write(L.gdOffset * SECTOR_SIZE, gd);
}

/**
 * createTypes whose extents name devices or partitions (VMware's fullDevice, partitionedDevice,
 * ESX raw device mappings), lower case: opened only with OpenOptions.allowRawDevice
 */
export const RAW_DEVICE_TYPES: ReadonlySet<string> = new Set(['fulldevice', 'partitioneddevice', 'vmfsraw', 'vmfsrawdevicemap', 'vmfspassthroughrawdevicemap']);

/** vmware-vdiskmanager -t numbers, and aliases users type. */
const TYPE_ALIASES: Record<string, string> = {
  '0': 'monolithicSparse',
  '1': 'twoGbMaxExtentSparse',
  '2': 'monolithicFlat',
  '3': 'twoGbMaxExtentFlat',
  '4': 'vmfs',
  '5': 'streamOptimized',
  '2gbmaxextentsparse': 'twoGbMaxExtentSparse',
  '2gbmaxextentflat': 'twoGbMaxExtentFlat',
  vmfsthin: 'vmfs',
  vmfsthick: 'vmfs',
  vmfspreallocated: 'vmfs',
  vmfseagerzeroedthick: 'vmfs',
  sparse: 'monolithicSparse',
  flat: 'monolithicFlat',
};

export function normaliseCreateType(type: string | undefined): string {
  if (type === undefined) return 'monolithicSparse';
  const known = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'vmfs', 'streamOptimized', 'fullDevice'];
  const exact = known.find((k) => k.toLowerCase() === type.toLowerCase());
  return exact ?? TYPE_ALIASES[type.toLowerCase()] ?? type;
}
