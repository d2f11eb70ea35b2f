/**
 * The VHDX allocation map as compact (close-up) and defragment use it, and as a shared
 * relayout engine (issue 12 item 4) will: entries (payload blocks and sector bitmap blocks),
 * where each is stored and how much it owns, in 1 MiB units (the BAT's offset unit); moving an
 * entry (a BAT change that reaches the file through the log at the next commit); the fixed
 * structures nothing moves; where blocks may start.
 */
import { roundUp } from '../../core/ints.js';
import type { MapItem, RelayoutMap } from '../common/relayout.js';
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

/**
 * The VHDX map for the relayout engine (common/relayout.ts). Unit: 1 MiB; entries: payload and
 * sector bitmap blocks in virtual order; fixed: the header section, log and regions (a BAT
 * region moved to the end by a grow is stepped around). Per batch the engine copies, then
 * setEntries buffers the new BAT entries and `commit` makes them durable through the log (it
 * flushes the copies before the log entry: `durableSwitch`); the old places are reused only by a
 * later batch. Targets past the end of the file are reached by extending it first (a hole, as
 * allocate does). The cut marks the log empty first (cutAt).
 */
export function vhdxRelayout(state: VhdxState): RelayoutMap<VhdxEntry> {
  const map = allocationMap(state);
  const bs = state.params.blockSize;
  const structures = map.structures();
  const structuresEnd = roundUp(Math.max(...structures.map((u) => u.end)), ALIGN);
  const dataStart = map.dataStart();
  let items: MapItem<VhdxEntry>[] = [];
  return {
    path: state.path,
    unit: MiB,
    dataStart: dataStart / MiB,
    batch: Math.max(2, Math.min(16, Math.floor((64 * MiB) / bs))),
    async entries() {
      items = map.entries().map((e) => ({ entry: e, at: map.lookup(e), len: map.length(e) }));
      return items;
    },
    async fixed() {
      const fixed = new Uint8Array(structuresEnd / MiB);
      for (const u of structures) fixed.fill(1, Math.floor(u.start / MiB), Math.ceil(u.end / MiB));
      return fixed;
    },
    async reserve(moves) {
      const reach = Math.max(...moves.map((m) => (m.to + m.item.len) * MiB));
      if (reach > state.fileSize) {
        await state.store.truncate(reach);
        state.fileSize = reach;
      }
      // blocks parked up there until the end (or a cancel) cuts the file: new blocks go after
      state.nextFree = Math.max(state.nextFree, roundUp(reach, ALIGN));
      // the extension is made durable by commit's first flush, before the log entry
      return false;
    },
    async read(into, at) {
      // a last block the file holds only in part (QEMU's fixed images) is copied as far as the file goes
      const chunk = into.subarray(0, Math.max(0, Math.min(into.length, state.fileSize - at)));
      await state.store.readInto(chunk, at);
      return chunk;
    },
    write: (data, at) => state.store.write(at, data),
    flush: () => state.store.flush(),
    async setEntries(moves) {
      for (const m of moves) map.set(m.item.entry, m.to);
      await state.commit(); // flushes the copies before the log entry
    },
    durableSwitch: true,
    async cut() {
      // after the last whole block (cutAt never extends a file that ends inside it)
      let end = Math.max(dataStart, structuresEnd);
      for (const it of items) end = Math.max(end, (it.at + it.len) * MiB);
      await cutAt(state, roundUp(end, ALIGN));
    },
  };
}

/**
 * The file cut at `end` (1 MiB aligned, after every block and structure in use): the log is
 * marked empty first (its entries may name offsets past the new end), then the truncate; new
 * blocks go from there.
 */
export async function cutAt(state: VhdxState, end: number): Promise<void> {
  if (end < state.fileSize) {
    await state.emptyLog();
    await state.store.truncate(end);
    await state.store.flush();
    state.fileSize = end;
  }
  state.nextFree = roundUp(Math.max(state.fileSize, end), ALIGN);
}
