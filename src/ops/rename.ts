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
 *   links the files are renamed instead (children are then re-pointed after the move); there a
 *   kill between moving a VMDK's extents and writing its new descriptor leaves neither name
 *   whole (every file is there, the extents under their new names): a gap of that fallback, not
 *   covered by the kill tests (their folders have hard links).
 * - A disk of several files (VMDK descriptor + extents) cannot change all its names at once, so
 *   two kill windows leave a name no disk uses: after the extents got their new names and before
 *   the new descriptor is in place (`b-flat.vmdk` beside a whole `a.vmdk`, perhaps with the new
 *   descriptor's temporary file), and after the old descriptor went and before the old extents
 *   did (`a-flat.vmdk` beside a whole `b.vmdk`). Every other order is worse (a descriptor naming
 *   a missing extent). Such a leftover is recognisable: a hard link of one of the disk's files,
 *   named like it under another stem that has no top file (`b.vmdk` missing), or a temporary
 *   file (`<name>.vdkit-tmp-<pid>`) of such a name or of the disk's own top file whose process
 *   is gone. `renameLeftovers` finds them; the next rename of the disk removes them first, and
 *   `check` reports them (a leak) and a repair removes them.
 * - VHDX children are re-pointed through their log; a kill there leaves a log the next
 *   read-write open replays (VHDX's own recovery; check reports it on `logGuid` and a repair
 *   applies it), so the child reaches the parent under one of the names either way.
 * - Unlink removes every file of the disk (top file first, so a disk killed half-way through
 *   is no longer found by name), refusing when a child in its folder depends on it unless forced.
 */
import { basename, dirname, extname, join } from '../core/names.js';
import { DiskError } from '../core/errors.js';
import { findChildren } from '../chain/children.js';
import { backingTo } from '../chain/chain.js';
import { chainFormats, openLinkIn } from '../disk.js';
import { backends } from '../formats/registry.js';
import { hostFiles } from '../storage/file.js';
import { sameFile, type Namespace } from '../storage/namespace.js';

const extensions = () => backends().flatMap((b) => b.extensions);

export interface RenameResult {
  /** the files the disk had, and has now */
  from: string[];
  to: string[];
  /** children whose parent link now names the new path */
  children: string[];
}

export async function rename(oldPath: string, newPath: string, opts: { namespace?: Namespace } = {}): Promise<RenameResult> {
  const ns = opts.namespace ?? hostFiles();
  const src = ns.absolute(oldPath);
  const dst = ns.absolute(newPath);
  if (src === dst) throw new DiskError('INVAL', 'the new name is the old one', { path: oldPath });
  if (await ns.exists(dst)) throw new DiskError('FILEEXISTS', 'a file of that name exists', { path: newPath });
  const image = await openLinkIn(ns, src, { readOnly: true });
  let from: string[];
  let kids: string[];
  let id: string | undefined;
  try {
    from = (await image.info()).files.map((f) => ns.absolute(f));
    kids = await findChildren(image, chainFormats, extensions());
    id = image.identity();
  } finally {
    await image.close();
  }
  // what an earlier rename of this disk left when it was stopped
  for (const f of await leftoversOf(ns, src, from)) await ns.remove(f);
  const links: { path: string; parentId: string }[] = [];
  for (const c of kids) {
    const child = await openLinkIn(ns, c, { readOnly: true });
    links.push({ path: c, parentId: child.backing()?.parentId ?? id ?? '' });
    await child.close();
  }
  if (image.maintenance().renameTo) {
    // the multi-file formats rename themselves (descriptor and extent names)
    const rw = await openLinkIn(ns, src, { format: image.format, cowByCaller: true, preserveIdentity: true });
    try {
      await rw.maintenance().renameTo!(dst, { keepOld: true });
    } catch (err) {
      await rw.close().catch(() => {});
      throw err;
    }
  } else {
    if (!(await ns.link(src, dst))) await ns.rename(src, dst);
  }
  const after = await openLinkIn(ns, dst, { readOnly: true });
  const to = (await after.info()).files.map((f) => ns.absolute(f));
  await after.close();
  for (const l of links) {
    const change = await backingTo(ns, l.path, dst, l.parentId, chainFormats);
    const child = await openLinkIn(ns, l.path, { cowByCaller: true, preserveIdentity: true });
    try {
      await child.setBacking(change);
      await child.flush();
    } finally {
      await child.close();
    }
  }
  // the old descriptor (the name the disk is opened by) first, then the rest
  for (const f of from) if (!to.includes(f)) await ns.remove(f);
  return { from, to, children: kids };
}

/**
 * Files a stopped rename of the disk at `path` left behind (see the design notes): hard links of
 * its files under a stem whose top file does not exist, and the temporary files of such names
 * or of the disk's own top file whose process is gone. Nothing is removed here.
 */
export async function renameLeftovers(path: string, ns: Namespace = hostFiles()): Promise<string[]> {
  const top = ns.absolute(path);
  const image = await openLinkIn(ns, top, { readOnly: true });
  let files: string[];
  try {
    files = (await image.info()).files.map((f) => ns.absolute(f));
  } finally {
    await image.close();
  }
  return leftoversOf(ns, top, files);
}

async function leftoversOf(ns: Namespace, top: string, files: string[]): Promise<string[]> {
  const dir = dirname(top);
  const ext = extname(top);
  const stem = basename(top, ext);
  // the disk's other files in its folder named after its stem: what a rename gives new names
  const renamed = files.filter((f) => f !== top && dirname(f) === dir && basename(f).startsWith(stem)).map((f) => ({ file: f, suffix: basename(f).slice(stem.length) }));
  const names = await ns.list(dir);
  const out: string[] = [];
  const otherStems = new Set<string>();
  for (const n of names) {
    const full = join(dir, n);
    if (files.includes(full)) continue;
    for (const r of renamed) {
      if (!n.endsWith(r.suffix) || n.length === r.suffix.length) continue;
      const other = n.slice(0, n.length - r.suffix.length);
      if (await ns.exists(join(dir, other + ext))) continue; // a disk of that name: not ours to touch
      if ((await ns.kind(full)) !== 'file' || (await ns.kind(r.file)) !== 'file') continue;
      if (await sameFile(ns, full, r.file)) {
        out.push(full);
        otherStems.add(other);
        break;
      }
    }
  }
  const tops = new Set([basename(top), ...[...otherStems].map((s) => s + ext)]);
  for (const n of names) {
    const m = /^(.*)\.vdkit-tmp-(\d+)$/.exec(n);
    if (m && tops.has(m[1]!) && processGone(Number(m[2]))) out.push(join(dir, n));
  }
  return out;
}

function processGone(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

export interface UnlinkOptions {
  /** delete even though children depend on the disk */
  force?: boolean;
  /** where the disk's files are named (default: host files) */
  namespace?: Namespace;
}

export async function unlink(path: string, opts: UnlinkOptions = {}): Promise<{ removed: string[] }> {
  const ns = opts.namespace ?? hostFiles();
  const image = await openLinkIn(ns, ns.absolute(path), { readOnly: true });
  let files: string[];
  try {
    const kids = await findChildren(image, chainFormats, extensions());
    if (kids.length > 0 && !opts.force) throw new DiskError('NOTSUPPORTED', `${kids[0]} is a child of this disk: deleting it would break the child (pass --force (force) to delete anyway)`, { path, field: 'children', found: kids });
    files = (await image.info()).files.map((f) => ns.absolute(f));
  } finally {
    await image.close();
  }
  for (const f of files) await ns.remove(f);
  return { removed: files };
}
