/**
 * VHDX chain links and identity: the parent locator (backing, setBacking, the item a child
 * writes), the DataWriteGuid as the identity children record, differencing <-> dynamic, and
 * makeEmpty (what a merge leaves of a committed child).
 */
import { dirname, isAbsolute, relative } from '../../core/names.js';
import { DiskError } from '../../core/errors.js';
import { roundUp } from '../../core/ints.js';
import type { BackingChange, BackingLink } from '../types.js';
import { guidFromIdentity, guidText, normalizeGuidText } from '../../binary/guid.js';
import {
  ALIGN,
  GUIDS,
  IDENTITY_LABEL,
  META_IS_REQUIRED,
  MiB,
  PAYLOAD,
  batEntryCount,
  bitmapIndex,
  decodeParentLocator,
  encodeParentLocator,
} from './structs.js';
import { fileParametersBytes, sectorRuns } from './layout.js';
import type { VhdxState } from './state.js';
import { setItem, removeItem, tableWrite, metadataSectors } from './metadata.js';
import { growBatRegion } from './resize.js';

export function backing(state: VhdxState): BackingLink | undefined {
  if (!state.params.hasParent || !state.locator) return undefined;
  const e = state.locator.entries;
  const rel = e.get('relative_path');
  const hint = rel === undefined ? '' : rel.replace(/\\/g, '/').replace(/^(\.\/)+/, '');
  const hints: string[] = [];
  for (const h of [e.get('absolute_win32_path'), e.get('volume_path')]) if (h && h !== hint && !hints.includes(h)) hints.push(h);
  return { hint, hints, format: 'vhdx', parentId: normalizeGuidText(e.get('parent_linkage')!)! };
}

export function identity(state: VhdxState): string {
  return guidText(state.header.dataWriteGuid, 'le');
}

export async function setIdentity(state: VhdxState, id: string): Promise<void> {
  state.checkWritable();
  state.dataGuidRenewed = true;
  await state.updateHeader({ dataWriteGuid: guidFromIdentity(id, 'le', IDENTITY_LABEL) });
}

/**
 * Point this image at another parent (rewrites the parent locator through the log), make a
 * dynamic image a differencing one, or (undefined) make a differencing image a dynamic one.
 */
export async function setBacking(state: VhdxState, link: BackingChange | undefined): Promise<void> {
  state.checkWritable();
  if (state.params.leaveBlocksAllocated && !state.params.hasParent) {
    throw new DiskError('NOTSUPPORTED', 'a fixed VHDX cannot have a parent (only dynamic and differencing ones can)', { path: state.path, field: 'leaveBlocksAllocated', found: 'fixed' });
  }
  if (!link) return dropParent(state);
  const parentPath = link.parentName ?? state.namespace.resolve(state.path, link.hint);
  const locator = parentLocatorItem(state.namespace.absolute(state.path), parentPath, link.hint, guidFromIdentity(link.parentId, 'le', IDENTITY_LABEL));
  if (!state.params.hasParent) {
    const entries = batEntryCount(state.blocks, state.cr, true);
    if (entries * 8 > state.bat.length) await growBatRegion(state, entries);
  }
  if (!state.params.hasParent) {
    // sector bitmap entries of a dynamic image mean nothing (they were ignored): make them NOT_PRESENT
    for (let k = 0; k < state.bState.length; k++) state.pending.set(bitmapIndex(k, state.cr), 0n);
  }
  await state.commit();
  const writes = setItem(state, GUIDS.PARENT_LOCATOR, locator, META_IS_REQUIRED);
  if (!state.params.hasParent) writes.push(...setItem(state, GUIDS.FILE_PARAMETERS, fileParametersBytes({ ...state.params, hasParent: true })));
  await state.commit(await metadataSectors(state, [...writes, tableWrite(state)]));
  state.params = { ...state.params, hasParent: true };
  state.locator = decodeParentLocator(locator, state.path);
}

/**
 * Differencing -> dynamic. The caller (merge, safe rebase) has copied into this image every
 * sector a parent supplied, so what this image does not hold reads as zeros through the parent
 * too. Partially present blocks become fully present (their clear sectors zeroed in the file
 * first), sector bitmap entries are dropped, then one log transaction clears HasParent and
 * removes the parent locator item.
 */
export async function dropParent(state: VhdxState): Promise<void> {
  if (!state.params.hasParent) return;
  for (let n = 0; n < state.blocks; n++) {
    if (state.pState[n] !== PAYLOAD.PARTIALLY_PRESENT) continue;
    const bm = await state.bitmap(n);
    const base = state.pOff[n]! * MiB;
    const ls = state.params.logicalSectorSize;
    const last = Math.ceil(state.blockLen(n) / ls);
    for (const [a, z, set] of sectorRuns(bm, 0, last)) if (!set) await state.zeroFill(base + a * ls, (z - a) * ls);
    state.setPayload(n, PAYLOAD.FULLY_PRESENT, state.pOff[n]!);
  }
  state.dropBitmaps();
  await state.commit();
  const writes = removeItem(state, GUIDS.PARENT_LOCATOR);
  writes.push(...setItem(state, GUIDS.FILE_PARAMETERS, fileParametersBytes({ ...state.params, hasParent: false })));
  await state.commit(await metadataSectors(state, [...writes, tableWrite(state)]));
  state.params = { ...state.params, hasParent: false };
  state.locator = undefined;
}

/** Drop everything this image stores: every block NOT_PRESENT, the file cut back to its structures. */
export async function makeEmpty(state: VhdxState): Promise<void> {
  state.checkWritable();
  if (state.params.leaveBlocksAllocated && !state.params.hasParent) throw new DiskError('NOTSUPPORTED', 'a fixed VHDX cannot be emptied', { path: state.path, field: 'leaveBlocksAllocated', found: 'fixed' });
  await state.beginDataWrite();
  for (let n = 0; n < state.blocks; n++) if (state.pState[n] !== PAYLOAD.NOT_PRESENT) state.setPayload(n, PAYLOAD.NOT_PRESENT, 0);
  state.dropBitmaps();
  await state.commit();
  await state.emptyLog();
  // nothing references the blocks any more: the file ends after its last structure
  const end = roundUp(Math.max(...state.structures().map((u) => u.end)), ALIGN);
  if (end < state.fileSize) {
    await state.store.truncate(end);
    await state.store.flush();
    state.fileSize = end;
  }
  state.nextFree = roundUp(Math.max(state.fileSize, end), ALIGN);
}

/**
 * The parent locator item a child (`childPath`, absolute) writes for `parentPath`: parent_linkage (the parent's
 * DataWriteGuid, braced), relative_path (relative to the child's folder, `\` separators,
 * ".\name" for a parent beside the child) and absolute_win32_path (the parent's absolute path
 * as the host spells it). volume_path is not written: there is no Windows volume GUID to give.
 */
export function parentLocatorItem(childPath: string, parentPath: string, hint: string, parentLinkage: Buffer): Buffer {
  const rel = hint !== '' && !isAbsolute(hint) ? hint : relative(dirname(childPath), parentPath);
  const win = rel.replace(/\//g, '\\');
  const relative_path = win.startsWith('..\\') || win === '..' || /^[A-Za-z]:\\/.test(win) || win.startsWith('\\') ? win : `.\\${win}`;
  const pairs: [string, string][] = [
    ['parent_linkage', `{${guidText(parentLinkage, 'le')}}`],
    ['relative_path', relative_path],
    ['absolute_win32_path', parentPath],
  ];
  for (const [k, v] of pairs) {
    if (Buffer.byteLength(v, 'utf16le') > 0xffff) throw new DiskError('NAMETOOLONG', 'the parent path is too long for a parent locator entry', { path: childPath, struct: 'parentLocator', field: k, found: v.slice(0, 200) });
  }
  return encodeParentLocator(pairs);
}
