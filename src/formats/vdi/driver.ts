import { randomUUID } from '../../core/platform.js';
import type { CheckOptions, CreateOptions, Driver, Namespace, OpenOptions } from '../types.js';
import { createVdi } from './create.js';
import { VdiImage } from './image.js';
import { VDI_CAPABILITIES } from './layout.js';
import { VDI_SIGNATURE } from './structs.js';
import { checkVdiFile } from './check.js';
import { VDI_PROPERTIES } from './properties.js';

export const vdiDriver: Driver = Object.freeze({
  name: 'vdi',
  description: 'VirtualBox disk image: dynamic, fixed and differencing (v1.1 headers; legacy v0 read-only)',
  extensions: ['vdi'],
  newIdentity: () => randomUUID(),
  createOptions: [
    { name: 'type', description: 'dynamic (default, type 1) or fixed (type 2); children are always differencing (type 4)' },
    { name: 'preallocate', description: 'fixed: write the zeros of the data area instead of leaving the file sparse' },
  ],
  capabilities: VDI_CAPABILITIES,
  properties: VDI_PROPERTIES,
  alignment: 512,
  selfNaming: false,
  parentField: 'type',
  sequentialTypes: [],
  normaliseType: (type: string) => ({ normal: 'dynamic', standard: 'dynamic', '1': 'dynamic', static: 'fixed', '2': 'fixed' } as Record<string, string>)[type.toLowerCase()] ?? type.toLowerCase(),
  /** the signature at offset 64 is all VirtualBox and QEMU look at */
  probe(head: Buffer): number {
    return head.length >= 68 && head.readUInt32LE(64) === VDI_SIGNATURE ? 100 : 0;
  },
  open: (ns: Namespace, path: string, opts: OpenOptions) => VdiImage.open(ns, path, opts),
  create: (ns: Namespace, path: string, opts: CreateOptions) => createVdi(ns, path, opts),
  checkFile: (ns: Namespace, path: string, opts: CheckOptions) => checkVdiFile(ns, path, opts),
});
