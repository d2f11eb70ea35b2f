/** What the sequential writers (streamOptimized VMDK, compressed qcow2) read a disk through. */
export interface StreamSource {
  /** virtual size in bytes */
  capacity: number;
  /** ascending, non-overlapping byte ranges that may hold data; the rest reads as zeros */
  spans(): AsyncIterable<{ offset: number; length: number }> | Iterable<{ offset: number; length: number }>;
  /** fill `buf` with the disk's bytes at `offset` (within the capacity) */
  readInto(buf: Buffer, offset: number): Promise<void>;
}
