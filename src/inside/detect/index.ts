/**
 * Volume detection like blkid's: the probes run in a fixed order and the first that recognises
 * the bytes answers. Signatures at sector 0 that a later format would overwrite go first (LUKS,
 * the LVM label, XFS), then the superblocks at fixed offsets, then the boot-sector families
 * (NTFS and exFAT before FAT, whose test is the loosest), then ISO 9660 and swap, whose
 * signatures sit where other filesystems keep data.
 *
 * A filesystem reader plugs in beside its probe: it opens the same `ByteSource` (a volume from
 * `volumeSource`) the probe looked at.
 */
import type { ByteSource } from '../source.js';
import { fat, exfat, ntfs } from './dos.js';
import { iso9660 } from './iso9660.js';
import { btrfs, ext, luks, lvm, swap, xfs } from './linux.js';
import type { Detected, Probe } from './types.js';

export type { Detected, Probe } from './types.js';

export const PROBES: readonly Probe[] = [luks, lvm, xfs, ext, btrfs, ntfs, exfat, fat, iso9660, swap];

/** What the start of `src` holds, or undefined when no probe recognises it. */
export async function detectVolume(src: ByteSource, probes: readonly Probe[] = PROBES): Promise<Detected | undefined> {
  for (const p of probes) {
    const d = await p.probe(src);
    if (d) return d;
  }
  return undefined;
}
