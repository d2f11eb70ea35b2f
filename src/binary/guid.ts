/**
 * GUID/UUID text and bytes in the two byte orders disk formats store them in:
 * - `le` (Microsoft GUID / VirtualBox RTUUID layout, VHDX and VDI): the first three groups of
 *   the text are little-endian numbers, the last two are bytes in order;
 * - `be` (RFC 4122 network order, VHD): the 16 bytes in text order.
 * Text is printed lower case without braces; parsing accepts braces, any case, and surrounding
 * blanks, and dashes unless a format's tools require them.
 */
import { createHash, randomUUID } from '../core/platform.js';

export type GuidOrder = 'le' | 'be';

export const NULL_GUID: Buffer = Buffer.alloc(16);

const TEXT_DASHES_OPTIONAL = /^\{?([0-9a-fA-F]{8})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{12})\}?$/;
const TEXT_DASHES_REQUIRED = /^\{?([0-9a-fA-F]{8})-([0-9a-fA-F]{4})-([0-9a-fA-F]{4})-([0-9a-fA-F]{4})-([0-9a-fA-F]{12})\}?$/;

/** the stored bytes that differ between the orders: the first three groups, reversed in `le` */
function swapGroups(b: Buffer): Buffer {
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

/** "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" from the 16 stored bytes at `at`. */
export function guidText(b: Buffer, order: GuidOrder, at = 0): string {
  if (at < 0 || b.length < at + 16) throw new RangeError('a GUID is 16 bytes');
  const raw = Buffer.from(b.subarray(at, at + 16));
  const h = (order === 'le' ? swapGroups(raw) : raw).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** The 16 stored bytes for GUID text, or undefined when it is not one. */
export function guidFromText(text: string, order: GuidOrder, opts: { dashes?: 'optional' | 'required' } = {}): Buffer | undefined {
  const m = (opts.dashes === 'required' ? TEXT_DASHES_REQUIRED : TEXT_DASHES_OPTIONAL).exec(text.trim());
  if (!m) return undefined;
  const raw = Buffer.from(m.slice(1, 6).join(''), 'hex');
  return order === 'le' ? swapGroups(raw) : raw;
}

export function isNullGuid(b: Buffer, at = 0): boolean {
  return b.subarray(at, at + 16).equals(NULL_GUID);
}

/** A random (version 4) GUID in stored byte order. */
export function newGuid(order: GuidOrder): Buffer {
  return guidFromText(randomUUID(), order)!;
}

/** GUID text as vdkit prints and compares it (lower case, dashes, no braces), or undefined. */
export function normalizeGuidText(text: string): string | undefined {
  const b = guidFromText(text, 'be');
  return b ? guidText(b, 'be') : undefined;
}

/**
 * The GUID for an identity a chain operation gives (setIdentity, a child's parent id): GUID
 * text is used as it is; any other text (commit makes 8-hex-digit identities for VMDK-style
 * callers) becomes a name-based GUID (SHA-1 of `label` and the lower-cased text, version 5
 * bits), so the base and the child that records it get the same bytes.
 */
export function guidFromIdentity(text: string, order: GuidOrder, label: string): Buffer {
  const direct = guidFromText(text, order);
  if (direct) return direct;
  const h = Buffer.from(createHash('sha1').update(label).update(text.toLowerCase()).digest().subarray(0, 16));
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  return order === 'le' ? swapGroups(h) : h;
}
