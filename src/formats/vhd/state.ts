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

export async function saveHeader(file: VhdFile, next: DynamicHeaderValue): Promise<void> {
  const bytes = encodeHeader(next);
  await file.store.write(file.dyn!.headerOffset, bytes);
  file.header = { ...next, checksum: bytes.readUInt32BE(HEADER_CHECKSUM_AT) };
}
