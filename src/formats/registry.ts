/**
 * Every driver, detection by content (VDGetFormat) and the backend list (VDBackendInfo).
 * Detection never looks at the file name: the highest probe score wins, raw (score 1) last.
 */
import { DiskError } from '../core/errors.js';
import { FileStore } from '../storage/file.js';
import { rawDriver } from './raw/driver.js';
import type { Capabilities, CreateOptionInfo, Driver } from './types.js';
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

const CAPABILITY_KEYS: readonly (keyof Capabilities)[] = ['write', 'blockStatus', 'zero', 'metadata', 'createTypes', 'differencing', 'differencingSameSize', 'parentLink', 'identityFollowsContent', 'split', 'discard', 'resize', 'flush', 'check'];
// Capabilities are data, declared once; a driver that forgets one fails here, at load time.
for (const d of DRIVERS) {
  for (const k of CAPABILITY_KEYS) if (d.capabilities[k] === undefined) throw new DiskError('INTERNAL', `driver ${d.name} does not declare capability ${k}`);
  if (d.capabilities.createTypes.length === 0) throw new DiskError('INTERNAL', `driver ${d.name} declares no create type`);
}

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

export async function detectFormat(path: string): Promise<Driver> {
  const st = await FileStore.open(path, { readOnly: true });
  try {
    const size = await st.size();
    const head = await st.readZeroPadded(0, Math.min(size, 4096));
    const tail = size >= 512 ? await st.read(size - 512, 512) : Buffer.alloc(0);
    let best: Driver = rawDriver;
    let score = 0;
    for (const d of DRIVERS) {
      const s = d.probe(head, size, tail);
      if (s > score) {
        score = s;
        best = d;
      }
    }
    return best;
  } finally {
    await st.close();
  }
}
