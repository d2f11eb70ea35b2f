/**
 * Opening a VHDX (vhd.md §16): file identifier, both headers, the log (replayed in place on a
 * read-write open, read through an overlay on a read-only one), both region tables, the
 * metadata table and items, the BAT; everything checked against the file size before any
 * allocation, so a refused open never writes. Builds the state and the image over it.
 */
import { DiskError, atMost } from '../../core/errors.js';
import { roundUp, toSafeNumber } from '../../core/ints.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { CheckFinding, OpenOptions } from '../types.js';
import { LogOverlayStore, replayOf, scanLog, type Replay } from './log.js';
import { guidText, isNullGuid, normalizeGuidText } from '../../binary/guid.js';
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
  HEADER_SIZE,
  ITEM_MIN_LENGTH,
  ITEM_NAMES,
  LEAVE_BLOCKS_ALLOCATED,
  MAX_BAT_ENTRIES,
  MAX_BLOCK_SIZE,
  MAX_LOG_LENGTH,
  MAX_METADATA_ENTRIES,
  MAX_METADATA_ITEM,
  MAX_VIRTUAL_SIZE,
  META_IS_REQUIRED,
  METADATA_SIGNATURE,
  METADATA_TABLE_SIZE,
  MIN_BLOCK_SIZE,
  MetadataTableEntry,
  MetadataTableHeader,
  MiB,
  PAYLOAD,
  REGION_TABLE_OFFSETS,
  REGION_TABLE_SIZE,
  batEntryCount,
  bitmapIndex,
  chunkRatio,
  creatorText,
  decodeParentLocator,
  payloadIndex,
  type ParentLocator,
} from './structs.js';
import {
  BAT_READ_CHUNK,
  type Region,
  type MetaItem,
  type HeaderSlot,
  type VhdxParams,
  isPow2,
  decodeHeaderSlot,
  chooseHeader,
  decodeRegionTable,
  structureRanges,
  checkOverlaps,
} from './layout.js';
import { VhdxState } from './state.js';
import { VhdxImage } from './image.js';

export async function openVhdx(ns: Namespace, path: string, opts: OpenOptions = {}): Promise<VhdxImage> {
  const readOnly = !!opts.readOnly;
  const store = await ns.open(path, { write: !readOnly });
  try {
    const state = await load(path, store, { readOnly, updateIdentityOnWrite: opts.updateIdentityOnWrite ?? true });
    state.namespace = ns;
    return new VhdxImage(state);
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }
}

async function load(path: string, store: ByteStore, opts: { readOnly: boolean; updateIdentityOnWrite: boolean }): Promise<VhdxState> {
  const { readOnly } = opts;
  const findings: CheckFinding[] = [];
  const fileSize = await store.size();
  const err = (code: 'CORRUPT' | 'INVALIDDISK' | 'NOTSUPPORTED' | 'UNSUPPORTEDFEATURE' | 'UNSUPPORTEDDISKVERSION', struct: string, field: string, message: string, expected?: unknown, found?: unknown) =>
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
  // Without a log no metadata change can be made safely (§2.3), and a write that needs one
  // (a new block, a sector bitmap) would be acknowledged and then fail at flush or close, its
  // data lost (fuzz seed 22 case 65453): such an image opens read-only or not at all.
  if (logLength === 0 && !readOnly) throw err('NOTSUPPORTED', 'header', 'logLength', 'this VHDX has no log, so it cannot be written safely: open it read-only (or convert it)', 'a log of at least 1048576 bytes', 0);
  if (logLength > 0) {
    if (logOffset % ALIGN !== 0 || logOffset < HEADER_SECTION) throw err('CORRUPT', 'header', 'logOffset', 'log offset is not a multiple of 1 MiB after the header section', 'a multiple of 1048576, >= 1048576', logOffset);
    if (logOffset + logLength > fileSize) throw err('CORRUPT', 'header', 'logOffset', 'the log lies past the end of the file', atMost(fileSize - logLength), logOffset);
  }

  // ---- the log (§16.5): a pending sequence is read through an overlay until it is replayed
  let replay: Replay | undefined;
  const logGuidSet = !isNullGuid(h.logGuid);
  if (logGuidSet && logLength > 0) {
    if (logLength > MAX_LOG_LENGTH) throw err('UNSUPPORTEDFEATURE', 'header', 'logLength', 'the log is too long to replay', `<= ${MAX_LOG_LENGTH}`, logLength);
    const scan = scanLog(await store.read(logOffset, logLength), h.logGuid, path);
    if (scan.sequence.length > 0) {
      replay = replayOf(scan.sequence, fileSize, { offset: logOffset, length: logLength }, path);
      // not a corruption: a writer stopped (killed, power cut) after its log entry was durable
      // and before the entry was applied; the spec's recovery is the replay any read-write open
      // does (and reads go through it meanwhile), so nothing is lost or wrong (NOTES.md)
      findings.push(
        readOnly
          ? { kind: 'warning', message: `the log holds a sequence of ${scan.sequence.length} entr${scan.sequence.length === 1 ? 'y' : 'ies'} that was never marked applied (the writer did not close the image); read through an in-memory replay: open read-write (or check with repair) to replay it`, struct: 'header', field: 'logGuid', repaired: false }
          : { kind: 'warning', message: `the log held a sequence of ${scan.sequence.length} entr${scan.sequence.length === 1 ? 'y' : 'ies'} that was never marked applied (the writer did not close the image): replayed`, struct: 'header', field: 'logGuid', repaired: true },
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
    const id = guidText(e.itemId, 'le');
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
    if (normalizeGuidText(linkage) === undefined) throw err('CORRUPT', 'parentLocator', 'parent_linkage', 'parent_linkage is not a GUID', '{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}', linkage.slice(0, 80));
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

  const image = new VhdxState(
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
    opts.updateIdentityOnWrite,
    findings,
  );
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
