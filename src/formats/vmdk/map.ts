/**
 * The allocation map of a hosted sparse extent, as the maintenance files (compact.ts, check.ts,
 * resize.ts) see it: `SparseState` is what they may read and change of an open extent
 * (SparseExtent implements it), and `GrainSpace` is the grain area as slots for compact and
 * defragment. Unit: one grain (`grainSectors`); entries: the grain tables the directory names;
 * fixed structures: header, descriptor, directories and tables (`map()`, overlap.ts); free
 * space: what no entry or table covers, and everything from `nextFree` on.
 */
import { DiskError } from '../../core/errors.js';
import { SECTOR_SIZE, roundUp } from '../../core/ints.js';
import type { ByteStore } from '../../storage/store.js';
import type { Overlap, SparseMap } from './overlap.js';
import type { SparseExtentHeaderValue } from './structs.js';

/** One open hosted sparse extent, as the role files work on it (`this` of their functions). */
export interface SparseState {
  readonly store: ByteStore;
  readonly path: string;
  readonly header: SparseExtentHeaderValue;
  readonly readOnly: boolean;
  readonly compressed: boolean;
  readonly version: number;
  /** the allocation unit */
  readonly grainSectors: number;
  readonly grainBytes: number;
  readonly numGTEs: number;
  /** bytes of one grain table, whole sectors */
  readonly gtBytes: number;
  /** grain directory: sector of each grain table, 0 = none */
  readonly gd: Uint32Array;
  /** redundant grain directory; replaced when a repair rebuilds the copy elsewhere */
  rgd: Uint32Array | undefined;
  readonly gdOffsetBytes: number;
  rgdOffsetBytes: number;
  readonly overHeadSectors: number;
  readonly gtCache: Map<number, Uint32Array>;
  fileSize: number;
  /** where the next grain or table is placed (grain-aligned, past every grain an entry names) */
  nextFree: number;
  /** metadata pieces sharing sectors (found at open) */
  overlaps: Overlap[];
  /** why this handle may not write (an open for check of an extent whose metadata overlaps) */
  refusal: DiskError | undefined;
  readonly hasZeroMarker: boolean;
  /** the fixed structures, for the overlap rules */
  map(): SparseMap;
  assertWritable(): void;
  /** the grain table of directory entry `g` (cached), undefined where the entry is 0 */
  gt(gdIndex: number): Promise<Uint32Array | undefined>;
  /** the entry of grain `gi`, checked to lie in the grain area */
  gte(gi: number): Promise<number>;
  checkedEntry(gi: number, e: number): number;
  /** set entries: primary then redundant table (or redundant first, for entries that free a grain) */
  setEntries(entries: { gi: number; value: number }[], redundantFirst?: boolean): Promise<void>;
  /** read file bytes, zeros past the end of a truncated file */
  readFile(into: Buffer, at: number): Promise<void>;
  write(data: Buffer, offset: number): Promise<void>;
}

/**
 * The grain area of a sparse extent as grain-sized slots, counted from the first
 * grain-aligned sector at or after overHead, for compact and defragment. A slot is free when
 * no grain, table or directory overlaps it. Grains from producers that do not align them
 * (any sector after overHead is legal) may cover two slots; every grain moved lands aligned.
 */
export class GrainSpace {
  readonly base: number;
  /** per slot: fixed metadata overlaps it */
  private fixedSlots: Uint8Array;
  /** per slot: how many grains (or reservations) overlap it */
  private count: Int32Array;
  /** per slot: the index of the grain aligned on it, or -1 */
  private owner: Int32Array;
  /** slot -> indexes of unaligned grains overlapping it */
  private readonly loose = new Map<number, number[]>();
  private readonly dead: Uint8Array;
  private readonly fixedEnd: number;

  constructor(
    private readonly path: string,
    overHead: number,
    private readonly gs: number,
    fileSectors: number,
    fixed: [number, number][],
    /** grain index of each grain */
    readonly grains: number[],
    /** current sector of each grain */
    readonly sector: number[],
  ) {
    this.base = roundUp(overHead, gs);
    const slots = Math.max(0, Math.ceil((fileSectors - this.base) / gs)) + grains.length + 2;
    this.fixedSlots = new Uint8Array(slots);
    this.count = new Int32Array(slots);
    this.owner = new Int32Array(slots).fill(-1);
    this.dead = new Uint8Array(grains.length);
    let fixedEnd = overHead;
    for (const [from, to] of fixed) {
      fixedEnd = Math.max(fixedEnd, to);
      for (const s of this.slotsOf(from, to)) {
        this.ensure(s);
        this.fixedSlots[s] = 1;
      }
    }
    this.fixedEnd = fixedEnd;
    for (let i = 0; i < grains.length; i++) this.occupy(i, sector[i]!);
  }

  private slotsOf(from: number, to: number): number[] {
    const out: number[] = [];
    if (to <= this.base) return out;
    for (let s = Math.floor((Math.max(from, this.base) - this.base) / this.gs); this.base + s * this.gs < to; s++) out.push(s);
    return out;
  }

  private ensure(slot: number): void {
    if (slot < this.count.length) return;
    const n = Math.max(slot + 1, this.count.length * 2);
    const grow = <T extends Uint8Array | Int32Array>(a: T, fill: number): T => {
      const b = new (a.constructor as new (n: number) => T)(n);
      b.fill(fill as never);
      b.set(a);
      return b;
    };
    this.fixedSlots = grow(this.fixedSlots, 0);
    this.count = grow(this.count, 0);
    this.owner = grow(this.owner, -1);
  }

  private occupy(i: number, at: number): void {
    const slots = this.slotsOf(at, at + this.gs);
    const aligned = (at - this.base) % this.gs === 0 && at >= this.base;
    for (const s of slots) {
      this.ensure(s);
      this.count[s]!++;
      if (aligned) {
        if (this.owner[s] !== -1) throw new DiskError('CORRUPT', 'two grains share a slot of the file: run check --repair first', { path: this.path, struct: 'grain table', field: `GTE[${this.grains[i]}]`, offset: at * SECTOR_SIZE });
        this.owner[s] = i;
      } else {
        const l = this.loose.get(s);
        if (l) l.push(i);
        else this.loose.set(s, [i]);
      }
    }
  }

  private vacate(i: number, at: number): void {
    for (const s of this.slotsOf(at, at + this.gs)) {
      this.count[s]!--;
      if (this.owner[s] === i) this.owner[s] = -1;
      const l = this.loose.get(s);
      if (l) {
        const rest = l.filter((x) => x !== i);
        if (rest.length) this.loose.set(s, rest);
        else this.loose.delete(s);
      }
    }
  }

  slotSector(slot: number): number {
    return this.base + slot * this.gs;
  }
  isFixed(slot: number): boolean {
    return slot < this.fixedSlots.length && this.fixedSlots[slot] === 1;
  }
  isFree(slot: number): boolean {
    return slot >= this.count.length || (this.count[slot] === 0 && this.fixedSlots[slot] === 0);
  }
  /** hold a free slot as the destination of a pending move */
  reserve(slot: number): void {
    this.ensure(slot);
    this.count[slot]!++;
  }
  /** grains overlapping a slot */
  occupants(slot: number): number[] {
    if (slot >= this.count.length) return [];
    const out = this.owner[slot]! >= 0 ? [this.owner[slot]!] : [];
    return out.concat(this.loose.get(slot) ?? []);
  }
  /** a dropped grain: its slots are free (its table entries are durable by now) */
  release(i: number): void {
    if (this.dead[i]) return;
    this.dead[i] = 1;
    this.vacate(i, this.sector[i]!);
  }
  liveIndexes(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.grains.length; i++) if (!this.dead[i]) out.push(i);
    return out;
  }
  /** a move is durable: the reservation becomes the grain, the old slots are free */
  moved(i: number, slot: number): void {
    this.vacate(i, this.sector[i]!);
    this.count[slot]!--;
    this.sector[i] = this.slotSector(slot);
    this.occupy(i, this.sector[i]!);
  }
  /** first sector after every grain and every piece of metadata */
  usedEndSector(): number {
    let end = this.fixedEnd;
    for (let i = 0; i < this.grains.length; i++) if (!this.dead[i]) end = Math.max(end, this.sector[i]! + this.gs);
    return end;
  }
}
