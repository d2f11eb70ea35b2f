/**
 * VixDiskLib's constants (vixDiskLib.h: disk types, adapter types, hardware versions, open
 * flags, ...) and the structures its calls take and return. Re-exported by vixdisklib.ts, the
 * module to import; kept apart so the calls' files stay readable.
 */

// ---------------------------------------------------------------------------------------------
// Constants (vixDiskLib.h)

export const VIXDISKLIB_SECTOR_SIZE = 512;
export const VIXDISKLIB_VERSION_MAJOR = 1;
export const VIXDISKLIB_VERSION_MINOR = 1;

export const VIXDISKLIB_DISK_MONOLITHIC_SPARSE = 1;
export const VIXDISKLIB_DISK_MONOLITHIC_FLAT = 2;
export const VIXDISKLIB_DISK_SPLIT_SPARSE = 3;
export const VIXDISKLIB_DISK_SPLIT_FLAT = 4;
export const VIXDISKLIB_DISK_VMFS_FLAT = 5;
export const VIXDISKLIB_DISK_STREAM_OPTIMIZED = 6;
export const VIXDISKLIB_DISK_VMFS_THIN = 7;
/** the guide's spelling of VIXDISKLIB_DISK_VMFS_THIN */
export const VIXDISKLIB_VMFS_THIN = VIXDISKLIB_DISK_VMFS_THIN;
export const VIXDISKLIB_DISK_VMFS_SPARSE = 8;
export const VIXDISKLIB_DISK_UNKNOWN = 256;

export const VIXDISKLIB_ADAPTER_IDE = 1;
export const VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC = 2;
export const VIXDISKLIB_ADAPTER_SCSI_LSILOGIC = 3;
export const VIXDISKLIB_ADAPTER_UNKNOWN = 256;

export const VIXDISKLIB_HWVERSION_WORKSTATION_4 = 3;
export const VIXDISKLIB_HWVERSION_WORKSTATION_5 = 4;
export const VIXDISKLIB_HWVERSION_WORKSTATION_6 = 6;
export const VIXDISKLIB_HWVERSION_ESX30 = VIXDISKLIB_HWVERSION_WORKSTATION_5;
export const VIXDISKLIB_HWVERSION_ESX4X = 7;
export const VIXDISKLIB_HWVERSION_CURRENT = VIXDISKLIB_HWVERSION_ESX4X;

export const VIXDISKLIB_FLAG_OPEN_UNBUFFERED = 1 << 0;
export const VIXDISKLIB_FLAG_OPEN_SINGLE_LINK = 1 << 1;
export const VIXDISKLIB_FLAG_OPEN_READ_ONLY = 1 << 2;
/**
 * vdkit's own open flag (not VDDK's): the file is raw sector data, open it as such. Without it
 * Open refuses a file that is not a disk image of a known format (VIX_E_DISK_INVALIDDISK), as
 * VDDK does; VDDK's way to reach raw data, a flat VMDK descriptor naming the file as its
 * extent, works too.
 */
export const VDKIT_FLAG_OPEN_RAW = 1 << 16;

export const VIXDISKLIB_CRED_UID = 1;
export const VIXDISKLIB_CRED_SESSIONID = 2;

/** QueryAllocatedBlocks: smallest chunk, and most chunks per call (VDDK 6.7) */
export const VIXDISKLIB_MIN_CHUNK_SIZE = 128;
export const VIXDISKLIB_MAX_CHUNK_NUMBER = 512 * 1024;

// ---------------------------------------------------------------------------------------------
// Types

export interface VixDiskLibGeometry {
  cylinders: number;
  heads: number;
  sectors: number;
}

export interface VixDiskLibCreateParams {
  diskType: number;
  adapterType: number;
  hwVersion: number;
  /** in sectors */
  capacity: number;
}

export interface VixDiskLibInfo {
  biosGeo: VixDiskLibGeometry;
  physGeo: VixDiskLibGeometry;
  /** in sectors */
  capacity: number;
  adapterType: number;
  /** base disk + redo logs */
  numLinks: number;
  parentFileNameHint: string | null;
  uuid: string | null;
}

export interface VixDiskLibConnectParams {
  vmxSpec?: string | null;
  /** an NBD server's host name or address (or, vdkit's extension, a Unix socket path) */
  serverName?: string | null;
  /** nbdssl: the server certificate's SHA-1 (or SHA-256) fingerprint, pinned */
  thumbPrint?: string | null;
  credType?: number;
  creds?: { uid?: { userName?: string; password?: string } };
  /** the NBD server's TCP port; 0 or absent: 10809 */
  port?: number;
}

/** a block of QueryAllocatedBlocks, in sectors */
export interface VixDiskLibBlock {
  offset: number;
  length: number;
}

/** VDDK: Bool (*)(void *progressData, int percentCompleted); return false to cancel */
export type VixDiskLibProgressFunc = (progressData: unknown, percentCompleted: number) => boolean | void;

export interface VixDiskLibConnection {
  /** false when connectParams named a server (its disks are NBD exports) */
  readonly local: boolean;
  readonly vmxSpec: string | null;
  readonly serverName: string | null;
}

export interface VixDiskLibHandle {
  readonly path: string;
  readonly flags: number;
}
