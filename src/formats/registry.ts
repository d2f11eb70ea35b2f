/**
 * Every driver, detection by content (VDGetFormat) and the backend list (VDBackendInfo).
 * Detection never looks at the file name: the highest probe score wins, raw (score 1) last.
 */
import { DiskError } from '../core/errors.js';
import { extname } from '../core/names.js';
import type { Namespace } from '../storage/namespace.js';
import { rawDriver } from './raw/driver.js';
import { foreignFormat } from './foreign.js';
import type { Capabilities, CreateOptionInfo, CreateOptions, Driver, MeasureLayout } from './types.js';
import { measureQcow2 } from './qcow2/measure.js';
import { measureRaw } from './raw/measure.js';
import { measureVdi } from './vdi/measure.js';
import { measureVhd } from './vhd/measure.js';
import { measureVhdx } from './vhdx/measure.js';
import { measureVmdk } from './vmdk/measure.js';
import { vhdDriver } from './vhd/driver.js';
import { vhdxDriver } from './vhdx/driver.js';
import { vmdkDriver } from './vmdk/driver.js';
import { vdiDriver } from './vdi/driver.js';
import { qcow2Driver } from './qcow2/driver.js';

const DRIVERS: readonly Driver[] = Object.freeze([
  vmdkDriver,
  vdiDriver,
  vhdDriver,
  vhdxDriver,
  qcow2Driver,
  rawDriver,
]);

const CAPABILITY_KEYS: readonly (keyof Capabilities)[] = ['write', 'blockStatus', 'zero', 'metadata', 'createTypes', 'differencing', 'differencingSameSize', 'parentLink', 'identityFollowsContent', 'split', 'discard', 'resize', 'flush', 'check', 'compact', 'defragment'];
// Capabilities are data, declared once; a driver that forgets one fails here, at load time.
for (const d of DRIVERS) {
  for (const k of CAPABILITY_KEYS) if (d.capabilities[k] === undefined) throw new DiskError('INTERNAL', `driver ${d.name} does not declare capability ${k}`);
  if (d.capabilities.createTypes.length === 0) throw new DiskError('INTERNAL', `driver ${d.name} declares no create type`);
}

// A file name's extension names at most one format, or the CLI's choice by name would depend on driver order.
{
  const seen = new Map<string, string>();
  for (const d of DRIVERS) {
    for (const e of d.extensions) {
      if (seen.has(e)) throw new DiskError('INTERNAL', `extension .${e} is declared by ${seen.get(e)} and ${d.name}`);
      seen.set(e, d.name);
    }
  }
}

/** the format new images get when the caller names none (VixDiskLib's and vdiskmanager's) */
export const DEFAULT_FORMAT = 'vmdk';

export function backends(): readonly Driver[] {
  return DRIVERS;
}

/** VDBackendInfo: what `vdkit formats` prints */
export interface BackendInfo {
  name: string;
  description: string;
  extensions: readonly string[];
  capabilities: Capabilities;
  createOptions: readonly CreateOptionInfo[];
}

export function backendInfo(): BackendInfo[] {
  return DRIVERS.map((d) => ({ name: d.name, description: d.description, extensions: d.extensions, capabilities: d.capabilities, createOptions: d.createOptions }));
}

export function driverByName(name: string): Driver {
  const d = DRIVERS.find((x) => x.name === name.toLowerCase());
  if (!d) throw new DiskError('NOTSUPPORTED', `unknown format ${JSON.stringify(name)}`, { field: 'format', expected: DRIVERS.map((x) => x.name).join(', ') });
  return d;
}

/**
 * The driver whose declared extensions include `name`'s (case ignored), or undefined. Detection
 * never uses it: it is for naming the format of an image about to be made (the CLI's create
 * and convert when -f/-O is left out).
 */
export function driverForFileName(name: string): Driver | undefined {
  const ext = extname(name).slice(1).toLowerCase();
  return ext === '' ? undefined : DRIVERS.find((d) => d.extensions.includes(ext));
}

/** Each format's layout numbers for `measure`, from the format's own folder (formats/<fmt>/measure.ts). */
const MEASURE: Record<string, (opts: CreateOptions, name?: string) => MeasureLayout> = {
  vmdk: measureVmdk,
  vdi: measureVdi,
  vhd: measureVhd,
  vhdx: measureVhdx,
  qcow2: measureQcow2,
  raw: measureRaw,
};

/**
 * How an image of `format` made with `opts` is laid out (file bytes per allocation unit and
 * metadata). `name` is the target's file name, for formats whose descriptor names its files.
 */
export function measureLayout(format: string, opts: CreateOptions, name?: string): MeasureLayout {
  const driver = driverByName(format);
  const measure = MEASURE[driver.name];
  if (!measure) throw new DiskError('NOTSUPPORTED', `${driver.name} images cannot be measured`, { field: 'format' });
  return measure(opts, name);
}

/**
 * The driver whose probe scores highest on the content of `name` in `ns` (raw when none claims
 * it). A format vdkit cannot read (LUKS, QED, qcow v1, ...) is refused here rather than handed to
 * raw: the caller who wants the bytes as a disk says format 'raw'.
 */
export async function detectFormatIn(ns: Namespace, name: string): Promise<Driver> {
  const st = await ns.open(name);
  try {
    const size = await st.size();
    const head = await st.readZeroPadded(0, Math.min(size, 4096));
    const tail = size >= 512 ? await st.read(size - 512, 512) : Buffer.alloc(0);
    let best: Driver = rawDriver;
    let score = 0;
    for (const d of DRIVERS) {
      const s = d.probe(head, tail);
      if (s > score) {
        score = s;
        best = d;
      }
    }
    const foreign = best === rawDriver ? foreignFormat(head, tail) : undefined;
    if (foreign) {
      throw new DiskError('NOTSUPPORTED', `a ${foreign.description}: not a format vdkit reads; ${foreign.hint}; -f raw reads the file's bytes as they are`, {
        path: ns.absolute(name),
        field: 'format',
        format: foreign.name,
      });
    }
    return best;
  } finally {
    await st.close();
  }
}
