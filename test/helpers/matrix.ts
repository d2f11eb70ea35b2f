/**
 * The rows of the contract suite (test/conformance/contract.test.ts) and the property model
 * (test/property/contract-model.test.ts): every driver of the registry x every create type it
 * declares (capabilities.createTypes, plus its sequential types, written by convert) x a file
 * and a memory namespace, plus a differencing child for each format that has them.
 *
 * Rows come from what the drivers declare, so a new driver or create type gets tested without an
 * edit here; the only per-format knowledge is which sizes make a row cross its edges (a split
 * VMDK needs a capacity past its 2 GiB extent size; VHDX's smallest block size keeps the disk small).
 */
import type { TestContext } from 'node:test';
import { backends, Disk, FileNamespace, MemoryNamespace, MemoryStore, SPLIT_EXTENT_SECTORS, convert, createChild, type Driver, type Namespace } from '../../src/index.js';
import type { CreateOptions } from '../../src/formats/types.js';
import { measureLayout } from '../../src/formats/registry.js';
import { tmpDir } from './tools.js';
import { xorshiftBytes } from './prng.js';

const MiB = 2 ** 20;

/** small, and not a whole number of any format's allocation unit, so the last unit is partial */
export const SMALL_CAPACITY = 6 * MiB + 3 * 512;
/** a split VMDK gets a second extent: 3 MiB and 3 sectors past the first */
export const SPLIT_CAPACITY = SPLIT_EXTENT_SECTORS * 512 + 3 * MiB + 3 * 512;

export type NamespaceKind = 'file' | 'memory';

export interface Row {
  /** "vmdk monolithicSparse file", "vdi dynamic child memory", ... */
  name: string;
  driver: Driver;
  format: string;
  /** the create type of the image under test (of the base, for a child row) */
  type: string;
  ns: NamespaceKind;
  /** written front to back by convert from a raw source, then only read (driver.sequentialTypes) */
  sequential: boolean;
  /** the image under test is a differencing child over a base of `type` holding data */
  child: boolean;
  capacity: number;
  /** more create options for the format (VHDX block size) */
  createOptions: Partial<CreateOptions>;
}

/** per-format create options that keep the allocation unit below the small capacity */
const CREATE_OPTIONS: Record<string, Partial<CreateOptions>> = {
  vhdx: { blockSize: MiB },
};

function capacityOf(driver: Driver, type: string): number {
  // a type whose files are split at 2 GiB (VMDK twoGbMaxExtent*) needs two extents to show the edge
  return driver.capabilities.split && /^twoGb/i.test(type) ? SPLIT_CAPACITY : SMALL_CAPACITY;
}

/** whether a base of `type` takes children vdkit creates (a VMDK vmfs base does not) */
function takesChildren(driver: Driver, type: string): boolean {
  if (!driver.capabilities.differencing) return false;
  try {
    driver.childType?.(type, '/x');
    return true;
  } catch {
    return false;
  }
}

export function rows(filter = process.env.VDKIT_ROWS): Row[] {
  const out: Row[] = [];
  for (const driver of backends()) {
    const types = [...driver.capabilities.createTypes, ...driver.sequentialTypes];
    for (const type of types) {
      const sequential = driver.sequentialTypes.includes(type);
      const kinds = [false, ...(!sequential && type === driver.capabilities.createTypes[0] && takesChildren(driver, type) ? [true] : [])];
      for (const child of kinds) {
        for (const ns of ['file', 'memory'] as const) {
          out.push({
            name: `${driver.name} ${type}${child ? ' child' : ''} ${ns}`,
            driver,
            format: driver.name,
            type,
            ns,
            sequential,
            child,
            capacity: capacityOf(driver, type),
            createOptions: CREATE_OPTIONS[driver.name] ?? {},
          });
        }
      }
    }
  }
  // VDKIT_ROWS=vhd,qcow2 (substrings of row names) narrows the matrix while iterating
  if (!filter) return out;
  const parts = filter.split(',').map((s) => s.trim()).filter(Boolean);
  return out.filter((r) => parts.some((p) => r.name.includes(p)));
}

/** where a row's images live, and its names */
export interface Place {
  ns: Namespace;
  /** the image under test */
  path: string;
  /** a base (child rows) or raw source (sequential rows) */
  basePath: string;
  dir: string;
  /** a name beside the image, with the format's extension */
  beside(stem: string, ext?: string): string;
  /** remove the row's files (also done when the test `t` given to `place` ends) */
  cleanup(): Promise<void>;
}

let memoryDirs = 0;

export async function place(row: Row, t?: TestContext): Promise<Place> {
  const ext = row.driver.extensions[0] ?? 'img';
  let ns: Namespace;
  let dir: string;
  let cleanup = async () => {};
  if (row.ns === 'file') {
    ns = new FileNamespace();
    const tmp = await tmpDir(t, 'vdkit-contract-');
    dir = tmp.path;
    cleanup = () => tmp.cleanup();
  } else {
    ns = new MemoryNamespace();
    dir = `/contract-${++memoryDirs}`;
  }
  const beside = (stem: string, e = ext) => `${dir}/${stem}.${e}`;
  return { ns, dir, path: beside(row.child ? 'child' : 'disk'), basePath: row.sequential ? beside('source', 'raw') : beside('base'), beside, cleanup };
}

/**
 * What a child row's base holds: runs of data spread over the disk (across unit edges, the
 * last sector), so a child shows whether it reads through to its parent.
 */
export function baseWrites(capacity: number): [number, Buffer][] {
  return [
    [1000, xorshiftBytes(70_000, 901)],
    [MiB - 300, xorshiftBytes(5000, 902)],
    [Math.floor(capacity / 2 / 512) * 512 + 77, xorshiftBytes(200_000, 903)],
    [capacity - 4096, xorshiftBytes(4096, 904)],
  ];
}

/**
 * Make the row's image, empty (a base) or as a child over a base filled with `baseWrites`;
 * the model gets what the image must read as. Not for sequential rows (see `writeSequential`).
 */
export async function createImage(row: Row, where: Place, model: MemoryStore): Promise<Disk> {
  const opts = { namespace: where.ns, format: row.format, type: row.type, capacity: row.capacity, ...row.createOptions };
  if (!row.child) return Disk.create(where.path, opts);
  const base = await Disk.create(where.basePath, opts);
  for (const [o, b] of baseWrites(row.capacity)) {
    await base.write(o, b);
    await model.write(o, b);
  }
  await base.close();
  return createChild(where.basePath, where.path, { namespace: where.ns, createOptions: row.createOptions });
}

/**
 * A sequential row's image: the writes go to a raw source in the same namespace, which convert
 * then writes front to back as the row's type; the result is opened read-only.
 */
export async function writeSequential(row: Row, where: Place, writes: readonly [number, Buffer][]): Promise<Disk> {
  const src = await Disk.create(where.basePath, { namespace: where.ns, format: 'raw', capacity: row.capacity });
  for (const [o, b] of writes) await src.write(o, b);
  await convert(src, where.path, { namespace: where.ns, format: row.format, type: row.type });
  await src.close();
  return Disk.open(where.path, { namespace: where.ns, readOnly: true });
}

/**
 * The row's allocation unit (grain, block, cluster: what discard, zero and compact work in), from
 * the format's own layout numbers; undefined for a flat or fixed layout, whose one "unit" is the
 * whole disk (callers then work in clusters or 64 KiB).
 */
export function allocationUnit(row: Row): number | undefined {
  const unit = measureLayout(row.format, { capacity: row.capacity, type: row.type, ...row.createOptions }).unit;
  return unit * 3 <= row.capacity ? unit : undefined;
}
