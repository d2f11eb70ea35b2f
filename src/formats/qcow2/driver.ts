/**
 * The qcow2 driver's descriptor. What it declares (names, capabilities, probe) is here; what it
 * runs (open, create, the compressed writer) is imported when first called, so that loading
 * the registry (every `vdkit info`) does not load every format's code.
 */
import type { Capabilities } from '../types.js';
import { QCOW2_AMEND_OPTIONS, QCOW2_MAGIC, TYPES } from './structs.js';
import { NO_PROPERTIES } from '../common/properties.js';
import { defineDriver } from '../common/driver.js';

export const QCOW2_CAPABILITIES: Capabilities = Object.freeze({
  write: 'native',
  blockStatus: 'native',
  zero: 'native',
  metadata: true,
  createTypes: ['v3', 'v2'],
  differencing: true,
  differencingSameSize: false,
  parentLink: 'name',
  identityFollowsContent: false,
  split: false,
  discard: 'native',
  resize: 'grow-shrink',
  flush: 'concurrent',
  check: 'repair',
  compact: 'native',
  defragment: 'native',
  internalSnapshots: true,
});

/**
 * Ours when the file starts with "QFI\xfb" and is not qcow version 1 (a different format, named
 * by detection's foreign table); a version above 3 is ours too, so it gets a clear version error.
 */
function probe(head: Buffer): number {
  return head.length >= 8 && head.readUInt32BE(0) === QCOW2_MAGIC && head.readUInt32BE(4) !== 1 ? 100 : 0;
}

export const qcow2Driver = defineDriver({
  name: 'qcow2',
  description: 'QEMU copy-on-write image, version 3 (compat 1.1) and 2 (compat 0.10): backing files, zero clusters, compressed clusters (read; written whole by convert -c), internal snapshots (snapshot -l/-c/-a/-d), amend (compat, refcount_bits, lazy_refcounts), check/repair',
  extensions: ['qcow2', 'qcow'],
  newIdentity: () => undefined,
  createOptions: [
    { name: 'type', description: 'v3 (compat 1.1, default) or v2 (compat 0.10)' },
    { name: 'clusterSize', description: 'cluster size in bytes, a power of two from 512 to 2 MiB (default 65536)' },
  ],
  amendOptions: QCOW2_AMEND_OPTIONS,
  capabilities: QCOW2_CAPABILITIES,
  properties: NO_PROPERTIES,
  parentField: 'backing_file_offset',
  /** the create type is the version (v2 = compat 0.10, v3 = compat 1.1); other names stay as they are, unknown */
  normaliseType: (type: string) => {
    const version = TYPES[type.toLowerCase()];
    return version === undefined ? type.toLowerCase() : `v${version}`;
  },
  /** the qcow2 version (the create type) is the same for every link */
  childType: (baseType: string | undefined) => baseType,
  probe,
  open: async (ns, name, opts) => (await import('./open.js')).openQcow2(ns, name, opts),
  create: async (ns, name, opts) => (await import('./create.js')).createQcow2(ns, name, opts),
  writeCompressed: async (src, store, opts) => (await import('./compressed-writer.js')).writeCompressedQcow2(src, store, opts),
});
