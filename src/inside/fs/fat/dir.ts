/**
 * One directory's entries from its bytes (the fixed root area, or its clusters end to end):
 * short entries with the long name that precedes them, when that long name is whole (every
 * piece in order, 0x40 on the first stored, the same checksum) and its checksum matches the
 * short name; pieces that do not lead to their short entry are orphans and are ignored, as
 * Windows and Linux ignore them. Deleted entries (0xE5), the volume label and the `.`/`..`
 * entries are left out; a first byte 0x00 ends the directory (the spec: nothing follows).
 */
import type { FsTime } from '../types.js';
import { ATTR_DIRECTORY, ATTR_LONG_NAME, ATTR_VOLUME_ID, DELETED, DirEntry, ENTRY_SIZE, LAST_LONG_ENTRY } from './structs.js';
import { cp437, dosTime, lfnUnits, shortName, shortNameChecksum, unitsText } from './names.js';

/** the spec's limit: 65536 entries of 32 bytes, 2 MiB */
export const MAX_DIR_BYTES = 65536 * ENTRY_SIZE;
/** a long name has at most 20 pieces (255 units) */
const MAX_LFN_PIECES = 20;

export interface FatEntry {
  /** the long name when there is a valid one, else the short name */
  readonly name: string;
  /** the 8.3 name as shown (`LONGFI~1.TXT`), which lookups also accept */
  readonly shortName: string;
  /** the entry's byte offset in the volume: its inode number */
  readonly ino: number;
  readonly attr: number;
  readonly firstCluster: number;
  readonly size: number;
  readonly mtime: FsTime;
  readonly atime: FsTime;
  readonly crtime: FsTime;
}

export interface ParsedDir {
  readonly entries: FatEntry[];
  /** the volume label entry's text, when the directory holds one */
  readonly label?: string;
}

/** Decode the 32-byte short entry at `at` of `buf` (ino = its byte offset in the volume); no name context. */
export function decodeShort(buf: Buffer, at: number, ino: number, fat32: boolean, name?: string): FatEntry {
  const d = DirEntry.decode(buf, at);
  const short = shortName(d.name, d.ntRes);
  return {
    name: name ?? short,
    shortName: short,
    ino,
    attr: d.attr,
    // the high half is FAT32's; FAT12/16 keep other things (OS/2's EA handle) there
    firstCluster: d.fstClusLo + (fat32 ? d.fstClusHi * 0x10000 : 0),
    size: d.fileSize,
    mtime: dosTime(d.wrtDate, d.wrtTime),
    atime: dosTime(d.lstAccDate, 0),
    crtime: dosTime(d.crtDate, d.crtTime, d.crtTimeTenth),
  };
}

/** `buf`: the directory's bytes; `inoAt(i)`: the volume offset of byte i of them */
export function parseDir(buf: Buffer, inoAt: (i: number) => number, fat32: boolean): ParsedDir {
  const entries: FatEntry[] = [];
  let label: string | undefined;
  // the long name being gathered: its pieces by sequence number, checksum, next number expected
  let pieces: number[][] = [];
  let sum = -1;
  let next = 0;
  const drop = () => {
    pieces = [];
    sum = -1;
    next = 0;
  };
  for (let at = 0; at + ENTRY_SIZE <= buf.length; at += ENTRY_SIZE) {
    const first = buf[at]!;
    if (first === 0) break;
    if (first === DELETED) {
      drop();
      continue;
    }
    const attr = buf[at + 11]!;
    if ((attr & 0x3f) === ATTR_LONG_NAME) {
      const seq = first & 0x3f;
      if (first & LAST_LONG_ENTRY) {
        drop();
        if (seq < 1 || seq > MAX_LFN_PIECES) continue;
        pieces = new Array<number[]>(seq);
        sum = buf[at + 13]!;
        next = seq;
      } else if (next === 0 || seq !== next || buf[at + 13] !== sum || first & 0x80) {
        drop();
        continue;
      }
      pieces[seq - 1] = lfnUnits(buf, at);
      next = seq - 1;
      continue;
    }
    const raw = buf.subarray(at, at + 11);
    if (attr & ATTR_VOLUME_ID && !(attr & ATTR_DIRECTORY)) {
      label ??= cp437(raw).trimEnd();
      drop();
      continue;
    }
    const whole = sum >= 0 && next === 0 && pieces.length > 0 && shortNameChecksum(raw) === sum;
    const long = whole ? unitsText(pieces.flat()) : '';
    drop();
    // `.` and `..`: the walk in path.ts handles those names itself
    if (raw[0] === 0x2e && (raw.equals(DOT) || raw.equals(DOTDOT))) continue;
    entries.push(decodeShort(buf, at, inoAt(at), fat32, long === '' ? undefined : long));
  }
  return { entries, ...(label !== undefined ? { label } : {}) };
}

const DOT = Buffer.from('.          ', 'latin1');
const DOTDOT = Buffer.from('..         ', 'latin1');
