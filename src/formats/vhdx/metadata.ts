/**
 * VHDX metadata region and keys: placing items in the region (setItem, removeItem, the table,
 * the 4 KiB sectors a change touches, for a log commit), and the metadata keys an image
 * exposes (readMetadata, writeMetadata: only the Virtual Disk ID is writable).
 */
import { DiskError, atMost } from '../../core/errors.js';
import { roundUp } from '../../core/ints.js';
import { guidFromText, guidText } from '../../binary/guid.js';
import {
  GUIDS,
  ITEM_NAMES,
  LOG_SECTOR,
  METADATA_SIGNATURE,
  METADATA_TABLE_SIZE,
  MetadataTableEntry,
  MetadataTableHeader,
} from './structs.js';
import type { MetaItem } from './layout.js';
import type { VhdxState } from './state.js';

/** place `data` as metadata item `id` (in its place when it fits, else after the last item); returns the writes */
export function setItem(state: VhdxState, id: string, data: Buffer, flags?: number): { at: number; data: Buffer }[] {
  const old = state.items.find((x) => x.id === id);
  let offset: number;
  if (old && data.length <= old.length) offset = old.offset;
  else {
    let end = METADATA_TABLE_SIZE;
    for (const x of state.items) if (x.id !== id && x.length > 0) end = Math.max(end, x.offset + x.length);
    offset = roundUp(end, 8);
    if (offset + data.length > state.meta.length) {
      throw new DiskError('NOTSUPPORTED', 'the metadata region has no room for this item', { path: state.path, struct: 'metadataTable', field: ITEM_NAMES[id] ?? id, expected: atMost(state.meta.length - offset, ' bytes'), found: data.length });
    }
  }
  const entry: MetaItem = { id, offset, length: data.length, flags: flags ?? old?.flags ?? 0 };
  state.items = old ? state.items.map((x) => (x === old ? entry : x)) : [...state.items, entry];
  return [{ at: offset, data }];
}

export function removeItem(state: VhdxState, id: string): { at: number; data: Buffer }[] {
  state.items = state.items.filter((x) => x.id !== id);
  return [];
}

/** the metadata table as the in-memory item list says (zero-padded over a longer old table) */
export function tableWrite(state: VhdxState): { at: number; data: Buffer } {
  const buf = Buffer.alloc(32 + Math.max(state.items.length + 1, 8) * 32);
  MetadataTableHeader.encode({ signature: METADATA_SIGNATURE, entryCount: state.items.length }, buf, 0);
  state.items.forEach((x, i) => MetadataTableEntry.encode({ itemId: guidFromText(x.id, 'le')!, offset: x.offset, length: x.length, flags: x.flags }, buf, 32 + i * 32));
  return { at: 0, data: buf };
}

/** the 4 KiB sectors of the metadata region the writes change, with their new content */
export async function metadataSectors(state: VhdxState, writes: readonly { at: number; data: Buffer }[]): Promise<Map<number, Buffer>> {
  const sectors = new Map<number, Buffer>();
  for (const w of writes) {
    for (let s = Math.floor(w.at / LOG_SECTOR); s * LOG_SECTOR < w.at + w.data.length; s++) {
      const fileOffset = state.meta.offset + s * LOG_SECTOR;
      let sector = sectors.get(fileOffset);
      if (!sector) {
        sector = await state.store.read(fileOffset, LOG_SECTOR);
        sectors.set(fileOffset, sector);
      }
      const from = Math.max(w.at, s * LOG_SECTOR);
      const to = Math.min(w.at + w.data.length, (s + 1) * LOG_SECTOR);
      w.data.copy(sector, from - s * LOG_SECTOR, from - w.at, to - w.at);
    }
  }
  return sectors;
}

export function metadataKeys(state: VhdxState): string[] {
  const keys = ['uuid', 'creator', 'diskType', 'blockSize', 'logicalSectorSize', 'physicalSectorSize', 'dataWriteGuid', 'fileWriteGuid'];
  if (state.params.hasParent) {
    keys.push('parentLinkage', 'parentRelativePath', 'parentAbsolutePath');
    if (state.locator?.entries.has('volume_path')) keys.push('parentVolumePath');
  }
  return keys;
}

export function readMetadata(state: VhdxState, key: string): string | undefined {
  const e = state.locator?.entries;
  switch (key) {
    case 'uuid':
      return guidText(state.virtualDiskId, 'le');
    case 'creator':
      return state.creator;
    case 'diskType':
      return state.type;
    case 'blockSize':
      return String(state.params.blockSize);
    case 'logicalSectorSize':
      return String(state.params.logicalSectorSize);
    case 'physicalSectorSize':
      return String(state.params.physicalSectorSize);
    case 'dataWriteGuid':
      return guidText(state.header.dataWriteGuid, 'le');
    case 'fileWriteGuid':
      return guidText(state.header.fileWriteGuid, 'le');
    case 'parentLinkage':
      return e?.get('parent_linkage');
    case 'parentRelativePath':
      return e?.get('relative_path');
    case 'parentAbsolutePath':
      return e?.get('absolute_win32_path');
    case 'parentVolumePath':
      return e?.get('volume_path');
    default:
      return undefined;
  }
}

/** `uuid` (the Virtual Disk ID, page 83 data) is writable, through the log; the rest follow from the structure. */
export async function writeMetadata(state: VhdxState, key: string, value: string): Promise<void> {
  state.checkWritable();
  const where = { path: state.path, struct: 'metadata', field: key, found: value };
  if (key !== 'uuid') {
    const known = metadataKeys(state).includes(key);
    throw new DiskError('NOTSUPPORTED', known ? `${key} is read-only: it follows from the image's structure` : 'VHDX has no free-form metadata', { ...where, expected: 'uuid' });
  }
  const id = guidFromText(value, 'le');
  if (!id) throw new DiskError('INVAL', 'bad value for uuid', { ...where, expected: 'a GUID (32 hex digits, dashes and braces optional)' });
  await state.commit(await metadataSectors(state, [...setItem(state, GUIDS.VIRTUAL_DISK_ID, id), tableWrite(state)]));
  state.virtualDiskId = id;
}
