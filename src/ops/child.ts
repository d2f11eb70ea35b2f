/**
 * Creating a child (redo log / snapshot delta) of a disk: VixDiskLib_CreateChild, VDCreateDiff,
 * `qemu-img create -b`. The child is an empty sparse disk that names its parent; reads fall
 * through to the parent until the child is written.
 */
import { basename, dirname, join } from 'node:path';
import { hintFor } from '../chain/chain.js';
import { DiskError } from '../core/errors.js';
import { fsx } from '../storage/file.js';
import { Disk } from '../disk.js';

export interface CreateChildOptions {
  /** monolithicSparse (default) or twoGbMaxExtentSparse */
  type?: string;
  overwrite?: boolean;
  /** store the parent hint as an absolute path even when both share a folder */
  absoluteHint?: boolean;
  /** open the parent chain with this trust setting (see ChainOpenOptions.untrusted) */
  untrusted?: boolean;
}

/** VMware's naming: base.vmdk -> base-000001.vmdk; base-000001.vmdk -> base-000002.vmdk (first free). */
export async function defaultChildPath(parentPath: string): Promise<string> {
  const dir = dirname(parentPath);
  const stem = basename(parentPath).replace(/\.vmdk$/i, '').replace(/-\d{6}$/, '');
  for (let n = 1; n < 1000000; n++) {
    const p = join(dir, `${stem}-${String(n).padStart(6, '0')}.vmdk`);
    if (!(await fsx.exists(p))) return p;
  }
  throw new DiskError('FILEEXISTS', 'no free child name left', { path: parentPath });
}

export async function createChild(parentPath: string, childPath?: string, opts: CreateChildOptions = {}): Promise<Disk> {
  const parent = await Disk.open(parentPath, { readOnly: true, untrusted: opts.untrusted });
  let child: string;
  let spec: Parameters<typeof Disk.create>[1];
  try {
    if (parent.format !== 'vmdk') {
      throw new DiskError('NOTSUPPORTED', `children of ${parent.format} disks are not supported yet`, { path: parentPath, field: 'format' });
    }
    const id = parent.image.identity();
    if (id === undefined) throw new DiskError('INVALIDDISK', 'parent has no content ID to link to', { path: parentPath, field: 'CID' });
    child = childPath ?? (await defaultChildPath(parentPath));
    const hint = hintFor(child, parentPath, opts.absoluteHint);
    const keys = ['adapterType', 'geometry.cylinders', 'geometry.heads', 'geometry.sectors', 'geometry.biosCylinders', 'geometry.biosHeads', 'geometry.biosSectors', 'toolsVersion', 'uuid', 'virtualHWVersion'];
    const copyMetadata = keys.flatMap((k) => {
      const v = parent.readMetadata(k);
      return v === undefined ? [] : [[k, v] as [string, string]];
    });
    spec = {
      format: 'vmdk',
      type: opts.type ?? 'monolithicSparse',
      capacity: parent.capacity,
      overwrite: opts.overwrite,
      parent: { hint, parentId: id, copyMetadata },
    };
  } finally {
    await parent.close();
  }
  await (await Disk.create(child, spec)).close();
  return Disk.open(child, { untrusted: opts.untrusted });
}
