/**
 * VDI facts that the image, the checker, create and the maintenance code share: capabilities,
 * limits, header kinds, type names and UUID parsing. Pure, no I/O: importing it creates no
 * cycle (check.ts and create.ts used to reach these through image.ts).
 */
import { DiskError } from '../../core/errors.js';
import type { Capabilities } from '../types.js';
import { DYNAMIC_FIXED_CAPABILITIES } from '../common/driver.js';
import { DEFAULT_BLOCK_SIZE, SECTOR, TYPE_DIFF, TYPE_FIXED, TYPE_NORMAL, TYPE_UNDO, isNullUuid, uuidFromText } from './structs.js';

export const VDI_CAPABILITIES: Capabilities = Object.freeze({
  ...DYNAMIC_FIXED_CAPABILITIES,
  zero: 'native',
});


/** block sizes we accept: a sector up to 32 MiB (per-block buffers are sized by this field) */
export const MIN_BLOCK_SIZE = SECTOR;
export const MAX_BLOCK_SIZE = 32 * 1024 * 1024;
/** QEMU's cap on blocks_in_image (a 2 GiB map); we refuse more too */
export const MAX_BLOCKS = 0x1fffff80;
/** VirtualBox's largest disk: 4 PiB - 3 MiB */
export const MAX_DISK_BYTES = 4 * 2 ** 50 - 3 * 2 ** 20;

export type HeaderKind = 'v0' | 'v1' | 'v1+';

export const TYPE_NAMES: Record<number, string> = { [TYPE_NORMAL]: 'dynamic', [TYPE_FIXED]: 'fixed', [TYPE_UNDO]: 'dynamic', [TYPE_DIFF]: 'differencing' };

/** UUID text given by a caller, as stored bytes; INVAL when it is not one or is null. */
export function parseUuid(text: string, path: string, field: string): Buffer {
  const u = uuidFromText(text);
  if (!u) throw new DiskError('INVAL', 'not a UUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)', { path, field, found: text });
  if (isNullUuid(u)) throw new DiskError('INVAL', 'the null UUID is not allowed here', { path, field, found: text });
  return u;
}

export function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}

/** the largest disk we create: QEMU's limit (0x1FFFFF80 blocks of 1 MiB), so qemu-img opens every image we make */
export const MAX_CREATE_BYTES = MAX_BLOCKS * DEFAULT_BLOCK_SIZE;

/** create type names and numbers (VBoxManage, qemu-img, VDI type numbers) */
export const TYPE_ALIASES: Record<string, number> = {
  dynamic: TYPE_NORMAL,
  normal: TYPE_NORMAL,
  standard: TYPE_NORMAL,
  '1': TYPE_NORMAL,
  fixed: TYPE_FIXED,
  static: TYPE_FIXED,
  '2': TYPE_FIXED,
  differencing: TYPE_DIFF,
  diff: TYPE_DIFF,
  '4': TYPE_DIFF,
};
