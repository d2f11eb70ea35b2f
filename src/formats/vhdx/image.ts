/**
 * VHDX driver: one fixed, dynamic or differencing VHDX file opened as an Image.
 *
 * Design notes (full map in NOTES.md)
 * - Open: file identifier, both headers (CRC-32C; the valid one with the higher sequence
 *   number), the log (a pending sequence is replayed in place on a read-write open, into an
 *   in-memory overlay on a read-only one), both region tables (the first valid copy), the
 *   metadata table and items, the BAT. Everything is checked against the file size before any
 *   allocation; a refused open never writes.
 * - Session: a read-write open writes the non-current header with sequence+1 and a new
 *   FileWriteGuid before anything else; the first write of user data renews the DataWriteGuid
 *   (the identity children record) unless the caller preserves it (commit, merge, rebase).
 * - Metadata changes (BAT entries, metadata region items) are buffered and go through the log
 *   at flush()/close() and in metadata operations: flush the data, write the log entry, flush,
 *   apply in place, flush. A crash at any point leaves the old or the new metadata, never a mix.
 * - Data: new blocks go to the end of the file (1 MiB aligned), the file is extended (a hole)
 *   before the data is written, so unwritten parts of a new block read as zeros; sector bitmaps
 *   of differencing images are written in place, data first, then the bits that expose it.
 * - Block states: FULLY_PRESENT = data; PARTIALLY_PRESENT = per sector from the bitmap (set =
 *   data, clear = unallocated); ZERO = zero; NOT_PRESENT, UNDEFINED, UNMAPPED = unallocated
 *   (zeros alone, the parent's data in a chain). clusterSize is the logical sector size.
 */
import { writeBitmapped } from '../common/bitmapped-write.js';
import { Bitmap } from '../../binary/bitmap.js';
import { dirname, isAbsolute, relative } from '../../core/names.js';
import { DiskError, atMost } from '../../core/errors.js';
import { roundUp, toSafeNumber } from '../../core/ints.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { BackingChange, BackingLink, BlockExtent, BlockState, Capabilities, CheckFinding, CheckOptions, CheckReport, DiskInfo, Image, InPlaceOptions, InPlaceResult, OpenOptions } from '../types.js';
import { LogOverlayStore, LogWriter, applyReplay, replayOf, scanLog, type Replay } from './log.js';
import {
  ALIGN,
  BITMAP,
  BITMAP_BLOCK_SIZE,
  FILE_SIGNATURE,
  FileParameters,
  GUIDS,
  HAS_PARENT,
  HEADER_OFFSETS,
  HEADER_SECTION,
  HEADER_SIGNATURE,
  HEADER_SIZE,
  Header,
  ITEM_MIN_LENGTH,
  ITEM_NAMES,
  LEAVE_BLOCKS_ALLOCATED,
  LOG_SECTOR,
  MAX_BAT_ENTRIES,
  MAX_BLOCK_SIZE,
  MAX_LOG_LENGTH,
  MAX_METADATA_ENTRIES,
  MAX_METADATA_ITEM,
  MAX_REGION_ENTRIES,
  MAX_VIRTUAL_SIZE,
  META_IS_REQUIRED,
  METADATA_SIGNATURE,
  METADATA_TABLE_SIZE,
  MIN_BLOCK_SIZE,
  MetadataTableEntry,
  MetadataTableHeader,
  MiB,
  PAYLOAD,
  REGION_REQUIRED,
  REGION_SIGNATURE,
  REGION_TABLE_OFFSETS,
  REGION_TABLE_SIZE,
  RegionTableEntry,
  RegionTableHeader,
  ZERO_GUID,
  batEntry,
  batEntryCount,
  bitmapIndex,
  chunkRatio,
  creatorText,
  decodeParentLocator,
  encodeHeader,
  encodeParentLocator,
  guidBytes,
  guidFromIdentity,
  guidText,
  isZeroGuid,
  newGuid,
  normalizeGuid,
  payloadIndex,
  vhdxChecksum,
  withChecksum,
  type HeaderValue,
  type ParentLocator,
} from './structs.js';
import { isZero } from '../../binary/zeros.js';
import { planRelayout, type PlanItem } from '../common/relayout-plan.js';

export const VHDX_CAPABILITIES: Capabilities = Object.freeze({
  write: 'native',
  blockStatus: 'native',
  zero: 'emulate',
  metadata: true,
  createTypes: ['dynamic', 'fixed'],
  differencing: true,
  differencingSameSize: true,
  parentLink: 'identity',
  // Hyper-V renews the DataWriteGuid on the first data write of a session, and a child records
  // its parent's DataWriteGuid: like a VMDK CID, the identity follows the content
  identityFollowsContent: true,
  split: false,
  discard: 'native',
  resize: 'grow-shrink',
  flush: 'exclusive',
  check: 'repair',
  compact: 'native',
  defragment: 'native',
});

const READ_ONLY_CAPABILITIES: Capabilities = Object.freeze({ ...VHDX_CAPABILITIES, write: 'none' });

/** cached sector-bitmap slices, in bytes */
const BITMAP_CACHE_BYTES = 16 * MiB;
/** bytes of the BAT read per request at open */
const BAT_READ_CHUNK = MiB;

interface Region {
  guid: string;
  offset: number;
  length: number;
  required: boolean;
}

interface MetaItem {
  id: string;
  offset: number;
  length: number;
  flags: number;
}

interface HeaderSlot {
  value?: HeaderValue;
  /** why the slot is not usable (for findings) */
  problem?: string;
}

/** one fresh block a write needs */
interface Fresh {
  b: number;
  within: number;
  chunk: Buffer;
  /** the block read as zeros before (ZERO state): it becomes FULLY_PRESENT even in a differencing image */
  fromZero: boolean;
}

export interface VhdxParams {
  blockSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  leaveBlocksAllocated: boolean;
  hasParent: boolean;
}

export class VhdxImage implements Image {
  readonly format = 'vhdx';
  readonly capabilities: Capabilities;
  readonly clusterSize: number;
  private closed = false;
  /** a metadata commit failed: nothing more is written (a reopen replays the log) */
  private broken = false;
  private dataGuidRenewed = false;
  private readonly bitmaps = new Map<number, Buffer>();
  private readonly bitmapLimit: number;
  /** BAT entries changed in memory, not yet committed through the log: BAT index -> raw entry */
  private readonly pending = new Map<number, bigint>();
  private readonly logWriter: LogWriter | undefined;
  private readonly sessionGuid = newGuid();

  // geometry
  private readonly cr: number;
  private readonly sectorsPerBlock: number;
  private readonly sliceBytes: number;
  private readonly blocks: number;

  /** set by open: where this image's file is named */
  namespace!: Namespace;
  private constructor(
    readonly path: string,
    private readonly store: ByteStore,
    readonly readOnly: boolean,
    readonly capacity: number,
    private params: VhdxParams,
    private readonly headers: HeaderSlot[],
    private current: number,
    private regions: Region[],
    private bat: Region,
    private readonly meta: Region,
    private items: MetaItem[],
    private virtualDiskId: Buffer,
    private locator: ParentLocator | undefined,
    /** payload block states and file offsets (MiB) */
    private readonly pState: Uint8Array,
    private readonly pOff: Uint32Array,
    /** sector bitmap block states and file offsets (MiB), per chunk */
    private readonly bState: Uint8Array,
    private readonly bOff: Uint32Array,
    private fileSize: number,
    private nextFree: number,
    private readonly creator: string,
    private readonly preserveIdentity: boolean,
    /** what the open found (log replayed or pending, damaged copies, oddities), for check() and info() */
    private readonly findings: CheckFinding[],
  ) {
    this.capabilities = readOnly ? READ_ONLY_CAPABILITIES : VHDX_CAPABILITIES;
    this.clusterSize = params.logicalSectorSize;
    this.cr = chunkRatio(params.logicalSectorSize, params.blockSize);
    this.sectorsPerBlock = params.blockSize / params.logicalSectorSize;
    this.sliceBytes = this.sectorsPerBlock / 8;
    this.blocks = pState.length;
    this.bitmapLimit = Math.max(16, Math.floor(BITMAP_CACHE_BYTES / this.sliceBytes));
    const h = this.header;
    this.logWriter = readOnly || h.logLength === 0 ? undefined : new LogWriter(store, Number(h.logOffset), h.logLength);
  }

  get type(): string {
    return this.params.hasParent ? 'differencing' : this.params.leaveBlocksAllocated ? 'fixed' : 'dynamic';
  }

  private get header(): HeaderValue {
    return this.headers[this.current]!.value!;
  }

  // ------------------------------------------------------------------ open and validation

  static async open(ns: Namespace, path: string, opts: OpenOptions = {}): Promise<VhdxImage> {
    const readOnly = !!opts.readOnly;
    const store = await ns.open(path, { write: !readOnly });
    try {
      const image = await VhdxImage.load(path, store, readOnly, !!opts.preserveIdentity, !!opts.cowByCaller);
      image.namespace = ns;
      return image;
    } catch (err) {
      await store.close().catch(() => {});
      throw err;
    }
  }

  private static async load(path: string, store: ByteStore, readOnly: boolean, preserveIdentity: boolean, cowByCaller: boolean): Promise<VhdxImage> {
    const findings: CheckFinding[] = [];
    const fileSize = await store.size();
    const err = (code: 'CORRUPT' | 'INVALIDDISK' | 'UNSUPPORTEDFEATURE' | 'UNSUPPORTEDDISKVERSION', struct: string, field: string, message: string, expected?: unknown, found?: unknown) =>
      new DiskError(code, message, { path, struct, field, expected, found });

    // ---- file type identifier
    const sig = (await store.readZeroPadded(0, 8)).toString('latin1');
    if (sig !== FILE_SIGNATURE) throw err('INVALIDDISK', 'fileIdentifier', 'signature', 'not a VHDX file: no "vhdxfile" signature at offset 0', FILE_SIGNATURE, sig.replace(/\0+$/, ''));
    if (fileSize < HEADER_SECTION) throw err('CORRUPT', 'fileIdentifier', 'length', 'file is too short for the VHDX header section (truncated)', `>= ${HEADER_SECTION} bytes`, fileSize);
    const creator = creatorText(await store.read(8, 512));

    // ---- headers (§16.1)
    const headers: HeaderSlot[] = [];
    for (const off of HEADER_OFFSETS) headers.push(decodeHeaderSlot(await store.read(off, HEADER_SIZE), path));
    const current = chooseHeader(headers, path);
    const h = headers[current]!.value!;
    headers.forEach((s, i) => {
      if (i !== current && s.problem) findings.push({ kind: 'warning', message: `header ${i + 1} is not usable (${s.problem}); the other copy is current`, struct: 'header', field: s.problem.split(' ')[0], offset: HEADER_OFFSETS[i] });
    });
    if (h.logVersion !== 0) throw err('UNSUPPORTEDDISKVERSION', 'header', 'logVersion', 'unsupported log version', 0, h.logVersion);
    const logOffset = toSafeNumber(h.logOffset, { path, struct: 'header', field: 'logOffset' });
    const logLength = h.logLength;
    if (logLength % ALIGN !== 0) throw err('CORRUPT', 'header', 'logLength', 'log length is not a multiple of 1 MiB', 'a multiple of 1048576', logLength);
    if (logLength > 0) {
      if (logOffset % ALIGN !== 0 || logOffset < HEADER_SECTION) throw err('CORRUPT', 'header', 'logOffset', 'log offset is not a multiple of 1 MiB after the header section', 'a multiple of 1048576, >= 1048576', logOffset);
      if (logOffset + logLength > fileSize) throw err('CORRUPT', 'header', 'logOffset', 'the log lies past the end of the file', atMost(fileSize - logLength), logOffset);
    }

    // ---- the log (§16.5): a pending sequence is read through an overlay until it is replayed
    let replay: Replay | undefined;
    const logGuidSet = !isZeroGuid(h.logGuid);
    if (logGuidSet && logLength > 0) {
      if (logLength > MAX_LOG_LENGTH) throw err('UNSUPPORTEDFEATURE', 'header', 'logLength', 'the log is too long to replay', `<= ${MAX_LOG_LENGTH}`, logLength);
      const scan = scanLog(await store.read(logOffset, logLength), h.logGuid, path);
      if (scan.sequence.length > 0) {
        replay = replayOf(scan.sequence, fileSize, { offset: logOffset, length: logLength }, path);
        findings.push(
          readOnly
            ? { kind: 'corruption', message: `the log holds a sequence of ${scan.sequence.length} entr${scan.sequence.length === 1 ? 'y' : 'ies'} that was never marked applied (the writer did not close the image); read through an in-memory replay: open read-write (or check with repair) to replay it`, struct: 'header', field: 'logGuid', repaired: false }
            : { kind: 'corruption', message: `the log held a sequence of ${scan.sequence.length} entr${scan.sequence.length === 1 ? 'y' : 'ies'} that was never marked applied (the writer did not close the image): replayed`, struct: 'header', field: 'logGuid', repaired: true },
        );
      } else {
        findings.push({ kind: 'warning', message: 'the header names a log but the log holds no entry of it', struct: 'header', field: 'logGuid', repaired: !readOnly });
      }
    }
    const view: ByteStore = replay ? new LogOverlayStore(store, replay, fileSize) : store;
    const viewSize = await view.size();

    // ---- region tables (§16.2)
    const tables = [];
    for (const off of REGION_TABLE_OFFSETS) tables.push(decodeRegionTable(await view.read(off, REGION_TABLE_SIZE), path));
    const chosen = tables.findIndex((t) => t.regions !== undefined);
    if (chosen < 0) throw tables[0]!.error!;
    const regions = tables[chosen]!.regions!;
    const other = tables[1 - chosen]!;
    if (other.error) findings.push({ kind: 'warning', message: `region table ${2 - chosen} is damaged (${other.error.message}); copy ${chosen + 1} is used`, struct: 'regionTable', field: String(other.error.details.field), offset: REGION_TABLE_OFFSETS[1 - chosen], repaired: !readOnly });
    else if (!tables[0]!.bytes!.equals(tables[1]!.bytes!)) findings.push({ kind: 'warning', message: 'the two region tables differ; the first is used', struct: 'regionTable', field: 'copy', offset: REGION_TABLE_OFFSETS[1], repaired: !readOnly });
    const taken: { start: number; end: number; name: string }[] = [{ start: 0, end: HEADER_SECTION, name: 'the header section' }];
    if (logLength > 0) taken.push({ start: logOffset, end: logOffset + logLength, name: 'the log' });
    let batRegion: Region | undefined;
    let metaRegion: Region | undefined;
    regions.forEach((r, i) => {
      const field = `regionTable[${i}]`;
      if (r.offset % ALIGN !== 0 || r.offset < HEADER_SECTION) throw err('CORRUPT', 'regionTable', `${field}.fileOffset`, 'region offset is not a multiple of 1 MiB after the header section', 'a multiple of 1048576, >= 1048576', r.offset);
      if (r.length === 0 || r.length % ALIGN !== 0) throw err('CORRUPT', 'regionTable', `${field}.length`, 'region length is not a positive multiple of 1 MiB', 'a multiple of 1048576', r.length);
      if (r.offset + r.length > viewSize) throw err('CORRUPT', 'regionTable', `${field}.fileOffset`, 'region lies past the end of the file', atMost(viewSize - r.length), r.offset);
      const hit = taken.find((t) => t.start < r.offset + r.length && r.offset < t.end);
      if (hit) throw err('CORRUPT', 'regionTable', `${field}.fileOffset`, `region overlaps ${hit.name}`, `outside ${hit.start}..${hit.end - 1}`, r.offset);
      const name = r.guid === GUIDS.BAT_REGION ? 'BAT' : r.guid === GUIDS.METADATA_REGION ? 'metadata' : undefined;
      taken.push({ start: r.offset, end: r.offset + r.length, name: `the ${name ?? r.guid} region` });
      if (name === 'BAT') {
        if (batRegion) throw err('CORRUPT', 'regionTable', `${field}.guid`, 'two BAT regions', 'one', 2);
        batRegion = r;
      } else if (name === 'metadata') {
        if (metaRegion) throw err('CORRUPT', 'regionTable', `${field}.guid`, 'two metadata regions', 'one', 2);
        metaRegion = r;
      } else if (r.required) {
        throw err('UNSUPPORTEDFEATURE', 'regionTable', `${field}.guid`, 'the file has a required region vdkit does not know', 'BAT or metadata region', r.guid);
      }
    });
    if (!batRegion) throw err('CORRUPT', 'regionTable', 'BAT', 'the region table has no BAT region', GUIDS.BAT_REGION, 'none');
    if (!metaRegion) throw err('CORRUPT', 'regionTable', 'metadata', 'the region table has no metadata region', GUIDS.METADATA_REGION, 'none');

    // ---- metadata (§16.3)
    const mdTable = await view.read(metaRegion.offset, METADATA_TABLE_SIZE);
    const mh = MetadataTableHeader.decode(mdTable, 0, path);
    if (mh.signature !== METADATA_SIGNATURE) throw err('CORRUPT', 'metadataTable', 'signature', 'bad metadata table signature', METADATA_SIGNATURE, mh.signature);
    if (mh.entryCount > MAX_METADATA_ENTRIES) throw err('CORRUPT', 'metadataTable', 'entryCount', 'too many metadata table entries', `<= ${MAX_METADATA_ENTRIES}`, mh.entryCount);
    const items: MetaItem[] = [];
    for (let i = 0; i < mh.entryCount; i++) {
      const e = MetadataTableEntry.decode(mdTable, 32 + i * 32, path);
      const id = guidText(e.itemId);
      const name = ITEM_NAMES[id] ?? `metadataTable[${i}]`;
      if (e.length > MAX_METADATA_ITEM) throw err('CORRUPT', 'metadataTable', `${name}.length`, 'metadata item is longer than 1 MiB', `<= ${MAX_METADATA_ITEM}`, e.length);
      if ((e.length === 0) !== (e.offset === 0)) throw err('CORRUPT', 'metadataTable', `${name}.offset`, 'metadata item offset is 0 exactly when its length is 0', e.length === 0 ? 0 : '>= 65536', e.offset);
      if (e.length > 0 && (e.offset < METADATA_TABLE_SIZE || e.offset + e.length > metaRegion.length)) {
        throw err('CORRUPT', 'metadataTable', `${name}.offset`, 'metadata item lies outside the metadata region', `${METADATA_TABLE_SIZE}..${metaRegion.length - e.length}`, e.offset);
      }
      if (ITEM_NAMES[id] !== undefined) {
        if (items.some((x) => x.id === id)) throw err('CORRUPT', 'metadataTable', name, 'metadata item appears twice', 'once', 2);
        if (e.length < ITEM_MIN_LENGTH[id]!) throw err('CORRUPT', 'metadataTable', `${name}.length`, 'metadata item is too short', `>= ${ITEM_MIN_LENGTH[id]}`, e.length);
      } else if (e.flags & META_IS_REQUIRED) {
        throw err('UNSUPPORTEDFEATURE', 'metadataTable', `${name}.itemId`, 'the file has a required metadata item vdkit does not know', 'a known item', id);
      }
      const clash = items.find((x) => x.length > 0 && e.length > 0 && x.offset < e.offset + e.length && e.offset < x.offset + x.length);
      if (clash) throw err('CORRUPT', 'metadataTable', `${name}.offset`, `metadata item overlaps ${ITEM_NAMES[clash.id] ?? clash.id}`, `outside ${clash.offset}..${clash.offset + clash.length - 1}`, e.offset);
      items.push({ id, offset: e.offset, length: e.length, flags: e.flags });
    }
    const item = async (id: string): Promise<Buffer | undefined> => {
      const it = items.find((x) => x.id === id);
      return it ? view.read(metaRegion!.offset + it.offset, it.length) : undefined;
    };
    const need = async (id: string) => {
      const b = await item(id);
      if (!b) throw err('CORRUPT', 'metadataTable', ITEM_NAMES[id]!, `the required ${ITEM_NAMES[id]} metadata item is missing`, id, 'none');
      return b;
    };
    const fp = FileParameters.decode(await need(GUIDS.FILE_PARAMETERS), 0, path);
    const blockSize = fp.blockSize;
    if (!isPow2(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
      throw err('CORRUPT', 'fileParameters', 'blockSize', 'invalid block size', `a power of two from ${MIN_BLOCK_SIZE} to ${MAX_BLOCK_SIZE}`, blockSize);
    }
    const logicalSectorSize = (await need(GUIDS.LOGICAL_SECTOR_SIZE)).readUInt32LE(0);
    if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) throw err('CORRUPT', 'logicalSectorSize', 'logicalSectorSize', 'invalid logical sector size', '512 or 4096', logicalSectorSize);
    const physicalSectorSize = (await need(GUIDS.PHYSICAL_SECTOR_SIZE)).readUInt32LE(0);
    if (physicalSectorSize !== 512 && physicalSectorSize !== 4096) throw err('CORRUPT', 'physicalSectorSize', 'physicalSectorSize', 'invalid physical sector size', '512 or 4096', physicalSectorSize);
    const rawSize = (await need(GUIDS.VIRTUAL_DISK_SIZE)).readBigUInt64LE(0);
    if (rawSize === 0n || rawSize > BigInt(MAX_VIRTUAL_SIZE) || rawSize % BigInt(logicalSectorSize) !== 0n) {
      throw err('CORRUPT', 'virtualDiskSize', 'virtualDiskSize', 'invalid virtual disk size', `a multiple of ${logicalSectorSize} from ${logicalSectorSize} to ${MAX_VIRTUAL_SIZE} (64 TiB)`, rawSize);
    }
    const capacity = Number(rawSize);
    const virtualDiskId = Buffer.from((await need(GUIDS.VIRTUAL_DISK_ID)).subarray(0, 16));
    const hasParent = (fp.flags & HAS_PARENT) !== 0;
    const params: VhdxParams = { blockSize, logicalSectorSize, physicalSectorSize, leaveBlocksAllocated: (fp.flags & LEAVE_BLOCKS_ALLOCATED) !== 0, hasParent };
    let locator: ParentLocator | undefined;
    if (hasParent) {
      locator = decodeParentLocator(await need(GUIDS.PARENT_LOCATOR), path);
      if (locator.type !== GUIDS.VHDX_PARENT_LOCATOR_TYPE) throw err('UNSUPPORTEDFEATURE', 'parentLocator', 'parentLocator.locatorType', 'the parent is not a VHDX (unknown locator type)', GUIDS.VHDX_PARENT_LOCATOR_TYPE, locator.type);
      const linkage = locator.entries.get('parent_linkage');
      if (linkage === undefined) throw err('CORRUPT', 'parentLocator', 'parent_linkage', 'the parent locator has no parent_linkage', 'the parent DataWriteGuid', 'none');
      if (normalizeGuid(linkage) === undefined) throw err('CORRUPT', 'parentLocator', 'parent_linkage', 'parent_linkage is not a GUID', '{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}', linkage.slice(0, 80));
    }

    // ---- BAT (§16.4)
    const cr = chunkRatio(logicalSectorSize, blockSize);
    const blocks = Math.ceil(capacity / blockSize);
    const chunks = Math.ceil(blocks / cr);
    const entries = batEntryCount(blocks, cr, hasParent);
    if (entries * 8 > batRegion.length) throw err('CORRUPT', 'regionTable', 'BAT.length', 'the BAT region is smaller than the BAT', `>= ${entries * 8} bytes`, batRegion.length);
    if (entries > MAX_BAT_ENTRIES) throw err('UNSUPPORTEDFEATURE', 'regionTable', 'BAT.length', 'the BAT has more entries than vdkit holds in memory (use a larger block size)', `<= ${MAX_BAT_ENTRIES}`, entries);
    const pState = new Uint8Array(blocks);
    const pOff = new Uint32Array(blocks);
    const bState = new Uint8Array(chunks);
    const bOff = new Uint32Array(chunks);
    let reservedBits = 0;
    let ignoredBitmaps = 0;
    let present = 0;
    const blockLen = (n: number) => Math.min(blockSize, capacity - n * blockSize);
    const badEntry = (i: number, message: string, expected: unknown, found: unknown) => err('CORRUPT', 'BAT', `BAT[${i}]`, message, expected, found);
    for (let first = 0; first < entries; first += BAT_READ_CHUNK / 8) {
      const count = Math.min(BAT_READ_CHUNK / 8, entries - first);
      const raw = await view.read(batRegion.offset + first * 8, count * 8);
      for (let j = 0; j < count; j++) {
        const i = first + j;
        const lo = raw.readUInt32LE(j * 8);
        const hi = raw.readUInt32LE(j * 8 + 4);
        const state = lo & 7;
        if (lo & 0xffff8) reservedBits++;
        // offset in MiB: bits 20..63
        const offMiB = hi * 4096 + (lo >>> 20);
        const isBitmap = i % (cr + 1) === cr;
        if (isBitmap) {
          const k = (i - cr) / (cr + 1);
          if (state !== BITMAP.NOT_PRESENT && state !== BITMAP.PRESENT) throw badEntry(i, 'invalid sector bitmap block state', '0 (NOT_PRESENT) or 6 (PRESENT)', state);
          if (state !== BITMAP.PRESENT) continue;
          if (!hasParent) {
            ignoredBitmaps++;
            continue;
          }
          if (offMiB < 1) throw badEntry(i, 'sector bitmap block lies in the header section', '>= 1 MiB', `${offMiB} MiB`);
          if (offMiB * MiB + BITMAP_BLOCK_SIZE > viewSize) throw badEntry(i, 'sector bitmap block lies past the end of the file', atMost(Math.floor((viewSize - BITMAP_BLOCK_SIZE) / MiB), ' MiB'), `${offMiB} MiB`);
          bState[k] = state;
          bOff[k] = offMiB;
          present++;
        } else {
          const n = i - Math.floor(i / (cr + 1));
          if (n >= blocks) continue;
          if (state === 4 || (state === PAYLOAD.PARTIALLY_PRESENT && !hasParent)) {
            throw badEntry(i, `invalid payload block state for a ${hasParent ? 'differencing' : params.leaveBlocksAllocated ? 'fixed' : 'dynamic'} image`, hasParent ? '0-3, 6 or 7' : '0-3 or 6', state);
          }
          pState[n] = state === PAYLOAD.UNMAPPED_V095 ? PAYLOAD.UNMAPPED : state;
          if (state === PAYLOAD.FULLY_PRESENT || state === PAYLOAD.PARTIALLY_PRESENT) {
            if (offMiB < 1) throw badEntry(i, 'payload block lies in the header section', '>= 1 MiB', `${offMiB} MiB`);
            if (offMiB * MiB + blockLen(n) > viewSize) throw badEntry(i, 'payload block lies past the end of the file', atMost(Math.floor((viewSize - blockLen(n)) / MiB), ' MiB'), `${offMiB} MiB`);
            pOff[n] = offMiB;
            present++;
          }
        }
      }
    }
    for (let n = 0; n < blocks; n++) {
      if (pState[n] === PAYLOAD.PARTIALLY_PRESENT && bState[Math.floor(n / cr)] !== BITMAP.PRESENT) {
        throw badEntry(payloadIndex(n, cr), 'a partially present block has no sector bitmap block', `BAT[${bitmapIndex(Math.floor(n / cr), cr)}] PRESENT`, 'NOT_PRESENT');
      }
    }
    if (present * MiB > viewSize) throw err('CORRUPT', 'BAT', 'BAT', 'the BAT names more blocks than fit in the file', `<= ${Math.floor(viewSize / MiB)}`, present);
    // no two blocks, and no block and structure, overlap
    const used = structureRanges(regions, logOffset, logLength);
    checkOverlaps(pState, pOff, bState, bOff, blockSize, cr, used, path);
    if (reservedBits > 0) findings.push({ kind: 'warning', message: `${reservedBits} BAT entries have reserved bits set (ignored)`, struct: 'BAT', field: 'reserved' });
    if (ignoredBitmaps > 0) findings.push({ kind: 'warning', message: `${ignoredBitmaps} sector bitmap entries are PRESENT in an image without a parent (ignored)`, struct: 'BAT', field: 'BAT' });

    let end = Math.max(viewSize, ...used.map((u) => u.end));
    for (let n = 0; n < blocks; n++) if (pState[n] === PAYLOAD.FULLY_PRESENT || pState[n] === PAYLOAD.PARTIALLY_PRESENT) end = Math.max(end, pOff[n]! * MiB + blockSize);
    for (let k = 0; k < chunks; k++) if (bState[k] === BITMAP.PRESENT) end = Math.max(end, bOff[k]! * MiB + BITMAP_BLOCK_SIZE);

    const image = new VhdxImage(
      path,
      readOnly ? view : store,
      readOnly,
      capacity,
      params,
      headers,
      current,
      regions,
      batRegion,
      metaRegion,
      items,
      virtualDiskId,
      locator,
      pState,
      pOff,
      bState,
      bOff,
      viewSize,
      roundUp(end, ALIGN),
      creator,
      preserveIdentity,
      findings,
    );
    // A differencing link alone does not hold the whole disk: a partial-sector write would
    // zero-fill the rest of a sector its parent holds. Only the chain layer may write it.
    // (Refused before the session starts: a refused open writes nothing.)
    if (!readOnly && hasParent && !cowByCaller) {
      throw new DiskError('PARTIALCHAIN', 'this VHDX is a differencing image: open its chain (without singleLink) to write to it, or open this link read-only to inspect it', {
        path,
        field: 'hasParent',
        found: 'differencing',
      });
    }
    if (!readOnly) {
      try {
        await image.startSession(replay, chosen, tables.map((t) => t.bytes));
      } catch (e) {
        image.broken = true;
        throw e;
      }
    }
    return image;
  }

  /**
   * A read-write session starts: the non-current header gets sequence+1 and a new FileWriteGuid
   * before anything else is written; then a pending log is replayed in place and emptied
   * (LogGuid 0); a damaged or different second region table is rewritten from the one in use.
   */
  private async startSession(replay: Replay | undefined, chosen: number, tables: Buffer[]): Promise<void> {
    await this.updateHeader({});
    if (replay) {
      await applyReplay(this.store, replay);
      this.fileSize = await this.store.size();
    }
    if (!isZeroGuid(this.header.logGuid)) await this.emptyLog();
    const other = 1 - chosen;
    if (!tables[other]!.equals(tables[chosen]!)) {
      await this.store.write(REGION_TABLE_OFFSETS[other]!, tables[chosen]!);
      await this.store.flush();
    }
  }

  // ------------------------------------------------------------------ headers

  /**
   * Write the non-current header slot with sequence+1, this session's FileWriteGuid and
   * `changes`, then flush; that slot becomes current. A torn write leaves the old header valid.
   */
  private async updateHeader(changes: Partial<Pick<HeaderValue, 'dataWriteGuid' | 'logGuid'>>): Promise<void> {
    const cur = this.header;
    const slot = 1 - this.current;
    const next: HeaderValue = { ...cur, ...changes, signature: HEADER_SIGNATURE, sequenceNumber: cur.sequenceNumber + 1n, fileWriteGuid: this.sessionGuid, version: 1, logVersion: 0 };
    const bytes = encodeHeader(next);
    await this.store.write(HEADER_OFFSETS[slot]!, bytes);
    await this.store.flush();
    this.headers[slot] = { value: { ...next, checksum: bytes.readUInt32LE(4) } };
    this.current = slot;
  }

  /** the first change of user data in a session renews the DataWriteGuid (unless the caller preserves it) */
  private async beginDataWrite(): Promise<void> {
    if (this.dataGuidRenewed || this.preserveIdentity) return;
    this.dataGuidRenewed = true;
    await this.updateHeader({ dataWriteGuid: newGuid() });
  }

  /**
   * Every log entry is applied: mark the log empty (LogGuid 0) in both header slots, so that
   * neither copy sends a later open to replay entries whose FlushedFileOffset no longer holds
   * (the file is cut shorter after this by makeEmpty and repair).
   */
  private async emptyLog(): Promise<void> {
    if (isZeroGuid(this.header.logGuid) && isZeroGuid(this.headers[1 - this.current]!.value?.logGuid ?? ZERO_GUID)) return;
    await this.updateHeader({ logGuid: ZERO_GUID });
    await this.updateHeader({ logGuid: ZERO_GUID });
  }

  // ------------------------------------------------------------------ chain links

  backing(): BackingLink | undefined {
    if (!this.params.hasParent || !this.locator) return undefined;
    const e = this.locator.entries;
    const rel = e.get('relative_path');
    const hint = rel === undefined ? '' : rel.replace(/\\/g, '/').replace(/^(\.\/)+/, '');
    const hints: string[] = [];
    for (const h of [e.get('absolute_win32_path'), e.get('volume_path')]) if (h && h !== hint && !hints.includes(h)) hints.push(h);
    return { hint, hints, format: 'vhdx', parentId: normalizeGuid(e.get('parent_linkage')!)! };
  }

  identity(): string {
    return guidText(this.header.dataWriteGuid);
  }

  async setIdentity(id: string): Promise<void> {
    this.checkWritable();
    this.dataGuidRenewed = true;
    await this.updateHeader({ dataWriteGuid: guidFromIdentity(id) });
  }

  /**
   * Point this image at another parent (rewrites the parent locator through the log), make a
   * dynamic image a differencing one, or (undefined) make a differencing image a dynamic one.
   */
  async setBacking(link: BackingChange | undefined): Promise<void> {
    this.checkWritable();
    if (this.params.leaveBlocksAllocated && !this.params.hasParent) {
      throw new DiskError('NOTSUPPORTED', 'a fixed VHDX cannot have a parent (only dynamic and differencing ones can)', { path: this.path, field: 'leaveBlocksAllocated', found: 'fixed' });
    }
    if (!link) return this.dropParent();
    const parentPath = link.parentName ?? this.namespace.resolve(this.path, link.hint);
    const locator = parentLocatorItem(this.namespace.absolute(this.path), parentPath, link.hint, guidFromIdentity(link.parentId));
    if (!this.params.hasParent) {
      const entries = batEntryCount(this.blocks, this.cr, true);
      if (entries * 8 > this.bat.length) await this.growBatRegion(entries);
    }
    if (!this.params.hasParent) {
      // sector bitmap entries of a dynamic image mean nothing (they were ignored): make them NOT_PRESENT
      for (let k = 0; k < this.bState.length; k++) this.pending.set(bitmapIndex(k, this.cr), 0n);
    }
    await this.commit();
    const writes = this.setItem(GUIDS.PARENT_LOCATOR, locator, META_IS_REQUIRED);
    if (!this.params.hasParent) writes.push(...this.setItem(GUIDS.FILE_PARAMETERS, fileParametersBytes({ ...this.params, hasParent: true })));
    await this.commit(await this.metadataSectors([...writes, this.tableWrite()]));
    this.params = { ...this.params, hasParent: true };
    this.locator = decodeParentLocator(locator, this.path);
  }

  /**
   * Differencing -> dynamic. The caller (merge, safe rebase) has copied into this image every
   * sector a parent supplied, so what this image does not hold reads as zeros through the parent
   * too. Partially present blocks become fully present (their clear sectors zeroed in the file
   * first), sector bitmap entries are dropped, then one log transaction clears HasParent and
   * removes the parent locator item.
   */
  private async dropParent(): Promise<void> {
    if (!this.params.hasParent) return;
    for (let n = 0; n < this.blocks; n++) {
      if (this.pState[n] !== PAYLOAD.PARTIALLY_PRESENT) continue;
      const bm = await this.bitmap(n);
      const base = this.pOff[n]! * MiB;
      const ls = this.params.logicalSectorSize;
      const last = Math.ceil(this.blockLen(n) / ls);
      for (const [a, z, set] of sectorRuns(bm, 0, last)) if (!set) await this.zeroFill(base + a * ls, (z - a) * ls);
      this.setPayload(n, PAYLOAD.FULLY_PRESENT, this.pOff[n]!);
    }
    for (let k = 0; k < this.bState.length; k++) {
      if (this.bState[k] === BITMAP.NOT_PRESENT) continue;
      this.bState[k] = BITMAP.NOT_PRESENT;
      this.bOff[k] = 0;
      this.pending.set(bitmapIndex(k, this.cr), 0n);
    }
    this.bitmaps.clear();
    await this.commit();
    const writes = this.removeItem(GUIDS.PARENT_LOCATOR);
    writes.push(...this.setItem(GUIDS.FILE_PARAMETERS, fileParametersBytes({ ...this.params, hasParent: false })));
    await this.commit(await this.metadataSectors([...writes, this.tableWrite()]));
    this.params = { ...this.params, hasParent: false };
    this.locator = undefined;
  }

  /** Drop everything this image stores: every block NOT_PRESENT, the file cut back to its structures. */
  async makeEmpty(): Promise<void> {
    this.checkWritable();
    if (this.params.leaveBlocksAllocated && !this.params.hasParent) throw new DiskError('NOTSUPPORTED', 'a fixed VHDX cannot be emptied', { path: this.path, field: 'leaveBlocksAllocated', found: 'fixed' });
    await this.beginDataWrite();
    for (let n = 0; n < this.blocks; n++) if (this.pState[n] !== PAYLOAD.NOT_PRESENT) this.setPayload(n, PAYLOAD.NOT_PRESENT, 0);
    for (let k = 0; k < this.bState.length; k++) {
      if (this.bState[k] === BITMAP.NOT_PRESENT) continue;
      this.bState[k] = BITMAP.NOT_PRESENT;
      this.bOff[k] = 0;
      this.pending.set(bitmapIndex(k, this.cr), 0n);
    }
    this.bitmaps.clear();
    await this.commit();
    await this.emptyLog();
    // nothing references the blocks any more: the file ends after its last structure
    const end = roundUp(Math.max(...structureRanges(this.regions, Number(this.header.logOffset), this.header.logLength).map((u) => u.end)), ALIGN);
    if (end < this.fileSize) {
      await this.store.truncate(end);
      await this.store.flush();
      this.fileSize = end;
    }
    this.nextFree = roundUp(Math.max(this.fileSize, end), ALIGN);
  }

  // ------------------------------------------------------------------ discard / compact

  private get fixed(): boolean {
    return this.params.leaveBlocksAllocated && !this.params.hasParent;
  }

  /**
   * Whole blocks: NOT_PRESENT in a base, PAYLOAD_BLOCK_ZERO in a differencing image (zeros, not
   * the parent), committed through the log, then the file closed up (closeUp). Parts of blocks:
   * zeros written where the block is stored; in a differencing image zeros over the whole
   * sectors of the range wherever the block is not ZERO (sector bitmaps make that exact; a
   * partial sector is left to the chain layer). A fixed image gets zeros written.
   */
  async discard(offset: number, length: number): Promise<void> {
    this.checkWritable();
    await this.beginDataWrite();
    const bs = this.params.blockSize;
    const ls = this.params.logicalSectorSize;
    const diff = this.params.hasParent;
    const end = offset + length;
    let dropped = false;
    for (let n = Math.floor(offset / bs); n * bs < end; n++) {
      const from = Math.max(offset, n * bs);
      const to = Math.min(end, n * bs + this.blockLen(n));
      const st = this.pState[n]!;
      if (!this.fixed && from === n * bs && to === n * bs + this.blockLen(n)) {
        const next = diff ? PAYLOAD.ZERO : PAYLOAD.NOT_PRESENT;
        if (st !== next && (diff || st === PAYLOAD.FULLY_PRESENT || st === PAYLOAD.ZERO)) {
          this.setPayload(n, next, 0);
          this.bitmaps.delete(n);
          dropped = true;
        }
      } else if (diff) {
        const a = Math.ceil(from / ls) * ls;
        const z = Math.floor(to / ls) * ls;
        if (z > a && st !== PAYLOAD.ZERO) await this.write(Buffer.alloc(z - a), a);
      } else if (st === PAYLOAD.FULLY_PRESENT) {
        await this.zeroFill(this.pOff[n]! * MiB + (from - n * bs), to - from);
      }
    }
    if (dropped) {
      await this.commit();
      await this.closeUp();
    }
  }

  /**
   * Drop FULLY_PRESENT blocks that read as zeros (NOT_PRESENT in a base, ZERO in a differencing
   * image) and PARTIALLY_PRESENT blocks with no sector stored (NOT_PRESENT: the parent either
   * way), commit, then close up and cut the file. The DataWriteGuid stays: the content does
   * not change, so children stay linked. Fixed images: NOTSUPPORTED.
   */
  async compact(opts: InPlaceOptions = {}): Promise<InPlaceResult> {
    this.checkWritable();
    if (this.fixed) throw new DiskError('NOTSUPPORTED', 'a fixed VHDX cannot be compacted', { path: this.path, field: 'leaveBlocksAllocated', found: 'fixed' });
    await this.commit();
    const fileBytesBefore = await this.store.size();
    const diff = this.params.hasParent;
    const buf = Buffer.alloc(this.params.blockSize);
    for (let n = 0; n < this.blocks; n++) {
      if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: this.path }, { cause: opts.signal.reason });
      const st = this.pState[n];
      if (st === PAYLOAD.FULLY_PRESENT) {
        const b = buf.subarray(0, this.blockLen(n));
        await this.store.readInto(b, this.pOff[n]! * MiB);
        if (isZero(b)) this.setPayload(n, diff ? PAYLOAD.ZERO : PAYLOAD.NOT_PRESENT, 0);
      } else if (st === PAYLOAD.PARTIALLY_PRESENT) {
        if (isZero(await this.bitmap(n))) {
          this.setPayload(n, PAYLOAD.NOT_PRESENT, 0);
          this.bitmaps.delete(n);
        }
      }
      opts.onProgress?.(n + 1, this.blocks);
    }
    await this.commit();
    await this.closeUp();
    return { fileBytesBefore, fileBytesAfter: await this.store.size() };
  }

  /**
   * The file cut at `end` (1 MiB aligned, after every block and structure in use): the log is
   * marked empty first (its entries may name offsets past the new end), then the truncate; new
   * blocks go from there.
   */
  private async cutAt(end: number): Promise<void> {
    if (end < this.fileSize) {
      await this.emptyLog();
      await this.store.truncate(end);
      await this.store.flush();
      this.fileSize = end;
    }
    this.nextFree = roundUp(Math.max(this.fileSize, end), ALIGN);
  }

  /**
   * Move the highest payload and sector bitmap blocks into the lowest free 1 MiB-aligned gaps
   * below them (never overlapping a block in use), in batches: the copies, flush, the new BAT
   * entries through the log (commit); then the log marked empty and the file cut after the
   * last block (1 MiB aligned, as every block offset is).
   */
  private async closeUp(): Promise<void> {
    const bs = this.params.blockSize;
    // structures are never moved; blocks go below the first block only after the leading ones
    // (a BAT region moved to the end of the file by a grow sits among or after the blocks)
    const structures = structureRanges(this.regions, Number(this.header.logOffset), this.header.logLength);
    type Item = { kind: 'payload' | 'bitmap'; i: number; at: number; len: number };
    const items: Item[] = [];
    for (let n = 0; n < this.blocks; n++) {
      const st = this.pState[n];
      if (st === PAYLOAD.FULLY_PRESENT || st === PAYLOAD.PARTIALLY_PRESENT) items.push({ kind: 'payload', i: n, at: this.pOff[n]! * MiB, len: bs });
    }
    for (let k = 0; k < this.bState.length; k++) if (this.bState[k] === BITMAP.PRESENT) items.push({ kind: 'bitmap', i: k, at: this.bOff[k]! * MiB, len: BITMAP_BLOCK_SIZE });
    const firstBlock = items.reduce((m, x) => Math.min(m, x.at), Infinity);
    const dataStart = roundUp(Math.max(HEADER_SECTION, ...structures.filter((u) => u.start < firstBlock).map((u) => u.end)), ALIGN);
    // occupied ranges: every block where it is now, and (during a batch) where it is going, and
    // the structures past dataStart
    const busy = items.map((x) => [x.at, x.at + x.len] as [number, number]);
    for (const u of structures) if (u.end > dataStart) busy.push([u.start, u.end]);
    const gapFor = (len: number, below: number): number => {
      busy.sort((a, b) => a[0] - b[0]);
      let prev = dataStart;
      for (const [a, z] of busy) {
        if (a >= below) break;
        if (a - prev >= len) return prev;
        prev = Math.max(prev, z);
      }
      // the gap right below the block counts too (it was missed: a freed block just under the
      // last one was never reused)
      return below - prev >= len ? prev : -1;
    };
    items.sort((a, b) => a.at - b.at);
    const buf = Buffer.alloc(Math.max(bs, BITMAP_BLOCK_SIZE));
    for (;;) {
      const batch: { item: Item; to: number }[] = [];
      while (batch.length < 16 && items.length > 0) {
        const top = items[items.length - 1]!;
        const to = gapFor(top.len, top.at);
        if (to < 0 || to + top.len > top.at) break;
        busy.push([to, to + top.len]);
        batch.push({ item: top, to });
        items.pop();
      }
      if (batch.length === 0) break;
      for (const { item, to } of batch) {
        const b = buf.subarray(0, Math.min(item.len, this.fileSize - item.at));
        await this.store.readInto(b, item.at);
        await this.store.write(to, b);
      }
      for (const { item, to } of batch) {
        if (item.kind === 'payload') this.setPayload(item.i, this.pState[item.i]!, to / MiB);
        else {
          this.bOff[item.i] = to / MiB;
          this.pending.set(bitmapIndex(item.i, this.cr), batEntry(BITMAP.PRESENT, to / MiB));
        }
      }
      await this.commit(); // flushes the copies before the log entry
      for (const { item, to } of batch) {
        const at = busy.findIndex(([a]) => a === item.at);
        busy.splice(at, 1);
        item.at = to;
        items.push(item);
      }
      items.sort((a, b) => a.at - b.at);
    }
    const last = items.reduce((m, x) => Math.max(m, x.at + x.len), Math.max(dataStart, ...structures.map((u) => u.end)));
    await this.cutAt(roundUp(last, ALIGN));
  }

  /**
   * Defragment (NOTES.md "Defragment"): payload blocks in virtual order, each chunk's sector
   * bitmap block just before the chunk's first payload block, back to back from the first 1 MiB
   * after the structures, then the file cut after the last one. The moves come in batches from
   * relayout-plan.ts: every copy of a batch is written into space nothing references, then
   * `commit` flushes the copies before it logs and applies the new BAT entries; the old places
   * are reused only by a later batch. A fixed image whose blocks are already in virtual order
   * (what every producer writes) is left alone. The DataWriteGuid stays (the content does not
   * change).
   */
  async defragment(opts: InPlaceOptions = {}): Promise<InPlaceResult> {
    this.checkWritable();
    await this.commit();
    const fileBytesBefore = await this.store.size();
    const bs = this.params.blockSize;
    const structures = structureRanges(this.regions, Number(this.header.logOffset), this.header.logLength);
    // the final order: per chunk, its sector bitmap block, then its payload blocks
    type Item = { kind: 'payload' | 'bitmap'; i: number };
    const items: Item[] = [];
    const plan: PlanItem[] = [];
    for (let k = 0; k * this.cr < this.blocks; k++) {
      if (this.bState[k] === BITMAP.PRESENT) {
        items.push({ kind: 'bitmap', i: k });
        plan.push({ at: this.bOff[k]!, len: BITMAP_BLOCK_SIZE / MiB });
      }
      for (let n = k * this.cr; n < Math.min(this.blocks, (k + 1) * this.cr); n++) {
        const st = this.pState[n];
        if (st !== PAYLOAD.FULLY_PRESENT && st !== PAYLOAD.PARTIALLY_PRESENT) continue;
        items.push({ kind: 'payload', i: n });
        // every payload block gets a whole BlockSize slot, the disk's last one too (MS-VHDX);
        // a last block the file holds only in part (QEMU's fixed images) is copied as far as
        // the file goes
        plan.push({ at: this.pOff[n]!, len: bs / MiB });
      }
    }
    const total = items.length;
    opts.onProgress?.(0, total);
    if (this.fixed && plan.every((p, j) => j === 0 || p.at > plan[j - 1]!.at)) {
      opts.onProgress?.(total, total);
      return { fileBytesBefore, fileBytesAfter: fileBytesBefore };
    }
    // without a log no BAT entry can change safely: refused before anything is copied
    if (!this.logWriter) throw new DiskError('NOTSUPPORTED', 'this VHDX has no log: its blocks cannot be moved safely', { path: this.path, struct: 'header', field: 'logLength', found: 0 });
    // blocks start after the structures that come before the first block; a BAT region moved
    // to the end by a grow (growBatRegion) stays where it is and is stepped around
    const firstBlock = plan.reduce((m, p) => Math.min(m, p.at * MiB), Infinity);
    const dataStart = roundUp(Math.max(HEADER_SECTION, ...structures.filter((u) => u.start < firstBlock).map((u) => u.end)), ALIGN);
    const structuresEnd = roundUp(Math.max(...structures.map((u) => u.end)), ALIGN);
    const fixedUnits = new Uint8Array(structuresEnd / MiB);
    for (const u of structures) fixedUnits.fill(1, Math.floor(u.start / MiB), Math.ceil(u.end / MiB));
    const { batches } = planRelayout(plan, fixedUnits, dataStart / MiB, Math.max(2, Math.min(16, Math.floor((64 * MiB) / bs))));
    const buf = Buffer.allocUnsafe(Math.max(bs, BITMAP_BLOCK_SIZE));
    for (const b of batches) {
      if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: this.path }, { cause: opts.signal.reason });
      // destinations past the end: the file is extended first (a hole), as allocate does
      const reach = Math.max(...b.moves.map((m) => (m.to + plan[m.item]!.len) * MiB));
      if (reach > this.fileSize) {
        await this.store.truncate(reach);
        this.fileSize = reach;
      }
      // blocks parked up there until the end (or a cancel) cuts the file: new blocks go after
      this.nextFree = Math.max(this.nextFree, roundUp(reach, ALIGN));
      for (const m of b.moves) {
        const from = m.from * MiB;
        const chunk = buf.subarray(0, Math.min(plan[m.item]!.len * MiB, this.fileSize - from));
        await this.store.readInto(chunk, from);
        await this.store.write(m.to * MiB, chunk);
      }
      for (const m of b.moves) {
        const it = items[m.item]!;
        if (it.kind === 'payload') this.setPayload(it.i, this.pState[it.i]!, m.to);
        else {
          this.bOff[it.i] = m.to;
          this.pending.set(bitmapIndex(it.i, this.cr), batEntry(BITMAP.PRESENT, m.to));
        }
      }
      await this.commit(); // flushes the copies before the log entry
      opts.onProgress?.(b.placed, total);
    }
    // the end: after the last whole block (cutAt never extends a file that ends inside it)
    let end = Math.max(dataStart, structuresEnd);
    for (const it of items) {
      if (it.kind === 'bitmap') end = Math.max(end, this.bOff[it.i]! * MiB + BITMAP_BLOCK_SIZE);
      else end = Math.max(end, this.pOff[it.i]! * MiB + bs);
    }
    await this.cutAt(end);
    opts.onProgress?.(total, total);
    return { fileBytesBefore, fileBytesAfter: await this.store.size() };
  }

  // ------------------------------------------------------------------ metadata region

  /** place `data` as metadata item `id` (in its place when it fits, else after the last item); returns the writes */
  private setItem(id: string, data: Buffer, flags?: number): { at: number; data: Buffer }[] {
    const old = this.items.find((x) => x.id === id);
    let offset: number;
    if (old && data.length <= old.length) offset = old.offset;
    else {
      let end = METADATA_TABLE_SIZE;
      for (const x of this.items) if (x.id !== id && x.length > 0) end = Math.max(end, x.offset + x.length);
      offset = roundUp(end, 8);
      if (offset + data.length > this.meta.length) {
        throw new DiskError('NOTSUPPORTED', 'the metadata region has no room for this item', { path: this.path, struct: 'metadataTable', field: ITEM_NAMES[id] ?? id, expected: `<= ${this.meta.length - offset} bytes`, found: data.length });
      }
    }
    const entry: MetaItem = { id, offset, length: data.length, flags: flags ?? old?.flags ?? 0 };
    this.items = old ? this.items.map((x) => (x === old ? entry : x)) : [...this.items, entry];
    return [{ at: offset, data }];
  }

  private removeItem(id: string): { at: number; data: Buffer }[] {
    this.items = this.items.filter((x) => x.id !== id);
    return [];
  }

  /** the metadata table as the in-memory item list says (zero-padded over a longer old table) */
  private tableWrite(): { at: number; data: Buffer } {
    const buf = Buffer.alloc(32 + Math.max(this.items.length + 1, 8) * 32);
    MetadataTableHeader.encode({ signature: METADATA_SIGNATURE, entryCount: this.items.length }, buf, 0);
    this.items.forEach((x, i) => MetadataTableEntry.encode({ itemId: guidBytes(x.id)!, offset: x.offset, length: x.length, flags: x.flags }, buf, 32 + i * 32));
    return { at: 0, data: buf };
  }

  /** the 4 KiB sectors of the metadata region the writes change, with their new content */
  private async metadataSectors(writes: readonly { at: number; data: Buffer }[]): Promise<Map<number, Buffer>> {
    const sectors = new Map<number, Buffer>();
    for (const w of writes) {
      for (let s = Math.floor(w.at / LOG_SECTOR); s * LOG_SECTOR < w.at + w.data.length; s++) {
        const fileOffset = this.meta.offset + s * LOG_SECTOR;
        let sector = sectors.get(fileOffset);
        if (!sector) {
          sector = await this.store.read(fileOffset, LOG_SECTOR);
          sectors.set(fileOffset, sector);
        }
        const from = Math.max(w.at, s * LOG_SECTOR);
        const to = Math.min(w.at + w.data.length, (s + 1) * LOG_SECTOR);
        w.data.copy(sector, from - s * LOG_SECTOR, from - w.at, to - w.at);
      }
    }
    return sectors;
  }

  // ------------------------------------------------------------------ commit through the log

  /**
   * Make the buffered BAT changes (and `extra` 4 KiB sectors) durable through the log: flush the
   * data they point at, write a log entry (a new LogGuid first if the log is empty), flush,
   * write the sectors in place, flush. Changes too many for one entry go in several, each
   * complete before the next.
   */
  private async commit(extra?: Map<number, Buffer>): Promise<void> {
    if (this.broken) throw new DiskError('FILEIO', 'an earlier metadata update of this image failed; close and reopen it (the log is replayed)', { path: this.path });
    const sectors = new Map<number, Buffer>(extra);
    if (this.pending.size === 0 && sectors.size === 0) return;
    try {
      const bySector = new Map<number, number[]>();
      for (const i of this.pending.keys()) {
        const s = Math.floor((i * 8) / LOG_SECTOR);
        const list = bySector.get(s);
        if (list) list.push(i);
        else bySector.set(s, [i]);
      }
      for (const [s, list] of bySector) {
        const fileOffset = this.bat.offset + s * LOG_SECTOR;
        const sector = sectors.get(fileOffset) ?? (await this.store.read(fileOffset, LOG_SECTOR));
        for (const i of list) sector.writeBigUInt64LE(this.pending.get(i)!, i * 8 - s * LOG_SECTOR);
        sectors.set(fileOffset, sector);
      }
      const writer = this.logWriter;
      if (!writer) throw new DiskError('NOTSUPPORTED', 'this VHDX has no log: its metadata cannot be updated safely', { path: this.path, struct: 'header', field: 'logLength', found: 0 });
      await this.store.flush();
      if (isZeroGuid(this.header.logGuid)) {
        await this.updateHeader({ logGuid: newGuid() });
        writer.reset();
      }
      const list = [...sectors.entries()].sort((a, b) => a[0] - b[0]);
      const per = writer.maxSectorsPerEntry;
      for (let i = 0; i < list.length; i += per) {
        const part = list.slice(i, i + per);
        await writer.writeEntry(this.header.logGuid, part, this.fileSize);
        for (const [off, content] of part) await this.store.write(off, content);
        await this.store.flush();
      }
      this.pending.clear();
    } catch (e) {
      this.broken = true;
      throw e;
    }
  }

  // ------------------------------------------------------------------ I/O

  private blockLen(n: number): number {
    return Math.min(this.params.blockSize, this.capacity - n * this.params.blockSize);
  }

  async read(into: Buffer, offset: number): Promise<void> {
    const bs = this.params.blockSize;
    const parts: Promise<void>[] = [];
    let pos = 0;
    while (pos < into.length) {
      const vo = offset + pos;
      const n = Math.floor(vo / bs);
      const within = vo - n * bs;
      const len = Math.min(bs - within, into.length - pos);
      const sub = into.subarray(pos, pos + len);
      const st = this.pState[n];
      if (st === PAYLOAD.FULLY_PRESENT) parts.push(this.store.readInto(sub, this.pOff[n]! * MiB + within));
      else if (st === PAYLOAD.PARTIALLY_PRESENT) parts.push(this.readPartial(n, sub, within));
      else sub.fill(0);
      pos += len;
    }
    await Promise.all(parts);
  }

  private async readPartial(n: number, into: Buffer, within: number): Promise<void> {
    const ls = this.params.logicalSectorSize;
    const bm = await this.bitmap(n);
    const base = this.pOff[n]! * MiB;
    const end = within + into.length;
    const reads: Promise<void>[] = [];
    for (const [a, z, set] of sectorRuns(bm, Math.floor(within / ls), Math.ceil(end / ls))) {
      const from = Math.max(a * ls, within) - within;
      const to = Math.min(z * ls, end) - within;
      if (set) reads.push(this.store.readInto(into.subarray(from, to), base + within + from));
      else into.fill(0, from, to);
    }
    await Promise.all(reads);
  }

  async write(data: Buffer, offset: number): Promise<void> {
    this.checkWritable();
    await this.beginDataWrite();
    const bs = this.params.blockSize;
    const fresh: Fresh[] = [];
    let pos = 0;
    while (pos < data.length) {
      const vo = offset + pos;
      const n = Math.floor(vo / bs);
      const within = vo - n * bs;
      const len = Math.min(bs - within, data.length - pos);
      const chunk = data.subarray(pos, pos + len);
      const st = this.pState[n];
      if (st === PAYLOAD.FULLY_PRESENT) await this.store.write(this.pOff[n]! * MiB + within, chunk);
      else if (st === PAYLOAD.PARTIALLY_PRESENT) await this.writePartial(n, chunk, within);
      else fresh.push({ b: n, within, chunk, fromZero: st === PAYLOAD.ZERO });
      pos += len;
    }
    if (fresh.length > 0) await this.allocate(fresh);
  }

  /** Write into a partially present block: the data (partial sectors not stored here padded with zeros), then the bits that expose it. */
  private async writePartial(n: number, chunk: Buffer, within: number): Promise<void> {
    const bitmap = await this.bitmap(n);
    await writeBitmapped({ store: this.store, bits: BITS, bitmap, dataAt: this.pOff[n]! * MiB, bitmapAt: this.sliceOffset(n), sectorSize: this.params.logicalSectorSize }, chunk, within);
  }

  /**
   * New blocks at the end of the file: the file is extended first (the new blocks are holes,
   * reading as zeros), then the data and, for partially present blocks, the whole bitmap slice
   * (only the written sectors set); the BAT entries change in memory and reach the file through
   * the log at the next flush. A crash before that leaks the space and exposes nothing.
   */
  private async allocate(fresh: Fresh[]): Promise<void> {
    const bs = this.params.blockSize;
    const ls = this.params.logicalSectorSize;
    const diff = this.params.hasParent;
    let at = this.nextFree;
    const plans = fresh.map((f) => {
      const whole = f.within === 0 && f.chunk.length === this.blockLen(f.b);
      const state = !diff || f.fromZero || whole ? PAYLOAD.FULLY_PRESENT : PAYLOAD.PARTIALLY_PRESENT;
      return { ...f, state, offset: 0 };
    });
    const newBitmaps: number[] = [];
    for (const p of plans) {
      if (p.state !== PAYLOAD.PARTIALLY_PRESENT) continue;
      const k = Math.floor(p.b / this.cr);
      if (this.bState[k] !== BITMAP.PRESENT && !newBitmaps.includes(k)) newBitmaps.push(k);
    }
    const bitmapAt = new Map<number, number>();
    for (const k of newBitmaps) {
      bitmapAt.set(k, at);
      at += BITMAP_BLOCK_SIZE;
    }
    for (const p of plans) {
      p.offset = at;
      at += bs;
    }
    const limit = 2 ** 52;
    if (at > limit) throw new DiskError('NOSPACE', 'the VHDX file would grow past 4 PiB', { path: this.path, field: 'BAT' });
    if (at > this.fileSize) {
      await this.store.truncate(at);
      this.fileSize = at;
    }
    this.nextFree = at;
    for (const [k, off] of bitmapAt) {
      this.bState[k] = BITMAP.PRESENT;
      this.bOff[k] = off / MiB;
      this.pending.set(bitmapIndex(k, this.cr), batEntry(BITMAP.PRESENT, off / MiB));
    }
    const writes: Promise<void>[] = [];
    for (const p of plans) {
      writes.push(this.store.write(p.offset + p.within, p.chunk));
      if (p.state === PAYLOAD.PARTIALLY_PRESENT) {
        const bm = Buffer.alloc(this.sliceBytes);
        setBits(bm, Math.floor(p.within / ls), Math.ceil((p.within + p.chunk.length) / ls));
        writes.push(this.store.write(this.sliceOffset(p.b), bm));
        this.cacheBitmap(p.b, bm);
      }
    }
    await Promise.all(writes);
    for (const p of plans) this.setPayload(p.b, p.state, p.offset / MiB);
  }

  private setPayload(n: number, state: number, offMiB: number): void {
    this.pState[n] = state;
    this.pOff[n] = offMiB;
    const keep = state === PAYLOAD.FULLY_PRESENT || state === PAYLOAD.PARTIALLY_PRESENT;
    this.pending.set(payloadIndex(n, this.cr), batEntry(state, keep ? offMiB : 0));
  }

  private async zeroFill(at: number, length: number): Promise<void> {
    const zeros = Buffer.alloc(Math.min(length, MiB));
    for (let done = 0; done < length; done += zeros.length) await this.store.write(at + done, zeros.subarray(0, Math.min(zeros.length, length - done)));
  }

  /** file offset of payload block n's slice of its chunk's sector bitmap */
  private sliceOffset(n: number): number {
    return this.bOff[Math.floor(n / this.cr)]! * MiB + (n % this.cr) * this.sliceBytes;
  }

  private async bitmap(n: number): Promise<Buffer> {
    const hit = this.bitmaps.get(n);
    if (hit) return hit;
    const read = await this.store.read(this.sliceOffset(n), this.sliceBytes);
    // a write may have cached (and changed) this bitmap while we were reading it: keep that one
    return this.bitmaps.get(n) ?? this.cacheBitmap(n, read);
  }

  private cacheBitmap(n: number, bm: Buffer): Buffer {
    if (this.bitmaps.size >= this.bitmapLimit) this.bitmaps.delete(this.bitmaps.keys().next().value!);
    this.bitmaps.set(n, bm);
    return bm;
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const bs = this.params.blockSize;
    const ls = this.params.logicalSectorSize;
    const out: BlockExtent[] = [];
    const push = (at: number, n: number, state: BlockState) => {
      const last = out[out.length - 1];
      if (last && last.state === state) last.length += n;
      else out.push({ offset: at, length: n, state });
    };
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const n = Math.floor(pos / bs);
      const base = n * bs;
      const len = Math.min(base + bs, end) - pos;
      const st = this.pState[n];
      if (st === PAYLOAD.FULLY_PRESENT) push(pos, len, 'data');
      else if (st === PAYLOAD.ZERO) push(pos, len, 'zero');
      else if (st === PAYLOAD.PARTIALLY_PRESENT) {
        const bm = await this.bitmap(n);
        for (const [a, z, set] of sectorRuns(bm, Math.floor((pos - base) / ls), Math.ceil((pos + len - base) / ls))) {
          const from = Math.max(base + a * ls, pos);
          const to = Math.min(base + z * ls, pos + len);
          push(from, to - from, set ? 'data' : 'unallocated');
        }
      } else push(pos, len, 'unallocated');
      pos += len;
    }
    return out;
  }

  async flush(): Promise<void> {
    if (this.readOnly || this.closed) return;
    await this.commit();
    await this.store.flush();
  }

  // ------------------------------------------------------------------ resize

  /**
   * Resize in place (NOTES.md "Resize"); closes the image. The Virtual Disk Size metadata item,
   * committed through the log in an entry of its own, is the switch. Grow: a fixed image's new
   * payload blocks allocated (the file extended: zeros), then the new BAT entries (NOT_PRESENT,
   * or FULLY_PRESENT at those blocks) committed, then the size. Shrink: the size first, then the
   * entries past the end NOT_PRESENT (their space is left as a leak). Entries past the end are
   * invisible to the disk, so every stop leaves the old disk or the new one; the log makes each
   * commit whole. A BAT that outgrows its region moves first (growBatRegion).
   */
  async resize(newCapacity: number): Promise<void> {
    try {
      this.checkWritable();
      const where = { path: this.path, struct: 'metadata', field: 'virtualDiskSize', found: newCapacity };
      if (this.params.hasParent) throw new DiskError('NOTSUPPORTED', 'a differencing VHDX keeps its parent\'s size: resize the base and create the child again', { ...where, field: 'hasParent', found: true });
      const ls = this.params.logicalSectorSize;
      if (newCapacity <= 0 || newCapacity % ls !== 0 || newCapacity > MAX_VIRTUAL_SIZE) throw new DiskError('INVAL', `a VHDX size is a multiple of the ${ls}-byte logical sector up to 64 TiB`, { ...where, expected: `${ls}..${MAX_VIRTUAL_SIZE}` });
      const bs = this.params.blockSize;
      const oldBlocks = this.blocks;
      const newBlocks = Math.ceil(newCapacity / bs);
      const oldEntries = batEntryCount(oldBlocks, this.cr, false);
      const newEntries = batEntryCount(newBlocks, this.cr, false);
      if (newEntries * 8 > this.bat.length) await this.growBatRegion(newEntries);
      const it = this.items.find((x) => x.id === GUIDS.VIRTUAL_DISK_SIZE)!;
      const size = Buffer.alloc(8);
      size.writeBigUInt64LE(BigInt(newCapacity));
      const sizeSectors = await this.metadataSectors([{ at: it.offset, data: size }]);
      await this.commit();
      if (newCapacity > this.capacity) {
        for (let i = oldEntries; i < newEntries; i++) this.pending.set(i, batEntry(PAYLOAD.NOT_PRESENT, 0));
        const newLen = (n: number) => Math.min(bs, newCapacity - n * bs);
        let at = this.nextFree;
        let end = this.fileSize;
        // a stored partial last block may have only its old length of file space (the next
        // block, or the end of the file, follows it): a full-size copy at the end of the file
        const oldLast = oldBlocks - 1;
        if (this.blockLen(oldLast) < bs && this.pState[oldLast] === PAYLOAD.FULLY_PRESENT) {
          await this.store.write(at, await this.store.read(this.pOff[oldLast]! * MiB, this.blockLen(oldLast)));
          this.pending.set(payloadIndex(oldLast, this.cr), batEntry(PAYLOAD.FULLY_PRESENT, at / MiB));
          // a whole block (MS-VHDX), except as the end of a fixed file, which create ends at
          // the disk's end as QEMU does
          end = Math.max(end, at + (this.fixed ? roundUp(newLen(oldLast), MiB) : bs));
          at += bs;
        }
        if (this.params.leaveBlocksAllocated) {
          for (let n = oldBlocks; n < newBlocks; n++) {
            this.pending.set(payloadIndex(n, this.cr), batEntry(PAYLOAD.FULLY_PRESENT, at / MiB));
            end = Math.max(end, at + roundUp(newLen(n), MiB));
            at += bs;
          }
        }
        if (end > this.fileSize) {
          await this.store.truncate(end);
          this.fileSize = end;
        }
        this.nextFree = at;
        await this.commit();
        await this.commit(sizeSectors);
      } else {
        // the cut-off tail of the new last block reads as zeros should the disk grow again;
        // written after the size switch, when it lies past the end (a stop before it shows the
        // old disk whole)
        const last = newBlocks - 1;
        const within = newCapacity - last * bs;
        const st = this.pState[last]!;
        const tail = this.blockLen(last) - within;
        await this.commit(sizeSectors);
        if (tail > 0 && (st === PAYLOAD.FULLY_PRESENT || st === PAYLOAD.PARTIALLY_PRESENT)) {
          await this.zeroFill(this.pOff[last]! * MiB + within, tail);
          await this.store.flush();
        }
        for (let i = newEntries; i < oldEntries; i++) this.pending.set(i, batEntry(PAYLOAD.NOT_PRESENT, 0));
        await this.commit();
      }
    } finally {
      await this.close();
    }
  }

  /**
   * A BAT region too small for `entries` (grow, or a dynamic image becoming differencing) is
   * replaced by a larger one at the end of the file, as Hyper-V does: 1. the new region (1 MiB
   * multiple) gets the committed BAT copied in and zeros (NOT_PRESENT) after it, flush; nothing
   * points at it yet, so a stop here leaves a trailing leak; 2. both region tables, rewritten
   * with the BAT entry's new offset and length, go through the log in one entry: the switch. A
   * stop after the log entry is replayed by the next read-write open (and read through by a
   * read-only one); both BATs hold the same entries until the switch. The old region is left
   * unused (free space inside the file; compact does not reuse it).
   */
  private async growBatRegion(entries: number): Promise<void> {
    if (entries > MAX_BAT_ENTRIES) {
      throw new DiskError('NOTSUPPORTED', 'the BAT would have more entries than vdkit holds in memory (use a larger block size)', { path: this.path, struct: 'regionTable', field: 'BAT.length', expected: `<= ${MAX_BAT_ENTRIES * 8}`, found: entries * 8 });
    }
    await this.commit();
    const old = this.bat;
    const length = roundUp(entries * 8, ALIGN);
    const at = this.nextFree;
    if (at + length > this.fileSize) {
      await this.store.truncate(at + length);
      this.fileSize = at + length;
    }
    const chunk = Buffer.alloc(Math.min(old.length, BAT_READ_CHUNK));
    for (let done = 0; done < old.length; done += chunk.length) {
      const part = chunk.subarray(0, Math.min(chunk.length, old.length - done));
      await this.store.readInto(part, old.offset + done);
      await this.store.write(at + done, part);
    }
    await this.store.flush();
    const regions = this.regions.map((r) => (r === old ? { ...r, offset: at, length } : r));
    const table = await this.store.read(REGION_TABLE_OFFSETS[0]!, REGION_TABLE_SIZE);
    RegionTableHeader.encode({ signature: REGION_SIGNATURE, checksum: 0, entryCount: regions.length }, table, 0);
    regions.forEach((r, i) => RegionTableEntry.encode({ guid: guidBytes(r.guid)!, fileOffset: BigInt(r.offset), length: r.length, flags: r.required ? REGION_REQUIRED : 0 }, table, 16 + i * 32));
    withChecksum(table);
    const sectors = new Map<number, Buffer>();
    const used = Math.ceil((16 + regions.length * 32) / LOG_SECTOR);
    for (const copy of REGION_TABLE_OFFSETS) for (let s = 0; s < used; s++) sectors.set(copy + s * LOG_SECTOR, Buffer.from(table.subarray(s * LOG_SECTOR, (s + 1) * LOG_SECTOR)));
    // the rest of each 64 KiB table is covered by the checksum: it must match copy 1's bytes
    const rest = table.subarray(used * LOG_SECTOR);
    if (!rest.equals((await this.store.read(REGION_TABLE_OFFSETS[1]! + used * LOG_SECTOR, rest.length)))) {
      for (let s = used; s < REGION_TABLE_SIZE / LOG_SECTOR; s++) sectors.set(REGION_TABLE_OFFSETS[1]! + s * LOG_SECTOR, Buffer.from(table.subarray(s * LOG_SECTOR, (s + 1) * LOG_SECTOR)));
    }
    await this.commit(sectors);
    this.regions = regions;
    this.bat = regions.find((r) => r.guid === GUIDS.BAT_REGION)!;
    this.nextFree = at + length;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (!this.readOnly && !this.broken) {
        await this.commit();
        await this.emptyLog();
        await this.store.flush();
      }
    } finally {
      await this.store.close();
    }
  }

  private checkWritable(): void {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.path });
  }

  // ------------------------------------------------------------------ metadata keys

  metadataKeys(): string[] {
    const keys = ['uuid', 'creator', 'diskType', 'blockSize', 'logicalSectorSize', 'physicalSectorSize', 'dataWriteGuid', 'fileWriteGuid'];
    if (this.params.hasParent) {
      keys.push('parentLinkage', 'parentRelativePath', 'parentAbsolutePath');
      if (this.locator?.entries.has('volume_path')) keys.push('parentVolumePath');
    }
    return keys;
  }

  readMetadata(key: string): string | undefined {
    const e = this.locator?.entries;
    switch (key) {
      case 'uuid':
        return guidText(this.virtualDiskId);
      case 'creator':
        return this.creator;
      case 'diskType':
        return this.type;
      case 'blockSize':
        return String(this.params.blockSize);
      case 'logicalSectorSize':
        return String(this.params.logicalSectorSize);
      case 'physicalSectorSize':
        return String(this.params.physicalSectorSize);
      case 'dataWriteGuid':
        return guidText(this.header.dataWriteGuid);
      case 'fileWriteGuid':
        return guidText(this.header.fileWriteGuid);
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
  async writeMetadata(key: string, value: string): Promise<void> {
    this.checkWritable();
    const where = { path: this.path, struct: 'metadata', field: key, found: value };
    if (key !== 'uuid') {
      const known = this.metadataKeys().includes(key);
      throw new DiskError('NOTSUPPORTED', known ? `${key} is read-only: it follows from the image's structure` : 'VHDX has no free-form metadata', { ...where, expected: 'uuid' });
    }
    const id = guidBytes(value);
    if (!id) throw new DiskError('INVAL', 'bad value for uuid', { ...where, expected: 'a GUID (32 hex digits, dashes and braces optional)' });
    await this.commit(await this.metadataSectors([...this.setItem(GUIDS.VIRTUAL_DISK_ID, id), this.tableWrite()]));
    this.virtualDiskId = id;
  }

  async info(): Promise<DiskInfo> {
    let allocatedBytes = 0;
    for (const r of await this.blockStatus(0, this.capacity)) if (r.state === 'data') allocatedBytes += r.length;
    const link = this.backing();
    const warnings = this.findings.filter((f) => !f.repaired).map((f) => f.message);
    return {
      format: 'vhdx',
      type: this.type,
      capacity: this.capacity,
      sectors: this.capacity / 512,
      numLinks: 1,
      parent: link ? link.hint || link.hints?.[0] : undefined,
      cid: this.identity(),
      parentCid: link?.parentId,
      uuid: guidText(this.virtualDiskId),
      version: this.header.version,
      extents: [{ path: this.path, type: this.type.toUpperCase(), access: this.readOnly ? 'RDONLY' : 'RW', length: this.capacity, virtualOffset: 0, fileOffset: 0 }],
      allocatedBytes,
      fileSize: this.fileSize,
      diskSize: (await this.namespace.stat(this.path)).allocated ?? (await this.store.size()),
      readOnly: this.readOnly,
      files: [this.path],
      ...(warnings.length > 0 ? { warnings } : {}),
    };
  }

  // ------------------------------------------------------------------ check

  /**
   * Consistency check: what the open found (a log that needed replay, damaged header or region
   * table copies, reserved bits, bitmap entries in an image without a parent), the BAT against
   * the file (inside it, no overlaps), and space after the last structure nothing references
   * (a writer stopped between extending the file and committing its BAT: a leak). Repair
   * (read-write): the log, the header and the region tables were already mended by the open;
   * leaked space at the end is cut off.
   */
  async check(opts: CheckOptions): Promise<CheckReport> {
    const dryRun = opts.repair && !!opts.dryRun;
    if (opts.repair && !dryRun) this.checkWritable();
    const findings: CheckFinding[] = this.findings.map((f) => ({ ...f }));
    // a dry run on a read-only image: what the open left alone, a read-write open mends (log
    // replay, the second region table copy)
    if (dryRun) for (const f of findings) if (f.repaired === false && (f.field === 'logGuid' || f.struct === 'regionTable')) f.wouldRepair = true;
    const used = structureRanges(this.regions, Number(this.header.logOffset), this.header.logLength);
    try {
      checkOverlaps(this.pState, this.pOff, this.bState, this.bOff, this.params.blockSize, this.cr, used, this.path);
    } catch (e) {
      if (!(e instanceof DiskError)) throw e;
      findings.push({ kind: 'corruption', message: e.message, struct: 'BAT', field: String(e.details.field) });
    }
    let usedEnd = 0;
    let anyBlock = false;
    for (let n = 0; n < this.blocks; n++) {
      if (this.pState[n] === PAYLOAD.FULLY_PRESENT || this.pState[n] === PAYLOAD.PARTIALLY_PRESENT) {
        anyBlock = true;
        // a payload block owns BlockSize bytes of file even when the disk ends inside it
        // (MS-VHDX; Hyper-V and vdkit allocate it whole): only past that is space leaked
        usedEnd = Math.max(usedEnd, this.pOff[n]! * MiB + this.params.blockSize);
        if (this.pOff[n]! * MiB + this.blockLen(n) > this.fileSize) findings.push({ kind: 'corruption', message: `payload block ${n} lies past the end of the file`, struct: 'BAT', field: `BAT[${payloadIndex(n, this.cr)}]` });
      }
    }
    for (let k = 0; k < this.bState.length; k++) if (this.bState[k] === BITMAP.PRESENT) usedEnd = Math.max(usedEnd, this.bOff[k]! * MiB + BITMAP_BLOCK_SIZE);
    for (const u of used) usedEnd = Math.max(usedEnd, u.end);
    let leaked = 0;
    // whole MiB only: what our allocation leaves behind (Disk2vhd ends its files with 512 spare bytes)
    if (anyBlock && this.fileSize - roundUp(usedEnd, ALIGN) >= ALIGN) {
      const from = roundUp(usedEnd, ALIGN);
      leaked = this.fileSize - from;
      const f: CheckFinding = { kind: 'leak', message: `${leaked} bytes at the end of the file belong to no block (a writer stopped before committing its BAT)`, struct: 'BAT', field: 'BAT', offset: from };
      if (dryRun && !this.broken) f.wouldRepair = true;
      else if (opts.repair && !this.readOnly && !this.broken) {
        await this.commit();
        await this.emptyLog();
        await this.store.truncate(from);
        await this.store.flush();
        this.fileSize = from;
        this.nextFree = roundUp(Math.max(this.nextFree > from ? from : this.nextFree, from), ALIGN);
        f.repaired = true;
        leaked = 0;
      }
      findings.push(f);
    }
    return { path: this.path, format: 'vhdx', findings, leakedBytes: leaked, ...(dryRun ? { dryRun: true } : {}) };
  }
}

// ------------------------------------------------------------------ helpers

function isPow2(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

function decodeHeaderSlot(b: Buffer, path: string): HeaderSlot {
  const v = Header.decode(b, 0, path);
  if (v.signature !== HEADER_SIGNATURE) return { problem: 'signature is not "head"' };
  if (vhdxChecksum(b) !== v.checksum) return { problem: 'checksum mismatch' };
  if (v.version !== 1) return { value: v, problem: `version ${v.version}` };
  return { value: v };
}

/** the current header (vhd.md §16.1): the valid one with the larger sequence number */
function chooseHeader(slots: HeaderSlot[], path: string): number {
  const ok = slots.map((s) => s.value !== undefined && s.problem === undefined);
  if (ok[0] && ok[1]) {
    const a = slots[0]!.value!;
    const b = slots[1]!.value!;
    if (a.sequenceNumber > b.sequenceNumber) return 0;
    if (b.sequenceNumber > a.sequenceNumber) return 1;
    // Disk2vhd writes two identical headers with the same sequence number
    if (Header.encode(a).equals(Header.encode(b))) return 0;
    throw new DiskError('CORRUPT', 'both headers have the same sequence number but different contents', { path, struct: 'header', field: 'sequenceNumber', found: a.sequenceNumber });
  }
  if (ok[0]) return 0;
  if (ok[1]) return 1;
  const versions = slots.filter((s) => s.value && s.problem?.startsWith('version'));
  if (versions.length > 0) {
    throw new DiskError('UNSUPPORTEDDISKVERSION', 'unsupported VHDX header version', { path, struct: 'header', field: 'version', expected: 1, found: versions[0]!.value!.version });
  }
  const field = slots.every((s) => s.problem?.startsWith('signature')) ? 'signature' : 'checksum';
  throw new DiskError('CORRUPT', `neither header is valid (header 1: ${slots[0]!.problem}; header 2: ${slots[1]!.problem})`, { path, struct: 'header', field, expected: field === 'signature' ? HEADER_SIGNATURE : 'a CRC-32C matching the header' });
}

function decodeRegionTable(b: Buffer, path: string): { bytes: Buffer; regions?: Region[]; error?: DiskError } {
  const h = RegionTableHeader.decode(b, 0, path);
  const bad = (field: string, message: string, expected: unknown, found: unknown) => ({ bytes: b, error: new DiskError('CORRUPT', message, { path, struct: 'regionTable', field, expected, found }) });
  if (h.signature !== REGION_SIGNATURE) return bad('signature', 'bad region table signature', REGION_SIGNATURE, h.signature);
  if (vhdxChecksum(b) !== h.checksum) return bad('checksum', 'region table checksum mismatch', `0x${vhdxChecksum(b).toString(16).padStart(8, '0')}`, `0x${h.checksum.toString(16).padStart(8, '0')}`);
  if (h.entryCount > MAX_REGION_ENTRIES) return bad('entryCount', 'too many region table entries', `<= ${MAX_REGION_ENTRIES}`, h.entryCount);
  const regions: Region[] = [];
  for (let i = 0; i < h.entryCount; i++) {
    const e = RegionTableEntry.decode(b, 16 + i * 32, path);
    const offset = e.fileOffset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(e.fileOffset);
    regions.push({ guid: guidText(e.guid), offset, length: e.length, required: (e.flags & REGION_REQUIRED) !== 0 });
  }
  return { bytes: b, regions };
}

function fileParametersBytes(p: VhdxParams): Buffer {
  return FileParameters.encode({ blockSize: p.blockSize, flags: (p.leaveBlocksAllocated ? LEAVE_BLOCKS_ALLOCATED : 0) | (p.hasParent ? HAS_PARENT : 0) });
}

/** the structures of the file: header section, log, regions */
function structureRanges(regions: readonly Region[], logOffset: number, logLength: number): { start: number; end: number; name: string }[] {
  const out = [{ start: 0, end: HEADER_SECTION, name: 'the header section' }];
  if (logLength > 0) out.push({ start: logOffset, end: logOffset + logLength, name: 'the log' });
  for (const r of regions) out.push({ start: r.offset, end: r.offset + r.length, name: r.guid === GUIDS.BAT_REGION ? 'the BAT region' : r.guid === GUIDS.METADATA_REGION ? 'the metadata region' : `region ${r.guid}` });
  return out;
}

/** no two blocks overlap, and no block overlaps a structure (sorted starts, one pass) */
function checkOverlaps(pState: Uint8Array, pOff: Uint32Array, bState: Uint8Array, bOff: Uint32Array, blockSize: number, cr: number, used: { start: number; end: number; name: string }[], path: string): void {
  const starts: number[] = [];
  const ends: number[] = [];
  const names: string[] = [];
  for (const u of used) {
    starts.push(u.start);
    ends.push(u.end);
    names.push(u.name);
  }
  const firstBlock = starts.length;
  for (let n = 0; n < pState.length; n++) {
    if (pState[n] !== PAYLOAD.FULLY_PRESENT && pState[n] !== PAYLOAD.PARTIALLY_PRESENT) continue;
    starts.push(pOff[n]! * MiB);
    ends.push(pOff[n]! * MiB + blockSize);
    names.push(`BAT[${payloadIndex(n, cr)}]`);
  }
  for (let k = 0; k < bState.length; k++) {
    if (bState[k] !== BITMAP.PRESENT) continue;
    starts.push(bOff[k]! * MiB);
    ends.push(bOff[k]! * MiB + BITMAP_BLOCK_SIZE);
    names.push(`BAT[${bitmapIndex(k, cr)}]`);
  }
  const order = Array.from({ length: starts.length }, (_, i) => i).sort((a, b) => starts[a]! - starts[b]! || a - b);
  for (let j = 1; j < order.length; j++) {
    const a = order[j - 1]!;
    const b = order[j]!;
    if (starts[b]! < ends[a]!) {
      // name the BAT entry (the structures themselves were checked against each other before)
      const [entry, other] = b >= firstBlock ? [b, a] : [a, b];
      throw new DiskError('CORRUPT', `${names[entry]} overlaps ${other >= firstBlock ? `the block of ${names[other]}` : names[other]}`, {
        path,
        struct: 'BAT',
        field: names[entry],
        expected: `no overlap with ${starts[other]}..${ends[other]! - 1}`,
        found: `${starts[entry]}..${ends[entry]! - 1}`,
      });
    }
  }
}

const BITS = new Bitmap('lsb');
const setBits = (bm: Buffer, s0: number, s1: number): void => BITS.set(bm, s0, s1);
/** Runs of equal bits over sectors [s0, s1): [from, to, set]. */
export const sectorRuns = (bm: Buffer, s0: number, s1: number): [number, number, boolean][] => BITS.runs(bm, s0, s1);

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
    ['parent_linkage', `{${guidText(parentLinkage)}}`],
    ['relative_path', relative_path],
    ['absolute_win32_path', parentPath],
  ];
  for (const [k, v] of pairs) {
    if (Buffer.byteLength(v, 'utf16le') > 0xffff) throw new DiskError('NAMETOOLONG', 'the parent path is too long for a parent locator entry', { path: childPath, struct: 'parentLocator', field: k, found: v.slice(0, 200) });
  }
  return encodeParentLocator(pairs);
}

