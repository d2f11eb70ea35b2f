/**
 * The contract between the generic layers and a format driver.
 *
 * An Image answers for its own layer only: every byte range is `data` (stored here), `zero`
 * (known to read as zeros, even over a parent) or `unallocated` (this layer has nothing: ask
 * the parent, or zeros when there is none). The Disk wrapper (src/disk.ts) validates every
 * request (bounds, read-only, closed) before it reaches a driver, so drivers never re-check.
 */
import type { ByteStore } from '../storage/store.js';
import type { PropertyTable } from './common/properties.js';
import type { Namespace } from '../storage/namespace.js';
import type { SequentialFormat } from './sequential.js';
import type { StreamSource } from './common/stream-source.js';

export type BlockState = 'data' | 'zero' | 'unallocated';

export interface BlockExtent {
  offset: number;
  length: number;
  state: BlockState;
  /** in a chain: which link holds the range (0 = the top); absent for a single image */
  depth?: number;
}

/**
 * A block status range and where its bytes lie in one of the image's files (qemu-img map's
 * `offset`): `mapStatus` splits ranges wherever the bytes stop being contiguous in one file.
 */
export interface MappedExtent extends BlockExtent {
  /** the file that holds the bytes, with `fileOffset`; absent where they lie in no one place (compressed, zero, unallocated) */
  file?: string;
  fileOffset?: number;
}

/** What a link records about its parent (VMDK parentFileNameHint + parentCID, ...). */
export interface BackingLink {
  /**
   * the parent's path as the image stores it (may be relative to the image's folder); empty
   * when the format records none (VDI: the parent is found by its UUID)
   */
  hint: string;
  /** more places the image records, tried in order after `hint` (VHD parent locators) */
  hints?: string[];
  /** format of the parent, when the image says (VMDK parents are always VMDK) */
  format?: string;
  /** the parent identity the child was made against (VMDK: parent CID, 8 hex digits; VDI/VHD: parent UUID) */
  parentId?: string;
  /** when no hint leads to the parent, look in the child's folder for an image with identity `parentId` */
  searchByIdentity?: boolean;
}

export interface Geometry {
  cylinders: number;
  heads: number;
  sectors: number;
}

export interface ExtentInfo {
  /** resolved file path (undefined for ZERO extents) */
  path?: string;
  /** extent type as the format names it (FLAT, SPARSE, VMFS, ZERO, ...) */
  type: string;
  access: string;
  /** bytes of the virtual disk this extent covers */
  length: number;
  /** where it starts in the virtual disk */
  virtualOffset: number;
  /** start of the data inside its file (FLAT), bytes */
  fileOffset: number;
}

export interface DiskInfo {
  format: string;
  /** createType for VMDK; "fixed"/"dynamic" style names for other formats */
  type: string;
  capacity: number;
  sectors: number;
  adapterType?: string;
  geometry?: Geometry;
  biosGeometry?: Geometry;
  numLinks: number;
  parent?: string;
  /** the files of each link, top first (chains only) */
  chain?: string[];
  cid?: string;
  parentCid?: string;
  uuid?: string;
  hwVersion?: string;
  version?: number;
  extents: ExtentInfo[];
  /** virtual bytes this layer stores (data ranges of its block status) */
  allocatedBytes: number;
  /** sum of the lengths of every file of the image */
  fileSize: number;
  /** bytes the host file system has allocated for them */
  diskSize: number;
  readOnly: boolean;
  compressed?: boolean;
  files: string[];
  /** the allocation unit in bytes (qcow2 cluster, VMDK grain, VDI/VHD/VHDX block); absent where the format has none (raw) */
  clusterSize?: number;
  /** the format's "not closed cleanly" flag is set (qcow2 dirty bit); absent where the format has none vdkit reports */
  dirty?: boolean;
  /** the format the image records for its parent (qcow2 backing format; VMDK parents are VMDK) */
  parentFormat?: string;
  /**
   * facts only this format has, under the keys qemu-img gives them in `format-specific.data`
   * (qcow2: compat, refcount-bits, corrupt, lazy-refcounts, extended-l2, compression-type;
   * VMDK: cid, parent-cid, create-type, extents), so `info --output=json` passes them on as they are
   */
  specific?: Record<string, unknown>;
  /** inconsistencies tolerated on a read-only open (e.g. a VDI allocated-block count that disagrees with its map) */
  warnings?: string[];
}

export interface Capabilities {
  readonly write: 'none' | 'native';
  /** native: the format knows which ranges it stores; emulate: found by reading (raw) */
  readonly blockStatus: 'native' | 'emulate';
  readonly zero: 'none' | 'emulate' | 'native';
  /** format metadata keys that can be listed, read and written (VMDK ddb, VDI comment, ...) */
  readonly metadata: boolean;
  /** the types `create` accepts, the first being the default */
  readonly createTypes: readonly string[];
  /** can be a child of another image of this format (redo log, differencing image) */
  readonly differencing: boolean;
  /** a child must have exactly its parent's size */
  readonly differencingSameSize: boolean;
  /**
   * how a child of this format names its parent: by `identity` (it records the parent's CID or
   * UUID, so the parent must be of the same format and is checked when the chain opens) or by
   * `name` only (qcow2: a file name and a format; any format can be the parent)
   */
  readonly parentLink: 'identity' | 'name';
  /**
   * the identity children record changes whenever the content does (VMDK CID), so a commit into
   * a base gives it a new one; false where it is a fixed name (VDI creation UUID, VHD unique id)
   */
  readonly identityFollowsContent: boolean;
  /** the disk can be split into several files */
  readonly split: boolean;
  readonly discard: 'none' | 'native';
  readonly resize: 'none' | 'grow' | 'grow-shrink';
  /**
   * concurrent: flush only makes written data durable (fdatasync) and may run while later writes
   * go on; exclusive: flush also commits metadata (VHDX log, qcow2 caches) and is ordered with writes
   */
  readonly flush: 'concurrent' | 'exclusive';
  /** `check()`: none, detect problems, or detect and repair them */
  readonly check: 'none' | 'detect' | 'repair';
  /** `compact()`: give back the space of units that read as zeros or were discarded */
  readonly compact: 'none' | 'native';
  /** `defragment()`: put data units in virtual order in the file(s) */
  readonly defragment: 'none' | 'native';
  /** the image holds internal snapshots that can be read (OpenOptions.snapshot); absent = no */
  readonly internalSnapshots?: boolean;
}

/** options of the long in-place operations (compact, defragment) */
export interface InPlaceOptions {
  signal?: AbortSignal;
  /** units (or bytes) processed so far and in all */
  onProgress?: (done: number, total: number) => void;
}

/** what compact / defragment did, in bytes of the image's files */
export interface InPlaceResult {
  fileBytesBefore: number;
  fileBytesAfter: number;
  /** grains/blocks copied to a new place (drivers that count them; the CLI prints it) */
  moved?: number;
}

/**
 * What a child's driver records about its parent beyond a name and an identity, read by the
 * layer above from the open parent (`Image.linkRecord`), so no driver opens another image.
 * Opaque to that layer: the child's driver reads the keys of its own format.
 */
export type LinkRecord = Readonly<Record<string, string | number>>;

export interface ParentFacts {
  /** the parent's format (qcow2 records it as the backing format) */
  format: string;
  /** the parent's `linkRecord()` (VDI: modification UUID, block size, geometry; VHD: footer timestamp) */
  record?: LinkRecord;
}

/** A new parent for `setBacking`: the name to store, the identity, and what the driver may record about it. */
export interface BackingChange {
  hint: string;
  parentId: string;
  /** the parent's name in the image's namespace (absolute), for formats that store it too (VHD W2ku locator) */
  parentName?: string;
  parent?: ParentFacts;
}

/** One finding of a consistency check (qemu-img check's corruptions and leaks). */
export interface CheckFinding {
  /** corruption: data may be wrong or lost; leak: space allocated that nothing uses; warning: neither */
  kind: 'corruption' | 'leak' | 'warning';
  message: string;
  /** on-disk structure and field, as DiskError details name them */
  struct?: string;
  field?: string;
  /** file offset concerned, when there is one */
  offset?: number;
  /** whether a repair run fixed it */
  repaired?: boolean;
  /** dry run: a repair would fix it (nothing was changed) */
  wouldRepair?: boolean;
  /** how many entries or clusters this finding stands for (a run of like ones; absent: 1) */
  count?: number;
  /** a repair was asked for, but vdkit cannot mend this (the message says what can) */
  notRepairable?: boolean;
}

/** What `check` is asked to do. */
export interface CheckOptions {
  /** fix what can be fixed (needs a read-write image, unless `dryRun`) */
  repair: boolean;
  /**
   * with `repair`: work out every change a repair would make and report those findings with
   * `wouldRepair`, writing nothing (VDRepair's dry run). The image may be read-only.
   */
  dryRun?: boolean;
}

export interface CheckReport {
  path: string;
  format: string;
  findings: CheckFinding[];
  /** bytes of the image files that hold data nothing points at (after repair: what is left) */
  leakedBytes: number;
  /** the report of a dry run: nothing was written */
  dryRun?: boolean;
  /** a chain check: the reports of the parents, nearest first (ops/check.ts) */
  links?: CheckReport[];
  /**
   * what `qemu-img check` reports beside the findings, where the format has it (qcow2): guest
   * clusters; those the active tables allocate, compress, and place not right after the one
   * before in the same L2 table (every compressed one counts, as QEMU counts it); the end of the
   * last cluster in use (after a repair: as repaired)
   */
  stats?: { totalClusters: number; allocatedClusters: number; compressedClusters: number; fragmentedClusters: number; imageEndOffset: number };
}

/** One create option a driver understands (for `vdkit formats` and VDBackendInfo). */
export interface CreateOptionInfo {
  readonly name: string;
  readonly description: string;
}

/**
 * The data path, the size of nbdkit's plugin table: what a reader, a writer and an NBD export
 * need and nothing more. Requests arrive validated (src/disk.ts).
 */
export interface ImageData {
  readonly format: string;
  /** the format's own type name (VMDK createType, "raw", ...) */
  readonly type: string;
  /** the image's (first) name in its namespace */
  readonly path: string;
  /** where the image's files are named (extents, parents' hints are resolved in it) */
  readonly namespace: Namespace;
  /** virtual size in bytes */
  readonly capacity: number;
  /**
   * allocation unit in bytes (VMDK grain): the preferred request size, and the size at which
   * writes to a child are copy-on-write. The smallest request size is the driver's `alignment`.
   */
  readonly clusterSize: number;
  readonly readOnly: boolean;
  readonly capabilities: Capabilities;
  /** read `into.length` bytes at `offset` (validated by the caller) */
  read(into: Buffer, offset: number): Promise<void>;
  write(data: Buffer, offset: number): Promise<void>;
  /**
   * Store written zeros as data like any other bytes (qemu-img convert -S 0: a fully allocated
   * target) instead of turning them into zero entries or leaving them unallocated. Only drivers
   * that otherwise do that (qcow2, VDI) have it; the others store what is written.
   */
  storeZeros?: boolean;
  /** ranges of [offset, offset+length) in order, covering it exactly */
  blockStatus(offset: number, length: number): Promise<BlockExtent[]>;
  flush(): Promise<void>;
  close(): Promise<void>;
  /**
   * Present when capabilities.discard is 'native': mark [offset, offset+length) unused. Whole
   * allocation units become unallocated in a base; in a child they must still read zeros (not
   * the parent's data): a zero-unit marker where the format has one, else zeros written. Parts
   * of units are written as zeros.
   */
  discard?(offset: number, length: number): Promise<void>;
  /**
   * Make [offset, offset+length) read as zeros without sending them (nbdkit's zero). No driver
   * has one yet: the layers above write zeros or discard instead (nbd/server/zeroes.ts).
   */
  writeZeroes?(offset: number, length: number): Promise<void>;
}

/** How the image stands in a chain: what it records about its parent and what children record about it. */
export interface ImageLinks {
  /** the parent this image is a child of, if any */
  backing(): BackingLink | undefined;
  /** point the image at another parent, or make it a base (undefined) */
  setBacking(link: BackingChange | undefined): Promise<void>;
  /** the identity children record when made against this image (VMDK CID) */
  identity(): string | undefined;
  /** give the image a new identity (VMDK CID); chain operations use it to re-link children */
  setIdentity(id: string): Promise<void>;
  /** what a child made against this image records about it besides its identity (see ParentFacts) */
  linkRecord?(): LinkRecord;
  /** drop everything this image stores (every range becomes unallocated) */
  makeEmpty(): Promise<void>;
}

/**
 * What the image says about itself. The uniform properties (uuid, comment, geometry, adapter)
 * are not members: block/properties.ts maps them onto these keys through the driver's
 * property table (formats/<fmt>/properties.ts).
 */
export interface ImageMetadata {
  info(): Promise<DiskInfo>;
  /**
   * blockStatus with the file and byte offset of every range stored in one place (`vdkit map`,
   * qemu-img map's `offset`); absent where the driver does not know them (blockStatus is used)
   */
  mapStatus?(offset: number, length: number): Promise<MappedExtent[]>;
  metadataKeys(): string[];
  readMetadata(key: string): string | undefined;
  writeMetadata(key: string, value: string): Promise<void>;
}

/**
 * The long operations on an open image, returned by `Image.maintenance()` rather than carried
 * by the image: the data path stays the size of a plugin table, and a wrapper (ChainImage,
 * a stream) that cannot maintain anything returns an empty object instead of having to leave
 * five methods out. A member is present when the matching capability is not 'none'. The
 * object acts on the image that returned it and is valid while that image is open; the ones
 * that say so close the image.
 */
export interface ImageMaintenance {
  /**
   * Consistency check (qemu-img check, VDRepair, VixDiskLib_CheckRepair), present when
   * capabilities.check is not 'none'. With `repair` (capability 'repair', image opened
   * read-write) it fixes what it can and marks those findings `repaired`; without it, or with
   * `dryRun` (any image), nothing is changed.
   */
  check?(opts: CheckOptions): Promise<CheckReport>;
  /**
   * Present when capabilities.compact is 'native': drop allocated units that read as all zeros
   * (or were discarded), move the rest down, and cut the file(s); in place and crash-safe (a
   * kill at any moment leaves the content intact; at worst space stays leaked).
   */
  compact?(opts: InPlaceOptions): Promise<InPlaceResult>;
  /** Present when capabilities.defragment is 'native': same crash rules as compact. */
  defragment?(opts: InPlaceOptions): Promise<InPlaceResult>;
  /**
   * Change the virtual size in place (capabilities.resize says which way), crash-safely in the
   * order the format's NOTES.md gives; closes the image. Growing makes the new range read as
   * unallocated/zeros; shrinking drops what lies beyond the new end (the caller has checked
   * that it holds nothing, or was told to force).
   */
  resize?(newCapacity: number): Promise<void>;
  /**
   * Move a disk made of several files that name each other (VMDK descriptor + extents) to a
   * new name, the file at the new name written last; closes the image. Present where the
   * driver is `selfNaming`; for the others moving their one file is the whole job. With
   * `keepOld` the files get their new names as hard links (where the file system has them) and
   * the old descriptor stays, so the disk opens under both names until the caller removes the
   * old ones.
   */
  renameTo?(newPath: string, opts?: { keepOld?: boolean }): Promise<void>;
  /** Present where the format keeps internal snapshots (qcow2): list, create, apply, delete. */
  snapshots?: InternalSnapshots;
  /**
   * Present where the format keeps persistent dirty bitmaps (qcow2): list, add, remove, clear,
   * enable, disable, merge, and the ranges a bitmap marks (qemu-img bitmap).
   */
  bitmaps?: PersistentBitmaps;
  /**
   * Change creation-time options in place (qemu-img amend -o), present where the driver lists
   * `amendOptions`; keys are the driver's (qemu's spellings), values as typed. Every value is
   * checked before the first write.
   */
  amend?(options: Readonly<Record<string, string>>): Promise<void>;
}

/** One internal snapshot, as `qemu-img snapshot -l` lists it. */
export interface SnapshotEntry {
  id: string;
  name: string;
  /** bytes of saved VM state (0 for a disk-only snapshot) */
  vmStateSize: number;
  date: Date;
  /** guest clock at the time, nanoseconds */
  vmClockNsec: number;
  /** instruction count, -1 when not recorded */
  icount: number;
  /** virtual size when taken, when recorded */
  diskSize?: number;
}

/**
 * Internal snapshots of an open image. `nameOrId` is looked up as qemu-img does: an id first,
 * then a name. Each change is crash-safe in the order the format's NOTES.md gives.
 */
export interface InternalSnapshots {
  list(): SnapshotEntry[];
  create(name: string): Promise<SnapshotEntry>;
  /** make the disk's content the snapshot's again (the snapshot stays) */
  apply(nameOrId: string): Promise<void>;
  delete(nameOrId: string): Promise<void>;
}

/** An open image: data path, links and metadata, and the way to its maintenance operations. */
export interface Image extends ImageData, ImageLinks, ImageMetadata {
  /** check, compact, defragment, resize, rename of this open image (see ImageMaintenance) */
  maintenance(): ImageMaintenance;
}

/**
 * What a driver is told when it opens one image. Only facts about what the driver itself does;
 * how the image is used (alone or in a chain, who does copy-on-write, whether a write may change
 * its identity) is the chain layer's business (chain/chain.ts LinkOpenOptions, disk.ts). A
 * driver never refuses a read-write open of a child: the chain layer does (PARTIALCHAIN) before
 * the driver writes anything.
 */
export interface OpenOptions {
  readOnly?: boolean;
  /** allow extent files that are absolute, contain "..", or are devices (CVE-2022-47951 class) */
  allowExternalExtents?: boolean;
  /**
   * VMDK: open a raw-device disk (createType fullDevice, partitionedDevice, vmfsRaw*,
   * vmfs*RawDeviceMap, or VMFSRAW / VMFSRDM extents): its extents name block devices or
   * partitions by absolute path, and reads and writes go to them. Refused without it
   * (NOTSUPPORTED naming allowRawDevice); with it those extents may be absolute names, devices or
   * regular files.
   */
  allowRawDevice?: boolean;
  /**
   * VHD: open an image whose footer or dynamic-header checksum does not match (or whose end
   * footer is missing but whose copy at offset 0 is intact), read-only, to recover its data.
   * Without it such an image is refused (CORRUPT, field "checksum"); a read-write open is
   * refused even with it, so a damaged image is never written to.
   */
  ignoreChecksums?: boolean;
  /**
   * Open a damaged image so that a check can report and a repair can mend it: damage a
   * read-write open otherwise refuses (qcow2 metadata that check calls inconsistent) is let
   * through, and parts vdkit only ever checks (VMDK ESXi delta extents) are opened read-only
   * instead of refusing a read-write open; their findings come back as not repairable.
   * ops/check.ts is the one caller that sets it.
   */
  tolerateDamage?: boolean;
  /**
   * Default true. The first change a read-write session makes (a write; for some formats also
   * a discard, a parent change or makeEmpty) first renews what the format uses to say "the
   * content changed": VMDK CID, VDI modification UUID, VHDX DataWriteGuid (which the VHDX spec
   * requires before the first write lands). The driver does it because only it knows where its
   * first change begins, including changes that reach it without a Disk. false keeps them: the
   * chain layer asks for that (`preserveIdentity`) for writes that do not change what the disk
   * reads as (commit, rebase, merge, compact), so children stay valid.
   */
  updateIdentityOnWrite?: boolean;
  /**
   * Read the image as it was at this internal snapshot (qemu-img convert -l), read-only. Only
   * formats whose capabilities say `internalSnapshots` have them; the others refuse it
   * (NOTSUPPORTED, in the link opener).
   */
  snapshot?: SnapshotRef;
}

/**
 * An internal snapshot as qemu-img -l names it: `snapshot.id=N` and/or `snapshot.name=X` (both
 * must match one snapshot), or a bare word, tried as an id first, then as a name.
 */
export interface SnapshotRef {
  id?: string;
  name?: string;
  idOrName?: string;
}

export interface CreateOptions {
  /** format-specific type name (VMDK createType) */
  type?: string;
  capacity: number;
  adapterType?: string;
  hwVersion?: number | string;
  /** write zeros into flat extents instead of leaving the files sparse */
  preallocate?: boolean;
  /** VMFS only: mark the disk thin provisioned */
  thin?: boolean;
  /**
   * VMDK hosted sparse types: grain size in bytes, a power of two from 8 KiB to 32 MiB (default
   * 64 KiB, 128 sectors, what VMware, VirtualBox and QEMU write; `-o grain_size=` takes sectors).
   * Refused for the flat types and streamOptimized; other formats ignore it.
   */
  grainSize?: number;
  /**
   * VMDK: make a raw-device disk (createType fullDevice, VirtualBox's VBOXHDDRAW style): one FLAT
   * extent naming this block device or partition (a regular file stands in for tests) by its
   * absolute path; the data stays on the device. Only on this explicit request: type fullDevice
   * without it is NOTSUPPORTED. `capacity` 0 takes the device's whole length. Opening the result
   * needs OpenOptions.allowRawDevice.
   */
  rawDevice?: string;
  overwrite?: boolean;
  /**
   * make the new image a child of this parent: `hint` is the path to store (relative to the
   * child's folder where possible), `parentPath` the parent's absolute path (VHD stores both),
   * `parentId` its identity (VMDK CID, VDI/VHD UUID); `copyMetadata` keys to inherit.
   * `facts`: what the layer above read from the open parent (format, link record); a chain
   * clone reads them from the parent's copy under its temporary name, while `hint` and
   * `parentPath` are the names the parent will have.
   */
  parent?: { hint: string; parentPath: string; parentId: string; copyMetadata?: [string, string][]; facts?: ParentFacts };
  /**
   * VHD: round the capacity up to the next size a CHS geometry describes exactly (what
   * `qemu-img create -f vpc` does without force_size, and what Virtual PC needs). Default: the
   * exact capacity (Hyper-V, Azure, QEMU force_size).
   */
  chsRounding?: boolean;
  /**
   * qcow2: cluster size in bytes, a power of two from 512 to 2 MiB (default 64 KiB; what
   * `qemu-img create -o cluster_size=` sets). Other formats ignore it.
   */
  clusterSize?: number;
  /**
   * VHDX: payload block size in bytes, a power of two from 1 MiB to 256 MiB (default: QEMU's
   * size-dependent choice, 8 MiB up to 1 GiB ... 64 MiB above 32 TiB; 2 MiB for a child)
   */
  blockSize?: number;
  /**
   * qcow2: how compressed clusters are compressed (`-o compression_type=`): 'zlib' (deflate,
   * the default) or 'zstd' (incompatible bit 3, read by QEMU >= 5.1)
   */
  compressionType?: 'zlib' | 'zstd';
  /**
   * qcow2: keep the guest data in this file (`-o data_file=`), named relative to the image's
   * folder as it is stored in the image; the qcow2 file holds the metadata only
   */
  dataFile?: string;
  /** qcow2 with dataFile (`-o data_file_raw=on`): the data file is kept a raw image of the guest */
  dataFileRaw?: boolean;
}

/** A run of allocation units of a target image that hold data (what `measure` counts). */
export interface UnitRun {
  /** index of the first unit (unit i covers virtual bytes [i*unit, (i+1)*unit)) */
  first: number;
  count: number;
}

/**
 * How a format lays out an image made with given create options, for `measure`
 * (VixDiskLib_SpaceNeededForClone, `qemu-img measure`): each format answers from the same
 * constants and layout functions its create and allocation code use, so the numbers follow them.
 */
export interface MeasureLayout {
  /** virtual size of the image the options create, after the format's own rounding */
  capacity: number;
  /** virtual bytes per allocation unit (grain, block, cluster); `required` takes runs of these */
  unit: number;
  /** bytes of the image's files once the units in `runs` (sorted, disjoint) hold data */
  required(runs: readonly UnitRun[]): number;
  /** bytes of the image's files with every unit allocated */
  fullyAllocated: number;
  /** what the numbers mean beyond "file bytes" (an upper bound, a datastore's block size, ...) */
  notes: string[];
}

export interface Driver {
  readonly name: string;
  readonly description: string;
  readonly extensions: readonly string[];
  readonly capabilities: Capabilities;
  readonly createOptions: readonly CreateOptionInfo[];
  /** the options `ImageMaintenance.amend` takes (qemu-img amend -o KEY=VALUE), where it is offered */
  readonly amendOptions?: readonly CreateOptionInfo[];
  /** how the uniform disk properties map onto this format's metadata keys */
  readonly properties: PropertyTable;
  /** sizes are whole multiples of this many bytes (raw 1, every other format a 512-byte sector) */
  readonly alignment: number;
  /**
   * the image's files name each other (a VMDK descriptor names its extents, a monolithic one
   * itself): moving it to a new name goes through `ImageMaintenance.renameTo`, never a plain rename
   */
  readonly selfNaming: boolean;
  /** the on-disk field that makes an image a child (VMDK parentCID, VHD diskType), named in errors */
  readonly parentField?: string;
  /**
   * create types written front to back in one pass and never opened read-write afterwards
   * (VMDK streamOptimized): convert writes them through a stream, resize refuses them
   */
  readonly sequentialTypes: readonly string[];
  /**
   * the create type of a child under a base of `baseType` (undefined: the format has one kind
   * of child, or the caller's type carries over as is); throws where the base takes children
   * of a kind vdkit does not create
   */
  childType?(baseType: string | undefined, path: string): string | undefined;
  /**
   * a create type as `info()` reports it, from any spelling `create` accepts (VMDK "5" or
   * "streamoptimized" is streamOptimized, VDI "static" is fixed); unknown spellings as given
   */
  normaliseType(type: string): string;
  /**
   * the family of a create type whose links may only stack on links of the same family (VMDK:
   * ESXi and hosted disks do not mix); undefined where the format has no such rule
   */
  linkFamily?(type: string): string | undefined;
  /**
   * A fresh identity of this format's kind (VMDK: a CID; VHDX: a DataWriteGuid), for chain
   * operations that change a base's content; undefined where the format has none (qcow2, raw).
   */
  newIdentity(): string | undefined;
  /**
   * 0..100: how sure we are this is ours, from the first 4 KiB of the file (`head`) and its
   * last 512 bytes (`tail`: fixed VHDs have their only footer there). Raw scores 1.
   */
  probe(head: Buffer, tail: Buffer): number;
  /** open the image named `name` in `ns` (its extents are named relative to it there) */
  open(ns: Namespace, name: string, opts: OpenOptions): Promise<Image>;
  create(ns: Namespace, name: string, opts: CreateOptions): Promise<Image>;
  /**
   * Check (and repair) the file `name` without opening it as an Image: for formats whose
   * open refuses the damage a repair can mend (VDI blocks shared by two entries, a VHD footer
   * with a bad checksum). Opens the file read-write only for a repair that is not a dry run.
   */
  checkFile?(ns: Namespace, name: string, opts: CheckOptions): Promise<CheckReport>;
  /**
   * how qemu-img sees the format where it differs from vdkit (for `--output=json`): its name
   * (vdkit's vhd is qemu's "vpc"), and `noBacking` where qemu does not follow the format's
   * parents (VDI, VHD, VHDX differencing images): to it a range the image does not store reads
   * as zeros, which its map calls present zeros
   */
  readonly qemu?: { readonly name?: string; readonly noBacking?: boolean };
  /** a layout that can be read front to back from a pipe (formats/sequential.ts) */
  readonly sequential?: SequentialFormat;
  /**
   * Write a whole new image of `src` with compressed data into the empty store `store` (qcow2:
   * compressed clusters, for `convert -c`); the caller flushes and closes the store. Absent where
   * the format compresses only as a sequential type (VMDK streamOptimized) or not at all.
   */
  writeCompressed?(src: StreamSource, store: ByteStore, opts: CompressedWriteOptions): Promise<{ size: number }>;
}

export interface CompressedWriteOptions {
  /** the create type (qcow2: v3 or v2, as `create` spells them) */
  type?: string;
  /** qcow2: bytes per cluster (default 64 KiB) */
  clusterSize?: number;
  /** zlib level 1-9, zstd 1-19 (default: the level the format's usual producer uses) */
  compressionLevel?: number;
  /** qcow2: 'zlib' (deflate, default) or 'zstd' */
  compressionType?: 'zlib' | 'zstd';
  /** compression threads (default: one per core, at most 4) */
  workers?: number;
  signal?: AbortSignal;
  /** after each piece placed: virtual bytes done, file bytes so far */
  onProgress?: (done: number, fileBytes: number) => void;
}

export type { ByteStore, Namespace };

/** One persistent dirty bitmap as qemu-img info shows it (Qcow2BitmapInfo), and its state. */
export interface PersistentBitmapInfo {
  name: string;
  /** bytes one bit stands for */
  granularity: number;
  /** qemu-img info's flags: 'in-use', 'auto' */
  flags: string[];
  /** records writes (the 'auto' flag) and is consistent */
  enabled: boolean;
  /** in_use was set when the image was opened (not closed cleanly): only removal works */
  inconsistent: boolean;
}

/** A byte range of the disk. */
export interface ByteRange {
  offset: number;
  length: number;
}

/** The persistent dirty bitmaps of one image (ImageMaintenance.bitmaps; qemu-img bitmap). */
export interface PersistentBitmaps {
  list(): PersistentBitmapInfo[];
  /** granularity default: the cluster size, at least 4 KiB (qemu's); `disabled`: not recording */
  add(name: string, opts?: { granularity?: number; disabled?: boolean }): Promise<void>;
  remove(name: string): Promise<void>;
  clear(name: string): Promise<void>;
  enable(name: string): Promise<void>;
  disable(name: string): Promise<void>;
  /** set every granule these byte ranges touch (a merge from another bitmap: its dirty ranges) */
  merge(name: string, ranges: readonly ByteRange[]): Promise<void>;
  /** the byte ranges the bitmap marks, in order, maximal runs */
  dirty(name: string): Promise<ByteRange[]>;
}
