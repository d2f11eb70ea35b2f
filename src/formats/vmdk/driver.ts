import { DiskError } from '../../core/errors.js';
import type { Capabilities } from '../types.js';
import { hex8, looksLikeDescriptor } from './descriptor.js';
import { newCid, normaliseCreateType } from './layout.js';
import { vmdkStreamReader } from './stream/reader.js';
import { COWD_MAGIC, SESPARSE_CONST_MAGIC, SPARSE_MAGIC } from './structs.js';
import { VMDK_AMEND_OPTIONS, VMDK_PROPERTIES } from './properties.js';
import { defineDriver } from '../common/driver.js';

export const VMDK_CAPABILITIES: Capabilities = Object.freeze({
  write: 'native',
  blockStatus: 'native',
  zero: 'emulate',
  metadata: true,
  createTypes: ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'vmfs'],
  differencing: true,
  differencingSameSize: true,
  parentLink: 'identity',
  identityFollowsContent: true,
  split: true,
  // hosted sparse types (monolithicSparse, twoGbMaxExtentSparse, their children); an opened
  // image of another type (flat, streamOptimized, ESX deltas) says 'none' (NOTES.md)
  discard: 'native',
  resize: 'grow',
  flush: 'concurrent',
  check: 'repair',
  compact: 'native',
  defragment: 'native',
});

const ESX_TYPES = new Set(['vmfs', 'vmfssparse', 'vmfsthin', 'vmfspreallocated', 'vmfseagerzeroedthick', 'vmfsthick', 'sesparse', 'vmfsraw', 'vmfsrawdevicemap', 'vmfspassthroughrawdevicemap']);

export const vmdkDriver = defineDriver({
  name: 'vmdk',
  description: 'VMware virtual disk: hosted sparse and flat, split, ESXi vmfs; streamOptimized (read; written whole by convert); ESXi deltas: vmfsSparse (COWD) read-write, seSparse read-only',
  extensions: ['vmdk'],
  newIdentity: () => hex8(newCid()),
  createOptions: [
    { name: 'type', description: 'monolithicSparse (0), twoGbMaxExtentSparse (1), monolithicFlat (2), twoGbMaxExtentFlat (3), vmfs (4), vmfsThin, streamOptimized (5, convert only)' },
    { name: 'adapterType', description: 'ide, buslogic, lsilogic (default), pvscsi, legacyESX' },
    { name: 'hwVersion', description: 'ddb.virtualHWVersion (default 4)' },
    { name: 'thin', description: 'vmfs: ddb.thinProvisioned' },
    { name: 'preallocate', description: 'flat types: write the zeros' },
    { name: 'grainSize', description: 'sparse types: grain size in bytes, a power of two from 8 KiB to 32 MiB (default 64 KiB; -o grain_size= in sectors)' },
  ],
  amendOptions: VMDK_AMEND_OPTIONS,
  capabilities: VMDK_CAPABILITIES,
  properties: VMDK_PROPERTIES,
  selfNaming: true,
  parentField: 'parentCID',
  normaliseType: normaliseCreateType,
  sequentialTypes: ['streamOptimized'],
  /** VMDK children are always sparse: split ones under split bases */
  childType(baseType: string | undefined, path: string): string {
    const t = (baseType ?? '').toLowerCase();
    if (t.startsWith('vmfs') || t === '4') {
      throw new DiskError('NOTSUPPORTED', 'a vmfs base takes vmfsSparse/seSparse children, which vdkit does not create; keep the chain in a hosted VMDK type', { path, field: 'type', found: baseType });
    }
    return /^(twogbmaxextent|2gbmaxextent)|^[13]$/.test(t) ? 'twoGbMaxExtentSparse' : 'monolithicSparse';
  },
  /** ESXi (vmfs*, seSparse) and hosted disks do not stack on each other */
  linkFamily: (type: string) => (ESX_TYPES.has(type.toLowerCase()) ? 'esx' : 'hosted'),
  probe(head: Buffer): number {
    if (head.length >= 4) {
      const magic = head.readUInt32LE(0);
      if (magic === SPARSE_MAGIC || magic === COWD_MAGIC) return 100;
    }
    if (head.length >= 8 && head.readBigUInt64LE(0) === SESPARSE_CONST_MAGIC) return 100;
    return looksLikeDescriptor(head) ? 100 : 0;
  },
  // the code is imported when first run (see qcow2/driver.ts)
  open: async (ns, name, opts) => (await import('./open.js')).openVmdk(ns, name, opts),
  create: async (ns, name, opts) => (await import('./create.js')).createVmdk(ns, name, opts),
  sequential: vmdkStreamReader,
});
