import { DiskError } from '../../core/errors.js';
import { createVmdk, normaliseCreateType } from './create.js';
import { hex8, looksLikeDescriptor } from './descriptor.js';
import { VMDK_CAPABILITIES } from './image.js';
import { openVmdk } from './open.js';
import { newCid } from './layout.js';
import { vmdkStreamReader } from './stream/reader.js';
import { COWD_MAGIC, SESPARSE_CONST_MAGIC, SPARSE_MAGIC } from './structs.js';
import { VMDK_AMEND_OPTIONS, VMDK_PROPERTIES } from './properties.js';
import { defineDriver } from '../common/driver.js';

const ESX_TYPES = new Set(['vmfs', 'vmfssparse', 'vmfsthin', 'vmfspreallocated', 'vmfseagerzeroedthick', 'vmfsthick', 'sesparse', 'vmfsraw', 'vmfsrawdevicemap', 'vmfspassthroughrawdevicemap']);

export const vmdkDriver = defineDriver({
  name: 'vmdk',
  description: 'VMware virtual disk: hosted sparse and flat, split, ESXi vmfs; streamOptimized (read; written whole by convert); ESXi deltas (vmfsSparse, seSparse) read-only',
  extensions: ['vmdk'],
  newIdentity: () => hex8(newCid()),
  createOptions: [
    { name: 'type', description: 'monolithicSparse (0), twoGbMaxExtentSparse (1), monolithicFlat (2), twoGbMaxExtentFlat (3), vmfs (4), vmfsThin, streamOptimized (5, convert only)' },
    { name: 'adapterType', description: 'ide, buslogic, lsilogic (default), pvscsi, legacyESX' },
    { name: 'hwVersion', description: 'ddb.virtualHWVersion (default 4)' },
    { name: 'thin', description: 'vmfs: ddb.thinProvisioned' },
    { name: 'preallocate', description: 'flat types: write the zeros' },
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
  open: openVmdk,
  create: createVmdk,
  sequential: vmdkStreamReader,
});
