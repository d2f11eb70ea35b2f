/**
 * VHD driver: one fixed, dynamic or differencing VHD file opened as an Image.
 *
 * Design notes (full map in NOTES.md)
 * - Layout: fixed = data + footer; dynamic/differencing = footer copy @0, dynamic header,
 *   BAT, (parent locator data), blocks [sector bitmap + data], footer. The footer at the end is
 *   authoritative; the copy at offset 0 is rewritten from it when a read-write open finds it
 *   different (a crash between the two footer writes of a metadata change).
 * - Size: vhd.md §2.2 per creator (structs.ts sizeRule): CHS geometry for "vpc ", "vs  ",
 *   "qemu" (unless the geometry is the maximum), current size for everyone else.
 * - Crash-safe allocation: footer at the new end of file, then bitmap + data where the old
 *   footer was; the BAT entries wait for the next flush, which makes the blocks durable first
 *   (fdatasync) and then writes the entries. No BAT entry ever points at a block that is not
 *   durably written; a crash (or power cut) leaks at most the new blocks. A process kill
 *   leaves a valid footer at the end; a power cut between two flushes can leave none (the file
 *   grew but its last sector did not reach the disk), which check --repair mends from the copy
 *   at offset 0 (see NOTES.md).
 *   Writes into allocated blocks: data first, then the bitmap bits that expose it.
 * - Bitmaps: a set bit means the sector is stored here. A clear bit (and an unallocated block)
 *   is `unallocated`: zeros in a dynamic image, the parent's sector in a differencing one.
 *   clusterSize is one sector, so the chain layer copies-on-write whole sectors.
 * - Identity: the footer's unique id (stored byte order, printed as libvhdi and QEMU print it).
 *   Writes never change it (Hyper-V does not either), nor the footer timestamp: children record
 *   both, and a parent that a child depends on is protected by the chain layer instead.
 */
import { writeBitmapped } from '../common/bitmapped-write.js';
import { Bitmap } from '../../binary/bitmap.js';
import { basename, dirname, isAbsolute, relative } from '../../core/names.js';
import { DiskError, atMost } from '../../core/errors.js';
import { ceilDiv, isPowerOfTwo, roundUp, toSafeNumber } from '../../core/ints.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { BackingChange, BackingLink, BlockExtent, BlockState, Capabilities, CheckOptions, CheckReport, DiskInfo, Geometry, Image, InPlaceOptions, InPlaceResult, LinkRecord, OpenOptions } from '../types.js';
import { checkVhdStore } from './check.js';
import {
  BAT_UNUSED,
  DISK_DIFFERENCING,
  DISK_DYNAMIC,
  DISK_TYPE_NAMES,
  DynamicHeader,
  FOOTER_CHECKSUM_AT,
  FOOTER_COOKIE,
  FOOTER_SIZE,
  Footer,
  HEADER_CHECKSUM_AT,
  HEADER_SIZE,
  LOCATOR_RESERVE,
  MAX_BAT_ENTRIES,
  MAX_BLOCK_SIZE,
  MAX_LOCATOR_BYTES,
  MAX_VHD_BYTES,
  NO_OFFSET,
  PLATFORM,
  ParentLocatorEntry,
  SECTOR,
  codeBytes,
  codeText,
  decodeUtf16be,
  encodeFooter,
  encodeHeader,
  encodeUtf16be,
  exactSizeGeometry,
  fromVhdTime,
  geometrySectors,
  parseUuid,
  sizeRule,
  uuidFromIdentity,
  uuidText,
  vhdChecksum,
  type DynamicHeaderValue,
  type FooterValue,
} from './structs.js';
import { isZero } from '../../binary/zeros.js';
import { readU32Array, u32Bytes } from '../../binary/tables.js';

export const VHD_CAPABILITIES: Capabilities = Object.freeze({
  write: 'native',
  blockStatus: 'native',
  zero: 'emulate',
  metadata: true,
  createTypes: ['dynamic', 'fixed'],
  differencing: true,
  differencingSameSize: true,
  parentLink: 'identity',
  identityFollowsContent: false,
  split: false,
  discard: 'native',
  resize: 'grow-shrink',
  flush: 'exclusive',
  check: 'repair',
  compact: 'native',
  defragment: 'native',
});

const READ_ONLY_CAPABILITIES: Capabilities = Object.freeze({ ...VHD_CAPABILITIES, write: 'none' });

/** cached sector bitmaps, in bytes (a 2 MiB block has a 512-byte bitmap: 32768 blocks = 64 GiB) */
const BITMAP_CACHE_BYTES = 16 * 1024 * 1024;
const WRITABLE_KEYS = ['creatorApplication', 'creatorVersion', 'creatorHostOS', 'uuid', 'geometry'] as const;
const READ_ONLY_KEYS = ['diskType', 'savedState', 'timestamp', 'originalSize', 'currentSize', 'parentUuid', 'parentName', 'parentTimestamp'] as const;

/** One parent locator entry as found in (or written to) the dynamic header. */
interface Locator {
  code: number;
  /** platform data space as stored (bytes in what we write; see NOTES.md) */
  space: number;
  length: number;
  offset: number;
  /** decoded path for the path codes */
  text?: string;
}

/** What a child records about its parent (dynamic header fields plus locator data). */
export interface ParentLinkage {
  parentUniqueId: Buffer;
  parentTimestamp: number;
  parentUnicodeName: Buffer;
  locators: { code: number; data: Buffer }[];
}

interface DynamicState {
  headerOffset: number;
  tableOffset: number;
  /** maxTableEntries as stored */
  entries: number;
  blockSize: number;
  bitmapBytes: number;
  /** the entries the disk uses: ceil(capacity / blockSize) */
  bat: Uint32Array;
  /** where the next block goes: the footer's position, sector aligned */
  nextFree: number;
}

const PATH_CODES = new Set<number>([PLATFORM.W2ru, PLATFORM.W2ku, PLATFORM.Wi2r, PLATFORM.Wi2k, PLATFORM.MacX]);

export class VhdImage implements Image {
  readonly format = 'vhd';
  readonly clusterSize = SECTOR;
  readonly capabilities: Capabilities;
  private readonly bitmaps = new Map<number, Buffer>();
  /** blocks whose BAT entries wait for the next flush (commitPending) */
  private readonly pendingBat = new Set<number>();
  /** bitmaps with bits set since the last flush, and the byte range to write (commitPending) */
  private readonly pendingBitmaps = new Map<number, { bitmap: Buffer; lo: number; hi: number }>();
  private readonly bitmapLimit: number;
  private closed = false;

  /** set by open: where this image's file is named */
  namespace!: Namespace;
  private constructor(
    readonly path: string,
    private readonly store: ByteStore,
    private footer: FooterValue,
    private footerBytes: Buffer,
    readonly capacity: number,
    private fileSize: number,
    private header: DynamicHeaderValue | undefined,
    private readonly dyn: DynamicState | undefined,
    private locators: Locator[],
    readonly readOnly: boolean,
    /** damage tolerated by a read-only recovery open (ignoreChecksums) */
    private readonly warnings: string[] = [],
  ) {
    this.capabilities = readOnly ? READ_ONLY_CAPABILITIES : VHD_CAPABILITIES;
    this.bitmapLimit = Math.max(16, Math.floor(BITMAP_CACHE_BYTES / (dyn?.bitmapBytes ?? SECTOR)));
  }

  get type(): string {
    return DISK_TYPE_NAMES[this.footer.diskType]!;
  }

  // ------------------------------------------------------------------ open and validation

  static async open(ns: Namespace, path: string, opts: OpenOptions = {}): Promise<VhdImage> {
    const readOnly = !!opts.readOnly;
    const store = await ns.open(path, { write: !readOnly });
    let image: VhdImage;
    try {
      image = await VhdImage.load(path, store, readOnly, !!opts.ignoreChecksums);
      image.namespace = ns;
    } catch (err) {
      await store.close().catch(() => {});
      throw err;
    }
    // A differencing link alone does not hold the whole disk: a partial-sector write would
    // zero-fill the rest of a sector its parent holds. Only the chain layer may write it.
    if (!readOnly && image.type === 'differencing' && !opts.cowByCaller) {
      await image.close().catch(() => {});
      throw new DiskError('PARTIALCHAIN', 'this VHD is a differencing image: open its chain (without singleLink) to write to it, or open this link read-only to inspect it', {
        path,
        field: 'diskType',
        found: 'differencing',
      });
    }
    return image;
  }

  private static async load(path: string, store: ByteStore, readOnly: boolean, ignoreChecksums: boolean): Promise<VhdImage> {
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
      return new VhdImage(path, store, footer, footerBytes, capacity, fileSize, undefined, undefined, [], readOnly, warnings);
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
    const image = new VhdImage(path, store, footer, footerBytes, capacity, fileSize, header, dyn, locators, readOnly, warnings);
    // The footer copy follows the footer at the end (a crash between the two footer writes of a
    // metadata change leaves them different).
    if (!image.readOnly && !head.equals(footerBytes)) await store.write(0, footerBytes);
    return image;
  }

  // ------------------------------------------------------------------ check

  /**
   * Consistency check of this file (check.ts). An image that opened has intact checksums and
   * a sound BAT, so what is left is leaks, the footer copy and header oddities; after a repair
   * the structures are read again.
   */
  async check(opts: CheckOptions): Promise<CheckReport> {
    if (opts.repair && !opts.dryRun) this.checkWritable();
    await this.commitPending();
    const report = await checkVhdStore(this.store, this.path, opts);
    if (report.findings.some((f) => f.repaired)) {
      const fresh = await VhdImage.load(this.path, this.store, this.readOnly, false);
      this.footer = fresh.footer;
      this.footerBytes = fresh.footerBytes;
      this.fileSize = fresh.fileSize;
      this.header = fresh.header;
      this.locators = fresh.locators;
      if (this.dyn && fresh.dyn) Object.assign(this.dyn, fresh.dyn);
      this.bitmaps.clear();
    }
    return report;
  }

  // ------------------------------------------------------------------ chain links

  backing(): BackingLink | undefined {
    if (this.type !== 'differencing') return undefined;
    const text = (code: number) => this.locators.find((l) => l.code === code && l.text)?.text;
    const rel = text(PLATFORM.W2ru) ?? text(PLATFORM.Wi2r);
    const hint = rel === undefined ? '' : rel.replace(/\\/g, '/').replace(/^(\.\/)+/, '');
    const name = decodeUtf16be(this.header!.parentUnicodeName);
    const hints: string[] = [];
    for (const h of [text(PLATFORM.W2ku), text(PLATFORM.Wi2k), text(PLATFORM.MacX), name]) if (h && h !== hint && !hints.includes(h)) hints.push(h);
    return { hint, hints, format: 'vhd', parentId: uuidText(this.header!.parentUniqueId) };
  }

  identity(): string {
    return uuidText(this.footer.uniqueId);
  }

  async setIdentity(id: string): Promise<void> {
    this.checkWritable();
    await this.commitPending();
    await this.saveFooter({ ...this.footer, uniqueId: uuidFromIdentity(id) });
  }

  /** what a child records about this image besides its unique id: the footer timestamp */
  linkRecord(): LinkRecord {
    return { timestamp: this.footer.timestamp };
  }

  /**
   * Point this differencing image at another parent (rebase, link repair), make a dynamic image
   * a differencing one, or (undefined) make a differencing image a plain dynamic one.
   */
  async setBacking(link: BackingChange | undefined): Promise<void> {
    this.checkWritable();
    await this.commitPending();
    if (!this.dyn) throw new DiskError('NOTSUPPORTED', 'a fixed VHD cannot have a parent (only dynamic and differencing ones can)', { path: this.path, field: 'diskType', found: 'fixed' });
    if (!link) {
      if (this.type !== 'differencing') return;
      // Footers first: once they say "dynamic" the parent fields are ignored. Sectors this image
      // does not hold then read as zeros, so callers first copy in whatever the parent had
      // there (safe rebase, merge): the disk reads the same before and after.
      await this.saveFooter({ ...this.footer, diskType: DISK_DYNAMIC });
      await this.saveHeader({ ...this.header!, parentUniqueId: Buffer.alloc(16), parentTimestamp: 0, parentUnicodeName: Buffer.alloc(512), parentLocators: Buffer.alloc(192) });
      this.locators = [];
      return;
    }
    const parentPath = link.parentName ?? this.namespace.resolve(this.path, link.hint);
    const timestamp = link.parent?.format === 'vhd' ? Number(link.parent.record?.timestamp ?? 0) : 0;
    await this.writeLinkage(parentLinkage(this.namespace.absolute(this.path), parentPath, link.hint, uuidFromIdentity(link.parentId), timestamp));
    // header first: while the footers still say "dynamic" the new parent fields are ignored
    if (this.type === 'dynamic') await this.saveFooter({ ...this.footer, diskType: DISK_DIFFERENCING });
  }

  /** Drop every block: all BAT entries unused, the file cut back to its metadata and footer. */
  async makeEmpty(): Promise<void> {
    this.checkWritable();
    await this.commitPending();
    const d = this.dyn;
    if (!d) throw new DiskError('NOTSUPPORTED', 'a fixed VHD cannot be emptied', { path: this.path, field: 'diskType', found: 'fixed' });
    // 1. the BAT (whole table, in 1 MiB pieces): from here no block is referenced
    const piece = Buffer.alloc(Math.min(d.entries * 4, 1024 * 1024), 0xff);
    for (let at = 0; at < d.entries * 4; at += piece.length) await this.store.write(d.tableOffset + at, piece.subarray(0, Math.min(piece.length, d.entries * 4 - at)));
    d.bat.fill(BAT_UNUSED);
    this.bitmaps.clear();
    await this.store.flush();
    // 2. a footer after the metadata, then the file cut there (the old footer stays the last
    //    sector until the truncate, so the file never ends without one)
    let end = Math.max(SECTOR, d.headerOffset + HEADER_SIZE, d.tableOffset + d.entries * 4);
    for (const l of this.locators) if (l.length > 0) end = Math.max(end, l.offset + locatorCapacity(l));
    end = roundUp(end, SECTOR);
    if (end < this.fileSize - FOOTER_SIZE) {
      await this.store.write(end, this.footerBytes);
      await this.store.truncate(end + FOOTER_SIZE);
      this.fileSize = end + FOOTER_SIZE;
    }
    d.nextFree = roundUp(this.fileSize - FOOTER_SIZE, SECTOR);
  }

  /**
   * Write the parent fields and locators. Locator data goes back into the areas the old
   * locators used when it fits there (header without locators first, then the data, then the
   * full header: a crash leaves the old parent link, minus its locators); else it is appended
   * like a block (footer at the new end first, then the data, then the header).
   */
  private async writeLinkage(l: ParentLinkage): Promise<void> {
    const d = this.dyn!;
    const free = this.reusableLocatorAreas();
    let placed: { code: number; data: Buffer; offset: number; space: number }[] = [];
    for (const x of l.locators) {
      const i = free.findIndex((a) => a.capacity >= x.data.length);
      if (i < 0) break;
      placed.push({ ...x, offset: free[i]!.start, space: free[i]!.capacity });
      free.splice(i, 1);
    }
    if (placed.length === l.locators.length) {
      await this.saveHeader({ ...this.header!, parentLocators: Buffer.alloc(192) });
      for (const p of placed) await this.store.write(p.offset, p.data);
    } else {
      let at = d.nextFree;
      placed = l.locators.map((x) => {
        const p = { ...x, offset: at, space: roundUp(Math.max(x.data.length, LOCATOR_RESERVE), SECTOR) };
        at += p.space;
        return p;
      });
      await this.store.write(at, this.footerBytes);
      for (const p of placed) await this.store.write(p.offset, p.data);
      d.nextFree = at;
      this.fileSize = at + FOOTER_SIZE;
    }
    await this.saveHeader({
      ...this.header!,
      parentUniqueId: l.parentUniqueId,
      parentTimestamp: l.parentTimestamp,
      parentUnicodeName: l.parentUnicodeName,
      parentLocators: encodeLocators(placed),
    });
    this.locators = placed.map((p) => ({ code: p.code, space: p.space, length: p.data.length, offset: p.offset, text: decodeLocator(p.code, p.data) }));
  }

  /** Areas of the current locators that hold nothing else (no block, table or header), in bytes. */
  private reusableLocatorAreas(): { start: number; capacity: number }[] {
    const d = this.dyn!;
    const areas = this.locators
      .filter((l) => l.code !== PLATFORM.NONE && l.offset >= SECTOR)
      .map((l) => ({ name: 'locator', start: l.offset, end: l.offset + locatorCapacity(l) }))
      .sort((a, b) => a.start - b.start);
    const used: Region[] = [
      { name: 'footer copy', start: 0, end: SECTOR },
      { name: 'header', start: d.headerOffset, end: d.headerOffset + HEADER_SIZE },
      { name: 'BAT', start: d.tableOffset, end: d.tableOffset + d.entries * 4 },
      { name: 'footer', start: this.fileSize - FOOTER_SIZE, end: Number.MAX_SAFE_INTEGER },
    ];
    const stride = d.bitmapBytes + d.blockSize;
    for (const e of d.bat) if (e !== BAT_UNUSED) used.push({ name: 'block', start: e * SECTOR, end: e * SECTOR + stride });
    const out: { start: number; capacity: number }[] = [];
    for (let i = 0; i < areas.length; i++) {
      const a = { start: areas[i]!.start, end: Math.min(areas[i]!.end, areas[i + 1]?.start ?? Number.MAX_SAFE_INTEGER) };
      if (a.end > a.start && !used.some((u) => u.start < a.end && a.start < u.end)) out.push({ start: a.start, capacity: a.end - a.start });
    }
    return out;
  }

  // ------------------------------------------------------------------ I/O

  async read(into: Buffer, offset: number): Promise<void> {
    const d = this.dyn;
    if (!d) return this.store.readInto(into, offset);
    const parts: Promise<void>[] = [];
    let pos = 0;
    while (pos < into.length) {
      const vo = offset + pos;
      const b = Math.floor(vo / d.blockSize);
      const within = vo - b * d.blockSize;
      const n = Math.min(d.blockSize - within, into.length - pos);
      const sub = into.subarray(pos, pos + n);
      if (d.bat[b] === BAT_UNUSED) sub.fill(0);
      else parts.push(this.readBlock(b, sub, within));
      pos += n;
    }
    await Promise.all(parts);
  }

  private async readBlock(b: number, into: Buffer, within: number): Promise<void> {
    const d = this.dyn!;
    const bitmap = await this.bitmap(b);
    const dataAt = d.bat[b]! * SECTOR + d.bitmapBytes;
    const end = within + into.length;
    const reads: Promise<void>[] = [];
    for (const [a, z, set] of sectorRuns(bitmap, Math.floor(within / SECTOR), Math.ceil(end / SECTOR))) {
      const from = Math.max(a * SECTOR, within) - within;
      const to = Math.min(z * SECTOR, end) - within;
      if (set) reads.push(this.store.readInto(into.subarray(from, to), dataAt + within + from));
      else into.fill(0, from, to);
    }
    await Promise.all(reads);
  }

  async write(data: Buffer, offset: number): Promise<void> {
    this.checkWritable();
    const d = this.dyn;
    if (!d) return this.store.write(offset, data);
    const fresh: Fresh[] = [];
    let pos = 0;
    while (pos < data.length) {
      const vo = offset + pos;
      const b = Math.floor(vo / d.blockSize);
      const within = vo - b * d.blockSize;
      const n = Math.min(d.blockSize - within, data.length - pos);
      const chunk = data.subarray(pos, pos + n);
      const s0 = Math.floor(within / SECTOR);
      const s1 = Math.ceil((within + n) / SECTOR);
      if (d.bat[b] === BAT_UNUSED) fresh.push({ b, s0, s1, data: padToSectors(chunk, within - s0 * SECTOR, s1 - s0) });
      else await this.writeAllocated(b, chunk, within);
      pos += n;
    }
    if (fresh.length > 0) await this.allocate(fresh);
  }

  /** Write into an allocated block: the data, then the bitmap bits that make it visible. */
  private async writeAllocated(b: number, chunk: Buffer, within: number): Promise<void> {
    const d = this.dyn!;
    const bitmap = await this.bitmap(b);
    const deferBitmap = (lo: number, hi: number) => {
      const p = this.pendingBitmaps.get(b);
      if (p) {
        p.lo = Math.min(p.lo, lo);
        p.hi = Math.max(p.hi, hi);
      } else this.pendingBitmaps.set(b, { bitmap, lo, hi });
    };
    await writeBitmapped({ store: this.store, bits: BITS, bitmap, dataAt: d.bat[b]! * SECTOR + d.bitmapBytes, bitmapAt: d.bat[b]! * SECTOR, sectorSize: SECTOR, deferBitmap }, chunk, within);
  }

  /**
   * New blocks at the end of the file, in the crash-safe order: (1) the footer at the new end,
   * (2) bitmaps and data where the old footer was (sectors not written stay holes: zeros),
   * (3) at the next flush, after an fdatasync, the BAT entries (commitPending).
   */
  private async allocate(fresh: Fresh[]): Promise<void> {
    const d = this.dyn!;
    const stride = d.bitmapBytes + d.blockSize;
    const start = d.nextFree;
    const end = start + fresh.length * stride;
    if ((end - stride) / SECTOR >= BAT_UNUSED) {
      throw new DiskError('NOSPACE', 'the VHD file is full: blocks cannot start beyond sector 2^32-1', { path: this.path, field: 'BAT' });
    }
    await this.store.write(end, this.footerBytes);
    const writes: Promise<void>[] = [];
    const bitmaps = fresh.map((f, i) => {
      const at = start + i * stride;
      const bitmap = Buffer.alloc(d.bitmapBytes);
      setBits(bitmap, f.s0, f.s1);
      writes.push(this.store.write(at, bitmap), this.store.write(at + d.bitmapBytes + f.s0 * SECTOR, f.data));
      return bitmap;
    });
    await Promise.all(writes);
    d.nextFree = end;
    this.fileSize = end + FOOTER_SIZE;
    fresh.forEach((f, i) => {
      d.bat[f.b] = (start + i * stride) / SECTOR;
      this.cacheBitmap(f.b, bitmaps[i]!);
      this.pendingBat.add(f.b);
    });
  }

  /**
   * The BAT entries of blocks allocated since the last flush, written only after the blocks
   * are durable: without that barrier a power cut could keep an entry and lose its bitmap,
   * data or the file extension (an entry past the end, or a bitmap made of old footer bytes
   * that hides a parent's sectors). Every other operation that rewrites BAT entries or moves
   * blocks calls this first, so it never sees an entry that exists only in memory. Bitmap bits
   * set in allocated blocks wait likewise: bits that reach the file before their sectors would
   * expose zeros (or stale bytes) in place of the parent's sectors or the old data.
   */
  private async commitPending(): Promise<void> {
    if (this.pendingBat.size === 0 && this.pendingBitmaps.size === 0) return;
    await this.store.flush();
    const d = this.dyn!;
    for (const [b, p] of [...this.pendingBitmaps]) {
      await this.store.write(d.bat[b]! * SECTOR + p.lo, p.bitmap.subarray(p.lo, p.hi));
      this.pendingBitmaps.delete(b);
    }
    const blocks = [...this.pendingBat];
    await this.writeBatEntries(blocks);
    for (const b of blocks) this.pendingBat.delete(b);
  }

  private async writeBatEntries(blocks: number[]): Promise<void> {
    const d = this.dyn!;
    const sorted = [...blocks].sort((a, b) => a - b);
    for (let i = 0; i < sorted.length; ) {
      let j = i + 1;
      while (j < sorted.length && sorted[j] === sorted[j - 1]! + 1) j++;
      await this.store.write(d.tableOffset + sorted[i]! * 4, u32Bytes(d.bat, sorted[i]!, sorted[j - 1]! + 1, 'be'));
      i = j;
    }
  }

  private async bitmap(b: number): Promise<Buffer> {
    const hit = this.pendingBitmaps.get(b)?.bitmap ?? this.bitmaps.get(b);
    if (hit) return hit;
    const d = this.dyn!;
    const read = await this.store.read(d.bat[b]! * SECTOR, d.bitmapBytes);
    // a write may have cached (and changed) this bitmap while we were reading it: keep that one
    return this.bitmaps.get(b) ?? this.cacheBitmap(b, read);
  }

  private cacheBitmap(b: number, bitmap: Buffer): Buffer {
    if (this.bitmaps.size >= this.bitmapLimit) this.bitmaps.delete(this.bitmaps.keys().next().value!);
    this.bitmaps.set(b, bitmap);
    return bitmap;
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const d = this.dyn;
    if (!d) return [{ offset, length, state: 'data' }];
    const out: BlockExtent[] = [];
    const push = (at: number, n: number, state: BlockState) => {
      const last = out[out.length - 1];
      if (last && last.state === state) last.length += n;
      else out.push({ offset: at, length: n, state });
    };
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const b = Math.floor(pos / d.blockSize);
      const base = b * d.blockSize;
      const n = Math.min(base + d.blockSize, end) - pos;
      if (d.bat[b] === BAT_UNUSED) push(pos, n, 'unallocated');
      else {
        const bitmap = await this.bitmap(b);
        for (const [a, z, set] of sectorRuns(bitmap, Math.floor((pos - base) / SECTOR), Math.ceil((pos + n - base) / SECTOR))) {
          const from = Math.max(base + a * SECTOR, pos);
          const to = Math.min(base + z * SECTOR, pos + n);
          push(from, to - from, set ? 'data' : 'unallocated');
        }
      }
      pos += n;
    }
    return out;
  }

  // ------------------------------------------------------------------ discard / compact

  /**
   * VHD has no zero marker: in a dynamic image whole blocks become unused (BAT 0xFFFFFFFF) and
   * the rest of the range gets zeros where sectors are stored; in a differencing image zeros are
   * written over the whole sectors of the range (they must hide the parent). The space of
   * dropped blocks comes back at once (closeUp). A fixed image gets zeros written.
   */
  async discard(offset: number, length: number): Promise<void> {
    this.checkWritable();
    await this.commitPending();
    const d = this.dyn;
    const end = offset + length;
    if (!d) return this.writeZeroRange(offset, end);
    if (this.type === 'differencing') {
      // whole sectors only: the rest of a partial sector the child lacks is the parent's
      const from = Math.ceil(offset / SECTOR) * SECTOR;
      const to = Math.floor(end / SECTOR) * SECTOR;
      if (to > from) await this.writeZeroRange(from, to);
      return;
    }
    const drop: number[] = [];
    for (let b = Math.floor(offset / d.blockSize); b * d.blockSize < end; b++) {
      const from = Math.max(offset, b * d.blockSize);
      const blockEnd = Math.min((b + 1) * d.blockSize, this.capacity);
      const to = Math.min(end, blockEnd);
      if (d.bat[b] === BAT_UNUSED) continue;
      if (from === b * d.blockSize && to === blockEnd) drop.push(b);
      else await this.writeAllocated(b, Buffer.alloc(to - from), from - b * d.blockSize);
    }
    if (drop.length > 0) {
      await this.dropBlocks(drop);
      await this.closeUp();
    }
  }

  private async writeZeroRange(from: number, to: number): Promise<void> {
    const z = Buffer.alloc(Math.min(to - from, 1024 * 1024));
    for (let at = from; at < to; at += z.length) await this.write(z.subarray(0, Math.min(z.length, to - at)), at);
  }

  /**
   * Drop blocks that read as zeros (in a differencing image only blocks with no sector stored:
   * stored zeros hide the parent and VHD has no other way to say so), move the highest blocks
   * into the holes, and cut the file behind a new footer. Fixed images: NOTSUPPORTED.
   */
  async compact(opts: InPlaceOptions = {}): Promise<InPlaceResult> {
    this.checkWritable();
    await this.commitPending();
    const d = this.dyn;
    if (!d) throw new DiskError('NOTSUPPORTED', 'a fixed VHD cannot be compacted', { path: this.path, field: 'diskType', found: 'fixed' });
    const fileBytesBefore = await this.store.size();
    const diff = this.type === 'differencing';
    const buf = Buffer.alloc(d.blockSize);
    const drop: number[] = [];
    for (let b = 0; b < d.bat.length; b++) {
      if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: this.path }, { cause: opts.signal.reason });
      if (d.bat[b] !== BAT_UNUSED) {
        const bitmap = await this.bitmap(b);
        if (diff) {
          if (isZero(bitmap)) drop.push(b);
        } else {
          await this.readBlock(b, buf, 0);
          if (isZero(buf)) drop.push(b);
        }
      }
      opts.onProgress?.(b + 1, d.bat.length);
    }
    await this.dropBlocks(drop);
    await this.closeUp();
    return { fileBytesBefore, fileBytesAfter: await this.store.size() };
  }

  /** BAT entries unused (they read zeros, or the parent where no sector was stored), flush. */
  private async dropBlocks(blocks: number[]): Promise<void> {
    if (blocks.length === 0) return;
    const d = this.dyn!;
    for (const b of blocks) {
      d.bat[b] = BAT_UNUSED;
      this.bitmaps.delete(b);
    }
    await this.writeBatEntries(blocks);
    await this.store.flush();
  }

  /**
   * The file cut after `newEnd` (blocks and metadata end there): a footer at the new end (space
   * nothing uses), flush, then the truncate; until the truncate the old footer is still the last
   * sector. New blocks go after the footer's place again.
   */
  private async cutAfter(newEnd: number, d: DynamicState): Promise<void> {
    if (newEnd < this.fileSize - FOOTER_SIZE) {
      await this.store.write(newEnd, this.footerBytes);
      await this.store.flush();
      await this.store.truncate(newEnd + FOOTER_SIZE);
      await this.store.flush();
      this.fileSize = newEnd + FOOTER_SIZE;
    }
    d.nextFree = roundUp(this.fileSize - FOOTER_SIZE, SECTOR);
  }

  /**
   * Close up the block area and cut the file (NOTES.md "Compact and discard"): the highest block
   * is copied into the lowest gap below it that holds a whole block (never overlapping itself),
   * flush, its BAT entry, flush; then a footer at the new end (space nothing uses), flush, and
   * the file truncated after it: until the truncate the old footer is still the last sector.
   */
  private async closeUp(): Promise<void> {
    const d = this.dyn!;
    const stride = d.bitmapBytes + d.blockSize;
    let metaEnd = Math.max(SECTOR, d.headerOffset + HEADER_SIZE, d.tableOffset + d.entries * 4);
    for (const l of this.locators) if (l.length > 0) metaEnd = Math.max(metaEnd, l.offset + locatorCapacity(l));
    metaEnd = roundUp(metaEnd, SECTOR);
    const blocks: { b: number; at: number }[] = [];
    for (let b = 0; b < d.bat.length; b++) if (d.bat[b] !== BAT_UNUSED) blocks.push({ b, at: d.bat[b]! * SECTOR });
    blocks.sort((x, y) => x.at - y.at);
    const buf = Buffer.alloc(stride);
    for (;;) {
      const top = blocks[blocks.length - 1];
      if (!top) break;
      // the lowest gap below the top block that holds a whole block
      let target = -1;
      let prevEnd = metaEnd;
      for (let i = 0; i < blocks.length; i++) {
        if (blocks[i]!.at - prevEnd >= stride) {
          target = prevEnd;
          break;
        }
        prevEnd = Math.max(prevEnd, blocks[i]!.at + stride);
      }
      if (target < 0 || target >= top.at) break;
      await this.store.readInto(buf, top.at);
      await this.store.write(target, buf);
      await this.store.flush();
      d.bat[top.b] = target / SECTOR;
      await this.writeBatEntries([top.b]);
      await this.store.flush();
      blocks.pop();
      top.at = target;
      blocks.splice(blocks.findIndex((x) => x.at > target) < 0 ? blocks.length : blocks.findIndex((x) => x.at > target), 0, top);
    }
    const last = blocks[blocks.length - 1];
    await this.cutAfter(roundUp(Math.max(metaEnd, last ? last.at + stride : 0), SECTOR), d);
  }

  /**
   * Defragment (NOTES.md "Defragment"): blocks (bitmap + data) in BAT order by virtual index,
   * back to back from the end of the dynamic header and the BAT (around parent locator data
   * that lies in the way), the file cut behind a footer after the last one. Target by target,
   * from the lowest: whatever block overlaps the target (another block, or the right one at a
   * position that is not exactly the target) is first moved out of the way into a free slot
   * past the final area (a grid of whole blocks from there, used blocks and locator data
   * avoided; past the end of the file a new block is appended as allocate does, the footer at
   * the new end first), then the right block is copied in, and every block whose target
   * that uncovers follows at once (a cycle walk: few blocks parked at a time). Every move: copy, flush, BAT entry,
   * flush, so a BAT entry always names a complete block and space is written only when no entry
   * names it. The end is closeUp's: a footer after the last block (space nothing uses), flush,
   * then the truncate. A kill leaves gaps (check: leaks) and at most a stray footer copy inside
   * unused space; the file always ends with a valid footer. Fixed images: NOTSUPPORTED (their
   * data is the disk in order).
   */
  async defragment(opts: InPlaceOptions = {}): Promise<InPlaceResult> {
    this.checkWritable();
    await this.commitPending();
    const d = this.dyn;
    if (!d) throw new DiskError('NOTSUPPORTED', 'a fixed VHD cannot be defragmented (its data is the disk, in order)', { path: this.path, field: 'diskType', found: 'fixed' });
    const fileBytesBefore = await this.store.size();
    const stride = d.bitmapBytes + d.blockSize;
    const headEnd = roundUp(Math.max(SECTOR, d.headerOffset + HEADER_SIZE, d.tableOffset + d.entries * 4), SECTOR);
    const fixed: Region[] = this.locators.filter((l) => l.length > 0).map((l) => ({ name: 'parent locator data', start: l.offset, end: roundUp(l.offset + locatorCapacity(l), SECTOR) }));
    const metaEnd = fixed.reduce((m, r) => Math.max(m, r.end), headEnd);
    const hitsFixed = (at: number) => fixed.find((r) => r.start < at + stride && at < r.end);

    const order: number[] = [];
    for (let b = 0; b < d.bat.length; b++) if (d.bat[b] !== BAT_UNUSED) order.push(b);
    const n = order.length;
    const targets: number[] = [];
    let cursor = headEnd;
    for (let r = 0; r < n; r++) {
      for (let f = hitsFixed(cursor); f; f = hitsFixed(cursor)) cursor = roundUp(f.end, SECTOR);
      targets.push(cursor);
      cursor += stride;
    }
    const finalEnd = cursor;

    // blocks at their places when we started, by position; `gone` once a block left its place
    const orig = order.map((b) => ({ b, at: d.bat[b]! * SECTOR })).sort((x, y) => x.at - y.at);
    const gone = new Set<number>();
    /** the blocks that still sit at their starting place and overlap [at, at + stride) */
    const origOver = (at: number): number[] => {
      let lo = 0;
      let hi = orig.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (orig[mid]!.at + stride <= at) lo = mid + 1;
        else hi = mid;
      }
      const out: number[] = [];
      for (let i = lo; i < orig.length && orig[i]!.at < at + stride; i++) if (!gone.has(orig[i]!.b)) out.push(orig[i]!.b);
      return out;
    };
    // the spare grid past the final area: slot k at finalEnd + k * stride
    const parked = new Map<number, number>(); // slot -> block
    const slotOf = new Map<number, number>(); // block -> slot
    let spareFrom = 0;
    const freeSlot = (): number => {
      for (let k = spareFrom; ; k++) {
        const at = finalEnd + k * stride;
        if (parked.has(k) || hitsFixed(at) || origOver(at).length > 0) continue;
        spareFrom = k + 1;
        return k;
      }
    };
    /** b leaves where it is; its starting place when that is what it leaves */
    const release = (b: number): number | undefined => {
      const k = slotOf.get(b);
      if (k !== undefined) {
        parked.delete(k);
        slotOf.delete(b);
        spareFrom = Math.min(spareFrom, k);
      } else if (!gone.has(b)) {
        const at = d.bat[b]! * SECTOR;
        gone.add(b);
        if (at + stride > finalEnd) spareFrom = Math.min(spareFrom, Math.max(0, Math.floor((at - finalEnd) / stride)));
        return at;
      }
      return undefined;
    };
    const buf = Buffer.alloc(stride);
    let moved = 0;
    const move = async (b: number, to: number) => {
      if (to + stride > this.fileSize - FOOTER_SIZE) {
        // past the footer: it goes to the new end first, as for a new block
        await this.store.write(to + stride, this.footerBytes);
        this.fileSize = to + stride + FOOTER_SIZE;
      }
      await this.store.readInto(buf, d.bat[b]! * SECTOR);
      await this.store.write(to, buf);
      await this.store.flush();
      d.bat[b] = to / SECTOR;
      await this.writeBatEntries([b]);
      await this.store.flush();
      moved++;
    };

    /**
     * b to its target; then every block whose target the space b left uncovers goes to its
     * target too, and so on: on an aligned layout this walks a permutation cycle, so at most
     * one block is parked at a time (the file grows by one block, not by half the blocks)
     */
    const place = async (b: number, t: number) => {
      const left: number[] = [];
      const leave = (v: number) => {
        const at = release(v);
        if (at !== undefined) left.push(at);
      };
      leave(b);
      await move(b, t);
      while (left.length > 0) {
        const at = left.pop()!;
        let r = 0;
        for (let hi = n; r < hi; ) {
          const mid = (r + hi) >> 1;
          if (targets[mid]! + stride <= at) r = mid + 1;
          else hi = mid;
        }
        for (; r < n && targets[r]! < at + stride; r++) {
          const v = order[r]!;
          if (d.bat[v]! * SECTOR === targets[r] || origOver(targets[r]!).length > 0) continue;
          leave(v);
          await move(v, targets[r]!);
        }
      }
    };

    opts.onProgress?.(0, n);
    let cancelled = false;
    for (let r = 0; r < n; r++) {
      const b = order[r]!;
      const t = targets[r]!;
      if (d.bat[b]! * SECTOR !== t) {
        if (opts.signal?.aborted) {
          cancelled = true;
          break;
        }
        for (const o of origOver(t)) {
          const k = freeSlot();
          const to = finalEnd + k * stride;
          if (to / SECTOR >= BAT_UNUSED) throw new DiskError('NOSPACE', 'no room to move a block out of the way: blocks cannot start beyond sector 2^32-1', { path: this.path, field: 'BAT' });
          release(o);
          await move(o, to);
          parked.set(k, o);
          slotOf.set(o, k);
        }
        await place(b, t);
      }
      opts.onProgress?.(r + 1, n);
    }
    if (!cancelled) await this.cutAfter(roundUp(Math.max(metaEnd, finalEnd), SECTOR), d);
    else d.nextFree = roundUp(this.fileSize - FOOTER_SIZE, SECTOR);
    if (cancelled) throw new DiskError('CANCELLED', undefined, { path: this.path }, { cause: opts.signal!.reason });
    return { fileBytesBefore, fileBytesAfter: await this.store.size(), moved };
  }

  // ------------------------------------------------------------------ resize

  /**
   * Resize in place (NOTES.md "Resize"); closes the image. What makes the new size visible is
   * the footer (the last sector of the file, then its copy at 0): everything before it leaves
   * a disk of the old size that reads as before.
   * - Fixed grow: the old footer written again at the new end (still the old disk), the sector
   *   it held zeroed, flush, then the new footer over the copy at the new end.
   * - Fixed shrink: the new footer over the old one at the end of the file (the switch: the
   *   data stays at 0), flush, then the footer again at the new end, flush, and the cut.
   * - Dynamic grow: blocks in the way of a larger BAT moved to the end of the file (footer at
   *   the new end, copy, flush, BAT entry, flush), the new BAT entries unused, flush, the
   *   dynamic header's maxTableEntries, flush, then the footers.
   * - Dynamic shrink: the footers first, then the BAT entries past the new end unused.
   */
  async resize(newCapacity: number): Promise<void> {
    await this.commitPending();
    try {
      this.checkWritable();
      if (this.type === 'differencing') throw new DiskError('NOTSUPPORTED', 'a differencing VHD keeps its parent\'s size: resize the base and create the child again', { path: this.path, field: 'diskType', found: this.type });
      if (newCapacity <= 0 || newCapacity % SECTOR !== 0 || newCapacity > MAX_VHD_BYTES) {
        throw new DiskError('INVAL', 'a VHD size is a whole number of sectors up to 2040 GiB', { path: this.path, field: 'currentSize', expected: `512..${MAX_VHD_BYTES}`, found: newCapacity });
      }
      const g = exactSizeGeometry(newCapacity);
      // originalSize too: libvhdi reports it as the media size
      const next: FooterValue = { ...this.footer, originalSize: BigInt(newCapacity), currentSize: BigInt(newCapacity), cylinders: g.cylinders, heads: g.heads, sectorsPerTrack: g.sectors };
      const bytes = encodeFooter(next);
      if (!this.dyn) await this.resizeFixed(newCapacity, bytes);
      else await this.resizeDynamic(newCapacity, next);
      await this.store.flush();
    } finally {
      await this.close();
    }
  }

  private async resizeFixed(newCapacity: number, bytes: Buffer): Promise<void> {
    const old = this.capacity;
    await this.cutFixedSlack(old, this.footerBytes);
    if (newCapacity > old) {
      await this.store.write(newCapacity, this.footerBytes);
      await this.store.flush();
      await this.store.write(old, Buffer.alloc(SECTOR));
      await this.store.flush();
      await this.store.write(newCapacity, bytes);
    } else {
      // the switch: the new footer over the old one, in place (one sector). Every reader takes
      // the size from the footer at the end and the data from offset 0, so from here the disk
      // is the new one; the bytes after it up to the footer are slack (a leak)
      await this.store.write(this.fileSize - FOOTER_SIZE, bytes);
      await this.store.flush();
      await this.cutFixedSlack(newCapacity, bytes);
    }
  }

  /**
   * A fixed image whose file is longer than its data area plus the footer (a shrink killed
   * after its switch): the footer written again right after the data (inside the slack:
   * nothing reads it), flush, then the file cut after it. Until the cut the footer at the end
   * is still the last sector, so every moment is the same disk.
   */
  private async cutFixedSlack(at: number, footer: Buffer): Promise<void> {
    if (this.fileSize - FOOTER_SIZE <= at) return;
    await this.store.write(at, footer);
    await this.store.flush();
    await this.store.truncate(at + FOOTER_SIZE);
    await this.store.flush();
    this.fileSize = at + FOOTER_SIZE;
  }

  private async resizeDynamic(newCapacity: number, next: FooterValue): Promise<void> {
    const d = this.dyn!;
    // a stored block that holds the end keeps bytes past it: zeros there while they lie past
    // the end (grow: the old end, before the switch; shrink: the new end, after it), so that
    // they cannot reappear when the disk grows again and a stop shows the old or the new disk
    // (QEMU ignores the sector bitmaps: the data itself must be zeros)
    const zeroPastEnd = async (end: number) => {
      const within = end % d.blockSize;
      const last = d.bat[Math.floor(end / d.blockSize)];
      if (within === 0 || last === undefined || last === BAT_UNUSED) return;
      const z = Buffer.alloc(Math.min(d.blockSize - within, 1024 * 1024));
      const at = last * SECTOR + d.bitmapBytes + within;
      for (let done = 0; done < d.blockSize - within; done += z.length) await this.store.write(at + done, z.subarray(0, Math.min(z.length, d.blockSize - within - done)));
      await this.store.flush();
    };
    const oldNeed = d.bat.length;
    const need = ceilDiv(newCapacity, d.blockSize);
    if (need > MAX_BAT_ENTRIES) throw new DiskError('INVAL', 'the BAT would be too large', { path: this.path, field: 'maxTableEntries', expected: `<= ${MAX_BAT_ENTRIES}`, found: need });
    if (newCapacity < this.capacity) {
      // the footer is the switch; what lies past the new end is invisible after it
      await this.saveFooter(next);
      await this.store.flush();
      await zeroPastEnd(newCapacity);
      if (need < oldNeed) await this.store.write(d.tableOffset + need * 4, Buffer.alloc((oldNeed - need) * 4, 0xff));
      return;
    }
    await zeroPastEnd(this.capacity);
    const stride = d.bitmapBytes + d.blockSize;
    let entries = d.entries;
    if (need > entries) {
      entries = roundUp(need * 4, SECTOR) / 4;
      const batEnd = d.tableOffset + entries * 4;
      if (d.headerOffset > d.tableOffset && d.headerOffset < batEnd) {
        throw new DiskError('NOTSUPPORTED', 'the dynamic header lies where a larger BAT must go', { path: this.path, struct: 'dynamicHeader', field: 'tableOffset', found: d.tableOffset });
      }
      // blocks in the way go to the end of the file, lowest first (as a new block is written)
      const inWay: number[] = [];
      for (let b = 0; b < oldNeed; b++) {
        const at = d.bat[b]!;
        if (at !== BAT_UNUSED && at * SECTOR < batEnd) inWay.push(b);
      }
      const buf = Buffer.alloc(stride);
      for (const b of inWay) {
        const from = d.bat[b]! * SECTOR;
        const to = Math.max(d.nextFree, roundUp(batEnd, SECTOR));
        await this.store.readInto(buf, from);
        await this.store.write(to + stride, this.footerBytes);
        await this.store.write(to, buf);
        await this.store.flush();
        d.bat[b] = to / SECTOR;
        await this.writeBatEntries([b]);
        await this.store.flush();
        d.nextFree = to + stride;
        this.fileSize = d.nextFree + FOOTER_SIZE;
      }
      if (batEnd > d.nextFree) {
        // the BAT reaches past the last block: a footer after it first (the file must end in one)
        await this.store.write(batEnd, this.footerBytes);
        await this.store.flush();
        d.nextFree = batEnd;
        this.fileSize = batEnd + FOOTER_SIZE;
      }
    }
    // the new entries unused (a shrunk disk may have left old block addresses there)
    await this.store.write(d.tableOffset + oldNeed * 4, Buffer.alloc((entries - oldNeed) * 4, 0xff));
    await this.store.flush();
    if (entries !== d.entries) {
      await this.saveHeader({ ...this.header!, maxTableEntries: entries });
      await this.store.flush();
    }
    await this.saveFooter(next);
  }

  async flush(): Promise<void> {
    await this.commitPending();
    await this.store.flush();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (!this.readOnly) await this.flush();
    } finally {
      this.closed = true;
      await this.store.close();
    }
  }

  private checkWritable(): void {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.path });
  }

  // ------------------------------------------------------------------ footer and header

  /** The footer at the end first (it is authoritative), then its copy at offset 0. */
  private async saveFooter(next: FooterValue): Promise<void> {
    const bytes = encodeFooter(next);
    await this.store.write(this.fileSize - FOOTER_SIZE, bytes);
    if (this.dyn) await this.store.write(0, bytes);
    this.footer = { ...next, checksum: bytes.readUInt32BE(FOOTER_CHECKSUM_AT) };
    this.footerBytes = bytes;
  }

  private async saveHeader(next: DynamicHeaderValue): Promise<void> {
    const bytes = encodeHeader(next);
    await this.store.write(this.dyn!.headerOffset, bytes);
    this.header = { ...next, checksum: bytes.readUInt32BE(HEADER_CHECKSUM_AT) };
  }

  // ------------------------------------------------------------------ metadata

  metadataKeys(): string[] {
    const keys = ['creatorApplication', 'creatorVersion', 'creatorHostOS', 'uuid', 'geometry', 'diskType', 'savedState', 'timestamp', 'originalSize', 'currentSize'];
    if (this.type === 'differencing') keys.push('parentUuid', 'parentName', 'parentTimestamp');
    return keys;
  }

  readMetadata(key: string): string | undefined {
    const f = this.footer;
    const diff = this.type === 'differencing' ? this.header : undefined;
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
        return this.type;
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
  async writeMetadata(key: string, value: string): Promise<void> {
    this.checkWritable();
    await this.commitPending();
    const where = { path: this.path, struct: 'footer', field: key, found: value };
    if ((READ_ONLY_KEYS as readonly string[]).includes(key)) {
      throw new DiskError('NOTSUPPORTED', `${key} is read-only: it follows from the image's structure`, { ...where, expected: WRITABLE_KEYS.join(', ') });
    }
    if (!(WRITABLE_KEYS as readonly string[]).includes(key)) {
      throw new DiskError('NOTSUPPORTED', 'VHD has no free-form metadata', { ...where, expected: WRITABLE_KEYS.join(', ') });
    }
    const next = { ...this.footer };
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
    const size = capacityOf(next, this.path);
    if (size !== this.capacity) {
      throw new DiskError('INVAL', `this ${key} would change the disk size from ${this.capacity} to ${size} bytes (the creator decides whether the size comes from the geometry)`, { ...where, expected: `a value keeping ${this.capacity} bytes` });
    }
    await this.saveFooter(next);
  }

  async info(): Promise<DiskInfo> {
    let allocatedBytes = 0;
    for (const r of await this.blockStatus(0, this.capacity)) if (r.state === 'data') allocatedBytes += r.length;
    const link = this.backing();
    const f = this.footer;
    const geometry: Geometry = { cylinders: f.cylinders, heads: f.heads, sectors: f.sectorsPerTrack };
    return {
      format: 'vhd',
      type: this.type,
      capacity: this.capacity,
      sectors: this.capacity / SECTOR,
      geometry,
      numLinks: 1,
      parent: link ? link.hint || link.hints?.[0] : undefined,
      parentCid: link?.parentId,
      uuid: this.identity(),
      version: f.fileFormatVersion >>> 16,
      extents: [{ path: this.path, type: this.type.toUpperCase(), access: this.readOnly ? 'RDONLY' : 'RW', length: this.capacity, virtualOffset: 0, fileOffset: 0 }],
      allocatedBytes,
      fileSize: this.fileSize,
      diskSize: (await this.namespace.stat(this.path)).allocated ?? this.fileSize,
      readOnly: this.readOnly,
      files: [this.path],
      ...(this.warnings.length > 0 ? { warnings: [...this.warnings] } : {}),
    };
  }
}

// ------------------------------------------------------------------ helpers

interface Fresh {
  b: number;
  s0: number;
  s1: number;
  /** sectors s0..s1 of the block */
  data: Buffer;
}

interface Region {
  name: string;
  start: number;
  end: number;
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

/** The virtual size a footer gives, by its creator's rule (structs.ts sizeRule), whole sectors. */
export function capacityOf(f: FooterValue, path: string): number {
  let size: number;
  let field = 'currentSize';
  if (sizeRule(f) === 'chs') {
    size = geometrySectors({ cylinders: f.cylinders, heads: f.heads, sectors: f.sectorsPerTrack }) * SECTOR;
    field = 'cylinders';
  } else {
    size = Math.floor(toSafeNumber(f.currentSize, { path, struct: 'footer', field }) / SECTOR) * SECTOR;
  }
  if (size > MAX_VHD_BYTES) {
    throw new DiskError('CORRUPT', 'disk is larger than the VHD limit of 2040 GiB', { path, struct: 'footer', field, expected: `<= ${MAX_VHD_BYTES}`, found: size });
  }
  return size;
}

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

const BITS = new Bitmap('msb');
const setBits = (bm: Buffer, s0: number, s1: number): void => BITS.set(bm, s0, s1);
/** Runs of equal bits over sectors [s0, s1): [from, to, set]. */
export const sectorRuns = (bm: Buffer, s0: number, s1: number): [number, number, boolean][] => BITS.runs(bm, s0, s1);

/** `chunk` placed at byte `at` of `sectors` zeroed sectors (no copy when it already is whole sectors). */
function padToSectors(chunk: Buffer, at: number, sectors: number): Buffer {
  if (at === 0 && chunk.length === sectors * SECTOR) return chunk;
  const buf = Buffer.alloc(sectors * SECTOR);
  chunk.copy(buf, at);
  return buf;
}

function decodeLocator(code: number, data: Buffer): string {
  let text: string;
  if (code === PLATFORM.W2ru || code === PLATFORM.W2ku) text = data.subarray(0, data.length & ~1).toString('utf16le');
  else if (code === PLATFORM.MacX) {
    const url = data.toString('utf8');
    try {
      text = url.startsWith('file://') ? decodeURIComponent(new URL(url).pathname) : url;
    } catch {
      text = url;
    }
  } else text = data.toString('utf8');
  return text.replace(/\0+$/, '');
}

/**
 * Bytes a locator's area holds for certain. The data space is a sector count per the spec and a
 * byte count in what Virtual PC, Hyper-V and VirtualBox write: read it as bytes when that covers
 * the data (the smaller reading), as sectors otherwise.
 */
function locatorCapacity(l: Locator): number {
  return Math.max(l.length, l.space >= l.length ? l.space : l.space * SECTOR);
}

function encodeLocators(placed: { code: number; data: Buffer; offset: number; space: number }[]): Buffer {
  const buf = Buffer.alloc(8 * 24);
  placed.forEach((p, i) => ParentLocatorEntry.encode({ platformCode: p.code, platformDataSpace: p.space, platformDataLength: p.data.length, platformDataOffset: BigInt(p.offset) }, buf, i * 24));
  return buf;
}

/**
 * What a child records about `parentPath` (absolute, in the child's namespace): the parent's
 * unique id, its footer timestamp (as the chain layer read it: VhdImage.linkRecord), its file
 * name (UTF-16BE, as VirtualBox writes it) and two locators in UTF-16LE: W2ku with the absolute
 * path and W2ru with the path relative to the child's folder (".\name", "..\dir\name"), from
 * `hint` when it is relative. `childPath` is the child's absolute name.
 */
export function parentLinkage(childPath: string, parentPath: string, hint: string, parentUniqueId: Buffer, parentTimestamp: number): ParentLinkage {
  const name = encodeUtf16be(basename(parentPath));
  if (name.length > 512) {
    throw new DiskError('NAMETOOLONG', 'the parent file name does not fit the 256 UTF-16 units of the parent unicode name', { path: childPath, struct: 'dynamicHeader', field: 'parentUnicodeName', found: basename(parentPath) });
  }
  const parentUnicodeName = Buffer.alloc(512);
  name.copy(parentUnicodeName);
  const rel = hint !== '' && !isAbsolute(hint) ? hint : relative(dirname(childPath), parentPath);
  const win = rel.replace(/\//g, '\\');
  const w2ru = win.startsWith('..\\') || win === '..' ? win : `.\\${win}`;
  const locators = [
    { code: PLATFORM.W2ku, data: Buffer.from(parentPath, 'utf16le') },
    { code: PLATFORM.W2ru, data: Buffer.from(w2ru, 'utf16le') },
  ];
  for (const l of locators) {
    if (l.data.length > MAX_LOCATOR_BYTES) throw new DiskError('NAMETOOLONG', 'the parent path is too long for a parent locator', { path: childPath, struct: 'dynamicHeader', field: 'parentLocator', found: parentPath });
  }
  return { parentUniqueId, parentTimestamp, parentUnicodeName, locators };
}
