/**
 * The tar header (POSIX ustar, with the pax and GNU extensions readers meet in OVAs) as one
 * field table, and the pure codecs around it: numbers (octal text, or GNU base-256 for sizes
 * past 8 GiB), the checksum, pax records. No I/O here: storage/tar.ts reads archives from a
 * store, ops/ova writes them. Every name and number in a header is untrusted: decode checks
 * the checksum and the number syntax and says which member and field is wrong.
 *
 * Layout of one 512-byte header block (POSIX.1-1988 ustar; GNU writes magic "ustar " and
 * version " \0"): name 100, mode 8, uid 8, gid 8, size 12, mtime 12, chksum 8, typeflag 1,
 * linkname 100, magic 6, version 2, uname 32, gname 32, devmajor 8, devminor 8, prefix 155,
 * then 12 bytes of padding. A member's data follows its header, padded to whole blocks; the
 * archive ends with two all-zero blocks.
 */
import { DiskError } from '../core/errors.js';
import { ascii, bytes, defineStruct, reserved, type StructValue } from './struct.js';

export const TAR_BLOCK = 512;

export const TAR_HEADER = defineStruct(
  'tar header',
  'le',
  [
    { name: 'name', type: bytes(100) },
    { name: 'mode', type: ascii(8) },
    { name: 'uid', type: ascii(8) },
    { name: 'gid', type: ascii(8) },
    // bytes: a GNU base-256 size has its top bit set and holds NULs
    { name: 'size', type: bytes(12) },
    { name: 'mtime', type: bytes(12) },
    { name: 'chksum', type: ascii(8) },
    { name: 'typeflag', type: ascii(1) },
    { name: 'linkname', type: bytes(100) },
    { name: 'magic', type: ascii(6) },
    { name: 'version', type: bytes(2) },
    { name: 'uname', type: ascii(32) },
    { name: 'gname', type: ascii(32) },
    { name: 'devmajor', type: ascii(8) },
    { name: 'devminor', type: ascii(8) },
    { name: 'prefix', type: bytes(155) },
    { name: 'pad', type: reserved(12) },
  ] as const,
  TAR_BLOCK,
);

export type TarHeaderFields = StructValue<typeof TAR_HEADER.fields>;

/** what a member is, from its typeflag */
export type TarKind = 'file' | 'dir' | 'symlink' | 'hardlink' | 'pax' | 'pax-global' | 'gnu-longname' | 'gnu-longlink' | 'other';

export function tarKind(typeflag: string): TarKind {
  switch (typeflag) {
    case '':
    case '0':
    case '7': // contiguous file: a regular file to every reader
      return 'file';
    case '5':
      return 'dir';
    case '2':
      return 'symlink';
    case '1':
      return 'hardlink';
    case 'x':
      return 'pax';
    case 'g':
      return 'pax-global';
    case 'L':
      return 'gnu-longname';
    case 'K':
      return 'gnu-longlink';
    default:
      return 'other';
  }
}

/** One header block as read: the raw name and the numbers, before pax/GNU overrides. */
export interface TarHeader {
  name: string;
  linkname: string;
  kind: TarKind;
  typeflag: string;
  size: number;
  mode: number;
  mtime: number;
}

const cstr = (b: Buffer) => {
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString('utf8');
};

/**
 * A numeric field: octal digits with optional leading spaces and a NUL/space terminator, or
 * GNU base-256 (first byte 0x80, big-endian after it). Anything else, or a value past 2^53, is
 * CORRUPT naming `field`.
 */
export function decodeTarNumber(raw: Buffer | string, field: string, where: { path?: string; member?: string }): number {
  const b = typeof raw === 'string' ? Buffer.from(raw, 'latin1') : raw;
  if (b.length > 0 && (b[0]! & 0x80) !== 0) {
    if (b[0] !== 0x80) throw new DiskError('CORRUPT', `tar ${field} is a negative base-256 number`, { ...where, field });
    let v = 0n;
    for (const x of b.subarray(1)) v = (v << 8n) | BigInt(x);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new DiskError('CORRUPT', `tar ${field} is too large`, { ...where, field, found: v.toString() });
    return Number(v);
  }
  const text = b.toString('latin1').replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new DiskError('CORRUPT', `tar ${field} is not an octal number`, { ...where, field, found: JSON.stringify(text) });
  const v = parseInt(text, 8);
  if (!Number.isSafeInteger(v)) throw new DiskError('CORRUPT', `tar ${field} is too large`, { ...where, field, found: text });
  return v;
}

/** `value` in a numeric field of `width` bytes: octal with a NUL when it fits, else GNU base-256 */
export function encodeTarNumber(value: number, width: number): Buffer {
  const out = Buffer.alloc(width);
  const oct = value.toString(8);
  if (oct.length <= width - 1) {
    out.write(oct.padStart(width - 1, '0'), 0, 'latin1');
    return out;
  }
  let v = BigInt(value);
  for (let i = width - 1; i >= 1; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  out[0] = 0x80;
  return out;
}

/** the header checksum: every byte summed with the chksum field read as spaces (unsigned, and the old signed sum) */
export function tarChecksums(block: Buffer): { unsigned: number; signed: number } {
  const at = TAR_HEADER.offsetOf('chksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < TAR_BLOCK; i++) {
    const b = i >= at && i < at + 8 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b >= 0x80 ? b - 0x100 : b;
  }
  return { unsigned, signed };
}

export function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

/**
 * Decode one header block (not all zeros). `index` and `offset` name the member in errors:
 * its name is not trusted before the checksum holds.
 */
export function decodeTarHeader(block: Buffer, where: { path?: string; index: number; offset: number }): TarHeader {
  const h = TAR_HEADER.decode(block, 0, where.path);
  const at = { path: where.path, member: `#${where.index + 1} at byte ${where.offset}` };
  const stored = decodeTarNumber(h.chksum, 'chksum', at);
  const sums = tarChecksums(block);
  if (stored !== sums.unsigned && stored !== sums.signed) {
    throw new DiskError('CORRUPT', `tar header ${at.member}: bad checksum`, { ...at, field: 'chksum', expected: sums.unsigned, found: stored });
  }
  const ustar = h.magic === 'ustar' || h.magic === 'ustar ';
  const prefix = ustar && h.magic === 'ustar' ? cstr(h.prefix) : '';
  const name = prefix ? `${prefix}/${cstr(h.name)}` : cstr(h.name);
  return {
    name,
    linkname: cstr(h.linkname),
    kind: tarKind(h.typeflag),
    typeflag: h.typeflag,
    size: decodeTarNumber(h.size, 'size', { path: where.path, member: name || at.member }),
    mode: decodeTarNumber(h.mode, 'mode', { path: where.path, member: name || at.member }),
    mtime: decodeTarNumber(h.mtime, 'mtime', { path: where.path, member: name || at.member }),
  };
}

/** A header block for a member the writer makes (regular file or pax record); `name` at most 100 bytes. */
export function encodeTarHeader(m: { name: string; size: number; mode?: number; mtime?: number; typeflag?: string }): Buffer {
  const name = Buffer.from(m.name, 'utf8');
  if (name.length > 100) throw new DiskError('INTERNAL', `tar member name longer than 100 bytes: ${m.name}`);
  const block = TAR_HEADER.encode({
    name,
    mode: (m.mode ?? 0o644).toString(8).padStart(7, '0'),
    uid: '0000000',
    gid: '0000000',
    size: encodeTarNumber(m.size, 12),
    mtime: encodeTarNumber(Math.floor(m.mtime ?? 0), 12),
    chksum: '',
    typeflag: m.typeflag ?? '0',
    linkname: Buffer.alloc(0),
    magic: 'ustar',
    version: Buffer.from('00', 'latin1'),
    uname: '',
    gname: '',
    devmajor: '',
    devminor: '',
    prefix: Buffer.alloc(0),
  } as TarHeaderFields);
  // six octal digits, NUL, space: what POSIX tar writes
  const sum = tarChecksums(block).unsigned;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, TAR_HEADER.offsetOf('chksum'), 'latin1');
  return block;
}

/**
 * pax extended header records ("LEN key=value\n", LEN counting the whole record). Returns the
 * keys; a record whose length does not add up is CORRUPT naming the member.
 */
export function parsePaxRecords(data: Buffer, where: { path?: string; member: string }): Map<string, string> {
  const out = new Map<string, string>();
  let at = 0;
  while (at < data.length) {
    if (data[at] === 0) break; // padding some writers leave
    const sp = data.indexOf(0x20, at);
    const lenText = sp < 0 ? '' : data.subarray(at, sp).toString('latin1');
    const len = /^\d{1,9}$/.test(lenText) ? Number(lenText) : NaN;
    if (!(len > sp - at + 1) || at + len > data.length || data[at + len - 1] !== 0x0a) {
      throw new DiskError('CORRUPT', 'bad pax extended header record', { ...where, field: 'pax record', offset: at });
    }
    const rec = data.subarray(sp + 1, at + len - 1).toString('utf8');
    const eq = rec.indexOf('=');
    if (eq <= 0) throw new DiskError('CORRUPT', 'pax record without key=value', { ...where, field: 'pax record', offset: at });
    out.set(rec.slice(0, eq), rec.slice(eq + 1));
    at += len;
  }
  return out;
}

/**
 * Whether a member name can become a file name under a folder without leaving it: relative,
 * no `..` component, no NUL or backslash. Returns the name without leading "./", or undefined.
 */
export function safeMemberName(name: string): string | undefined {
  if (name === '' || name.includes('\0') || name.includes('\\') || name.startsWith('/')) return undefined;
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0 || parts.some((p) => p === '..')) return undefined;
  return parts.join('/');
}
