/**
 * Creating a child (redo log / snapshot delta) of a disk: VixDiskLib_CreateChild, VDCreateDiff,
 * `qemu-img create -b`. The child is an empty sparse disk that names its parent; reads fall
 * through to the parent until the child is written.
 */
import { basename, dirname, extname, join, resolve } from 'node:path';
import { driverByName } from '../formats/registry.js';
import { hintFor } from '../chain/chain.js';
import { DiskError } from '../core/errors.js';
import { fsx } from '../storage/file.js';
import { Disk } from '../disk.js';

export interface CreateChildOptions {
  /** the child's type: VMDK monolithicSparse (default) or twoGbMaxExtentSparse; other formats choose their differencing type */
  type?: string;
  overwrite?: boolean;
  /** store the parent hint as an absolute path even when both share a folder */
  absoluteHint?: boolean;
  /** open the parent chain with this trust setting (see ChainOpenOptions.untrusted) */
  untrusted?: boolean;
}

/** VMware's naming: base.vmdk -> base-000001.vmdk; base-000001.vmdk -> base-000002.vmdk (first free); same for .vdi/.vhd. */
export async function defaultChildPath(parentPath: string): Promise<string> {
  const dir = dirname(parentPath);
  const ext = extname(parentPath);
  const stem = basename(parentPath, ext).replace(/-\d{6}$/, '');
  for (let n = 1; n < 1000000; n++) {
    const p = join(dir, `${stem}-${String(n).padStart(6, '0')}${ext}`);
    if (!(await fsx.exists(p))) return p;
  }
  throw new DiskError('FILEEXISTS', 'no free child name left', { path: parentPath });
}

export async function createChild(parentPath: string, childPath?: string, opts: CreateChildOptions = {}): Promise<Disk> {
  const parent = await Disk.open(parentPath, { readOnly: true, untrusted: opts.untrusted });
  let child: string;
  let spec: Parameters<typeof Disk.create>[1];
  try {
    const driver = driverByName(parent.format);
    if (!driver.capabilities.differencing) {
      throw new DiskError('NOTSUPPORTED', `${parent.format} disks cannot have children`, { path: parentPath, field: 'format' });
    }
    const id = parent.image.identity();
    if (id === undefined) throw new DiskError('INVALIDDISK', 'parent has no content ID to link to', { path: parentPath, field: 'CID' });
    child = childPath ?? (await defaultChildPath(parentPath));
    const hint = hintFor(child, parentPath, opts.absoluteHint);
    // VMDK keys a child inherits; other formats ignore what they do not have
    const keys = ['adapterType', 'geometry.cylinders', 'geometry.heads', 'geometry.sectors', 'geometry.biosCylinders', 'geometry.biosHeads', 'geometry.biosSectors', 'toolsVersion', 'uuid', 'virtualHWVersion'];
    const copyMetadata = keys.flatMap((k) => {
      const v = parent.readMetadata(k);
      return v === undefined ? [] : [[k, v] as [string, string]];
    });
    spec = {
      format: parent.format,
      type: opts.type,
      capacity: parent.capacity,
      overwrite: opts.overwrite,
      parent: { hint, parentPath: resolve(parentPath), parentId: id, copyMetadata },
    };
  } finally {
    await parent.close();
  }
  await (await Disk.create(child, spec)).close();
  return Disk.open(child, { untrusted: opts.untrusted });
}
