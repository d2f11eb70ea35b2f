/**
 * Images read front to back from a pipe (`vdkit convert - DST`). ops/stream-in.ts owns the
 * input (exact-length reads, raw input, the read-only Image over it); a driver that has a
 * sequential layout (VMDK streamOptimized) parses it behind `Driver.sequential`, so no format's
 * bytes are interpreted in ops/.
 */

/** Exact-length reads from a pipe; nothing can be sought. */
export interface SequentialReader {
  /** for messages ("-" for stdin) */
  readonly name: string;
  /** bytes consumed so far */
  readonly position: number;
  /** up to `n` bytes (fewer only at the end of the input) */
  read(n: number): Promise<Buffer>;
  /** exactly `n` bytes; CORRUPT naming `field` when the input ends first */
  exactly(n: number, field: string): Promise<Buffer>;
  /** skip `n` bytes; false when the input ended first */
  skip(n: number): Promise<boolean>;
}

/** A disk read front to back: pieces in ascending, non-overlapping order; gaps read as zeros. */
export interface SequentialInput {
  readonly name: string;
  /** driver name ('raw' for raw input) */
  readonly format: string;
  /** the image type it reports (createType for VMDK) */
  readonly type: string;
  /** virtual size; undefined for raw input until it has been read to the end */
  readonly capacity: number | undefined;
  pieces(): AsyncIterable<{ offset: number; data: Buffer }>;
}

/** A driver's reader for its layout that can be parsed sequentially. */
export interface SequentialFormat {
  /** what can come through a pipe, for messages ("streamOptimized VMDK") */
  readonly description: string;
  /** what the first sector must hold, for messages ("a VMDK sparse header") */
  readonly header: string;
  /** whether the first sector (possibly short) starts such an image */
  matches(first: Buffer): boolean;
  /** parse the header in `first` (the reader is positioned after it) and walk the rest */
  open(reader: SequentialReader, first: Buffer): SequentialInput;
}
