/**
 * Metadata keys (all read-only: they follow from the image structure) and `info`.
 */
import { DiskError } from '../../core/errors.js';
import type { DiskInfo, ImageData } from '../types.js';
import { oneFileInfo } from '../common/info.js';
import { flagNames } from './bitmaps.js';
import type { Qcow2State } from './state.js';
import { COMPRESSION_NAMES, decodeL1, INCOMPAT } from './structs.js';

export function metadataKeys(this: Qcow2State): string[] {
  const keys = ['compat', 'clusterSize', 'refcountBits', 'lazyRefcounts', 'extendedL2', 'compressionType', 'dirty', 'corrupt', 'snapshots', 'bitmaps'];
  if (this.backingName !== undefined) keys.push('backingFile', 'backingFormat');
  if (this.dataFile) keys.push('dataFile', 'dataFileRaw');
  return keys;
}

export function readMetadata(this: Qcow2State, key: string): string | undefined {
  const bool = (b: boolean) => (b ? 'true' : 'false');
  switch (key) {
    case 'compat':
      return this.h.version === 2 ? '0.10' : '1.1';
    case 'clusterSize':
      return String(this.clusterSize);
    case 'refcountBits':
      return String(1 << this.h.refcount_order);
    case 'lazyRefcounts':
      return bool((this.h.compatible_features & 1n) !== 0n);
    case 'extendedL2':
      return bool(this.hasIncompat(INCOMPAT.EXTL2));
    case 'compressionType':
      return COMPRESSION_NAMES[this.h.compression_type] ?? String(this.h.compression_type);
    case 'dirty':
      return bool(this.hasIncompat(INCOMPAT.DIRTY));
    case 'corrupt':
      return bool(this.hasIncompat(INCOMPAT.CORRUPT));
    case 'snapshots':
      return JSON.stringify(this.snapshots.map((s) => ({ id: s.id, name: s.name, date: new Date(s.date * 1000).toISOString(), vmStateSize: s.vmStateSize, diskSize: s.diskSize, l1Size: s.l1Size })));
    case 'bitmaps': {
      // persistent dirty bitmaps: their count (the extension's nb_bitmaps), 0 when the
      // autoclear bit says the extension is stale (a writer that did not keep them)
      return String(this.bitmaps?.list.length ?? 0);
    }
    case 'dataFile':
      return this.dataFile?.name;
    case 'dataFileRaw':
      return this.dataFile ? bool(this.dataFile.raw) : undefined;
    case 'backingFile':
      return this.backingName;
    case 'backingFormat':
      return this.backingFormat();
    default:
      return undefined;
  }
}

export async function writeMetadata(this: Qcow2State, key: string, value: string): Promise<void> {
  this.checkWritable();
  throw new DiskError('NOTSUPPORTED', 'qcow2 metadata is read-only (it follows from the image structure; the backing file changes with rebase)', {
    path: this.path,
    struct: 'header',
    field: key,
    found: value,
    expected: 'none writable',
  });
}

/**
 * Bytes this image stores, counted per L2 table and remembered per table offset: the cost is
 * bounded by the L1 size and the file size even when a crafted L1 table names one L2 table
 * millions of times (the CPU-exhaustion class of CVE-2015-5162).
 */
async function dataBytes(this: Qcow2State): Promise<number> {
  const memo = new Map<number, number>();
  let total = 0;
  for (let i = 0; i < this.h.l1_size && i * this.span < this.capacity; i++) {
    const e = decodeL1(this.l1, i);
    if (e.offset === 0) continue;
    const start = i * this.span;
    const full = start + this.span <= this.capacity;
    const known = full ? memo.get(e.offset) : undefined;
    if (known !== undefined) {
      total += known;
      continue;
    }
    let n = 0;
    for (const s of await this.segments(start, Math.min(this.span, this.capacity - start))) if (s.state === 'data') n += s.length;
    if (full) memo.set(e.offset, n);
    total += n;
  }
  return total;
}

export async function info(this: Qcow2State & ImageData): Promise<DiskInfo> {
  const out = await oneFileInfo(this, {
    links: { parent: this.backingName, version: this.h.version },
    extentType: 'QCOW2',
    allocatedBytes: await dataBytes.call(this),
    fileSize: this.file.size,
    warnings: this.warnings,
    qemuFacts: { clusterSize: this.clusterSize, dirty: this.hasIncompat(INCOMPAT.DIRTY), parentFormat: this.backingName === undefined ? undefined : this.backingFormat(), specific: specific.call(this) },
  });
  // the guest data's file is one of the image's files (copies, renames and removals take it too)
  if (this.dataFile) out.files.push(this.dataFile.path);
  return out;
}

/** what qemu-img shows as the format-specific data of a qcow2 image, from the header */
function specific(this: Qcow2State): Record<string, unknown> {
  const h = this.h;
  const compression = this.hasIncompat(INCOMPAT.COMPRESSION) && h.compression_type === 1 ? 'zstd' : 'zlib';
  if (h.version < 3) return { compat: '0.10', 'compression-type': compression, 'refcount-bits': 16 };
  return {
    compat: '1.1',
    'compression-type': compression,
    'lazy-refcounts': (h.compatible_features & 1n) !== 0n,
    // as qemu-img: present when there are bitmaps, in directory order, flags as stored
    ...(this.bitmaps ? { bitmaps: this.bitmaps.list.map((b) => ({ flags: flagNames(b.flags), name: b.name, granularity: 2 ** b.granularityBits })) } : {}),
    'refcount-bits': 2 ** h.refcount_order,
    // as qemu-img: the name as the image stores it
    ...(this.dataFile ? { 'data-file': this.dataFile.name, 'data-file-raw': this.dataFile.raw } : {}),
    corrupt: this.hasIncompat(INCOMPAT.CORRUPT),
    'extended-l2': this.hasIncompat(INCOMPAT.EXTL2),
  };
}
