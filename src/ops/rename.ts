/**
 * Rename (VixDiskLib_Rename, vmware-vdiskmanager -n) and unlink (VixDiskLib_Unlink).
 *
 * Design notes
 * - Crash-safe order for rename: (1) every file gets its new name as a hard link (VMDK: the
 *   extents, then the descriptor written at its new name last, with the new extent names; a
 *   monolithic sparse file's embedded extent line is rewritten to the new name first, the stale
 *   name being a known trap for VirtualBox); (2) children in the same folder are re-pointed at
 *   the new name one at a time (VMDK parentFileNameHint, qcow2 backing file name, VHD/VHDX
 *   parent locators, VDI nothing: it finds its parent by UUID); (3) the old names go, the old
 *   descriptor first. Killed at any point, the disk opens under the old name, the new name or
 *   both, with the same content, and every child reaches it. Where the file system has no hard
 *   links the files are renamed instead (children are then re-pointed after the move).
 * - Unlink removes every file of the disk (top file first, so a disk killed half-way through
 *   is no longer found by name), refusing when a child in its folder depends on it unless forced.
 */
import { resolve } from 'node:path';
import { DiskError } from '../core/errors.js';
import { findChildren } from '../chain/children.js';
import { hintFor } from '../chain/chain.js';
import { chainFormats, openLink } from '../disk.js';
import { backends } from '../formats/registry.js';
import { fsx } from '../storage/file.js';

const extensions = () => backends().flatMap((b) => b.extensions);

export interface RenameResult {
  /** the files the disk had, and has now */
  from: string[];
  to: string[];
  /** children whose parent link now names the new path */
  children: string[];
}

export async function rename(oldPath: string, newPath: string): Promise<RenameResult> {
  const src = resolve(oldPath);
  const dst = resolve(newPath);
  if (src === dst) throw new DiskError('INVAL', 'the new name is the old one', { path: oldPath });
  if (await fsx.exists(dst)) throw new DiskError('FILEEXISTS', 'a file of that name exists', { path: newPath });
  const image = await openLink(src, { singleLink: true, readOnly: true });
  let from: string[];
  let kids: string[];
  let id: string | undefined;
  try {
    from = (await image.info()).files.map((f) => resolve(f));
    kids = await findChildren(image, chainFormats, extensions());
    id = image.identity();
  } finally {
    await image.close();
  }
  const links: { path: string; parentId: string }[] = [];
  for (const c of kids) {
    const child = await openLink(c, { singleLink: true, readOnly: true });
    links.push({ path: c, parentId: child.backing()?.parentId ?? id ?? '' });
    await child.close();
  }
  if (image.renameTo) {
    // the multi-file formats rename themselves (descriptor and extent names)
    const rw = await openLink(src, { format: image.format, singleLink: true, cowByCaller: true, preserveIdentity: true });
    await rw.renameTo!(dst, { keepOld: true });
  } else {
    if (!(await fsx.link(src, dst))) await fsx.rename(src, dst);
  }
  const after = await openLink(dst, { singleLink: true, readOnly: true });
  const to = (await after.info()).files.map((f) => resolve(f));
  await after.close();
  for (const l of links) {
    const child = await openLink(l.path, { singleLink: true, cowByCaller: true, preserveIdentity: true });
    try {
      await child.setBacking({ hint: hintFor(l.path, dst), parentId: l.parentId });
      await child.flush();
    } finally {
      await child.close();
    }
  }
  // the old descriptor (the name the disk is opened by) first, then the rest
  for (const f of from) if (!to.includes(f)) await fsx.remove(f);
  return { from, to, children: kids };
}

export interface UnlinkOptions {
  /** delete even though children depend on the disk */
  force?: boolean;
}

export async function unlink(path: string, opts: UnlinkOptions = {}): Promise<{ removed: string[] }> {
  const image = await openLink(resolve(path), { singleLink: true, readOnly: true });
  let files: string[];
  try {
    const kids = await findChildren(image, chainFormats, extensions());
    if (kids.length > 0 && !opts.force) throw new DiskError('NOTSUPPORTED', `${kids[0]} is a child of this disk: deleting it would break the child (force to delete anyway)`, { path, field: 'children', found: kids });
    files = (await image.info()).files.map((f) => resolve(f));
  } finally {
    await image.close();
  }
  for (const f of files) await fsx.remove(f);
  return { removed: files };
}
