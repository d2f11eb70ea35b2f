/**
 * mkimg: a partitioned disk image built straight into any format from its partitions' contents
 * (FreeBSD mkimg's model): the contents are opened, the partitions placed and the tables
 * encoded (layout.ts), and the whole disk, seen as one read-only image (parts-image.ts), is
 * copied by `convert` into the target: one pass, holes left unallocated, no temporary raw file,
 * streamOptimized VMDK and raw to a pipe included.
 */
import { DiskError } from '../../core/errors.js';
import { Disk } from '../../disk.js';
import { driverByName } from '../../formats/registry.js';
import { hostFiles } from '../../storage/file.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteSink } from '../../storage/sink.js';
import { convert, type Progress } from '../convert.js';
import { openContents, type OpenedContents, type PartitionContents } from './contents.js';
import { planLayout, type LayoutEntry, type Scheme } from './layout.js';
import { PartsImage, type Piece } from './parts-image.js';

export type { PartitionContents } from './contents.js';
export type { Scheme } from './layout.js';

export interface MkimgPartition {
  /** an alias (linux-data, efi, freebsd-ufs, ms-basic-data, ...), an MBR id (`0x83`) or a GPT type GUID */
  type: string;
  /** GPT partition name (mkimg's TYPE/LABEL) */
  label?: string;
  /** GPT unique partition GUID (default: a random one) */
  uuid?: string;
  contents: PartitionContents;
}

export interface MkimgOptions {
  scheme: Scheme;
  /** in table order; 'skip' (mkimg -p-) leaves that entry empty */
  partitions: readonly (MkimgPartition | 'skip')[];
  /** boot code for sector 0 (its first 446 bytes; GPT: the protective MBR's), or a file holding it */
  bootcode?: Buffer | { file: string };
  /** 1-based index into `partitions` of the active (MBR) / legacy-BIOS-bootable (GPT) partition */
  active?: number;
  /** logical sector size, 512 (default) or 4096 */
  sectorSize?: number;
  /** physical sector size: partition sizes round up to it, starts align to it */
  physicalSectorSize?: number;
  /** geometry for the MBR's CHS fields (default 255 heads, 63 sectors per track) */
  heads?: number;
  sectorsPerTrack?: number;
  /** the disk is at least this many bytes (mkimg -c) */
  capacity?: number;
  /** and at most this many: a layout that needs more is an error naming the partition (mkimg -C) */
  maxCapacity?: number;
  /** partition starts are multiples of this many bytes (default 1 MiB) */
  align?: number;
  /** MBR disk signature (8 hex digits) or GPT disk GUID (default: the boot code's / a random GUID) */
  diskId?: string;
  /** target format: raw (default), vmdk, vhd, vhdf (fixed VHD), vhdx, vdi, qcow2 */
  format?: string;
  /** the format's create type (VMDK createType such as streamOptimized, VHD fixed/dynamic, ...) */
  createType?: string;
  /** where the image goes; with `sink`, only the name a stream records */
  output: string;
  /** raw or streamOptimized VMDK appended to this (stdout) instead of a file */
  sink?: ByteSink;
  overwrite?: boolean;
  /** where names (output, contents, bootcode) are looked up (default: host files) */
  namespace?: Namespace;
  /** the most non-zero bytes held from a command's or stream's output (default 1 GiB) */
  streamLimit?: number;
  /** VMDK adapter type and hardware version */
  adapterType?: string;
  hwVersion?: number | string;
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

export interface MkimgResult {
  capacity: number;
  sectorSize: number;
  /** MBR disk signature (8 hex digits) or GPT disk GUID */
  diskId: string;
  partitions: { number: number; index: number; type: number | string; label?: string; offset: number; length: number }[];
  bytesWritten: number;
}

/** mkimg's -f names beside vdkit's: vhdf is a fixed VHD */
export function mkimgFormat(format: string, createType?: string): { format: string; type?: string } {
  const f = format.toLowerCase();
  if (f === 'vhdf') {
    if (createType !== undefined && createType !== 'fixed') throw new DiskError('INVAL', 'vhdf is a fixed VHD: give no other type', { field: 'createType', found: createType });
    return { format: 'vhd', type: 'fixed' };
  }
  driverByName(f);
  return { format: f, type: createType };
}

async function readBootcode(b: MkimgOptions['bootcode'], ns: Namespace): Promise<Buffer | undefined> {
  if (b === undefined || Buffer.isBuffer(b)) return b;
  const st = await ns.open(b.file);
  try {
    const size = await st.size();
    // more than a 4 KiB sector is never boot code for sector 0: say so before reading it
    if (size > 4096) throw new DiskError('INVAL', `the boot code is ${size} bytes; it goes in the first sector (446 bytes of it are used)`, { path: b.file, field: 'bootcode', found: size, expected: '<= 4096' });
    return await st.read(0, size);
  } finally {
    await st.close();
  }
}

export async function mkimg(opts: MkimgOptions): Promise<MkimgResult> {
  const { format, type } = mkimgFormat(opts.format ?? 'raw', opts.createType);
  const ns = opts.namespace ?? hostFiles();
  const opened: (OpenedContents | undefined)[] = [];
  try {
    const entries: (LayoutEntry | undefined)[] = [];
    for (const [i, p] of opts.partitions.entries()) {
      if (p === 'skip') {
        opened.push(undefined);
        entries.push(undefined);
        continue;
      }
      const c = await openContents(p.contents, { namespace: opts.namespace, signal: opts.signal, streamLimit: opts.streamLimit, field: `partitions[${i}].contents` });
      opened.push(c);
      entries.push({ type: p.type, label: p.label, uuid: p.uuid, length: c.length });
    }
    const layout = planLayout({
      scheme: opts.scheme,
      entries,
      sectorSize: opts.sectorSize,
      physicalSectorSize: opts.physicalSectorSize,
      align: opts.align,
      capacity: opts.capacity,
      maxCapacity: opts.maxCapacity,
      active: opts.active,
      bootcode: await readBootcode(opts.bootcode, ns),
      heads: opts.heads,
      sectorsPerTrack: opts.sectorsPerTrack,
      diskId: opts.diskId,
      path: opts.output,
    });
    const pieces: Piece[] = layout.tables.map((t) => ({ offset: t.offset, length: t.data.length, bytes: t.data }));
    for (const p of layout.partitions) {
      const piece = opened[p.index]?.piece(p.offset);
      if (piece) pieces.push(piece);
    }
    const image = new PartsImage(opts.output, layout.capacity, pieces);
    const r = await convert(Disk.from(image), opts.output, {
      format,
      type,
      sink: opts.sink,
      overwrite: opts.overwrite,
      namespace: opts.namespace,
      adapterType: opts.adapterType,
      hwVersion: opts.hwVersion,
      signal: opts.signal,
      onProgress: opts.onProgress,
    });
    return {
      capacity: layout.capacity,
      sectorSize: layout.sectorSize,
      diskId: layout.diskId,
      partitions: layout.partitions.map((p) => ({ ...p })),
      bytesWritten: r.bytesWritten,
    };
  } finally {
    for (const c of opened) await c?.disk?.close().catch(() => {});
  }
}
