/**
 * Chain links of a VDI: the parent's UUIDs it records (never a path), its own creation UUID as
 * identity, and the changes rebase, commit and the chain layer make (NOTES.md "Differencing").
 */
import { DiskError } from '../../core/errors.js';
import type { BackingChange, BackingLink, LinkRecord } from '../types.js';
import { BLOCK_FREE, NULL_UUID, TYPE_DIFF, TYPE_FIXED, TYPE_NORMAL, TYPE_UNDO, isNullUuid, uuidFromText, uuidToText } from './structs.js';
import { parseUuid } from './layout.js';
import type { VdiMap } from './map.js';
import { checkWritable, renewModify, writeHeader, type VdiFile } from './state.js';

export function backing(file: VdiFile): BackingLink | undefined {
  if (file.h.type !== TYPE_DIFF) return undefined;
  if (isNullUuid(file.h.uuidLinkage)) {
    throw new DiskError('OPENPARENT', 'differencing image without a parent UUID', { path: file.path, struct: 'VdiHeader', field: 'uuidLinkage', found: uuidToText(NULL_UUID) });
  }
  return { hint: '', format: 'vdi', parentId: uuidToText(file.h.uuidLinkage), searchByIdentity: true };
}

export function identity(file: VdiFile): string {
  return uuidToText(file.h.uuidCreate);
}

export async function setIdentity(file: VdiFile, id: string): Promise<void> {
  checkWritable(file);
  file.h.uuidCreate = parseUuid(id, file.path, 'uuidCreate');
  await writeHeader(file);
}

/**
 * Link this image to another parent (rebase, commit, merge) or make it a base. A link sets
 * uuidLinkage to the parent's creation UUID and uuidParentModify to the parent's modification
 * UUID as the chain layer read it from the parent (`link.parent.record`); a normal or
 * undo image becomes a differencing image. No link: type 1 (normal dynamic) with null
 * link and parent-modify UUIDs, the only base form VirtualBox and QEMU both accept.
 */
export async function setBacking(file: VdiFile, link: BackingChange | undefined): Promise<void> {
  checkWritable(file);
  if (link === undefined) {
    if (file.h.type === TYPE_DIFF || file.h.type === TYPE_UNDO) file.h.type = TYPE_NORMAL;
    file.h.uuidLinkage = Buffer.from(NULL_UUID);
    file.h.uuidParentModify = Buffer.from(NULL_UUID);
    await writeHeader(file);
    return;
  }
  if (file.h.type === TYPE_FIXED) {
    throw new DiskError('NOTSUPPORTED', 'a fixed VDI image cannot become a differencing image', { path: file.path, struct: 'VdiHeader', field: 'type', found: 'fixed' });
  }
  const linkage = parseUuid(link.parentId, file.path, 'uuidLinkage');
  let parentModify: Buffer | undefined;
  const record = link.parent?.format === 'vdi' ? link.parent.record : undefined;
  if (record && typeof record.uuidCreate === 'string' && typeof record.uuidModify === 'string') {
    const create = uuidFromText(record.uuidCreate);
    const modify = uuidFromText(record.uuidModify);
    if (create && modify && create.equals(linkage)) parentModify = modify;
  }
  // the parent could not be read: keep what we had for the same parent, else record none
  parentModify ??= linkage.equals(file.h.uuidLinkage) ? file.h.uuidParentModify : Buffer.from(NULL_UUID);
  file.h.type = TYPE_DIFF;
  file.h.uuidLinkage = linkage;
  file.h.uuidParentModify = parentModify;
  await writeHeader(file);
}

/**
 * What a child records about this image (VDCreateDiff): creation and modification UUIDs, and
 * the disk size, block size and LCHS geometry a child copies.
 */
export function linkRecord(file: VdiFile): LinkRecord {
  const h = file.h;
  return {
    uuidCreate: uuidToText(h.uuidCreate),
    uuidModify: uuidToText(h.uuidModify),
    cbDisk: h.cbDisk.toString(),
    cbBlock: h.cbBlock,
    ...(file.kind === 'v1+' ? { lchsCylinders: h.lchsCylinders, lchsHeads: h.lchsHeads, lchsSectors: h.lchsSectors } : {}),
  };
}

/** Every entry FREE, cBlocksAllocated 0, the file cut back to the data offset (map first, then header, then truncate). */
export async function makeEmpty(file: VdiFile, alloc: VdiMap): Promise<void> {
  checkWritable(file);
  if (file.h.type === TYPE_FIXED) throw new DiskError('NOTSUPPORTED', 'a fixed VDI image cannot be emptied', { path: file.path, struct: 'VdiHeader', field: 'type', found: 'fixed' });
  if (!file.modifyRenewed) await renewModify(file);
  file.map.fill(BLOCK_FREE);
  const chunkEntries = 256 * 1024;
  for (let i = 0; i < file.map.length; i += chunkEntries) await alloc.writeMapSpan(i, Math.min(file.map.length, i + chunkEntries));
  file.h.cBlocksAllocated = 0;
  file.nextIndex = 0;
  await writeHeader(file);
  await file.store.flush();
  await file.store.truncate(file.h.offData);
}
