/** Every driver, and detection by content (VDGetFormat): the highest probe score wins. */
import { DiskError } from '../core/errors.js';
import { FileStore } from '../storage/file.js';
import { rawDriver } from './raw/driver.js';
import type { Driver } from './types.js';
import { vmdkDriver } from './vmdk/driver.js';

const DRIVERS: readonly Driver[] = Object.freeze([vmdkDriver, rawDriver]);

export function backends(): readonly Driver[] {
  return DRIVERS;
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
    let best: Driver = rawDriver;
    let score = 0;
    for (const d of DRIVERS) {
      const s = d.probe(head, size);
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
