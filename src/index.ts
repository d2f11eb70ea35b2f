export { DiskError, ERROR_TABLE, errorText, type ErrorCode, type ErrorDetails } from './core/errors.js';
export { SECTOR_SIZE, parseSize } from './core/ints.js';
export { Disk, openDisk, createDisk, detectFormat, type DiskOpenOptions, type DiskCreateOptions, type SetPropertiesOptions } from './disk.js';
export { getProperties, setProperties, settableProperties, PROPERTY_NAMES, type DiskProperties, type PropertyName } from './ops/properties.js';
export type { BlockExtent, BlockState, DiskInfo, ExtentInfo, Geometry, Image, ImageData, ImageLinks, ImageMetadata, ImageMaintenance, OpenOptions, SnapshotRef, Capabilities, Driver, PersistentBitmapInfo, PersistentBitmaps } from './formats/types.js';
export { backends } from './formats/registry.js';
export { FileStore, FileNamespace } from './storage/file.js';
export { MemoryStore, MemoryNamespace } from './storage/memory.js';
export { BlobNamespace, BlobStore, type BlobLike, type NamedBlob } from './storage/blob.js';
export { CACHE_MODES, type CacheMode, type Namespace, type NameStat } from './storage/namespace.js';
export type { ByteStore } from './storage/store.js';
export { convert, type ConvertOptions, type Progress } from './ops/convert.js';
export { cloneChain, chainLinkNames, type CloneChainOptions, type CloneChainResult } from './ops/clone-chain.js';
export { compare, type CompareOptions, type CompareResult } from './ops/compare.js';
export { checksum } from './ops/checksum.js';
export { checkDisk, openFindings, type CheckDiskOptions } from './ops/check.js';
export { vmwareGeometry, SPLIT_EXTENT_SECTORS } from './formats/vmdk/layout.js';
export { createChild, defaultChildPath, type CreateChildOptions } from './ops/child.js';
export { commit, mergeIntoTop, type CommitOptions, type MergeOptions } from './ops/commit.js';
export { rebase, type RebaseOptions } from './ops/rebase.js';
export { describeChain, type ChainLink, type ChainBreak } from './ops/chain-list.js';
export { measure, type MeasureOptions, type MeasureResult } from './ops/measure.js';
export { TARGETS, accepted, applyTarget, lint, targetByName, type AppliedTarget, type LintFinding, type Severity, type TargetName, type TargetProfile } from './ops/targets.js';
export { resize, type ResizeOptions, type ResizeResult } from './ops/resize.js';
export { amend, amendOptionsOf, parseAmendList, type AmendOptions } from './ops/amend.js';
export { applySnapshot, createSnapshot, deleteSnapshot, formatSnapshotList, listSnapshots, type SnapshotOptions } from './ops/snapshot.js';
export { bitmap, bitmapRanges, listBitmaps, type BitmapAction, type BitmapOptions } from './ops/bitmap.js';
export { changedRanges, rangeBytes, type ChangedSince } from './ops/changed.js';
export { backup, type BackupOptions, type BackupResult } from './ops/backup/backup.js';
export { restore, type RestoreOptions, type RestoreResult } from './ops/backup/restore.js';
export { listPoints as listBackupPoints, type Manifest as BackupManifest } from './ops/backup/points.js';
export type { InternalSnapshots, SnapshotEntry } from './formats/types.js';
export { rename, unlink, type RenameResult, type UnlinkOptions } from './ops/rename.js';
export { compact, defragment, type InPlaceOpOptions } from './ops/compact.js';
export { discard, type DiscardOptions, type DiscardResult } from './ops/discard.js';
export type { InPlaceOptions, InPlaceResult } from './formats/types.js';
export { VixDiskLib, VixDiskLibError } from './compat/vixdisklib.js';
export * as vixdisklib from './compat/vixdisklib.js';
export { serve, type ServeOptions, type NbdServer, type ImageExport, type ListenOptions, type ServeTlsOptions } from './nbd/server/server.js';
export type { ExportBackend, ExportSpec, BackendExtent, BlockSizes } from './nbd/server/backend.js';
export { openDiskBackend, diskBackend } from './nbd/server/disk-backend.js';
/**
 * Read-only filesystems inside a disk: `openFilesystem(source)` (or `openExt`) over a Disk, or a
 * partition or volume of one, gives a `Filesystem`: readdir, stat (lstat unless `follow`), read,
 * readlink and statfs by path, the same by inode number, paths walked once for every reader.
 *
 * ```ts
 * const disk = await Disk.open('vm.qcow2', { readOnly: true });
 * const fs = await openFilesystem(disk);
 * console.log((await fs.read('/etc/os-release', 0, 4096)).toString());
 * ```
 */
export { openFilesystem, type OpenFilesystemOptions } from './inside/fs/open.js';
export { openExt, type ExtOpenOptions } from './inside/fs/ext/index.js';
export { openFat, type FatOpenOptions } from './inside/fs/fat/index.js';
export { FileTree, MAX_SYMLINKS } from './inside/fs/path.js';
export type { Filesystem, FileType, FsDirEntry, FsSource, FsStat, FsStatfs, FsTime, FsWarning, InodeReader, StatOptions } from './inside/fs/types.js';
// types the API above names in its signatures (so the generated documentation links them)
export type { BackingChange, BackingLink, CheckFinding, CheckOptions, CheckReport, CompressedWriteOptions, CreateOptionInfo, CreateOptions, LinkRecord, MappedExtent, ParentFacts } from './formats/types.js';
export type { ByteSink } from './storage/sink.js';
export type { ChecksumOptions } from './ops/checksum.js';
export type { ConvertResult } from './ops/convert.js';
export type { DiskBackendOptions } from './nbd/server/disk-backend.js';
export type { ErrorRow } from './core/errors.js';
export type { ExtentState } from './nbd/server/backend.js';
export type { FileExtent } from './storage/holes.js';
export type { FileOpenOptions } from './storage/file.js';
export type { AcceptRule, FormatVersions } from './ops/targets.js';
export type { InitParams } from './compat/vixdisklib.js';
export type { VixRow } from './compat/vixdisklib-errors.js';
export type { Limits } from './nbd/server/limits.js';
export type { NameKind } from './storage/namespace.js';
export type { PropertyContext, PropertyTable } from './formats/common/properties.js';
export type { SequentialFormat, SequentialInput, SequentialReader } from './formats/sequential.js';
export type { StreamSource } from './formats/common/stream-source.js';
export type { TlsCredentials, TlsMode } from './nbd/server/tls.js';
export { dd, type DdOptions, type DdResult } from './ops/dd.js';
export { VDisk, VD_LAST_IMAGE, type VDiskOptions, type VdImageOptions, type CreateBaseOptions, type CreateDiffOptions, type CacheCreateOptions } from './vd/container.js';
export type { CopyExOptions, CopyExResult } from './vd/copy.js';
export type { VdMergeOptions } from './vd/merge.js';
export * as vd from './vd/flags.js';
export { bench, type BenchOptions, type BenchResult } from './ops/bench.js';
export { listVolumes, readPartitionTable, volumeSource, type DiskLayout, type ListVolumesOptions, type VolumeEntry } from './inside/volumes.js';
export { mkimg, mkimgFormat, type MkimgOptions, type MkimgPartition, type MkimgResult, type PartitionContents } from './ops/mkimg/mkimg.js';
export { createOva, type OvaCreateOptions, type OvaCreateResult } from './ops/ova/create.js';
export { readOva, verifyOva, extractOva, parseManifest, type OvaContents, type VerifyResult } from './ops/ova/archive.js';
export { readOvf, ovfDescriptor, type OvfSummary } from './ops/ova/ovf.js';
export { TarNamespace, readTarIndex, type TarMember } from './storage/tar.js';
export { RangeSource, sliceSource, type ByteSource, type ByteRange } from './inside/source.js';
export { detectVolume, PROBES, type Detected, type Probe } from './inside/detect/index.js';
export { parseLvmText, type LvmSection, type LvmValue } from './inside/lvm/text.js';
export type { InsideWarning, LogicalVolume, Partition, PartitionKind, PartitionTable, VolumeGroup } from './inside/types.js';
export type { Scheme as MkimgScheme } from './ops/mkimg/layout.js';
export type { ManifestEntry } from './ops/ova/archive.js';
export type { ManifestDigest, OvaMemberWritten } from './ops/ova/create.js';
export type { OvfVmSettings, OvfDiskEntry } from './ops/ova/ovf.js';
export type { TarKind } from './binary/tar.js';
export type { CommittingSink } from './storage/sink.js';
export type { ChangeSource, PointKind, SourceIdentity } from './ops/backup/points.js';
