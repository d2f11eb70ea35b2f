import { randomUUID } from '../../core/platform.js';
import { createVhdx } from './create.js';
import { VHDX_CAPABILITIES } from './image.js';
import { openVhdx } from './open.js';
import { FILE_SIGNATURE } from './structs.js';
import { VHDX_PROPERTIES } from './properties.js';
import { DYNAMIC_SPELLINGS, PREALLOCATE_FIXED, defineDriver } from '../common/driver.js';

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
  open: openVhdx,
  create: createVhdx,
});
