/**
 * VHD metadata keys (NOTES.md "Creator fields", "Timestamps and identity"): footer fields as
 * text; five of them writable, each write checked to keep the disk size.
 */
import { DiskError } from '../../core/errors.js';
import { codeBytes, codeText, decodeUtf16be, fromVhdTime, parseUuid, uuidText } from './structs.js';
import { capacityOf } from './layout.js';
import type { VhdMap } from './map.js';
import { checkWritable, saveFooter, typeOf, type VhdFile } from './state.js';

const WRITABLE_KEYS = ['creatorApplication', 'creatorVersion', 'creatorHostOS', 'uuid', 'geometry'] as const;
const READ_ONLY_KEYS = ['diskType', 'savedState', 'timestamp', 'originalSize', 'currentSize', 'parentUuid', 'parentName', 'parentTimestamp'] as const;

export function metadataKeys(file: VhdFile): string[] {
  const keys = ['creatorApplication', 'creatorVersion', 'creatorHostOS', 'uuid', 'geometry', 'diskType', 'savedState', 'timestamp', 'originalSize', 'currentSize'];
  if (typeOf(file) === 'differencing') keys.push('parentUuid', 'parentName', 'parentTimestamp');
  return keys;
}

export function readMetadata(file: VhdFile, key: string): string | undefined {
  const f = file.footer;
  const diff = typeOf(file) === 'differencing' ? file.header : undefined;
  switch (key) {
    case 'creatorApplication':
      return codeText(f.creatorApplication);
    case 'creatorVersion':
      return `${f.creatorVersion >>> 16}.${f.creatorVersion & 0xffff}`;
    case 'creatorHostOS':
      return codeText(f.creatorHostOS);
    case 'uuid':
      return uuidText(f.uniqueId);
    case 'geometry':
      return `${f.cylinders}/${f.heads}/${f.sectorsPerTrack}`;
    case 'diskType':
      return typeOf(file);
    case 'savedState':
      return String(f.savedState);
    case 'timestamp':
      return fromVhdTime(f.timestamp).toISOString();
    case 'originalSize':
      return f.originalSize.toString();
    case 'currentSize':
      return f.currentSize.toString();
    case 'parentUuid':
      return diff && uuidText(diff.parentUniqueId);
    case 'parentName':
      return diff && decodeUtf16be(diff.parentUnicodeName);
    case 'parentTimestamp':
      return diff && fromVhdTime(diff.parentTimestamp).toISOString();
    default:
      return undefined;
  }
}

/** creatorApplication, creatorVersion, creatorHostOS, uuid and geometry; footers rewritten with new checksums. */
export async function writeMetadata(file: VhdFile, map: VhdMap, key: string, value: string): Promise<void> {
  checkWritable(file);
  await map.commitPending();
  const where = { path: file.path, struct: 'footer', field: key, found: value };
  if ((READ_ONLY_KEYS as readonly string[]).includes(key)) {
    throw new DiskError('NOTSUPPORTED', `${key} is read-only: it follows from the image's structure`, { ...where, expected: WRITABLE_KEYS.join(', ') });
  }
  if (!(WRITABLE_KEYS as readonly string[]).includes(key)) {
    throw new DiskError('NOTSUPPORTED', 'VHD has no free-form metadata', { ...where, expected: WRITABLE_KEYS.join(', ') });
  }
  const next = { ...file.footer };
  const invalid = (expected: string) => new DiskError('INVAL', `bad value for ${key}`, { ...where, expected });
  switch (key) {
    case 'creatorApplication':
    case 'creatorHostOS':
      if (!/^[\x20-\x7e]{1,4}$/.test(value)) throw invalid('1 to 4 printable ASCII characters (give all 4 of a space-padded code, e.g. "vpc ")');
      next[key] = codeBytes(value);
      break;
    case 'creatorVersion': {
      const m = /^(\d{1,5})\.(\d{1,5})$/.exec(value);
      if (!m || Number(m[1]) > 0xffff || Number(m[2]) > 0xffff) throw invalid('major.minor, each 0..65535');
      next.creatorVersion = ((Number(m[1]) << 16) | Number(m[2])) >>> 0;
      break;
    }
    case 'uuid': {
      const id = parseUuid(value);
      if (!id) throw invalid('a UUID (32 hex digits, dashes optional)');
      next.uniqueId = id;
      break;
    }
    case 'geometry': {
      const m = /^(\d{1,5})\/(\d{1,3})\/(\d{1,3})$/.exec(value);
      if (!m || Number(m[1]) > 65535 || Number(m[2]) > 255 || Number(m[3]) > 255) throw invalid('cylinders/heads/sectors, at most 65535/255/255');
      next.cylinders = Number(m[1]);
      next.heads = Number(m[2]);
      next.sectorsPerTrack = Number(m[3]);
      break;
    }
  }
  const size = capacityOf(next, file.path);
  if (size !== file.capacity) {
    throw new DiskError('INVAL', `this ${key} would change the disk size from ${file.capacity} to ${size} bytes (the creator decides whether the size comes from the geometry)`, { ...where, expected: `a value keeping ${file.capacity} bytes` });
  }
  await saveFooter(file, next);
}
