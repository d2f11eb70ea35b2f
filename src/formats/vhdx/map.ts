/**
 * The VHDX allocation map as compact (close-up) and defragment use it, and as a shared
 * relayout engine (issue 12 item 4) will: entries (payload blocks and sector bitmap blocks),
 * where each is stored and how much it owns, in 1 MiB units (the BAT's offset unit); moving an
 * entry (a BAT change that reaches the file through the log at the next commit); the fixed
 * structures nothing moves; where blocks may start.
 */
import { roundUp } from '../../core/ints.js';
import { ALIGN, BITMAP, BITMAP_BLOCK_SIZE, HEADER_SECTION, MiB, PAYLOAD, batEntry, bitmapIndex } from './structs.js';
import type { StructureRange } from './layout.js';
import type { VhdxState } from './state.js';

/** one stored block: payload block `i`, or the sector bitmap block of chunk `i` */
export interface VhdxEntry {
  kind: 'payload' | 'bitmap';
  i: number;
}

export interface VhdxMap {
  /** bytes per unit: every `at` and `len` below counts units */
  readonly unit: number;
  /** every stored block in virtual order: per chunk its sector bitmap block, then its payload blocks */
  entries(): VhdxEntry[];
  /** where the entry's block is stored */
  lookup(e: VhdxEntry): number;
  /** how many units the entry's block owns */
  length(e: VhdxEntry): number;
  /** store the entry at `at` from now on (its data must be there first; committed by the caller) */
  set(e: VhdxEntry, at: number): void;
  /** header section, log and regions (bytes): never moved, blocks go around them */
  structures(): StructureRange[];
  /**
   * The first byte blocks may use: after the structures that come before the first block (a
   * BAT region moved to the end of the file by a grow sits among or after the blocks).
   */
  dataStart(): number;
}

export function allocationMap(state: VhdxState): VhdxMap {
  const map: VhdxMap = {
    unit: MiB,
    entries() {
      const out: VhdxEntry[] = [];
      for (let k = 0; k * state.cr < state.blocks; k++) {
        if (state.bState[k] === BITMAP.PRESENT) out.push({ kind: 'bitmap', i: k });
        for (let n = k * state.cr; n < Math.min(state.blocks, (k + 1) * state.cr); n++) {
          const st = state.pState[n];
          if (st === PAYLOAD.FULLY_PRESENT || st === PAYLOAD.PARTIALLY_PRESENT) out.push({ kind: 'payload', i: n });
        }
      }
      return out;
    },
    lookup: (e) => (e.kind === 'payload' ? state.pOff[e.i]! : state.bOff[e.i]!),
    // every payload block gets a whole BlockSize slot, the disk's last one too (MS-VHDX)
    length: (e) => (e.kind === 'payload' ? state.params.blockSize : BITMAP_BLOCK_SIZE) / MiB,
    set(e, at) {
      if (e.kind === 'payload') state.setPayload(e.i, state.pState[e.i]!, at);
      else {
        state.bOff[e.i] = at;
        state.pending.set(bitmapIndex(e.i, state.cr), batEntry(BITMAP.PRESENT, at));
      }
    },
    structures: () => state.structures(),
    dataStart() {
      let firstBlock = Infinity;
      for (const e of map.entries()) firstBlock = Math.min(firstBlock, map.lookup(e) * MiB);
      return roundUp(Math.max(HEADER_SECTION, ...state.structures().filter((u) => u.start < firstBlock).map((u) => u.end)), ALIGN);
    },
  };
  return map;
}
