/**
 * The state of one open VDI file that the image (data path) and the links, metadata and
 * maintenance functions share, and the header operations all of them need.
 */
import { DiskError } from '../../core/errors.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import { HEADER_V1PLUS_SIZE, PRE_HEADER_SIZE, SECTOR, VdiHeaderV1, VdiHeaderV1Plus, newUuid, type VdiHeaderValue } from './structs.js';
import { TYPE_NAMES, type HeaderKind } from './layout.js';

export interface VdiFile {
  readonly path: string;
  readonly store: ByteStore;
  /** set by open: where this image's file is named */
  namespace: Namespace;
  h: VdiHeaderValue;
  kind: HeaderKind;
  /** the block map: physical index per virtual block, BLOCK_FREE or BLOCK_ZERO */
  readonly map: Uint32Array;
  readonly capacity: number;
  readonly readOnly: boolean;
  /** bytes per physical block: cbBlock + cbBlockExtra */
  readonly stride: number;
  readonly warnings: string[];
  /** uuidModify renewed this session (or identity preserved): VirtualBox's "first modification" */
  modifyRenewed: boolean;
  closed: boolean;
  /** physical index of the next new block (= cBlocksAllocated of a consistent image) */
  nextIndex: number;
}

/** 'fixed', 'dynamic' or 'differencing' */
export function typeOf(file: VdiFile): string {
  return TYPE_NAMES[file.h.type] ?? 'dynamic';
}

export function checkWritable(file: VdiFile): void {
  if (file.readOnly) throw new DiskError('RDONLY', undefined, { path: file.path });
}

/** VirtualBox's "first modification": a new uuidModify, saved before the data changes. */
export async function renewModify(file: VdiFile): Promise<void> {
  file.h.uuidModify = newUuid();
  await writeHeader(file);
  file.modifyRenewed = true;
}

/** The header (not the pre-header) rewritten in place: 0x180 bytes for v1, 0x190 for v1+. */
export async function writeHeader(file: VdiFile): Promise<void> {
  const buf = file.kind === 'v1+' ? VdiHeaderV1Plus.encode(file.h) : VdiHeaderV1.encode(file.h as unknown as Parameters<typeof VdiHeaderV1.encode>[0]);
  await file.store.write(PRE_HEADER_SIZE, buf.subarray(PRE_HEADER_SIZE));
}

/** v1 -> v1+ (as VirtualBox does on a read-write open): room for the LCHS geometry. */
export function upgradeHeader(file: VdiFile): void {
  if (file.h.offBlocks < PRE_HEADER_SIZE + HEADER_V1PLUS_SIZE) {
    throw new DiskError('NOTSUPPORTED', 'no room for a v1+ header (LCHS geometry) before the block map', { path: file.path, struct: 'VdiHeader', field: 'cbHeader', found: file.h.cbHeader });
  }
  file.kind = 'v1+';
  file.h.cbHeader = HEADER_V1PLUS_SIZE;
  file.h.lchsCylinders = 0;
  file.h.lchsHeads = 0;
  file.h.lchsSectors = 0;
  file.h.lchsSectorSize = SECTOR;
}
