/**
 * Creating a child (redo log / snapshot delta) of a disk: VixDiskLib_CreateChild, VDCreateDiff,
 * `qemu-img create -b`. The child is an empty sparse disk that names its parent; reads fall
 * through to the parent until the child is written.
 */
import { basename, dirname, extname, join } from '../core/names.js';
import { driverByName } from '../formats/registry.js';
import type { CreateOptions, Image } from '../formats/types.js';
import { hintFor, parentFacts } from '../chain/chain.js';
import { DiskError } from '../core/errors.js';
import { hostFiles } from '../storage/file.js';
import type { Namespace } from '../storage/namespace.js';
import { Disk, type DiskCreateOptions } from '../disk.js';

export interface CreateChildOptions {
  /** the child's type: VMDK monolithicSparse (default) or twoGbMaxExtentSparse; other formats choose their differencing type */
  type?: string;
  overwrite?: boolean;
  /** store the parent hint as an absolute path even when both share a folder */
  absoluteHint?: boolean;
  /** open the parent chain with this trust setting (see ChainOpenOptions.untrusted) */
  untrusted?: boolean;
  /** the child's format (default: the parent's); only formats that take any backing (qcow2) differ */
  format?: string;
  /** the child's size in bytes (default: the parent's; only formats whose children may differ in size) */
  capacity?: number;
  /** more create options for the child's format (qcow2 clusterSize, VHDX blockSize, ...) */
  createOptions?: Partial<CreateOptions>;
  /** where parent and child are named (default: host files) */
  namespace?: Namespace;
}

/** VMware's naming: base.vmdk -> base-000001.vmdk; base-000001.vmdk -> base-000002.vmdk (first free); same for .vdi/.vhd. */
export async function defaultChildPath(parentPath: string, format?: string, ns: Namespace = hostFiles()): Promise<string> {
  const dir = dirname(parentPath);
  const ext = format ? `.${driverByName(format).extensions[0]}` : extname(parentPath);
  const stem = basename(parentPath, extname(parentPath)).replace(/-\d{6}$/, '');
  for (let n = 1; n < 1000000; n++) {
    const p = join(dir, `${stem}-${String(n).padStart(6, '0')}${ext}`);
    if (!(await ns.exists(p))) return p;
  }
  throw new DiskError('FILEEXISTS', 'no free child name left', { path: parentPath });
}

/**
 * The create options of a child of `parent` (an open link) that will live at `childPath`, with
 * the parent at `parentPath`. Shared by createChild and the chain clone, so a child's link
 * metadata (hint, parent identity, inherited VMDK keys, what the child's driver records about
 * the parent: read here from `parent`, which may be a copy under another name) is made in one place.
 */
export function childCreateOptions(parent: Image, parentPath: string, childPath: string, opts: CreateChildOptions = {}): DiskCreateOptions {
  const ns = opts.namespace ?? parent.namespace;
  const format = opts.format ?? parent.format;
  const driver = driverByName(format);
  if (!driver.capabilities.differencing) {
    throw new DiskError('NOTSUPPORTED', `${format} disks cannot be children`, { path: parentPath, field: 'format' });
  }
  // Children that record their parent's identity (VMDK CID, VDI/VHD UUID) need a parent of
  // their own format; formats that record only a name and a format (qcow2) take any parent.
  if (format !== parent.format && driver.capabilities.parentLink === 'identity') {
    throw new DiskError('NOTSUPPORTED', `a ${format} child needs a ${format} parent (this one is ${parent.format})`, { path: parentPath, field: 'format' });
  }
  if (opts.capacity !== undefined && opts.capacity !== parent.capacity && driver.capabilities.differencingSameSize) {
    throw new DiskError('INVAL', `a ${format} child has its parent's size`, { path: parentPath, field: 'capacity', expected: parent.capacity, found: opts.capacity });
  }
  const id = parent.identity();
  if (id === undefined && driver.capabilities.parentLink === 'identity') throw new DiskError('INVALIDDISK', 'parent has no identity to link to', { path: parentPath, field: 'identity' });
  const hint = hintFor(ns, childPath, parentPath, opts.absoluteHint);
  // VMDK keys a child inherits; other formats ignore what they do not have
  const keys = ['adapterType', 'geometry.cylinders', 'geometry.heads', 'geometry.sectors', 'geometry.biosCylinders', 'geometry.biosHeads', 'geometry.biosSectors', 'toolsVersion', 'uuid', 'virtualHWVersion'];
  const copyMetadata = keys.flatMap((k) => {
    const v = parent.readMetadata(k);
    return v === undefined ? [] : [[k, v] as [string, string]];
  });
  return {
    ...opts.createOptions,
    format,
    type: opts.type,
    capacity: opts.capacity ?? parent.capacity,
    overwrite: opts.overwrite,
    namespace: ns,
    parent: { hint, parentPath: ns.absolute(parentPath), parentId: id ?? '', copyMetadata, facts: parentFacts(parent) },
  };
}

export async function createChild(parentPath: string, childPath?: string, opts: CreateChildOptions = {}): Promise<Disk> {
  const ns = opts.namespace ?? hostFiles();
  const parent = await Disk.open(parentPath, { namespace: ns, readOnly: true, untrusted: opts.untrusted });
  let child: string;
  let spec: DiskCreateOptions;
  try {
    const format = opts.format ?? parent.format;
    if (!driverByName(format).capabilities.differencing) {
      throw new DiskError('NOTSUPPORTED', `${format} disks cannot be children`, { path: parentPath, field: 'format' });
    }
    child = childPath ?? (await defaultChildPath(parentPath, format === parent.format ? undefined : format, ns));
    spec = childCreateOptions(parent.image, parentPath, child, { ...opts, namespace: ns });
  } finally {
    await parent.close();
  }
  await (await Disk.create(child, spec)).close();
  return Disk.open(child, { namespace: ns, untrusted: opts.untrusted });
}
