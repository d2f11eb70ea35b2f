/**
 * What the NBD server needs from an export: an nbdkit-sized interface, so the server never
 * reaches into drivers, chains or the Disk class. One adapter (disk-backend.ts) maps vdkit's
 * Disk onto it; tests and other front ends may supply their own.
 *
 * Contract the server relies on:
 * - every request it passes is inside [0, size) (the server checks ranges first);
 * - `flush` makes every write that has completed, on any connection, durable: the server shares
 *   one backend object between the connections to an export, which is what lets it advertise
 *   CAN_MULTI_CONN;
 * - `blockStatus` covers [offset, offset+length) exactly, in order.
 */

export type ExtentState = 'data' | 'zero' | 'unallocated';

export interface BackendExtent {
  offset: number;
  length: number;
  /** data: stored somewhere in the chain; zero: reads as zeros; unallocated: nothing anywhere (zeros) */
  state: ExtentState;
  /** which chain link holds it, 0 = top; absent for a lone image */
  depth?: number;
}

export interface BlockSizes {
  /** smallest addressable unit (1 = any byte) */
  minimum: number;
  /** I/O of this size and alignment avoids read-modify-write (the format's cluster) */
  preferred: number;
  /** largest READ/WRITE payload */
  maximum: number;
}

export interface ExportBackend {
  readonly size: number;
  readonly readOnly: boolean;
  readonly blockSizes: BlockSizes;
  /** links in the chain (1 for a lone image) */
  readonly chainLength: number;
  read(offset: number, length: number): Promise<Buffer>;
  /** fill `into` from `offset` (optional; the server then reuses its reply buffers) */
  readInto?(into: Buffer, offset: number): Promise<void>;
  write(offset: number, data: Buffer, opts: { fua: boolean }): Promise<void>;
  flush(): Promise<void>;
  blockStatus(offset: number, length: number): Promise<BackendExtent[]>;
  /**
   * Make the range read as zeros. Optional: without it the server writes zeros over the ranges
   * block status says are not zero already. `fastZero`: fail with FAST_ZERO_UNSUPPORTED rather
   * than writing data.
   */
  writeZeroes?(offset: number, length: number, opts: { noHole: boolean; fastZero: boolean; fua: boolean }): Promise<void>;
  /** give the range's space back; afterwards it reads as zeros (optional) */
  discard?(offset: number, length: number): Promise<void>;
  /**
   * The dirty ranges of a persistent bitmap the export offers (ExportSpec.bitmaps) within
   * [offset, offset+length), in order (optional: only exports with bitmaps have it).
   */
  bitmapStatus?(name: string, offset: number, length: number): Promise<{ offset: number; length: number }[]>;
  close(): Promise<void>;
}

/** what an export is called and how it is opened (the server opens it when a client picks it) */
export interface ExportSpec {
  name: string;
  /** exports with the same key share one open backend (default: the name); --dir uses the real path */
  key?: string;
  description?: string;
  /** persistent dirty bitmaps offered as qemu:dirty-bitmap:NAME contexts (qemu-nbd -B NAME) */
  bitmaps?: readonly string[];
  open(): Promise<ExportBackend>;
}
