/**
 * Creating VHDX files in the layout `qemu-img create -f vhdx` uses (vhd.md §17):
 *   0        file type identifier ("vhdxfile", creator "vdkit 0.1.0")
 *   64 KiB   header 1, 128 KiB header 2 (sequence numbers s and s+1, LogGuid zero)
 *   192 KiB  region table 1, 256 KiB region table 2 (BAT then metadata, Required set)
 *   1 MiB    log, 1 MiB
 *   2 MiB    BAT, entries x 8 rounded up to 1 MiB
 *   then     metadata region, 1 MiB: table, then FileParameters, VirtualDiskSize, Page83
 *            (Virtual Disk ID), LogicalSectorSize, PhysicalSectorSize, [ParentLocator]
 *   +4 MiB   data area (where QEMU starts it): a dynamic file ends here; a fixed one holds its
 *            blocks here, FULLY_PRESENT at consecutive offsets, as a sparse hole
 * Differences from QEMU: Required=1 on both regions (what Windows writes), physical sector
 * size 4096 (Hyper-V's default; QEMU writes 512), unallocated blocks NOT_PRESENT (QEMU's
 * default block_state_zero=on writes ZERO, even for fixed images).
 */
import { randomInt } from '../../core/platform.js';
import { DiskError } from '../../core/errors.js';
import { roundUp } from '../../core/ints.js';
import type { Namespace } from '../../storage/namespace.js';
import type { CreateOptions } from '../types.js';
import { createFile, fixedDynamicType, refusePreallocate, writeZeros } from '../common/create.js';
import type { VhdxImage } from './image.js';
import { parentLocatorItem } from './links.js';
import { openVhdx } from './open.js';
import { NULL_GUID, guidFromIdentity, guidFromText, newGuid } from '../../binary/guid.js';
import { encodeRegionTable } from './layout.js';
import { u32Buffer, u64Buffer } from '../../binary/tables.js';
import {
  ALIGN,
  FILE_SIGNATURE,
  FileIdentifier,
  FileParameters,
  GUIDS,
  HAS_PARENT,
  HEADER_OFFSETS,
  HEADER_SIGNATURE,
  IDENTITY_LABEL,
  LEAVE_BLOCKS_ALLOCATED,
  MAX_BLOCK_SIZE,
  MAX_VIRTUAL_SIZE,
  META_IS_REQUIRED,
  META_IS_VIRTUAL_DISK,
  METADATA_SIGNATURE,
  METADATA_TABLE_SIZE,
  MIN_BLOCK_SIZE,
  MetadataTableEntry,
  MetadataTableHeader,
  MiB,
  PAYLOAD,
  REGION_TABLE_OFFSETS,
  REGION_TABLE_SIZE,
  VDKIT_CREATOR,
  batEntry,
  batEntryCount,
  chunkRatio,
  defaultBlockSize,
  encodeHeader,
  payloadIndex,
  LOG_OFFSET,
  LOG_LENGTH,
  BAT_OFFSET,
  METADATA_LENGTH,
  DATA_GAP,
  CHILD_BLOCK_SIZE,
  LOGICAL_SECTOR,
  PHYSICAL_SECTOR,
} from './structs.js';

// the layout of a new image (structs.ts), named here too for the modules that make one
export { LOG_OFFSET, LOG_LENGTH, BAT_OFFSET, METADATA_LENGTH, DATA_GAP, CHILD_BLOCK_SIZE, LOGICAL_SECTOR, PHYSICAL_SECTOR };

export async function createVhdx(ns: Namespace, path: string, opts: CreateOptions): Promise<VhdxImage> {
  const type = fixedDynamicType(opts, path, 'VHDX');
  const size = opts.capacity;
  if (!Number.isSafeInteger(size) || size <= 0 || size % LOGICAL_SECTOR !== 0 || size > MAX_VIRTUAL_SIZE) {
    throw new DiskError('INVAL', 'capacity must be a positive whole number of 512-byte sectors, at most 64 TiB', { path, field: 'capacity', expected: `512..${MAX_VIRTUAL_SIZE}`, found: size });
  }
  const blockSize = opts.blockSize ?? (opts.parent ? CHILD_BLOCK_SIZE : defaultBlockSize(size));
  if (!Number.isSafeInteger(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    throw new DiskError('INVAL', 'block size must be a power of two from 1 MiB to 256 MiB', { path, field: 'blockSize', expected: `a power of two, ${MIN_BLOCK_SIZE}..${MAX_BLOCK_SIZE}`, found: blockSize });
  }
  const hasParent = type === 'differencing';
  const fixed = type === 'fixed';
  if (opts.preallocate && !fixed) refusePreallocate(path, 'VHDX', type, 'fixed');
  const cr = chunkRatio(LOGICAL_SECTOR, blockSize);
  const blocks = Math.ceil(size / blockSize);
  const entries = batEntryCount(blocks, cr, hasParent);
  const batLength = roundUp(entries * 8, ALIGN);
  const metaOffset = BAT_OFFSET + batLength;
  const dataStart = metaOffset + METADATA_LENGTH + DATA_GAP;
  const fileSize = fixed ? dataStart + size : dataStart;

  // metadata items (QEMU's order and offsets), and the parent locator of a child
  const virtualDiskId = opts.parent?.copyMetadata?.find(([k]) => k === 'uuid')?.[1];
  const items: { id: string; data: Buffer; flags: number }[] = [
    { id: GUIDS.FILE_PARAMETERS, data: FileParameters.encode({ blockSize, flags: (fixed ? LEAVE_BLOCKS_ALLOCATED : 0) | (hasParent ? HAS_PARENT : 0) }), flags: META_IS_REQUIRED },
    { id: GUIDS.VIRTUAL_DISK_SIZE, data: u64Buffer(size), flags: META_IS_REQUIRED | META_IS_VIRTUAL_DISK },
    { id: GUIDS.VIRTUAL_DISK_ID, data: (virtualDiskId !== undefined ? guidFromText(virtualDiskId, 'le') : undefined) ?? newGuid('le'), flags: META_IS_REQUIRED | META_IS_VIRTUAL_DISK },
    { id: GUIDS.LOGICAL_SECTOR_SIZE, data: u32Buffer(LOGICAL_SECTOR), flags: META_IS_REQUIRED | META_IS_VIRTUAL_DISK },
    { id: GUIDS.PHYSICAL_SECTOR_SIZE, data: u32Buffer(PHYSICAL_SECTOR), flags: META_IS_REQUIRED | META_IS_VIRTUAL_DISK },
  ];
  if (opts.parent) {
    const parentPath = ns.resolve(path, opts.parent.parentPath);
    items.push({ id: GUIDS.PARENT_LOCATOR, data: parentLocatorItem(ns.absolute(path), parentPath, opts.parent.hint, guidFromIdentity(opts.parent.parentId, 'le', IDENTITY_LABEL)), flags: META_IS_REQUIRED });
  }
  const meta = Buffer.alloc(METADATA_TABLE_SIZE + roundUp(items.reduce((a, x) => a + x.data.length, 0), 4096));
  MetadataTableHeader.encode({ signature: METADATA_SIGNATURE, entryCount: items.length }, meta, 0);
  let at = METADATA_TABLE_SIZE;
  items.forEach((x, i) => {
    MetadataTableEntry.encode({ itemId: guidFromText(x.id, 'le')!, offset: at, length: x.data.length, flags: x.flags }, meta, 32 + i * 32);
    x.data.copy(meta, at);
    at += x.data.length;
  });

  // header section
  const ident = FileIdentifier.encode({ signature: FILE_SIGNATURE, creator: Buffer.from(VDKIT_CREATOR, 'utf16le') });
  const seq = BigInt(randomInt(0, 2 ** 32 - 1));
  const fileWriteGuid = newGuid('le');
  const dataWriteGuid = newGuid('le');
  const header = (n: bigint) =>
    encodeHeader({
      signature: HEADER_SIGNATURE,
      checksum: 0,
      sequenceNumber: n,
      fileWriteGuid,
      dataWriteGuid,
      logGuid: NULL_GUID,
      logVersion: 0,
      version: 1,
      logLength: LOG_LENGTH,
      logOffset: BigInt(LOG_OFFSET),
    });
  const region = encodeRegionTable(Buffer.alloc(REGION_TABLE_SIZE), [
    { guid: GUIDS.BAT_REGION, offset: BAT_OFFSET, length: batLength, required: true },
    { guid: GUIDS.METADATA_REGION, offset: metaOffset, length: METADATA_LENGTH, required: true },
  ]);

  // BAT: a fixed image's blocks are FULLY_PRESENT from the data area on; everything else NOT_PRESENT
  let bat: Buffer | undefined;
  if (fixed) {
    bat = Buffer.alloc(entries * 8);
    for (let n = 0; n < blocks; n++) bat.writeBigUInt64LE(batEntry(PAYLOAD.FULLY_PRESENT, (dataStart + n * blockSize) / MiB), payloadIndex(n, cr) * 8);
  }

  await createFile(ns, path, opts, async (store) => {
    await store.truncate(fileSize);
    await store.write(0, ident);
    await store.write(HEADER_OFFSETS[0], header(seq));
    await store.write(HEADER_OFFSETS[1], header(seq + 1n));
    for (const off of REGION_TABLE_OFFSETS) await store.write(off, region);
    if (bat) await store.write(BAT_OFFSET, bat);
    await store.write(metaOffset, meta);
    if (fixed && opts.preallocate) await writeZeros(store, dataStart, size);
  });
  // a child is opened as the chain layer opens its top (it does the copy-on-write)
  return openVhdx(ns, path, { readOnly: false });
}

