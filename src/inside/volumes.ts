/**
 * What a disk holds, read from its bytes: the partition table (GPT, else MBR), the volumes it
 * defines, LVM2 logical volumes on any PV among them, and what each volume holds (detect/).
 * This is `vdkit partitions`, and what a filesystem reader starts from: `volumeSource(disk, v)`
 * gives a volume's bytes as a ByteSource.
 *
 * Damage in a table that leaves it readable is a warning in `warnings`; a table that cannot be
 * read at all (an EBR loop, a GPT with the signature but no good copy) is a DiskError. A volume
 * whose content cannot be probed gets a warning and no `content`.
 */
import { DiskError } from '../core/errors.js';
import { detectVolume, type Detected, type Probe } from './detect/index.js';
import { readMetadataText, readPvLabel } from './lvm/label.js';
import { volumeGroups, type FoundPv } from './lvm/vg.js';
import { readGpt } from './partitions/gpt.js';
import { hasProtectiveEntry, isMbr, readMbr } from './partitions/mbr.js';
import { RangeSource, type ByteRange, type ByteSource } from './source.js';
import { warning, type InsideWarning, type LogicalVolume, type Partition, type PartitionTable, type VolumeGroup } from './types.js';

export interface VolumeEntry {
  /** `1`, `5` for a partition (its number), `vg/lv` for a logical volume, `` for an unpartitioned disk */
  readonly id: string;
  readonly kind: 'disk' | 'partition' | 'lv';
  /** bytes */
  readonly length: number;
  /** where the volume's bytes are on the disk, in order (one range but for striped or split LVs) */
  readonly ranges: readonly ByteRange[];
  readonly partition?: Partition;
  readonly lv?: LogicalVolume;
  /** what the volume holds (filesystem, swap, LUKS, an LVM PV), when a probe knows it */
  readonly content?: Detected;
}

export interface DiskLayout {
  /** bytes */
  readonly capacity: number;
  readonly table?: PartitionTable;
  readonly volumeGroups: readonly VolumeGroup[];
  /** partitions in table order (or the whole disk), then logical volumes */
  readonly volumes: readonly VolumeEntry[];
  readonly warnings: readonly InsideWarning[];
}

export interface ListVolumesOptions {
  /** names the image in errors */
  path?: string;
  /** probe each volume's content (default true) */
  detect?: boolean;
  /** the probes to run (default: detect/index.ts PROBES) */
  probes?: readonly Probe[];
}

/** The partition table of `disk` (GPT, else MBR), or no table; damage that leaves it readable is in `warnings`. */
export async function readPartitionTable(disk: ByteSource, opts: { path?: string } = {}): Promise<{ table?: PartitionTable; warnings: InsideWarning[] }> {
  if (disk.capacity < 512) return { warnings: [] };
  const sector0 = await disk.read(0, 512);
  const mbrKind = hasProtectiveEntry(sector0);
  // a GPT without its protective MBR is still looked for (a wiped sector 0), but an MBR table
  // without an 0xEE entry is taken as it is: libfdisk and the kernel do the same
  if (mbrKind !== 'none' || !isMbr(sector0)) {
    const gpt = await readGpt(disk, { path: opts.path, mbr: mbrKind });
    if (gpt) {
      if (mbrKind === 'none') gpt.warnings.unshift(warning('sector 0 holds no protective MBR', 'MBR', 'entry[0].type'));
      return gpt;
    }
  }
  const mbr = await readMbr(disk, sector0, { path: opts.path });
  if (!mbr) return { warnings: [] };
  if (mbrKind !== 'none') mbr.warnings.unshift(warning('an 0xEE (GPT protective) entry, but no GPT header: read as an MBR table', 'MBR', 'entry.type'));
  return mbr;
}

/** A volume's bytes as a source (what a filesystem reader opens). */
export function volumeSource(disk: ByteSource, volume: { readonly ranges: readonly ByteRange[] }): ByteSource {
  return new RangeSource(disk, volume.ranges);
}

/** ranges cut at the disk end (an entry past the end is warned about, and probed as far as it goes) */
function onDisk(ranges: readonly ByteRange[], capacity: number): ByteRange[] {
  const out: ByteRange[] = [];
  for (const r of ranges) {
    if (r.offset >= capacity) break;
    out.push({ offset: r.offset, length: Math.min(r.length, capacity - r.offset) });
    if (r.offset + r.length > capacity) break;
  }
  return out;
}

/**
 * List what `disk` holds.
 *
 * @example
 * ```ts
 * import { Disk, listVolumes } from 'vdkit';
 * const disk = await Disk.open('vm.qcow2', { readOnly: true });
 * const layout = await listVolumes(disk);
 * for (const v of layout.volumes) console.log(v.id, v.length, v.content?.type, v.content?.label);
 * await disk.close();
 * ```
 */
export async function listVolumes(disk: ByteSource, opts: ListVolumesOptions = {}): Promise<DiskLayout> {
  const { table, warnings } = await readPartitionTable(disk, opts);
  const detect = opts.detect !== false;
  const volumes: VolumeEntry[] = table
    ? table.partitions.map((p) => ({ id: String(p.number), kind: 'partition' as const, length: p.length, ranges: [{ offset: p.offset, length: p.length }], partition: p }))
    : [{ id: '', kind: 'disk', length: disk.capacity, ranges: [{ offset: 0, length: disk.capacity }] }];

  const probe = async (v: VolumeEntry): Promise<VolumeEntry> => {
    if (!detect || v.partition?.kind === 'extended') return v;
    const ranges = onDisk(v.ranges, disk.capacity);
    if (ranges.length === 0) return v;
    try {
      const content = await detectVolume(new RangeSource(disk, ranges), opts.probes);
      return content ? { ...v, content } : v;
    } catch (err) {
      if (!(err instanceof DiskError)) throw err;
      warnings.push(warning(`volume ${v.id || '(whole disk)'}: its content could not be probed: ${err.message}`, err.details.struct, err.details.field));
      return v;
    }
  };

  const probed: VolumeEntry[] = [];
  for (const v of volumes) probed.push(await probe(v));

  // LVM: every PV among the volumes, then the VGs their metadata describe
  const found: FoundPv[] = [];
  for (const v of probed) {
    if (v.content?.type !== 'LVM2_member' && detect) continue;
    if (v.partition?.kind === 'extended') continue;
    const ranges = onDisk(v.ranges, disk.capacity);
    if (ranges.length === 0) continue;
    const src = new RangeSource(disk, ranges);
    const label = await readPvLabel(src, warnings);
    if (!label) continue;
    const text = await readMetadataText(src, label, warnings);
    found.push({ label, diskOffset: ranges[0]!.offset, length: src.capacity, text });
  }
  const vgs = found.length > 0 ? volumeGroups(found, warnings) : [];
  for (const vg of vgs) {
    for (const lv of vg.lvs) probed.push(await probe({ id: `${vg.name}/${lv.name}`, kind: 'lv', length: lv.length, ranges: lv.ranges, lv }));
  }
  return { capacity: disk.capacity, table, volumeGroups: vgs, volumes: probed, warnings };
}
