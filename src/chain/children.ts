/**
 * Finding the children of a disk. Formats record only child -> parent, so the children of a
 * disk are found by looking at the disks in its folder (where VMware, QEMU and vdkit put them)
 * and asking each for its parent link.
 */
import { dirname, join, resolve } from 'node:path';
import { fsx } from '../storage/file.js';
import type { Image } from '../formats/types.js';
import { locateParent, type ChainFormats } from './chain.js';

const MAX_CANDIDATES = 2000;

export async function findChildren(image: Image, formats: ChainFormats, extensions: readonly string[]): Promise<string[]> {
  const self = await fsx.realpath(image.path);
  const id = image.identity();
  const dir = dirname(resolve(image.path));
  const names = (await fsx.list(dir)).filter((n) => extensions.some((e) => n.toLowerCase().endsWith(`.${e}`))).slice(0, MAX_CANDIDATES);
  const children: string[] = [];
  for (const name of names) {
    const p = join(dir, name);
    // The image's own extent files are no children: they open as bare extents or raw data.
    if (resolve(p) === resolve(image.path) || (await fsx.kind(p)) !== 'file') continue;
    let link;
    let other: Image | undefined;
    try {
      other = await formats.open(p, { readOnly: true, singleLink: true });
      link = other.backing();
    } catch {
      continue; // not a disk we can read: it cannot be a child we would break
    } finally {
      await other?.close().catch(() => {});
    }
    if (!link) continue;
    try {
      const parent = await fsx.realpath(await locateParent(p, link, {}, formats));
      if (parent === self && (link.parentId === undefined || id === undefined || link.parentId.toLowerCase() === id.toLowerCase())) children.push(p);
    } catch {
      continue;
    }
  }
  return children;
}
