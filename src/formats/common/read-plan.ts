/**
 * One read of an image whose space is cut into equal units (grains, blocks) that each lie
 * somewhere in the file or nowhere (zeros): the read planner the sparse formats share (VMDK
 * hosted sparse and ESXi deltas, VDI).
 *
 * Design notes
 * - Units that follow each other in the file are read with one call: a guest's sequential
 *   writes allocate sequential grains, so a large read usually costs one system call per run,
 *   not one per grain. The reads of all runs are started at once and awaited together.
 * - `locate` may answer synchronously (a table in memory) or with a promise (a table to load):
 *   only a promise is awaited, so a cached walk costs no microtask per unit.
 * - If `locate` throws (a bad table entry), the reads already started settle before the error
 *   leaves, so no rejection is left unhandled and no read writes into `into` afterwards.
 */
import { unitSpans } from '../../core/ints.js';

/** `locate` answer: the unit holds nothing here and reads as zeros */
export const ZEROS = -1;

export interface ReadPlanSource {
  /** bytes per unit */
  readonly unit: number;
  /** file offset of unit `index`'s first byte, or ZEROS */
  locate(index: number): number | Promise<number>;
  /** fill `into` from the file at byte `at` */
  readFile(into: Buffer, at: number): Promise<void>;
}

/** Fill `into` with the bytes at `offset` of the image `src` describes. */
export async function planRead(into: Buffer, offset: number, src: ReadPlanSource): Promise<void> {
  const unit = src.unit;
  const pending: Promise<void>[] = [];
  let runFile = -1;
  let runPos = 0;
  let runLen = 0;
  try {
    for (const { index, within, pos, n } of unitSpans(offset, into.length, unit)) {
      let base = src.locate(index);
      if (typeof base !== 'number') base = await base;
      if (base < 0) {
        into.fill(0, pos, pos + n);
      } else {
        const fileAt = base + within;
        if (runLen > 0 && runFile + runLen === fileAt && runPos + runLen === pos) {
          runLen += n;
        } else {
          if (runLen > 0) pending.push(src.readFile(into.subarray(runPos, runPos + runLen), runFile));
          runFile = fileAt;
          runPos = pos;
          runLen = n;
        }
      }
    }
    if (runLen > 0) pending.push(src.readFile(into.subarray(runPos, runPos + runLen), runFile));
  } catch (err) {
    await Promise.allSettled(pending);
    throw err;
  }
  await Promise.all(pending);
}
