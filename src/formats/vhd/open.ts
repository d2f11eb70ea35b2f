/**
 * Opening a VHD: the footer (at the end, or its copy at 0 in a read-only recovery), the dynamic
 * header, the BAT and the parent locators, each validated before it is used (NOTES.md
 * "Validation at open"). Returns the state image.ts builds a VhdImage from; check reloads
 * through here after a repair.
 */
import { DiskError, atMost } from '../../core/errors.js';
import { ceilDiv, isPowerOfTwo, roundUp, toSafeNumber } from '../../core/ints.js';
import type { ByteStore } from '../../storage/store.js';
import { readU32Array } from '../../binary/tables.js';
import {
  BAT_UNUSED,
  DISK_TYPE_NAMES,
  DynamicHeader,
  FOOTER_CHECKSUM_AT,
  FOOTER_COOKIE,
  FOOTER_SIZE,
  Footer,
  HEADER_CHECKSUM_AT,
  HEADER_SIZE,
  MAX_BAT_ENTRIES,
  MAX_BLOCK_SIZE,
  MAX_LOCATOR_BYTES,
  NO_OFFSET,
  PLATFORM,
  ParentLocatorEntry,
  SECTOR,
  vhdChecksum,
} from './structs.js';
import { PATH_CODES, capacityOf, decodeLocator, type DynamicState, type Locator, type Region } from './layout.js';
import type { VhdFile } from './state.js';

/** what open found: the file state without its namespace */
export type Loaded = Omit<VhdFile, 'namespace' | 'closed'>;

export async function loadVhd(path: string, store: ByteStore, readOnly: boolean, ignoreChecksums: boolean): Promise<Loaded> {
  const fileSize = await store.size();
  if (fileSize < FOOTER_SIZE) {
    throw new DiskError('INVALIDDISK', 'file is too short for a VHD footer', { path, struct: 'footer', field: 'cookie', expected: `>= ${FOOTER_SIZE} bytes`, found: fileSize });
  }
  const recover = ignoreChecksums && readOnly;
  const warnings: string[] = [];
  const tail = await store.read(fileSize - FOOTER_SIZE, FOOTER_SIZE);
  const head = await store.read(0, FOOTER_SIZE);
  let footerBytes = tail;
  // structures must end before this offset (the footer at the end)
  let limit = fileSize - FOOTER_SIZE;
  if (!hasCookie(tail)) {
    if (hasCookie(head) && head.readUInt32BE(Footer.offsetOf('diskType')) !== 2 && recover) {
      footerBytes = head;
      limit = fileSize;
      warnings.push('no footer at the end of the file: read with the copy at offset 0');
    } else if (hasCookie(head)) {
      throw new DiskError('CORRUPT', 'no footer at the end of the file (truncated, or cut short during a write); the copy at offset 0 is intact: open read-only with ignoreChecksums to recover the data', {
        path,
        struct: 'footer',
        field: 'cookie',
        offset: fileSize - FOOTER_SIZE,
        expected: FOOTER_COOKIE,
        found: tail.toString('latin1', 0, 8),
      });
    } else {
      throw new DiskError('INVALIDDISK', 'not a VHD file: no "conectix" footer at the end of the file or at its start', { path, struct: 'footer', field: 'cookie', expected: FOOTER_COOKIE, found: tail.toString('latin1', 0, 8) });
    }
  }
  const footer = Footer.decode(footerBytes, 0, path);
  if (checkChecksum(footerBytes, FOOTER_CHECKSUM_AT, footer.checksum, 'footer', path, readOnly, ignoreChecksums)) warnings.push('footer checksum mismatch ignored');
  if (footer.fileFormatVersion >>> 16 !== 1) {
    throw new DiskError('UNSUPPORTEDDISKVERSION', 'unsupported VHD file format version', { path, struct: 'footer', field: 'fileFormatVersion', expected: '1.x (0x00010000)', found: `0x${footer.fileFormatVersion.toString(16)}` });
  }
  const type = DISK_TYPE_NAMES[footer.diskType];
  if (type === undefined) {
    throw new DiskError('UNSUPPORTEDFEATURE', 'unsupported VHD disk type', { path, struct: 'footer', field: 'diskType', expected: '2 (fixed), 3 (dynamic) or 4 (differencing)', found: footer.diskType });
  }
  const capacity = capacityOf(footer, path);

  if (type === 'fixed') {
    if (capacity > fileSize - FOOTER_SIZE) {
      throw new DiskError('CORRUPT', 'file truncated: the data area is shorter than the disk', { path, struct: 'footer', field: 'currentSize', expected: `a file of >= ${capacity + FOOTER_SIZE} bytes`, found: fileSize });
    }
    return { path, store, footer, footerBytes, capacity, fileSize, header: undefined, dyn: undefined, locators: [], readOnly, warnings };
  }

  // ---- dynamic / differencing: the dynamic header
  const bad = (field: string, message: string, expected: unknown, found: unknown, struct = 'dynamicHeader') => new DiskError('CORRUPT', message, { path, struct, field, expected, found });
  if (footer.dataOffset === NO_OFFSET) throw bad('dataOffset', 'a dynamic disk needs the offset of its dynamic header', 'a file offset', 'none (0xffffffffffffffff)', 'footer');
  const headerOffset = toSafeNumber(footer.dataOffset, { path, struct: 'footer', field: 'dataOffset' });
  if (headerOffset % SECTOR !== 0) throw bad('dataOffset', 'dynamic header offset is not sector aligned', 'a multiple of 512', headerOffset, 'footer');
  if (headerOffset < SECTOR || headerOffset + HEADER_SIZE > limit) throw bad('dataOffset', 'dynamic header lies outside the file', `512..${limit - HEADER_SIZE}`, headerOffset, 'footer');
  const headerBytes = await store.read(headerOffset, HEADER_SIZE);
  const header = DynamicHeader.decode(headerBytes, 0, path);
  if (checkChecksum(headerBytes, HEADER_CHECKSUM_AT, header.checksum, 'dynamicHeader', path, readOnly, ignoreChecksums)) warnings.push('dynamic header checksum mismatch ignored');
  if (header.headerVersion >>> 16 !== 1) {
    throw new DiskError('UNSUPPORTEDDISKVERSION', 'unsupported dynamic header version', { path, struct: 'dynamicHeader', field: 'headerVersion', expected: '1.x (0x00010000)', found: `0x${header.headerVersion.toString(16)}` });
  }
  const blockSize = header.blockSize;
  if (!isPowerOfTwo(blockSize) || blockSize < SECTOR || blockSize > MAX_BLOCK_SIZE) {
    throw bad('blockSize', 'invalid block size', `a power of two from 512 to ${MAX_BLOCK_SIZE}`, blockSize);
  }
  const entries = header.maxTableEntries;
  const need = ceilDiv(capacity, blockSize);
  if (entries < need) throw bad('maxTableEntries', 'the BAT has fewer entries than the disk has blocks', `>= ${need}`, entries);
  const tableOffset = toSafeNumber(header.tableOffset, { path, struct: 'dynamicHeader', field: 'tableOffset' });
  if (tableOffset < SECTOR || tableOffset >= limit) throw bad('tableOffset', 'the BAT lies outside the file', `512..${limit - 1}`, tableOffset);
  if (tableOffset + entries * 4 > limit) {
    throw bad('maxTableEntries', 'the BAT runs past the end of the file', `<= ${Math.floor((limit - tableOffset) / 4)} entries`, entries);
  }
  if (need > MAX_BAT_ENTRIES) throw bad('maxTableEntries', 'the BAT is too large', `<= ${MAX_BAT_ENTRIES} entries in use`, need);
  const bitmapBytes = roundUp(Math.ceil(blockSize / SECTOR / 8), SECTOR);
  const bat = await readU32Array(store, tableOffset, need, 'be');

  // ---- parent locators (differencing only: a dynamic disk's parent fields mean nothing)
  const locators: Locator[] = [];
  if (type === 'differencing') {
    for (let i = 0; i < 8; i++) {
      const e = ParentLocatorEntry.decode(header.parentLocators, i * 24, path);
      if (e.platformCode === PLATFORM.NONE) continue;
      const field = `parentLocator[${i}]`;
      const offset = toSafeNumber(e.platformDataOffset, { path, struct: 'dynamicHeader', field: `${field}.platformDataOffset` });
      const length = e.platformDataLength;
      if (length > MAX_LOCATOR_BYTES) throw bad(`${field}.platformDataLength`, 'parent locator data is too long', `<= ${MAX_LOCATOR_BYTES} bytes`, length);
      if (length > 0 && (offset < SECTOR || offset + length > limit)) {
        throw bad(`${field}.platformDataOffset`, 'parent locator data lies outside the file', `inside 512..${limit}`, offset);
      }
      const loc: Locator = { code: e.platformCode, space: e.platformDataSpace, length, offset };
      if (PATH_CODES.has(e.platformCode) && length > 0) loc.text = decodeLocator(e.platformCode, await store.read(offset, length));
      locators.push(loc);
    }
  }

  const metadata: Region[] = [
    { name: 'footer copy', start: 0, end: SECTOR },
    { name: 'dynamic header', start: headerOffset, end: headerOffset + HEADER_SIZE },
    { name: 'BAT', start: tableOffset, end: tableOffset + entries * 4 },
    ...locators.filter((l) => l.length > 0).map((l) => ({ name: 'parent locator data', start: l.offset, end: l.offset + l.length })),
  ];
  checkBlocks(bat, (bitmapBytes + blockSize) / SECTOR, limit, metadata, path);

  const dyn: DynamicState = { headerOffset, tableOffset, entries, blockSize, bitmapBytes, bat, nextFree: roundUp(fileSize - FOOTER_SIZE, SECTOR) };
  // The footer copy follows the footer at the end (a crash between the two footer writes of a
  // metadata change leaves them different).
  if (!readOnly && !head.equals(footerBytes)) await store.write(0, footerBytes);
  return { path, store, footer, footerBytes, capacity, fileSize, header, dyn, locators, readOnly, warnings };
}

function hasCookie(b: Buffer): boolean {
  return b.toString('latin1', 0, 8) === FOOTER_COOKIE;
}

/** Verify a checksum; returns true when it is wrong but ignored (recovery: read-only). */
function checkChecksum(bytes: Buffer, at: number, stored: number, struct: string, path: string, readOnly: boolean, ignore: boolean): boolean {
  const computed = vhdChecksum(bytes, at);
  if (computed === stored) return false;
  if (ignore && readOnly) return true;
  const how = ignore ? 'a damaged image opens read-only only' : 'open read-only with ignoreChecksums to recover its data';
  throw new DiskError('CORRUPT', `${struct} checksum mismatch (${how})`, { path, struct, field: 'checksum', expected: hex32(computed), found: hex32(stored) });
}

const hex32 = (v: number) => `0x${v.toString(16).padStart(8, '0')}`;

/**
 * BAT sanity: every block inside the file (before the footer), no more blocks than the file
 * can hold (checked before sorting, so a crafted table costs nothing), no two overlapping, none
 * over the header, the BAT or the locator data.
 */
function checkBlocks(bat: Uint32Array, strideSectors: number, limit: number, metadata: Region[], path: string): void {
  const limitSectors = Math.floor(limit / SECTOR);
  let used = 0;
  for (let i = 0; i < bat.length; i++) {
    const e = bat[i]!;
    if (e === BAT_UNUSED) continue;
    used++;
    if (e + strideSectors > limitSectors) {
      throw new DiskError('CORRUPT', 'block lies past the end of the file', { path, struct: 'BAT', field: `BAT[${i}]`, expected: atMost(limitSectors - strideSectors, ' sectors'), found: e });
    }
  }
  if (used * strideSectors > limitSectors) {
    throw new DiskError('CORRUPT', 'the BAT names more blocks than fit in the file', { path, struct: 'BAT', field: 'BAT', expected: `<= ${Math.floor(limitSectors / strideSectors)}`, found: used });
  }
  const sorted = bat.filter((e) => e !== BAT_UNUSED).sort();
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]! - sorted[i - 1]! < strideSectors) {
      throw new DiskError('CORRUPT', 'two BAT entries name the same or overlapping blocks', { path, struct: 'BAT', field: 'BAT', found: sorted[i] });
    }
  }
  for (const r of metadata) {
    // the first block that ends after the region starts
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((sorted[mid]! + strideSectors) * SECTOR <= r.start) lo = mid + 1;
      else hi = mid;
    }
    if (lo < sorted.length && sorted[lo]! * SECTOR < r.end) {
      throw new DiskError('CORRUPT', `a block overlaps the ${r.name}`, { path, struct: 'BAT', field: 'BAT', expected: `no block over ${r.start}..${r.end}`, found: sorted[lo] });
    }
  }
}
