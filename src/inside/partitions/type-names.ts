/**
 * Names for common partition types: MBR system ids (the names fdisk prints) and GPT type GUIDs
 * (the UEFI spec's and the Discoverable Partitions Specification's). A type not here is kept
 * as its id or GUID and has no name.
 */

export const MBR_TYPES: ReadonlyMap<number, string> = new Map([
  [0x01, 'FAT12'],
  [0x04, 'FAT16 <32M'],
  [0x05, 'Extended'],
  [0x06, 'FAT16'],
  [0x07, 'HPFS/NTFS/exFAT'],
  [0x0b, 'W95 FAT32'],
  [0x0c, 'W95 FAT32 (LBA)'],
  [0x0e, 'W95 FAT16 (LBA)'],
  [0x0f, "W95 Ext'd (LBA)"],
  [0x11, 'Hidden FAT12'],
  [0x12, 'Compaq diagnostics'],
  [0x14, 'Hidden FAT16 <32M'],
  [0x16, 'Hidden FAT16'],
  [0x17, 'Hidden HPFS/NTFS'],
  [0x1b, 'Hidden W95 FAT32'],
  [0x1c, 'Hidden W95 FAT32 (LBA)'],
  [0x1e, 'Hidden W95 FAT16 (LBA)'],
  [0x27, 'Hidden NTFS WinRE'],
  [0x42, 'SFS / Windows dynamic'],
  [0x82, 'Linux swap / Solaris'],
  [0x83, 'Linux'],
  [0x85, 'Linux extended'],
  [0x8e, 'Linux LVM'],
  [0xa5, 'FreeBSD'],
  [0xa6, 'OpenBSD'],
  [0xa8, 'Darwin UFS'],
  [0xa9, 'NetBSD'],
  [0xaf, 'HFS / HFS+'],
  [0xbe, 'Solaris boot'],
  [0xbf, 'Solaris'],
  [0xde, 'Dell Utility'],
  [0xee, 'GPT'],
  [0xef, 'EFI (FAT-12/16/32)'],
  [0xfb, 'VMware VMFS'],
  [0xfc, 'VMware VMKCORE'],
  [0xfd, 'Linux raid autodetect'],
]);

/** the MBR ids of an extended partition (the start of an EBR chain) */
export const MBR_EXTENDED = new Set([0x05, 0x0f, 0x85]);
export const MBR_PROTECTIVE = 0xee;

/** lower-case GUID text -> name */
export const GPT_TYPES: ReadonlyMap<string, string> = new Map([
  ['c12a7328-f81f-11d2-ba4b-00a0c93ec93b', 'EFI System'],
  ['024dee41-33e7-11d3-9d69-0008c781f39f', 'MBR partition scheme'],
  ['21686148-6449-6e6f-744e-656564454649', 'BIOS boot'],
  ['e3c9e316-0b5c-4db8-817d-f92df00215ae', 'Microsoft reserved'],
  ['ebd0a0a2-b9e5-4433-87c0-68b6b72699c7', 'Microsoft basic data'],
  ['5808c8aa-7e8f-42e0-85d2-e1e90434cfb3', 'Microsoft LDM metadata'],
  ['af9b60a0-1431-4f62-bc68-3311714a69ad', 'Microsoft LDM data'],
  ['de94bba4-06d1-4d40-a16a-bfd50179d6ac', 'Windows recovery environment'],
  ['e75caf8f-f680-4cee-afa3-b001e56efc2d', 'Microsoft Storage Spaces'],
  ['0fc63daf-8483-4772-8e79-3d69d8477de4', 'Linux filesystem'],
  ['e6d6d379-f507-44c2-a23c-238f2a3df928', 'Linux LVM'],
  ['0657fd6d-a4ab-43c4-84e5-0933c84b4f4f', 'Linux swap'],
  ['a19d880f-05fc-4d3b-a006-743f0f84911e', 'Linux RAID'],
  ['933ac7e1-2eb4-4f13-b844-0e14e2aef915', 'Linux home'],
  ['3b8f8425-20e0-4f3b-907f-1a25a76f98e8', 'Linux server data'],
  ['44479540-f297-41b2-9af7-d131d5f0458a', 'Linux root (x86)'],
  ['4f68bce3-e8cd-4db1-96e7-fbcaf984b709', 'Linux root (x86-64)'],
  ['b921b045-1df0-41c3-af44-4c6f280d3fae', 'Linux root (ARM-64)'],
  ['8da63339-0007-60c0-c436-083ac8230908', 'Linux reserved'],
  ['bc13c2ff-59e6-4262-a352-b275fd6f7172', 'Linux extended boot'],
  ['ca7d7ccb-63ed-4c53-861c-1742536059cc', 'Linux LUKS'],
  ['83bd6b9d-7f41-11dc-be0b-001560b84f0f', 'FreeBSD boot'],
  ['516e7cb4-6ecf-11d6-8ff8-00022d09712b', 'FreeBSD disklabel'],
  ['516e7cb5-6ecf-11d6-8ff8-00022d09712b', 'FreeBSD swap'],
  ['516e7cb6-6ecf-11d6-8ff8-00022d09712b', 'FreeBSD UFS'],
  ['516e7cb8-6ecf-11d6-8ff8-00022d09712b', 'FreeBSD Vinum'],
  ['516e7cba-6ecf-11d6-8ff8-00022d09712b', 'FreeBSD ZFS'],
  ['48465300-0000-11aa-aa11-00306543ecac', 'Apple HFS/HFS+'],
  ['7c3457ef-0000-11aa-aa11-00306543ecac', 'Apple APFS'],
  ['426f6f74-0000-11aa-aa11-00306543ecac', 'Apple boot'],
  ['6a898cc3-1dd2-11b2-99a6-080020736631', 'Solaris /usr & Apple ZFS'],
  ['aa31e02a-400f-11db-9590-000c2911d1b8', 'VMware VMFS'],
  ['9d275380-40ad-11db-bf97-000c2911d1b8', 'VMware vmkcore'],
]);

export function mbrTypeName(id: number): string | undefined {
  return MBR_TYPES.get(id);
}

export function gptTypeName(guid: string): string | undefined {
  return GPT_TYPES.get(guid.toLowerCase());
}

/**
 * A partition type by name, for both schemes: FreeBSD mkimg's aliases (its scheme.c: efi,
 * freebsd*, fat16b, fat32, fat32lba, mbr, ntfs, prepboot, ebr) and the Linux, Windows and BIOS
 * ones gpart/sgdisk users expect. `mbr` is the system id, `gpt` the type GUID (lower case); a
 * scheme without one cannot hold that type (mkimg says the same: bios-boot has no MBR id).
 */
export const TYPE_ALIASES: ReadonlyMap<string, { readonly mbr?: number; readonly gpt?: string }> = new Map([
  ['efi', { mbr: 0xef, gpt: 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b' }],
  ['freebsd', { mbr: 0xa5, gpt: '516e7cb4-6ecf-11d6-8ff8-00022d09712b' }],
  ['freebsd-boot', { gpt: '83bd6b9d-7f41-11dc-be0b-001560b84f0f' }],
  ['freebsd-nandfs', { gpt: '74ba7dd9-a689-11e1-bd04-00e081286acf' }],
  ['freebsd-swap', { gpt: '516e7cb5-6ecf-11d6-8ff8-00022d09712b' }],
  ['freebsd-ufs', { gpt: '516e7cb6-6ecf-11d6-8ff8-00022d09712b' }],
  ['freebsd-vinum', { gpt: '516e7cb8-6ecf-11d6-8ff8-00022d09712b' }],
  ['freebsd-zfs', { gpt: '516e7cba-6ecf-11d6-8ff8-00022d09712b' }],
  ['mbr', { gpt: '024dee41-33e7-11d3-9d69-0008c781f39f' }],
  ['ebr', { mbr: 0x05 }],
  // FAT and NTFS on GPT are Microsoft basic data (mkimg, gpart and Windows agree)
  ['fat16b', { mbr: 0x06, gpt: 'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7' }],
  ['fat32', { mbr: 0x0b, gpt: 'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7' }],
  ['fat32lba', { mbr: 0x0c, gpt: 'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7' }],
  ['ntfs', { mbr: 0x07, gpt: 'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7' }],
  ['ms-basic-data', { mbr: 0x07, gpt: 'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7' }],
  ['ms-reserved', { gpt: 'e3c9e316-0b5c-4db8-817d-f92df00215ae' }],
  ['ms-recovery', { mbr: 0x27, gpt: 'de94bba4-06d1-4d40-a16a-bfd50179d6ac' }],
  ['prepboot', { mbr: 0x41, gpt: '9e1a2d38-c612-4316-aa26-8b49521e5a8b' }],
  ['bios-boot', { gpt: '21686148-6449-6e6f-744e-656564454649' }],
  ['linux-data', { mbr: 0x83, gpt: '0fc63daf-8483-4772-8e79-3d69d8477de4' }],
  ['linux-swap', { mbr: 0x82, gpt: '0657fd6d-a4ab-43c4-84e5-0933c84b4f4f' }],
  ['linux-lvm', { mbr: 0x8e, gpt: 'e6d6d379-f507-44c2-a23c-238f2a3df928' }],
  ['linux-raid', { mbr: 0xfd, gpt: 'a19d880f-05fc-4d3b-a006-743f0f84911e' }],
  ['linux-home', { gpt: '933ac7e1-2eb4-4f13-b844-0e14e2aef915' }],
  ['linux-root-x86-64', { gpt: '4f68bce3-e8cd-4db1-96e7-fbcaf984b709' }],
  ['linux-root-arm64', { gpt: 'b921b045-1df0-41c3-af44-4c6f280d3fae' }],
  ['apple-hfs', { mbr: 0xaf, gpt: '48465300-0000-11aa-aa11-00306543ecac' }],
  ['apple-apfs', { gpt: '7c3457ef-0000-11aa-aa11-00306543ecac' }],
  ['vmware-vmfs', { mbr: 0xfb, gpt: 'aa31e02a-400f-11db-9590-000c2911d1b8' }],
]);

/**
 * The type `name` stands for in `scheme`: an alias above, an MBR id as hex (`0x83`, `83`), or a
 * GPT type GUID; undefined when it is none of these or the scheme has no such type.
 */
export function partitionTypeFor(name: string, scheme: 'mbr' | 'gpt'): number | string | undefined {
  const key = name.trim().toLowerCase();
  const alias = TYPE_ALIASES.get(key);
  if (alias) return scheme === 'mbr' ? alias.mbr : alias.gpt;
  if (scheme === 'mbr') {
    const m = /^(?:0x)?([0-9a-f]{1,2})$/.exec(key);
    const id = m ? parseInt(m[1]!, 16) : NaN;
    return id > 0 && id !== MBR_PROTECTIVE ? id : undefined;
  }
  const g = /^\{?([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})\}?$/.exec(key);
  return g && !/^[0-]+$/.test(g.slice(1).join('')) ? g.slice(1).join('-') : undefined;
}
