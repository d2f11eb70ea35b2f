/**
 * The one adapter from vdkit's Disk (src/disk.ts) to the server's ExportBackend. Kept thin and
 * alone in this file: the Image/Disk contract is being redesigned (storage namespaces), and only
 * this file should have to follow.
 */
import { DiskError } from '../../core/errors.js';
import { Disk, type DiskOpenOptions } from '../../disk.js';
import { MAX_PAYLOAD } from '../protocol/constants.js';
import type { ExportBackend } from './backend.js';

export interface DiskBackendOptions {
  readOnly?: boolean;
  /** serve only the named link (unallocated ranges read as zeros) instead of the whole chain */
  singleLink?: boolean;
  format?: string;
  /** refuse parent hints that leave the image's folder (used for --dir exports) */
  untrusted?: boolean;
  /** persistent dirty bitmaps of the top image to offer (qemu-nbd -B); each must exist and be usable */
  bitmaps?: readonly string[];
}

/** open `path` as an export; discard is used where the image can do it */
export async function openDiskBackend(path: string, opts: DiskBackendOptions = {}): Promise<ExportBackend> {
  const base: DiskOpenOptions = { readOnly: !!opts.readOnly, singleLink: opts.singleLink, format: opts.format, untrusted: opts.untrusted };
  let disk: Disk;
  let canDiscard = false;
  if (opts.readOnly) {
    disk = await Disk.open(path, base);
  } else {
    try {
      disk = await Disk.open(path, { ...base, discard: true });
      canDiscard = true;
    } catch (err) {
      // formats and chains that cannot discard are refused by that flag alone; open them without it
      if (!(err instanceof DiskError && err.code === 'NOTSUPPORTED')) throw err;
      disk = await Disk.open(path, base);
    }
  }
  const numLinks = (await disk.info().catch(() => ({ numLinks: 1 }))).numLinks;
  const backend = diskBackend(disk, { canDiscard, chainLength: numLinks });
  if (opts.bitmaps && opts.bitmaps.length > 0) {
    try {
      const ops = disk.links[0]!.maintenance().bitmaps;
      if (!ops) throw new DiskError('NOTSUPPORTED', `${disk.format} images have no persistent bitmaps (qcow2 has them)`, { path, field: 'format', found: disk.format });
      // every bitmap named must be there and usable now: a bad one fails serve, not a client
      for (const name of opts.bitmaps) await ops.dirty(name);
      // a read-only export's bitmaps cannot change: their ranges are computed once
      const cache = new Map<string, { offset: number; length: number }[]>();
      backend.bitmapStatus = async (name, offset, length) => {
        if (!opts.bitmaps!.includes(name)) throw new DiskError('INVAL', `bitmap '${name}' is not offered by this export`, { path, field: 'bitmap', found: name });
        let all = disk.readOnly ? cache.get(name) : undefined;
        if (!all) {
          all = await ops.dirty(name);
          if (disk.readOnly) cache.set(name, all);
        }
        return all.filter((r) => r.offset < offset + length && r.offset + r.length > offset);
      };
    } catch (err) {
      await disk.close().catch(() => {});
      throw err;
    }
  }
  return backend;
}

/** wrap an open Disk; `canDiscard` only if it was opened with the discard flag */
export function diskBackend(disk: Disk, opts: { canDiscard?: boolean; chainLength?: number } = {}): ExportBackend {
  const cluster = disk.image.clusterSize;
  // preferred must be a power of two within [512, max payload]; the format's cluster when it is one
  let preferred = 4096;
  while (preferred < cluster && preferred < 2 * 1024 * 1024) preferred *= 2;
  const backend: ExportBackend = {
    size: disk.capacity,
    readOnly: disk.readOnly,
    blockSizes: { minimum: 1, preferred, maximum: MAX_PAYLOAD },
    chainLength: opts.chainLength ?? 1,
    read: (offset, length) => disk.read(offset, length),
    readInto: (into, offset) => disk.readInto(into, offset),
    async write(offset, data, { fua }) {
      await disk.write(offset, data);
      if (fua) await disk.flush();
    },
    flush: () => disk.flush(),
    blockStatus: (offset, length) => disk.blockStatus(offset, length),
    close: () => disk.close(),
  };
  if (opts.canDiscard) backend.discard = (offset, length) => disk.discard(offset, length);
  return backend;
}
