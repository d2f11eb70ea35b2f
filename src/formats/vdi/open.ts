/**
 * Opening a VDI: the pre-header and header, every field checked (vdi.md §12), then the block
 * map read and validated whole (NOTES.md "Validation at open"); and the allocated-count check
 * a read-write open repairs. check.ts reads the header through parseHeader and the map leniently.
 */
import { DiskError, atMost, type ErrorCode } from '../../core/errors.js';
import { ceilDiv, isPowerOfTwo, toSafeNumber } from '../../core/ints.js';
import type { ByteStore } from '../../storage/store.js';
import { readU32Array } from '../../binary/tables.js';
import {
  BLOCK_ZERO,
  HEADER_V1PLUS_SIZE,
  HEADER_V1_SIZE,
  KNOWN_FLAGS,
  NULL_UUID,
  PRE_HEADER_SIZE,
  SECTOR,
  TYPE_DIFF,
  TYPE_NORMAL,
  VDI_SIGNATURE,
  VDI_VERSION_LEGACY,
  VdiHeaderV0,
  VdiHeaderV1,
  VdiHeaderV1Plus,
  VdiPreHeader,
  isNullUuid,
  uuidToText,
  type VdiHeaderValue,
} from './structs.js';
import { MAX_BLOCK_SIZE, MAX_BLOCKS, MAX_DISK_BYTES, MIN_BLOCK_SIZE, hex, type HeaderKind } from './layout.js';
import { writeHeader, type VdiFile } from './state.js';

export interface Parsed {
  h: VdiHeaderValue;
  kind: HeaderKind;
  map: Uint32Array;
  capacity: number;
  /** allocated entries in the map */
  used: number;
  /** highest physical index used, -1 when none */
  maxIndex: number;
}

/**
 * cBlocksAllocated must equal the number of allocated map entries and the data area must be
 * dense (indices 0..n-1). Read-only: a mismatch is reported in info().warnings. Read-write: a
 * dense map with a wrong count (what a crash between map entry and header leaves) is repaired
 * by writing the count from the map; a data area with unused slots needs repair (NEEDSREPAIR).
 */
export async function checkCount(file: VdiFile, used: number, maxIndex: number): Promise<void> {
  const dense = maxIndex + 1 === used;
  if (used === file.h.cBlocksAllocated && dense) return;
  const what = dense
    ? `cBlocksAllocated is ${file.h.cBlocksAllocated} but the block map has ${used} allocated blocks`
    : `the data area has unused slots (${used} blocks allocated, highest index ${maxIndex}, cBlocksAllocated ${file.h.cBlocksAllocated})`;
  if (file.readOnly) {
    file.warnings.push(what);
    file.nextIndex = Math.max(used, maxIndex + 1);
    return;
  }
  if (!dense) {
    throw new DiskError('NEEDSREPAIR', `${what}: open read-only, or convert the image`, { path: file.path, struct: 'VdiHeader', field: 'cBlocksAllocated', expected: used, found: file.h.cBlocksAllocated });
  }
  file.h.cBlocksAllocated = used;
  file.nextIndex = used;
  await writeHeader(file);
  await file.store.flush();
  file.warnings.push(`${what}; repaired`);
}

/** A header that passed every field check; the block map not yet read (check.ts reads it leniently). */
export interface ParsedHeader {
  h: VdiHeaderValue;
  kind: HeaderKind;
  capacity: number;
  fileSize: number;
}

export async function parse(store: ByteStore, path: string): Promise<Parsed> {
  const { h, kind, capacity, fileSize } = await parseHeader(store, path);
  const bad = (code: ErrorCode, field: string, message: string, expected?: unknown, found?: unknown) => new DiskError(code, message, { path, struct: 'VdiHeader', field, expected, found });
  if (h.cBlocksAllocated > h.cBlocks) throw bad('CORRUPT', 'cBlocksAllocated', 'more blocks allocated than the disk has', `<= ${h.cBlocks}`, h.cBlocksAllocated);
  const m = await parseMap(store, path, h, fileSize);
  return { h, kind, capacity, ...m };
}

/**
 * The pre-header and header, every field checked (vdi.md §12) except cBlocksAllocated, which
 * a check repairs rather than refuses.
 */
export async function parseHeader(store: ByteStore, path: string): Promise<ParsedHeader> {
  const fileSize = await store.size();
  const bad = (code: ErrorCode, field: string, message: string, expected?: unknown, found?: unknown) => new DiskError(code, message, { path, struct: 'VdiHeader', field, expected, found });

  if (fileSize < PRE_HEADER_SIZE) throw bad('INVALIDDISK', 'signature', 'file is too short to be a VDI image', `>= ${PRE_HEADER_SIZE} bytes`, fileSize);
  const head = await store.readZeroPadded(0, Math.min(fileSize, PRE_HEADER_SIZE + HEADER_V1PLUS_SIZE));
  const pre = VdiPreHeader.decode(head, 0, path);
  if (pre.signature !== VDI_SIGNATURE) throw bad('INVALIDDISK', 'signature', 'not a VDI image (bad signature)', hex(VDI_SIGNATURE), hex(pre.signature));

  let h: VdiHeaderValue;
  let kind: HeaderKind;
  if (pre.version === VDI_VERSION_LEGACY) {
    kind = 'v0';
    if (fileSize < VdiHeaderV0.size) throw bad('CORRUPT', 'cbHeader', 'file truncated inside the v0 header', `>= ${VdiHeaderV0.size} bytes`, fileSize);
    const v0 = VdiHeaderV0.decode(head, 0, path);
    h = {
      ...v0,
      cbHeader: 0,
      offBlocks: VdiHeaderV0.size,
      offData: VdiHeaderV0.size + 4 * v0.cBlocks,
      dummy: 0,
      cbBlockExtra: 0,
      uuidParentModify: Buffer.from(NULL_UUID),
      lchsCylinders: 0,
      lchsHeads: 0,
      lchsSectors: 0,
      lchsSectorSize: SECTOR,
    };
  } else {
    if (pre.version >>> 16 !== 1) {
      throw bad('UNSUPPORTEDDISKVERSION', 'version', 'unsupported VDI version', '1.x (0x0001xxxx) or legacy 0x00000002', `${pre.version >>> 16}.${pre.version & 0xffff}`);
    }
    if (fileSize < PRE_HEADER_SIZE + 4) throw bad('CORRUPT', 'cbHeader', 'file truncated inside the header', `>= ${PRE_HEADER_SIZE + HEADER_V1_SIZE} bytes`, fileSize);
    const cbHeader = head.readUInt32LE(PRE_HEADER_SIZE);
    if (cbHeader < HEADER_V1_SIZE) throw bad('CORRUPT', 'cbHeader', 'header size too small', `>= 0x${HEADER_V1_SIZE.toString(16)}`, `0x${cbHeader.toString(16)}`);
    kind = cbHeader >= HEADER_V1PLUS_SIZE ? 'v1+' : 'v1';
    const need = PRE_HEADER_SIZE + (kind === 'v1+' ? HEADER_V1PLUS_SIZE : HEADER_V1_SIZE);
    if (fileSize < need) throw bad('CORRUPT', 'cbHeader', 'file truncated inside the header', `>= ${need} bytes`, fileSize);
    if (kind === 'v1+') {
      h = VdiHeaderV1Plus.decode(head, 0, path);
    } else {
      h = { ...VdiHeaderV1.decode(head, 0, path), lchsCylinders: 0, lchsHeads: 0, lchsSectors: 0, lchsSectorSize: SECTOR };
    }
  }

  // field checks (vdi.md §12), each naming its field
  if (h.type < TYPE_NORMAL || h.type > TYPE_DIFF) throw bad('CORRUPT', 'type', 'unknown image type', '1 (normal), 2 (fixed), 3 (undo) or 4 (diff)', h.type);
  if (h.flags & ~KNOWN_FLAGS) throw bad('UNSUPPORTEDFEATURE', 'flags', 'unknown image flags', 'bits of 0x301', hex(h.flags));
  if (kind === 'v1+' && h.lchsSectorSize !== SECTOR) throw bad('CORRUPT', 'lchsSectorSize', 'LCHS geometry sector size must be 512', SECTOR, h.lchsSectorSize);
  if (h.cbDisk === 0n) throw bad('CORRUPT', 'cbDisk', 'disk size is 0', '> 0', 0);
  if (h.cbDisk > BigInt(MAX_DISK_BYTES)) throw bad('CORRUPT', 'cbDisk', 'disk size is over the format limit', `<= ${MAX_DISK_BYTES} (4 PiB - 3 MiB)`, h.cbDisk);
  const cbDisk = toSafeNumber(h.cbDisk, { path, struct: 'VdiHeader', field: 'cbDisk' });
  if (!isPowerOfTwo(h.cbBlock) || h.cbBlock < MIN_BLOCK_SIZE || h.cbBlock > MAX_BLOCK_SIZE) {
    throw bad('CORRUPT', 'cbBlock', 'invalid block size', `a power of two from ${MIN_BLOCK_SIZE} to ${MAX_BLOCK_SIZE}`, h.cbBlock);
  }
  if (h.cbBlockExtra !== 0 && (!isPowerOfTwo(h.cbBlockExtra) || h.cbBlockExtra > h.cbBlock)) {
    throw bad('CORRUPT', 'cbBlockExtra', 'invalid per-block extra data size', `0 or a power of two <= ${h.cbBlock}`, h.cbBlockExtra);
  }
  const wantBlocks = ceilDiv(cbDisk, h.cbBlock);
  if (h.cBlocks === 0 || h.cBlocks !== wantBlocks) throw bad('CORRUPT', 'cBlocks', 'block count does not match the disk size', `ceil(cbDisk / cbBlock) = ${wantBlocks}`, h.cBlocks);
  if (h.cBlocks > MAX_BLOCKS) throw bad('CORRUPT', 'cBlocks', 'too many blocks', `<= ${MAX_BLOCKS}`, h.cBlocks);
  const headerEnd = kind === 'v0' ? VdiHeaderV0.size : PRE_HEADER_SIZE + (kind === 'v1+' ? HEADER_V1PLUS_SIZE : HEADER_V1_SIZE);
  if (h.offBlocks < headerEnd) throw bad('CORRUPT', 'offBlocks', 'block map overlaps the header', `>= 0x${headerEnd.toString(16)}`, `0x${h.offBlocks.toString(16)}`);
  const mapBytes = 4 * h.cBlocks;
  if (h.offData < h.offBlocks + mapBytes) throw bad('CORRUPT', 'offData', 'data area overlaps the block map', `>= ${h.offBlocks + mapBytes}`, h.offData);
  if (h.offBlocks + mapBytes > fileSize) throw bad('CORRUPT', 'offBlocks', 'block map lies past the end of the file (file truncated?)', atMost(fileSize - mapBytes), h.offBlocks);
  if (isNullUuid(h.uuidCreate)) throw bad('CORRUPT', 'uuidCreate', 'image UUID is null', 'a non-null UUID', uuidToText(h.uuidCreate));
  if (isNullUuid(h.uuidModify)) throw bad('CORRUPT', 'uuidModify', 'modification UUID is null', 'a non-null UUID', uuidToText(h.uuidModify));
  // odd sizes (VBoxManage convertfromraw) are rounded up to whole sectors, as QEMU does
  const capacity = Math.ceil(cbDisk / SECTOR) * SECTOR;
  return { h, kind, capacity, fileSize };
}

async function parseMap(store: ByteStore, path: string, h: VdiHeaderValue, fileSize: number): Promise<{ map: Uint32Array; used: number; maxIndex: number }> {
  const bad = (code: ErrorCode, field: string, message: string, expected?: unknown, found?: unknown) => new DiskError(code, message, { path, struct: 'VdiHeader', field, expected, found });
  // the map: read (bounded by the file size, checked above), then every entry checked
  const map = await readU32Array(store, h.offBlocks, h.cBlocks);
  const stride = h.cbBlock + h.cbBlockExtra;
  const fileBlocks = fileSize > h.offData ? Math.floor((fileSize - h.offData) / stride) : 0;
  let used = 0;
  let maxIndex = -1;
  for (let i = 0; i < map.length; i++) {
    const e = map[i]!;
    if (e >= BLOCK_ZERO) continue;
    if (e >= h.cBlocks) throw bad('CORRUPT', `blockMap[${i}]`, 'block map entry points past the data area', `< ${h.cBlocks} (cBlocks)`, e);
    if (e >= fileBlocks) throw bad('CORRUPT', `blockMap[${i}]`, 'block map entry points past the end of the file (file truncated?)', `< ${fileBlocks} blocks in the file`, e);
    used++;
    if (e > maxIndex) maxIndex = e;
  }
  // two entries naming one physical block: more entries than blocks in the file proves it
  // without looking further; otherwise a bitmap of the used indices finds the pair
  if (used > fileBlocks) throw bad('CORRUPT', 'blockMap', 'more allocated blocks than the file holds (entries share blocks)', `<= ${fileBlocks}`, used);
  if (used > 0) {
    const seen = new Uint8Array(Math.ceil((maxIndex + 1) / 8));
    for (let i = 0; i < map.length; i++) {
      const e = map[i]!;
      if (e >= BLOCK_ZERO) continue;
      const bit = 1 << (e & 7);
      if (seen[e >>> 3]! & bit) {
        const other = map.indexOf(e);
        throw new DiskError('CORRUPT', `two block map entries point at the same physical block (${other} and ${i})`, { path, struct: 'VdiHeader', field: `blockMap[${i}]`, found: e, other: `blockMap[${other}]` });
      }
      seen[e >>> 3]! |= bit;
    }
  }
  return { map, used, maxIndex };
}
