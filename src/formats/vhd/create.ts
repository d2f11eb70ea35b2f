/**
 * Creating VHD files (vhd.md §9; layout as `qemu-img create -f vpc` writes it, so a dynamic
 * image is byte for byte QEMU's except for the creator, unique id, timestamp and checksums):
 *   fixed         [data: size bytes, a sparse hole][footer]
 *   dynamic       [footer copy][dynamic header @512][BAT @1536, 0xFF, padded to 512][footer]
 *   differencing  as dynamic, type 4, with parent fields, and W2ku then W2ru locator data
 *                 (4 KiB reserved each, so a rebase usually rewrites them in place) after the BAT
 * Sizes are exact by default (Hyper-V, Azure, QEMU force_size); `chsRounding` rounds up to a
 * CHS-describable size as QEMU does without force_size. Creator "vdkt" (NOTES.md).
 */
import { DiskError } from '../../core/errors.js';
import { ceilDiv, roundUp } from '../../core/ints.js';
import type { Namespace } from '../../storage/namespace.js';
import type { CreateOptions, Geometry } from '../types.js';
import { createFile, fixedDynamicType, refusePreallocate, writeZeros } from '../common/create.js';
import { VhdImage } from './image.js';
import type { ParentLinkage } from './layout.js';
import { parentLinkage } from './links.js';
import {
  CREATOR_HOST_WINDOWS,
  DEFAULT_BLOCK_SIZE,
  DISK_DIFFERENCING,
  DISK_DYNAMIC,
  DISK_FIXED,
  FEATURES_RESERVED,
  FILE_FORMAT_VERSION,
  FOOTER_COOKIE,
  HEADER_COOKIE,
  HEADER_VERSION,
  LOCATOR_RESERVE,
  MAX_VHD_BYTES,
  NO_OFFSET,
  ParentLocatorEntry,
  SECTOR,
  VDKIT_CREATOR_APP,
  VDKIT_CREATOR_VERSION,
  chsRoundedSize,
  codeBytes,
  encodeFooter,
  encodeHeader,
  exactSizeGeometry,
  newUniqueId,
  toVhdTime,
  uuidFromIdentity,
  type FooterValue,
} from './structs.js';

const TABLE_OFFSET = 3 * SECTOR;

export async function createVhd(ns: Namespace, path: string, opts: CreateOptions): Promise<VhdImage> {
  const type = fixedDynamicType(opts, path, 'VHD');
  if (opts.preallocate && type !== 'fixed') refusePreallocate(path, 'VHD', type, 'fixed');
  if (!Number.isSafeInteger(opts.capacity) || opts.capacity <= 0 || opts.capacity % SECTOR !== 0) {
    throw new DiskError('INVAL', 'capacity must be a positive whole number of 512-byte sectors', { path, field: 'capacity', found: opts.capacity });
  }
  let size = opts.capacity;
  let geometry: Geometry;
  if (opts.chsRounding) ({ size, geometry } = chsRoundedSize(size));
  else geometry = exactSizeGeometry(size);
  if (size > MAX_VHD_BYTES) {
    throw new DiskError('INVAL', 'a VHD holds at most 2040 GiB', { path, field: 'capacity', expected: `<= ${MAX_VHD_BYTES}`, found: size });
  }

  const footer: FooterValue = {
    cookie: FOOTER_COOKIE,
    features: FEATURES_RESERVED,
    fileFormatVersion: FILE_FORMAT_VERSION,
    dataOffset: type === 'fixed' ? NO_OFFSET : BigInt(SECTOR),
    timestamp: toVhdTime(new Date()),
    creatorApplication: codeBytes(VDKIT_CREATOR_APP),
    creatorVersion: VDKIT_CREATOR_VERSION,
    creatorHostOS: codeBytes(CREATOR_HOST_WINDOWS),
    originalSize: BigInt(size),
    currentSize: BigInt(size),
    cylinders: geometry.cylinders,
    heads: geometry.heads,
    sectorsPerTrack: geometry.sectors,
    diskType: type === 'fixed' ? DISK_FIXED : type === 'dynamic' ? DISK_DYNAMIC : DISK_DIFFERENCING,
    checksum: 0,
    uniqueId: newUniqueId(),
    savedState: 0,
  };
  const footerBytes = encodeFooter(footer);
  // the parent's footer timestamp goes into the child: the chain layer read it (VhdImage.linkRecord)
  let linkage: ParentLinkage | undefined;
  if (opts.parent) {
    const parentPath = ns.resolve(path, opts.parent.parentPath);
    const facts = opts.parent.facts;
    const timestamp = facts?.format === 'vhd' ? Number(facts.record?.timestamp ?? 0) : 0;
    linkage = parentLinkage(ns.absolute(path), parentPath, opts.parent.hint, uuidFromIdentity(opts.parent.parentId), timestamp);
  }

  await createFile(ns, path, opts, async (store) => {
    if (type === 'fixed') {
      if (opts.preallocate) await writeZeros(store, 0, size);
      await store.write(size, footerBytes);
    } else {
      const prefix = dynamicPrefix(size, footerBytes, linkage);
      await store.writev(0, [prefix, footerBytes]);
    }
  });
  // a child is opened as the chain layer opens its top (it does the copy-on-write)
  return VhdImage.open(ns, path, { readOnly: false });
}

/** Everything of a fresh dynamic/differencing file before its footer. */
function dynamicPrefix(size: number, footerBytes: Buffer, linkage: ParentLinkage | undefined): Buffer {
  const entries = ceilDiv(size, DEFAULT_BLOCK_SIZE);
  const batBytes = roundUp(entries * 4, SECTOR);
  let at = TABLE_OFFSET + batBytes;
  const areas = (linkage?.locators ?? []).map((l) => {
    const space = roundUp(Math.max(l.data.length, LOCATOR_RESERVE), SECTOR);
    const area = { ...l, offset: at, space };
    at += space;
    return area;
  });
  const prefix = Buffer.alloc(at);
  footerBytes.copy(prefix, 0);
  const locatorEntries = Buffer.alloc(8 * 24);
  areas.forEach((a, i) => {
    ParentLocatorEntry.encode({ platformCode: a.code, platformDataSpace: a.space, platformDataLength: a.data.length, platformDataOffset: BigInt(a.offset) }, locatorEntries, i * 24);
    a.data.copy(prefix, a.offset);
  });
  const header = encodeHeader({
    cookie: HEADER_COOKIE,
    dataOffset: NO_OFFSET,
    tableOffset: BigInt(TABLE_OFFSET),
    headerVersion: HEADER_VERSION,
    maxTableEntries: entries,
    blockSize: DEFAULT_BLOCK_SIZE,
    checksum: 0,
    parentUniqueId: linkage?.parentUniqueId ?? Buffer.alloc(16),
    parentTimestamp: linkage?.parentTimestamp ?? 0,
    parentUnicodeName: linkage?.parentUnicodeName ?? Buffer.alloc(512),
    parentLocators: locatorEntries,
  });
  header.copy(prefix, SECTOR);
  prefix.fill(0xff, TABLE_OFFSET, TABLE_OFFSET + batBytes);
  return prefix;
}

