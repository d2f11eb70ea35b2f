/**
 * Internal snapshots (qemu-img snapshot -l / -c / -a / -d) of one image file, through the
 * driver's `maintenance().snapshots` where the format has them (qcow2); every other format is
 * refused with NOTSUPPORTED naming it. The image is opened alone (its backing file, if any, is
 * not touched: a snapshot is of this file's tables), read-only for a list.
 */
import { DiskError } from '../core/errors.js';
import { openLinkIn } from '../disk.js';
import { detectFormatIn, driverByName } from '../formats/registry.js';
import type { Image, InternalSnapshots, SnapshotEntry } from '../formats/types.js';
import { hostFiles } from '../storage/file.js';
import { refuseUnsafe, type Namespace } from '../storage/namespace.js';

export interface SnapshotOptions {
  /** format name; detected when omitted */
  format?: string;
  /** where the image's file is named (default: host files) */
  namespace?: Namespace;
}

async function withSnapshots<T>(path: string, opts: SnapshotOptions, readOnly: boolean, fn: (s: InternalSnapshots, image: Image) => Promise<T>): Promise<T> {
  const ns = opts.namespace ?? hostFiles();
  if (!readOnly) refuseUnsafe(ns, 'snapshot', path);
  const driver = opts.format ? driverByName(opts.format) : await detectFormatIn(ns, path);
  const image = await openLinkIn(ns, path, { format: driver.name, readOnly, cowByCaller: true, preserveIdentity: true });
  try {
    const s = image.maintenance().snapshots;
    if (!s) throw new DiskError('NOTSUPPORTED', `${image.format} images have no internal snapshots (qcow2 has them; for ${image.format} make a child: vdkit child)`, { path, field: 'format', found: image.format });
    return await fn(s, image);
  } finally {
    await image.close();
  }
}

/** The snapshots of `path`, in table order. */
export function listSnapshots(path: string, opts: SnapshotOptions = {}): Promise<SnapshotEntry[]> {
  return withSnapshots(path, opts, true, async (s) => s.list());
}

/** Take a snapshot of the image as it is now, named `name`; returns its record (with the new id). */
export function createSnapshot(path: string, name: string, opts: SnapshotOptions = {}): Promise<SnapshotEntry> {
  return withSnapshots(path, opts, false, (s) => s.create(name));
}

/** Make the image's content the snapshot's again (qemu-img snapshot -a); `nameOrId`: an id first, then a name. */
export function applySnapshot(path: string, nameOrId: string, opts: SnapshotOptions = {}): Promise<void> {
  return withSnapshots(path, opts, false, (s) => s.apply(nameOrId));
}

/** Delete a snapshot (qemu-img snapshot -d); the clusters only it used become free. */
export function deleteSnapshot(path: string, nameOrId: string, opts: SnapshotOptions = {}): Promise<void> {
  return withSnapshots(path, opts, false, (s) => s.delete(nameOrId));
}

/** `qemu-img snapshot -l`'s table (QEMU 7.2 bdrv_snapshot_dump), dates in local time. */
export function formatSnapshotList(list: readonly SnapshotEntry[]): string {
  const pad = (s: string, n: number, left: boolean) => (left ? s.padEnd(n) : s.padStart(n));
  const two = (n: number) => String(n).padStart(2, '0');
  const lines = ['Snapshot list:', `${pad('ID', 10, true)}${pad('TAG', 17, true)}${pad('VM SIZE', 8, false)}${pad('DATE', 20, false)}${pad('VM CLOCK', 13, false)}${pad('ICOUNT', 11, false)}`];
  for (const s of list) {
    const d = s.date;
    const date = `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
    const ms = Math.floor(s.vmClockNsec / 1e6);
    const clock = `${String(Math.floor(ms / 3_600_000)).padStart(2, '0')}:${two(Math.floor(ms / 60_000) % 60)}:${two(Math.floor(ms / 1000) % 60)}.${String(ms % 1000).padStart(3, '0')}`;
    const icount = s.icount === -1 ? '' : String(s.icount);
    lines.push(`${pad(s.id, 9, true)} ${pad(s.name, 16, true)} ${pad(qemuSize(s.vmStateSize), 8, false)}${pad(date, 20, false)}${pad(clock, 13, false)}${pad(icount, 11, false)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** QEMU's size_to_str: "0 B", "1.5 KiB", "512 MiB" (3 significant digits). */
function qemuSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${n} B`;
  return `${Number(v.toPrecision(3))} ${units[i]}`;
}
