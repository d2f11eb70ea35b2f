import { randomUUID } from '../../core/platform.js';
import type { Capabilities } from '../types.js';
import { FILE_SIGNATURE } from './structs.js';
import { VHDX_PROPERTIES } from './properties.js';
import { DYNAMIC_FIXED_CAPABILITIES, DYNAMIC_SPELLINGS, PREALLOCATE_FIXED, defineDriver } from '../common/driver.js';

export const VHDX_CAPABILITIES: Capabilities = Object.freeze({
  ...DYNAMIC_FIXED_CAPABILITIES,
  // Hyper-V renews the DataWriteGuid on the first data write of a session, and a child records
  // its parent's DataWriteGuid: like a VMDK CID, the identity follows the content
  identityFollowsContent: true,
  flush: 'exclusive',
});


/** Ours when the file type identifier "vhdxfile" is at offset 0 (what QEMU probes too). */
function probe(head: Buffer): number {
  return head.length >= 8 && head.toString('latin1', 0, 8) === FILE_SIGNATURE ? 100 : 0;
}

export const vhdxDriver = defineDriver({
  name: 'vhdx',
  description: 'Microsoft VHDX (Hyper-V, Windows 8+, Disk2vhd; qemu "vhdx"): fixed, dynamic, differencing; log replay',
  extensions: ['vhdx', 'avhdx'],
  qemu: { noBacking: true },
  newIdentity: () => randomUUID(),
  createOptions: [
    { name: 'type', description: 'dynamic (default) or fixed; a child is always differencing' },
    { name: 'blockSize', description: 'payload block size, a power of two from 1 MiB to 256 MiB (default as qemu-img: 8 MiB up to 1 GiB, 16 MiB up to 100 GiB, 32 MiB up to 32 TiB, else 64 MiB; children 2 MiB)' },
    PREALLOCATE_FIXED,
  ],
  capabilities: VHDX_CAPABILITIES,
  properties: VHDX_PROPERTIES,
  parentField: 'hasParent',
  typeSpellings: DYNAMIC_SPELLINGS,
  probe,
  // the code is imported when first run (see qcow2/driver.ts)
  open: async (ns, name, opts) => (await import('./open.js')).openVhdx(ns, name, opts),
  create: async (ns, name, opts) => (await import('./create.js')).createVhdx(ns, name, opts),
});
