/**
 * VHDX consistency check and repair: what the open found, the BAT against the file, and leaked
 * space at the end of the file (cut off by a repair).
 */
import { DiskError } from '../../core/errors.js';
import { roundUp } from '../../core/ints.js';
import type { CheckFinding, CheckOptions, CheckReport } from '../types.js';
import { ALIGN, BITMAP, BITMAP_BLOCK_SIZE, MiB, PAYLOAD, payloadIndex } from './structs.js';
import { checkOverlaps } from './layout.js';
import type { VhdxState } from './state.js';

/**
 * Consistency check: what the open found (a log that needed replay, damaged header or region
 * table copies, reserved bits, bitmap entries in an image without a parent), the BAT against
 * the file (inside it, no overlaps), and space after the last structure nothing references
 * (a writer stopped between extending the file and committing its BAT: a leak). Repair
 * (read-write): the log, the header and the region tables were already mended by the open;
 * leaked space at the end is cut off.
 */
export async function check(state: VhdxState, opts: CheckOptions): Promise<CheckReport> {
  const dryRun = opts.repair && !!opts.dryRun;
  if (opts.repair && !dryRun) state.checkWritable();
  const findings: CheckFinding[] = state.findings.map((f) => ({ ...f }));
  // a dry run on a read-only image: what the open left alone, a read-write open mends (log
  // replay, the second region table copy)
  if (dryRun) for (const f of findings) if (f.repaired === false && (f.field === 'logGuid' || f.struct === 'regionTable')) f.wouldRepair = true;
  const used = state.structures();
  try {
    checkOverlaps(state.pState, state.pOff, state.bState, state.bOff, state.params.blockSize, state.cr, used, state.path);
  } catch (e) {
    if (!(e instanceof DiskError)) throw e;
    findings.push({ kind: 'corruption', message: e.message, struct: 'BAT', field: String(e.details.field) });
  }
  let usedEnd = 0;
  let anyBlock = false;
  for (let n = 0; n < state.blocks; n++) {
    if (state.pState[n] === PAYLOAD.FULLY_PRESENT || state.pState[n] === PAYLOAD.PARTIALLY_PRESENT) {
      anyBlock = true;
      // a payload block owns BlockSize bytes of file even when the disk ends inside it
      // (MS-VHDX; Hyper-V and vdkit allocate it whole): only past that is space leaked
      usedEnd = Math.max(usedEnd, state.pOff[n]! * MiB + state.params.blockSize);
      if (state.pOff[n]! * MiB + state.blockLen(n) > state.fileSize) findings.push({ kind: 'corruption', message: `payload block ${n} lies past the end of the file`, struct: 'BAT', field: `BAT[${payloadIndex(n, state.cr)}]` });
    }
  }
  for (let k = 0; k < state.bState.length; k++) if (state.bState[k] === BITMAP.PRESENT) usedEnd = Math.max(usedEnd, state.bOff[k]! * MiB + BITMAP_BLOCK_SIZE);
  for (const u of used) usedEnd = Math.max(usedEnd, u.end);
  let leaked = 0;
  // whole MiB only: what our allocation leaves behind (Disk2vhd ends its files with 512 spare bytes)
  if (anyBlock && state.fileSize - roundUp(usedEnd, ALIGN) >= ALIGN) {
    const from = roundUp(usedEnd, ALIGN);
    leaked = state.fileSize - from;
    const f: CheckFinding = { kind: 'leak', message: `${leaked} bytes at the end of the file belong to no block (a writer stopped before committing its BAT)`, struct: 'BAT', field: 'BAT', offset: from };
    if (dryRun && !state.broken) f.wouldRepair = true;
    else if (opts.repair && !state.readOnly && !state.broken) {
      await state.commit();
      await state.emptyLog();
      await state.store.truncate(from);
      await state.store.flush();
      state.fileSize = from;
      state.nextFree = roundUp(Math.max(state.nextFree > from ? from : state.nextFree, from), ALIGN);
      f.repaired = true;
      leaked = 0;
    }
    findings.push(f);
  }
  return { path: state.path, format: 'vhdx', findings, leakedBytes: leaked, ...(dryRun ? { dryRun: true } : {}) };
}
