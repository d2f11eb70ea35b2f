/**
 * One entry point for every filesystem reader: the first whose signature the source holds
 * opens it. Only ext is here so far; FAT and NTFS join the list beside it.
 */
import { DiskError } from '../../core/errors.js';
import { openExt } from './ext/index.js';
import { looksLikeFat, openFat } from './fat/index.js';
import { EXT_MAGIC, SUPERBLOCK_OFFSET, Superblock } from './ext/structs.js';
import type { Filesystem, FsSource } from './types.js';

export interface OpenFilesystemOptions {
  /** a name for error messages (the image and partition) */
  name?: string;
}

interface FsKind {
  readonly type: string;
  is(source: FsSource): Promise<boolean>;
  open(source: FsSource, opts: OpenFilesystemOptions): Promise<Filesystem>;
}

const KINDS: readonly FsKind[] = [
  {
    type: 'ext',
    async is(source) {
      const at = SUPERBLOCK_OFFSET + Superblock.offsetOf('magic');
      if (source.capacity < SUPERBLOCK_OFFSET + Superblock.size) return false;
      return (await source.read(at, 2)).readUInt16LE(0) === EXT_MAGIC;
    },
    open: (source, opts) => openExt(source, opts),
  },
  { type: 'vfat', is: looksLikeFat, open: (source, opts) => openFat(source, opts) },
];

/** Open whatever filesystem `source` holds, read-only; INVALIDDISK when no reader knows it. */
export async function openFilesystem(source: FsSource, opts: OpenFilesystemOptions = {}): Promise<Filesystem> {
  for (const k of KINDS) if (await k.is(source)) return k.open(source, opts);
  throw new DiskError('INVALIDDISK', `no filesystem vdkit can read (looked for: ${KINDS.map((k) => k.type).join(', ')})`, { path: opts.name });
}
