/**
 * Superblock facts of the Linux-side volume types (from each format's public description):
 * ext2/3/4 (superblock at 1024), XFS (at 0), Btrfs (at 64 KiB), swap (signature at the end of
 * the first page), LUKS 1 and 2 (at 0) and the LVM2 PV label (sectors 0-3).
 */
import { Struct, ascii, bytes, reserved, u16, u32, u64 } from '../../binary/struct.js';
import { guidText, isNullGuid } from '../../binary/guid.js';
import { readPvLabel } from '../lvm/label.js';
import { readIfThere } from '../source.js';
import type { Probe } from './types.js';

const text = (b: Buffer, at = 0, len = b.length - at): string => {
  const s = b.subarray(at, at + len);
  const nul = s.indexOf(0);
  return s.subarray(0, nul < 0 ? s.length : nul).toString('utf8');
};
const uuidOrNone = (b: Buffer): string | undefined => (isNullGuid(b) ? undefined : guidText(b, 'be'));

export const ExtSuperblock = new Struct(
  'ext superblock',
  'le',
  [
    { name: 'inodesCount', type: u32 },
    { name: 'blocksCountLo', type: u32 },
    { name: 'gap0', type: reserved(16) },
    { name: 'logBlockSize', type: u32 },
    { name: 'gap1', type: reserved(28) },
    { name: 'magic', type: u16 },
    { name: 'state', type: u16 },
    { name: 'errors', type: u16 },
    { name: 'minorRevLevel', type: u16 },
    { name: 'gap2', type: reserved(12) },
    { name: 'revLevel', type: u32 },
    { name: 'gap3', type: reserved(12) },
    { name: 'featureCompat', type: u32 },
    { name: 'featureIncompat', type: u32 },
    { name: 'featureRoCompat', type: u32 },
    { name: 'uuid', type: bytes(16) },
    { name: 'volumeName', type: bytes(16) },
    { name: 'gap4', type: reserved(0x150 - 0x88) },
    { name: 'blocksCountHi', type: u32 },
  ] as const,
  0x154,
);

const EXT_MAGIC = 0xef53;
const COMPAT_HAS_JOURNAL = 0x4;
const INCOMPAT_JOURNAL_DEV = 0x8;
const INCOMPAT_64BIT = 0x80;
/** the feature bits ext2 and ext3 drivers knew: anything beyond them makes blkid say ext4 */
const EXT2_RO_SUPP = 0x1 | 0x2 | 0x4;
const EXT2_INCOMPAT_SUPP = 0x2 | 0x10;
const EXT3_INCOMPAT_SUPP = 0x2 | 0x4 | 0x10;

export const ext: Probe = {
  type: 'ext',
  async probe(src) {
    const b = await readIfThere(src, 1024, ExtSuperblock.size);
    if (!b || b.readUInt16LE(ExtSuperblock.offsetOf('magic')) !== EXT_MAGIC) return undefined;
    const sb = ExtSuperblock.decode(b);
    if (sb.logBlockSize > 6) return undefined;
    if (sb.featureIncompat & INCOMPAT_JOURNAL_DEV) return undefined; // an external journal (jbd), not a filesystem
    const journal = (sb.featureCompat & COMPAT_HAS_JOURNAL) !== 0;
    const beyondExt3 = (sb.featureRoCompat & ~EXT2_RO_SUPP) !== 0 || (sb.featureIncompat & ~EXT3_INCOMPAT_SUPP) !== 0;
    const beyondExt2 = (sb.featureRoCompat & ~EXT2_RO_SUPP) !== 0 || (sb.featureIncompat & ~EXT2_INCOMPAT_SUPP) !== 0;
    const type = beyondExt3 ? 'ext4' : journal ? 'ext3' : beyondExt2 ? 'ext4' : 'ext2';
    const blockSize = 1024 << sb.logBlockSize;
    const blocks = sb.blocksCountLo + (sb.featureIncompat & INCOMPAT_64BIT ? sb.blocksCountHi * 2 ** 32 : 0);
    const label = text(sb.volumeName);
    return { type, usage: 'filesystem', label: label || undefined, uuid: uuidOrNone(sb.uuid), version: `${sb.revLevel}.${sb.minorRevLevel}`, size: blocks * blockSize, blockSize };
  },
};

export const XfsSuperblock = new Struct(
  'XFS superblock',
  'be',
  [
    { name: 'magic', type: ascii(4) },
    { name: 'blocksize', type: u32 },
    { name: 'dblocks', type: u64 },
    { name: 'gap0', type: reserved(16) },
    { name: 'uuid', type: bytes(16) },
    { name: 'gap1', type: reserved(52) },
    { name: 'versionnum', type: u16 },
    { name: 'sectsize', type: u16 },
    { name: 'inodesize', type: u16 },
    { name: 'inopblock', type: u16 },
    { name: 'fname', type: bytes(12) },
  ] as const,
  120,
);

export const xfs: Probe = {
  type: 'xfs',
  async probe(src) {
    const b = await readIfThere(src, 0, XfsSuperblock.size);
    if (!b || b.toString('latin1', 0, 4) !== 'XFSB') return undefined;
    const sb = XfsSuperblock.decode(b);
    if (sb.blocksize < 512 || sb.blocksize > 65536 || (sb.blocksize & (sb.blocksize - 1)) !== 0) return undefined;
    const label = text(sb.fname);
    return { type: 'xfs', usage: 'filesystem', label: label || undefined, uuid: uuidOrNone(sb.uuid), size: Number(sb.dblocks) * sb.blocksize, blockSize: sb.sectsize };
  },
};

export const BtrfsSuperblock = new Struct(
  'Btrfs superblock',
  'le',
  [
    { name: 'csum', type: reserved(32) },
    { name: 'fsid', type: bytes(16) },
    { name: 'bytenr', type: u64 },
    { name: 'flags', type: u64 },
    { name: 'magic', type: ascii(8) },
    { name: 'gap0', type: reserved(40) },
    { name: 'totalBytes', type: u64 },
    { name: 'bytesUsed', type: u64 },
    { name: 'gap1', type: reserved(16) },
    { name: 'sectorsize', type: u32 },
    { name: 'gap2', type: reserved(0xc9 - 0x94) },
    { name: 'devItem', type: bytes(98) },
    { name: 'label', type: bytes(256) },
  ] as const,
  0x12b + 256,
);

export const btrfs: Probe = {
  type: 'btrfs',
  async probe(src) {
    const b = await readIfThere(src, 0x10000, BtrfsSuperblock.size);
    if (!b || b.toString('latin1', 0x40, 0x48) !== '_BHRfS_M') return undefined;
    const sb = BtrfsSuperblock.decode(b);
    const label = text(sb.label);
    return { type: 'btrfs', usage: 'filesystem', label: label || undefined, uuid: uuidOrNone(sb.fsid), size: Number(sb.totalBytes), blockSize: sb.sectorsize };
  },
};

export const SwapHeader = new Struct(
  'swap header',
  'le',
  [
    { name: 'bootbits', type: reserved(1024) },
    { name: 'version', type: u32 },
    { name: 'lastPage', type: u32 },
    { name: 'nrBadpages', type: u32 },
    { name: 'uuid', type: bytes(16) },
    { name: 'volumeName', type: bytes(16) },
  ] as const,
  1068,
);

/** the page sizes a swap area may have been made with; the signature ends its first page */
const SWAP_PAGES = [4096, 8192, 16384, 32768, 65536];

export const swap: Probe = {
  type: 'swap',
  async probe(src) {
    for (const page of SWAP_PAGES) {
      const sig = await readIfThere(src, page - 10, 10);
      if (!sig) return undefined;
      const magic = sig.toString('latin1');
      if (magic === 'SWAP-SPACE') return { type: 'swap', usage: 'other', version: '0' };
      if (magic !== 'SWAPSPACE2') continue;
      const h = SwapHeader.decode(await src.read(0, SwapHeader.size));
      const label = text(h.volumeName);
      return { type: 'swap', usage: 'other', label: label || undefined, uuid: uuidOrNone(h.uuid), version: String(h.version), size: (h.lastPage + 1) * page, blockSize: page };
    }
    return undefined;
  },
};

export const LuksHeader = new Struct(
  'LUKS header',
  'be',
  [
    { name: 'magic', type: bytes(6) },
    { name: 'version', type: u16 },
    /** LUKS2: header size, sequence id, label (LUKS1: cipher name and mode here) */
    { name: 'v2hdrSize', type: u64 },
    { name: 'v2seqid', type: u64 },
    { name: 'v2label', type: bytes(48) },
    { name: 'gap0', type: reserved(168 - 72) },
    { name: 'uuid', type: bytes(40) },
    { name: 'v2subsystem', type: bytes(48) },
  ] as const,
  256,
);

const LUKS_MAGIC = Buffer.from('LUKS\xba\xbe', 'latin1');

export const luks: Probe = {
  type: 'crypto_LUKS',
  async probe(src) {
    const b = await readIfThere(src, 0, LuksHeader.size);
    if (!b || !b.subarray(0, 6).equals(LUKS_MAGIC)) return undefined;
    const h = LuksHeader.decode(b);
    if (h.version !== 1 && h.version !== 2) return undefined;
    const label = h.version === 2 ? text(h.v2label) : '';
    return { type: 'crypto_LUKS', usage: 'crypto', label: label || undefined, uuid: text(h.uuid) || undefined, version: String(h.version) };
  },
};

export const lvm: Probe = {
  type: 'LVM2_member',
  async probe(src) {
    const label = await readPvLabel(src);
    if (!label) return undefined;
    return { type: 'LVM2_member', usage: 'raid', uuid: label.uuid, version: 'LVM2 001', size: label.deviceSize || undefined };
  },
};

