/**
 * The state of one open VHD file that the image (data path) and the links, metadata and
 * maintenance functions share, and the few operations on it that all of them need: the
 * writable check and the footer / header writes. The allocation map (BAT, bitmap cache,
 * entries waiting for a flush) is map.ts.
 */
import { DiskError } from '../../core/errors.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import { DISK_TYPE_NAMES, FOOTER_CHECKSUM_AT, FOOTER_SIZE, HEADER_CHECKSUM_AT, encodeFooter, encodeHeader, type DynamicHeaderValue, type FooterValue } from './structs.js';
import type { DynamicState, Locator } from './layout.js';

const SECTOR = 512;

export interface VhdFile {
  readonly path: string;
  readonly store: ByteStore;
  /** set by open: where this image's file is named */
  namespace: Namespace;
  footer: FooterValue;
  footerBytes: Buffer;
  readonly capacity: number;
  fileSize: number;
  header: DynamicHeaderValue | undefined;
  /** undefined for a fixed image */
  readonly dyn: DynamicState | undefined;
  locators: Locator[];
  readonly readOnly: boolean;
  /** damage tolerated by a read-only recovery open (ignoreChecksums) */
  readonly warnings: string[];
  closed: boolean;
}

/** 'fixed', 'dynamic' or 'differencing' */
export function typeOf(file: VhdFile): string {
  return DISK_TYPE_NAMES[file.footer.diskType]!;
}

export function checkWritable(file: VhdFile): void {
  if (file.readOnly) throw new DiskError('RDONLY', undefined, { path: file.path });
  if (file.closed) throw new DiskError('CLOSED', undefined, { path: file.path });
}

/** The footer at the end first (it is authoritative), then its copy at offset 0. */
export async function saveFooter(file: VhdFile, next: FooterValue): Promise<void> {
  const bytes = encodeFooter(next);
  await file.store.write(file.fileSize - FOOTER_SIZE, bytes);
  if (file.dyn) await file.store.write(0, bytes);
  file.footer = { ...next, checksum: bytes.readUInt32BE(FOOTER_CHECKSUM_AT) };
  file.footerBytes = bytes;
}

/**
 * Only the 512-byte sectors of the header that change are written: a new parent id and time
 * (commit, rename, a parent's new identity) lie in the first sector with the checksum, and a
 * one-sector write cannot be torn by a power cut, while a torn 1,024-byte write leaves a header
 * whose checksum fails and a child that does not open (found by the crash explorer, test/crash/).
 * A new parent name also changes the second sector: that window the format cannot close (one
 * header, no copy); check -r recomputes the checksum of a header whose fields are valid.
 * The changed sectors go in one write, so a killed process leaves the old header or the new.
 */
export async function saveHeader(file: VhdFile, next: DynamicHeaderValue): Promise<void> {
  const bytes = encodeHeader(next);
  // no header in memory yet (a header being made): every sector is written
  const old = file.header ? encodeHeader(file.header) : Buffer.alloc(0);
  // one write from the first changed sector to the last: a killed process leaves all of it or none
  let first = -1;
  let last = -1;
  for (let at = 0; at < bytes.length; at += SECTOR) {
    if (bytes.subarray(at, at + SECTOR).equals(old.subarray(at, at + SECTOR))) continue;
    if (first < 0) first = at;
    last = at + SECTOR;
  }
  if (first >= 0) await file.store.write(file.dyn!.headerOffset + first, bytes.subarray(first, last));
  file.header = { ...next, checksum: bytes.readUInt32BE(HEADER_CHECKSUM_AT) };
}
