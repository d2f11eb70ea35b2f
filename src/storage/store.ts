/**
 * ByteStore: random-access bytes with Go's ReaderAt contract. A read either fills the whole
 * range or throws (reads past the end are an error: callers that want zeros there say so);
 * it keeps no seek position, so parallel calls are safe. Only this folder touches node:fs.
 */
import type { FileExtent } from './holes.js';

export type { FileExtent };

export interface ByteStore {
  /** a name for error messages: the file path, or "memory:<n>" */
  readonly name: string;
  readonly readOnly: boolean;
  size(): Promise<number>;
  /** read exactly `length` bytes at `offset` */
  read(offset: number, length: number): Promise<Buffer>;
  /** read into `into` (fully) at `offset` */
  readInto(into: Buffer, offset: number): Promise<void>;
  /** read what exists of [offset, offset+length); bytes past the end read as zeros */
  readZeroPadded(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer): Promise<void>;
  /** write several buffers back to back starting at `offset` (one syscall where possible) */
  writev(offset: number, data: readonly Buffer[]): Promise<void>;
  truncate(length: number): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
  /**
   * Where the store holds data and where holes (ranges that read as zeros without being
   * stored), covering [offset, offset+length) in order; undefined when it cannot say cheaply.
   * Optional: stores without holes leave it out. Data ranges may still read as zeros.
   */
  extents?(offset: number, length: number): Promise<FileExtent[] | undefined>;
}

