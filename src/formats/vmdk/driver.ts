import type { CreateOptions, Driver, OpenOptions } from '../types.js';
import { createVmdk } from './create.js';
import { looksLikeDescriptor } from './descriptor.js';
import { VMDK_CAPABILITIES, VmdkImage } from './image.js';
import { COWD_MAGIC, SPARSE_MAGIC } from './structs.js';

export const vmdkDriver: Driver = Object.freeze({
  name: 'vmdk',
  extensions: ['vmdk'],
  capabilities: VMDK_CAPABILITIES,
  probe(head: Buffer): number {
    if (head.length >= 4) {
      const magic = head.readUInt32LE(0);
      if (magic === SPARSE_MAGIC || magic === COWD_MAGIC) return 100;
    }
    return looksLikeDescriptor(head) ? 100 : 0;
  },
  open: (path: string, opts: OpenOptions) => VmdkImage.open(path, opts),
  create: (path: string, opts: CreateOptions) => createVmdk(path, opts),
});
