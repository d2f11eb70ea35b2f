import { randomUUID } from '../../core/platform.js';
import { VDI_CAPABILITIES } from './layout.js';
import { VDI_SIGNATURE } from './structs.js';
import { VDI_PROPERTIES } from './properties.js';
import { defineDriver } from '../common/driver.js';

export const vdiDriver = defineDriver({
  name: 'vdi',
  description: 'VirtualBox disk image: dynamic, fixed and differencing (v1.1 headers; legacy v0 read-only)',
  extensions: ['vdi'],
  qemu: { noBacking: true },
  newIdentity: () => randomUUID(),
  createOptions: [
    { name: 'type', description: 'dynamic (default, type 1) or fixed (type 2); children are always differencing (type 4)' },
    { name: 'preallocate', description: 'fixed: write the zeros of the data area instead of leaving the file sparse' },
  ],
  capabilities: VDI_CAPABILITIES,
  properties: VDI_PROPERTIES,
  parentField: 'type',
  typeSpellings: { normal: 'dynamic', standard: 'dynamic', '1': 'dynamic', static: 'fixed', '2': 'fixed' },
  /** the signature at offset 64 is all VirtualBox and QEMU look at */
  probe(head: Buffer): number {
    return head.length >= 68 && head.readUInt32LE(64) === VDI_SIGNATURE ? 100 : 0;
  },
  // the code is imported when first run (see qcow2/driver.ts)
  open: async (ns, path, opts) => (await import('./image.js')).VdiImage.open(ns, path, opts),
  create: async (ns, path, opts) => (await import('./create.js')).createVdi(ns, path, opts),
  checkFile: async (ns, path, opts) => (await import('./check.js')).checkVdiFile(ns, path, opts),
});
