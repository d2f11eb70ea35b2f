/**
 * Creating VDI images with VirtualBox's layout (NOTES.md "Layout we write"):
 *   dynamic       type 1, every map entry FREE, file = offData bytes
 *   fixed         type 2, map entry i = i, cBlocksAllocated = cBlocks, file sized to the whole
 *                 data area (sparse unless `preallocate` writes the zeros)
 *   differencing  type 4 (made when `opts.parent` is given): uuidLinkage = parent's uuidCreate,
 *                 uuidParentModify = parent's uuidModify, the parent's size, block size and LCHS
 * Header v1+ (cbHeader 0x190), version 1.1, block map at 1 MiB, data area 1 MiB aligned, 1 MiB
 * blocks. Write order: file size, block map, then the header last, so a file without a valid
 * header is all a failed create can leave (and it is removed).
 */
import { DiskError } from '../../core/errors.js';
import { ceilDiv } from '../../core/ints.js';
import { u32Bytes } from '../../binary/tables.js';
import type { Namespace } from '../../storage/namespace.js';
import type { CreateOptions } from '../types.js';
import { refusePreallocate, writeZeros } from '../common/create.js';
import { VdiImage } from './image.js';
import { MAX_CREATE_BYTES, TYPE_ALIASES } from './layout.js';
import {
  BLOCK_FREE,
  DEFAULT_BLOCK_SIZE,
  FILE_INFO_VBOX,
  HEADER_V1PLUS_SIZE,
  NULL_UUID,
  PRE_HEADER_SIZE,
  SECTOR,
  TYPE_DIFF,
  TYPE_FIXED,
  TYPE_NORMAL,
  VDI_SIGNATURE,
  VDI_VERSION_1_1,
  VdiHeaderV1Plus,
  freshLayout,
  newUuid,
  uuidFromText,
  type VdiHeaderValue,
} from './structs.js';

// what measure.ts needs too lives in layout.ts
export { MAX_CREATE_BYTES, TYPE_ALIASES };

export async function createVdi(ns: Namespace, path: string, opts: CreateOptions): Promise<VdiImage> {
  const type = opts.type === undefined ? (opts.parent ? TYPE_DIFF : TYPE_NORMAL) : TYPE_ALIASES[opts.type.toLowerCase()];
  if (type === undefined) throw new DiskError('INVAL', `unknown VDI type ${JSON.stringify(opts.type)}`, { path, field: 'type', expected: 'dynamic, fixed (or differencing with a parent)' });
  if (opts.parent && type !== TYPE_DIFF) throw new DiskError('INVAL', 'a VDI child is always a differencing image', { path, field: 'type', found: opts.type });
  if (!opts.parent && type === TYPE_DIFF) throw new DiskError('INVAL', 'a differencing image needs a parent (create it with createChild)', { path, field: 'type', found: opts.type });
  if (!Number.isSafeInteger(opts.capacity) || opts.capacity <= 0) {
    throw new DiskError('INVAL', 'capacity must be a positive whole number of bytes', { path, field: 'capacity', found: opts.capacity });
  }

  let cbDisk = BigInt(Math.ceil(opts.capacity / SECTOR) * SECTOR);
  let cbBlock = DEFAULT_BLOCK_SIZE;
  let linkage = Buffer.from(NULL_UUID);
  let parentModify = Buffer.from(NULL_UUID);
  let lchs = { c: 0, h: 0, s: 0 };
  if (opts.parent) {
    // The child describes the parent's disk: same size, block size and LCHS geometry
    // (VDCreateDiff), as the chain layer read them from the open parent (VdiImage.linkRecord).
    const rec = opts.parent.facts?.format === 'vdi' ? opts.parent.facts.record : undefined;
    if (!rec || typeof rec.uuidCreate !== 'string' || typeof rec.uuidModify !== 'string' || typeof rec.cbDisk !== 'string' || typeof rec.cbBlock !== 'number') {
      throw new DiskError('OPENPARENT', `the parent ${opts.parent.parentPath} was not read as a VDI image (a VDI child records its parent's UUIDs, size and block size)`, { path, field: 'parent' });
    }
    {
      const wantId = uuidFromText(opts.parent.parentId);
      const parentCreate = uuidFromText(rec.uuidCreate)!;
      if (!wantId || !wantId.equals(parentCreate)) {
        throw new DiskError('CID_MISMATCH', `parent ${opts.parent.parentPath} has UUID ${rec.uuidCreate}, not ${opts.parent.parentId}`, { path, field: 'uuidLinkage', expected: opts.parent.parentId, found: rec.uuidCreate });
      }
      const parentCapacity = Number(BigInt(rec.cbDisk));
      if (opts.capacity !== parentCapacity) {
        throw new DiskError('INVAL', 'a differencing image has exactly its parent\'s size', { path, field: 'capacity', expected: parentCapacity, found: opts.capacity });
      }
      cbDisk = BigInt(rec.cbDisk);
      cbBlock = rec.cbBlock;
      linkage = Buffer.from(parentCreate);
      parentModify = Buffer.from(uuidFromText(rec.uuidModify)!);
      if (typeof rec.lchsCylinders === 'number') lchs = { c: rec.lchsCylinders, h: Number(rec.lchsHeads), s: Number(rec.lchsSectors) };
    }
    const inherited = new Map(opts.parent.copyMetadata ?? []);
    const num = (k: string, d: number) => (/^\d{1,4}$/.test(inherited.get(k) ?? '') ? Number(inherited.get(k)) : d);
    lchs = { c: num('geometry.cylinders', lchs.c), h: num('geometry.heads', lchs.h), s: num('geometry.sectors', lchs.s) };
    if (lchs.c > 1024 || lchs.h > 255 || lchs.s > 63) lchs = { c: 0, h: 0, s: 0 };
  }
  if (cbDisk > BigInt(MAX_CREATE_BYTES)) {
    throw new DiskError('INVAL', 'capacity is over the VDI limit QEMU and VirtualBox share', { path, field: 'capacity', expected: `<= ${MAX_CREATE_BYTES}`, found: opts.capacity });
  }

  const cBlocks = ceilDiv(Number(cbDisk), cbBlock);
  const { offBlocks, offData } = freshLayout(cBlocks);
  const fixed = type === TYPE_FIXED;
  if (opts.preallocate && !fixed) refusePreallocate(path, 'VDI', opts.type ?? (opts.parent ? 'differencing' : 'dynamic'), 'fixed');
  const fileInfo = Buffer.alloc(64);
  fileInfo.write(FILE_INFO_VBOX, 'latin1');
  const header: VdiHeaderValue = {
    fileInfo,
    signature: VDI_SIGNATURE,
    version: VDI_VERSION_1_1,
    cbHeader: HEADER_V1PLUS_SIZE,
    type,
    flags: 0,
    comment: Buffer.alloc(256),
    offBlocks,
    offData,
    legacyCylinders: 0,
    legacyHeads: 0,
    legacySectors: 0,
    legacySectorSize: SECTOR,
    dummy: 0,
    cbDisk,
    cbBlock,
    cbBlockExtra: 0,
    cBlocks,
    cBlocksAllocated: fixed ? cBlocks : 0,
    uuidCreate: newUuid(),
    uuidModify: newUuid(),
    uuidLinkage: linkage,
    uuidParentModify: parentModify,
    lchsCylinders: lchs.c,
    lchsHeads: lchs.h,
    lchsSectors: lchs.s,
    lchsSectorSize: SECTOR,
  };

  const existed = await ns.exists(path);
  const st = await ns.create(path, { overwrite: !!opts.overwrite });
  try {
    const fileSize = fixed ? offData + cBlocks * cbBlock : offData;
    await st.truncate(fileSize);
    // the block map, in pieces of 1 MiB: FREE entries, or the identity map of a fixed image
    const perChunk = 256 * 1024;
    const chunk = new Uint32Array(Math.min(cBlocks, perChunk));
    for (let first = 0; first < cBlocks; first += perChunk) {
      const n = Math.min(perChunk, cBlocks - first);
      const view = chunk.subarray(0, n);
      if (fixed) for (let i = 0; i < n; i++) view[i] = first + i;
      else view.fill(BLOCK_FREE);
      await st.write(offBlocks + first * 4, u32Bytes(view, 0, n));
    }
    if (fixed && opts.preallocate) {
      await writeZeros(st, offData, cBlocks * cbBlock);
    }
    await st.flush();
    await st.write(0, VdiHeaderV1Plus.encode(header).subarray(0, PRE_HEADER_SIZE + HEADER_V1PLUS_SIZE));
    await st.flush();
  } catch (err) {
    await st.close().catch(() => {});
    if (!existed || opts.overwrite) await ns.remove(path).catch(() => {});
    throw err;
  }
  await st.close();
  return VdiImage.open(ns, path, { readOnly: false });
}
