/**
 * VDI metadata keys (NOTES.md "Metadata"): the comment, the four UUIDs and the LCHS geometry;
 * `type` is read-only.
 */
import { DiskError } from '../../core/errors.js';
import { TYPE_DIFF, isNullUuid, uuidToText } from './structs.js';
import { parseUuid } from './layout.js';
import { checkWritable, typeOf, upgradeHeader, writeHeader, type VdiFile } from './state.js';

/** Metadata keys (NOTES.md "Metadata"); `type` is read-only. */
export const METADATA_KEYS = ['comment', 'uuid', 'modificationUuid', 'parentUuid', 'parentModificationUuid', 'geometry.cylinders', 'geometry.heads', 'geometry.sectors', 'type'] as const;

export function metadataKeys(file: VdiFile): string[] {
  return METADATA_KEYS.filter((k) => readMetadata(file, k) !== undefined);
}

export function readMetadata(file: VdiFile, key: string): string | undefined {
  const h = file.h;
  switch (key) {
    case 'comment': {
      const nul = h.comment.indexOf(0);
      return h.comment.subarray(0, nul < 0 ? h.comment.length : nul).toString('utf8');
    }
    case 'uuid':
      return uuidToText(h.uuidCreate);
    case 'modificationUuid':
      return uuidToText(h.uuidModify);
    case 'parentUuid':
      return isNullUuid(h.uuidLinkage) ? undefined : uuidToText(h.uuidLinkage);
    case 'parentModificationUuid':
      return isNullUuid(h.uuidParentModify) ? undefined : uuidToText(h.uuidParentModify);
    case 'geometry.cylinders':
      return file.kind === 'v1+' ? String(h.lchsCylinders) : undefined;
    case 'geometry.heads':
      return file.kind === 'v1+' ? String(h.lchsHeads) : undefined;
    case 'geometry.sectors':
      return file.kind === 'v1+' ? String(h.lchsSectors) : undefined;
    case 'type':
      return typeOf(file);
    default:
      return undefined;
  }
}

export async function writeMetadata(file: VdiFile, key: string, value: string): Promise<void> {
  checkWritable(file);
  const where = { path: file.path, field: key, found: value };
  const h = file.h;
  switch (key) {
    case 'type':
      throw new DiskError('NOTSUPPORTED', 'metadata key type is read-only (it follows from create, rebase and merge)', where);
    case 'comment': {
      const b = Buffer.from(value, 'utf8');
      if (b.length > 255 || b.includes(0)) throw new DiskError('INVAL', 'comment must be at most 255 bytes of UTF-8 without NUL', { ...where, expected: '<= 255 bytes', found: b.length });
      const c = Buffer.alloc(256);
      b.copy(c);
      h.comment = c;
      break;
    }
    case 'uuid':
      h.uuidCreate = parseUuid(value, file.path, key);
      break;
    case 'modificationUuid':
      h.uuidModify = parseUuid(value, file.path, key);
      break;
    case 'parentUuid':
    case 'parentModificationUuid': {
      if (h.type !== TYPE_DIFF) throw new DiskError('NOTSUPPORTED', `${key} can only be set on a differencing image (link a base with rebase)`, where);
      const u = parseUuid(value, file.path, key);
      if (key === 'parentUuid') h.uuidLinkage = u;
      else h.uuidParentModify = u;
      break;
    }
    case 'geometry.cylinders':
    case 'geometry.heads':
    case 'geometry.sectors': {
      const max = key === 'geometry.cylinders' ? 1024 : key === 'geometry.heads' ? 255 : 63;
      if (!/^\d{1,10}$/.test(value) || Number(value) > max) throw new DiskError('INVAL', `LCHS ${key.slice(9)} must be 0..${max} (0: not set)`, { ...where, expected: `0..${max}` });
      if (file.kind !== 'v1+') upgradeHeader(file);
      const n = Number(value);
      if (key === 'geometry.cylinders') h.lchsCylinders = n;
      else if (key === 'geometry.heads') h.lchsHeads = n;
      else h.lchsSectors = n;
      break;
    }
    default:
      throw new DiskError('INVAL', `unknown VDI metadata key (known: ${METADATA_KEYS.join(', ')})`, where);
  }
  await writeHeader(file);
}
