/**
 * Writing into a block whose sectors are each marked present or not by a bitmap (VHD dynamic and
 * differencing blocks, VHDX partially present blocks). Order: the data first, then the bitmap
 * bits that make it visible, so a crash in between only leaves invisible bytes.
 */
import type { Bitmap } from '../../binary/bitmap.js';
import type { ByteStore } from '../../storage/store.js';

export interface BitmappedBlock {
  store: ByteStore;
  bits: Bitmap;
  /** the block's bitmap, updated in place */
  bitmap: Buffer;
  /** file offset of the block's first data sector */
  dataAt: number;
  /** file offset where bitmap byte 0 is stored */
  bitmapAt: number;
  sectorSize: number;
  /**
   * Instead of writing the changed bitmap bytes [lo, hi) now, hand them to the caller, which
   * writes them after its next barrier (VHD: data durable before the bits that expose it).
   */
  deferBitmap?: (lo: number, hi: number) => void;
}

/**
 * Write `chunk` at byte `within` of the block. A partial sector the block does not hold yet reads
 * as zeros around the new bytes (the chain layer has already widened writes over a parent's
 * sectors to whole sectors); a partial sector it holds is read, merged and written back.
 */
export async function writeBitmapped(b: BitmappedBlock, chunk: Buffer, within: number): Promise<void> {
  const ss = b.sectorSize;
  const s0 = Math.floor(within / ss);
  const s1 = Math.ceil((within + chunk.length) / ss);
  const headPartial = within % ss !== 0;
  const tailPartial = (within + chunk.length) % ss !== 0;
  const headClear = headPartial && !b.bits.get(b.bitmap, s0);
  const tailClear = tailPartial && !b.bits.get(b.bitmap, s1 - 1);
  if (headClear || tailClear) {
    const buf = Buffer.alloc((s1 - s0) * ss);
    if (headPartial && !headClear) await b.store.readInto(buf.subarray(0, ss), b.dataAt + s0 * ss);
    if (tailPartial && !tailClear && s1 - 1 > s0) await b.store.readInto(buf.subarray(buf.length - ss), b.dataAt + (s1 - 1) * ss);
    chunk.copy(buf, within - s0 * ss);
    await b.store.write(b.dataAt + s0 * ss, buf);
  } else {
    await b.store.write(b.dataAt + within, chunk);
  }
  if (!b.bits.allSet(b.bitmap, s0, s1)) {
    b.bits.set(b.bitmap, s0, s1);
    const lo = s0 >> 3;
    const hi = ((s1 - 1) >> 3) + 1;
    if (b.deferBitmap) b.deferBitmap(lo, hi);
    else await b.store.write(b.bitmapAt + lo, b.bitmap.subarray(lo, hi));
  }
}
