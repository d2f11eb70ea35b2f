/**
 * Names and times as FAT stores them: 8.3 short names in an OEM code page (read as code page
 * 437, Linux's and the spec's default), Windows NT's lower-case bits, VFAT long-name pieces in
 * UTF-16, the short-name checksum that ties them together, and DOS dates and times.
 */
import type { FsTime } from '../types.js';

/** code page 437, bytes 0x80-0xFF (0x00-0x7F are ASCII) */
const CP437_HIGH =
  'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0';

export function cp437(b: Buffer): string {
  let s = '';
  for (const c of b) s += c < 0x80 ? String.fromCharCode(c) : CP437_HIGH[c - 0x80]!;
  return s;
}

/** NTRes bits Windows NT (and mtools, Linux) set for a name that is all lower case */
const LOWER_BASE = 0x08;
const LOWER_EXT = 0x10;

const asciiLower = (s: string) => s.replace(/[A-Z]/g, (c) => c.toLowerCase());

/** "NAME    EXT" → "NAME.EXT" (or "name.ext" by the NT case bits); a leading 0x05 is a real 0xE5 */
export function shortName(raw: Buffer, ntRes: number): string {
  const b = Buffer.from(raw);
  if (b[0] === 0x05) b[0] = 0xe5;
  let base = cp437(b.subarray(0, 8)).trimEnd();
  let ext = cp437(b.subarray(8, 11)).trimEnd();
  if (ntRes & LOWER_BASE) base = asciiLower(base);
  if (ntRes & LOWER_EXT) ext = asciiLower(ext);
  return ext === '' ? base : `${base}.${ext}`;
}

/** the checksum a long name's pieces carry of their short entry's 11 name bytes (the spec's ChkSum) */
export function shortNameChecksum(raw: Buffer): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = (((sum & 1) << 7) + (sum >> 1) + raw[i]!) & 0xff;
  return sum;
}

/** the 13 UTF-16 units of one long-name entry (bytes 1-10, 14-25, 28-31) */
export function lfnUnits(entry: Buffer, at: number): number[] {
  const out: number[] = [];
  for (const [from, to] of [
    [1, 11],
    [14, 26],
    [28, 32],
  ] as const) {
    for (let i = from; i < to; i += 2) out.push(entry.readUInt16LE(at + i));
  }
  return out;
}

/** the name the units spell: up to the first 0x0000 (the 0xFFFF padding after it is ignored) */
export function unitsText(units: readonly number[]): string {
  const end = units.indexOf(0);
  const used = end < 0 ? units : units.slice(0, end);
  return String.fromCharCode(...used);
}

/**
 * A DOS date and time as seconds since 1970. FAT keeps local wall-clock time with no zone; vdkit
 * reads it as if it were UTC (Linux's `tz=UTC` mount option, mtools under TZ=UTC), so the same
 * bytes give the same answer on every host. Day and month 0 count as 1, as Linux reads them
 * (date 0 is 1980-01-01). `hundredths` is the creation time's 10-ms field (0-199).
 */
export function dosTime(date: number, time: number, hundredths = 0): FsTime {
  const year = 1980 + (date >> 9);
  const month = Math.max(1, (date >> 5) & 0x0f);
  const day = Math.max(1, date & 0x1f);
  const ms = Date.UTC(year, month - 1, day, time >> 11, (time >> 5) & 0x3f, (time & 0x1f) * 2);
  const extra = Math.min(hundredths, 199);
  return { sec: ms / 1000 + Math.floor(extra / 100), nsec: (extra % 100) * 10_000_000 };
}
