/**
 * Finding the children of a disk. Formats record only child -> parent, so the children of a
 * disk are found by looking at the disks in its folder (where VMware, QEMU and vdkit put them)
 * and asking each for its parent link.
 */
import { dirname, join } from '../core/names.js';
import type { Image } from '../formats/types.js';
import { locateParent, type ChainFormats } from './chain.js';

const MAX_CANDIDATES = 2000;

export async function findChildren(image: Image, formats: ChainFormats, extensions: readonly string[]): Promise<string[]> {
  const ns = image.namespace;
  const self = await ns.realName(image.path);
  const id = image.identity();
  const dir = dirname(ns.absolute(image.path));
  const names = (await ns.list(dir)).filter((n) => extensions.some((e) => n.toLowerCase().endsWith(`.${e}`))).slice(0, MAX_CANDIDATES);
  const children: string[] = [];
  for (const name of names) {
    const p = join(dir, name);
    // The image's own extent files are no children: they open as bare extents or raw data.
    if (p === ns.absolute(image.path) || (await ns.kind(p)) !== 'file') continue;
    let link;
    let other: Image | undefined;
    try {
      other = await formats.open(ns, p, { readOnly: true });
      link = other.backing();
    } catch {
      continue; // not a disk we can read: it cannot be a child we would break
    } finally {
      await other?.close().catch(() => {});
    }
    if (!link) continue;
    try {
      const parent = await ns.realName(await locateParent(ns, p, link, {}, formats));
      if (parent === self && (link.parentId === undefined || id === undefined || link.parentId.toLowerCase() === id.toLowerCase())) children.push(p);
    } catch {
      continue;
    }
  }
  return children;
}
