/**
 * Plain-fs reads of a file's bytes for tests that judge on-disk facts without vdkit's parsers.
 */
import { open } from 'node:fs/promises';

/** `length` bytes of `path` at `offset` (zeros past the end of the file) */
export async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(length);
    await fh.read(b, 0, length, offset);
    return b;
  } finally {
    await fh.close();
  }
}
