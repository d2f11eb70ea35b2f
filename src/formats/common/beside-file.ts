/**
 * A file an image names beside itself (VMDK extents, a qcow2 external data file): resolved
 * against the image's folder, and refused when the name is absolute, climbs out with "..",
 * names a device, or reaches outside the folder through a symbolic link, unless the caller
 * allows external files (CVE-2022-47951 class: an image that makes a reader open any file).
 */
import { dirname, isAbsolute } from '../../core/names.js';
import { DiskError, type ErrorCode } from '../../core/errors.js';
import type { Namespace } from '../../storage/namespace.js';

export interface BesideFileLabels {
  /** what the name names, for messages: "extent file", "data file" */
  what: string;
  /** the image's file in messages: "descriptor", "image" */
  owner: string;
  /** the code of an empty or invalid name */
  badName: ErrorCode;
}

export async function resolveBesideFile(ns: Namespace, ownerPath: string, fileName: string, allowExternal: boolean, labels: BesideFileLabels): Promise<string> {
  const { what, owner } = labels;
  const dir = dirname(ns.absolute(ownerPath));
  const where = { path: ownerPath, field: `${what} name`, found: fileName };
  if (fileName === '' || fileName.includes('\0')) throw new DiskError(labels.badName, `empty or invalid ${what} name`, where);
  const external = isAbsolute(fileName) || /^[A-Za-z]:[\\/]/.test(fileName) || fileName.split(/[\\/]/).includes('..');
  if (external && !allowExternal) {
    throw new DiskError('EXTERNALEXTENT', `${what} name is absolute or leaves the ${owner}'s folder (pass allowExternalExtents to allow)`, where);
  }
  const full = ns.resolve(ownerPath, fileName);
  const kind = await ns.kind(full);
  if (kind === 'missing') throw new DiskError('FILENOTFOUND', `${what} not found`, { ...where, path: full });
  if (!allowExternal) {
    if (kind === 'device' || kind === 'other' || kind === 'dir') throw new DiskError('EXTERNALEXTENT', `${what} names a device or something other than a regular file`, where);
    // Any component may be a symbolic link (the file or a folder on the way): compare real names.
    const real = await ns.realName(full);
    const realDir = await ns.realName(dir);
    if (!real.startsWith(realDir === '/' ? '/' : realDir + '/') || (await ns.kind(real)) !== 'file') {
      throw new DiskError('EXTERNALEXTENT', `${what} resolves (through a symbolic link) to a file outside the ${owner}'s folder`, where);
    }
  }
  return full;
}
