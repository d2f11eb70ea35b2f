/**
 * Check and repair of one hosted sparse extent: grain tables against the file and against
 * their redundant copies, grains used twice, grains nothing uses, metadata that overlaps
 * (overlap.ts; NOTES.md "Overlap rules"). Functions of a SparseState (map.ts); SparseExtent
 * (sparse.ts) calls them.
 */
import { DiskError } from '../../core/errors.js';
import { SECTOR_SIZE, ceilDiv, roundUp } from '../../core/ints.js';
import type { CheckFinding } from '../types.js';
import { readU32Array, u32Bytes } from '../../binary/tables.js';
import { rewriteHeader } from './layout.js';
import type { SparseState } from './map.js';
import { isRedundant, metadataOverlaps, overlapMessage, scanGrainEntries, type EntryProblem, type Overlap } from './overlap.js';
import { FLAG_REDUNDANT_GD } from './structs.js';
import { EntryFindings } from '../common/findings.js';

/**
 * Consistency check of this extent (grain tables against the file and against their
 * redundant copies, grains used twice, grains nothing uses). With `repair`: a redundant
 * table that differs from a sound primary is rewritten from it, and leaked grains at the end
 * of the file are cut off (leaks in the middle stay: moving grains is defragmentation).
 */
export async function checkExtent(this: SparseState, repair: boolean, dryRun = false): Promise<{ findings: CheckFinding[]; leakedBytes: number }> {
  const findings: CheckFinding[] = [];
  const where = { struct: 'grain table' };
  // overlapping metadata first: a repair here changes where the redundant copy lives
  // grains over tables or directories past overHead (the walk below sees every other entry fault)
  const hits = this.compressed ? [] : (await scanGrainEntries(this.store, this.map(), { limit: 64, stopAtLimit: false })).problems.filter((p) => p.kind === 'over-table');
  const redundantSuspect = this.overlaps.length > 0 || hits.length > 0 ? await checkOverlaps.call(this, repair, dryRun, findings, hits) : false;
  const fileSectors = Math.ceil(this.fileSize / SECTOR_SIZE);
  const used = new Map<number, number>(); // grain sector -> grain index
  // one finding per problem with a count (common/findings.ts): a garbage table gave one per entry
  const gtes = new EntryFindings({ name: 'GTE', struct: where.struct, offsetOf: (gi) => this.gd[Math.floor(gi / this.numGTEs)]! * SECTOR_SIZE + (gi % this.numGTEs) * 4 });
  const rgts = new EntryFindings({ name: 'RGT', struct: 'redundant grain table', offsetOf: (g) => this.rgd![g]! * SECTOR_SIZE });
  const rgdes = new EntryFindings({ name: 'RGDE', struct: 'redundant grain directory', offsetOf: (g) => this.rgdOffsetBytes + g * 4 });
  const rgtFlags = repair && dryRun ? { wouldRepair: true } : repair && !this.readOnly ? { repaired: true } : undefined;
  // its bytes are not in the file (truncated) or are metadata: no repair brings them back
  const outsideNote = repair ? " (not repairable by vdkit: the grain's data is not in the file; read-write opens stay refused; copy what reads with convert from a read-only open)" : '';
  for (let g = 0; g < this.gd.length; g++) {
    if (this.gd[g] === 0) continue;
    let table = await readU32Array(this.store, this.gd[g]! * SECTOR_SIZE, this.numGTEs);
    // a primary table with entries outside the grain area beside an intact redundant copy:
    // the primary is the damaged one, and a repair restores it from the copy (copying the
    // primary over the copy, as for any other difference, would destroy the intact entries)
    if (repair && this.rgd && this.rgd[g] !== 0 && !redundantSuspect && !this.compressed) {
      const copy = await readU32Array(this.store, this.rgd[g]! * SECTOR_SIZE, this.numGTEs);
      const outside = (e: number) => e > 1 && (e < this.overHeadSectors || e >= fileSectors);
      const bad = table.filter(outside).length;
      if (bad > 0 && intactCopy(copy, outside)) {
        const f: CheckFinding = { kind: 'corruption', message: `grain table ${g} has ${bad} entr${bad === 1 ? 'y' : 'ies'} outside the grain area and its redundant copy is intact: restored from the copy`, struct: 'grain table', field: `GT[${g}]`, offset: this.gd[g]! * SECTOR_SIZE };
        if (dryRun) f.wouldRepair = true;
        else if (!this.readOnly) {
          await this.store.write(this.gd[g]! * SECTOR_SIZE, u32Bytes(copy, 0, copy.length));
          await this.store.flush();
          this.gtCache.delete(g);
          f.repaired = true;
        }
        findings.push(f);
        table = copy;
      }
    }
    for (let i = 0; i < table.length; i++) {
      const e = table[i]!;
      if (e <= 1) continue;
      const gi = g * this.numGTEs + i;
      if (e < this.overHeadSectors || (!this.compressed && e >= fileSectors)) {
        gtes.add('outside', gi, 'corruption', 'point outside the grain area', repair ? 'vdkit cannot repair them' : 'a repair cannot bring their data back', () => `grain ${gi} points outside the grain area (sector ${e})${outsideNote}`, repair ? { notRepairable: true } : undefined);
        continue;
      }
      const other = used.get(e);
      if (other !== undefined) gtes.add('shared', gi, 'corruption', 'share a sector with an earlier grain', 'a repair leaves them', () => `grains ${other} and ${gi} share sector ${e}`);
      else used.set(e, gi);
    }
    // a redundant table that overlaps other metadata is reported above, never compared or rewritten
    if (this.rgd && this.rgd[g] !== 0 && !redundantSuspect) {
      const copy = await readU32Array(this.store, this.rgd[g]! * SECTOR_SIZE, this.numGTEs);
      if (!u32Bytes(copy, 0, copy.length).equals(u32Bytes(table, 0, table.length))) {
        // A copy that only lacks entries the primary has is what a write interrupted between
        // the two tables leaves (the primary is written first): nothing is lost. Anything else
        // means one of them was damaged.
        // A compact or defragment killed between the two tables leaves the copy naming a
        // grain's old slot, which still holds the same bytes (old slots are reused only once
        // both tables are durable); a discard writes the copy first, so the copy reads 0 or 1.
        let lagging = true;
        for (let i = 0; i < table.length && lagging; i++) {
          if (copy[i] === table[i] || copy[i]! <= 1) continue;
          lagging = table[i]! > 1 && (await sameGrain.call(this, table[i]!, copy[i]!, fileSectors));
        }
        if (lagging) rgts.add('lagging', g, 'warning', 'lag the primary (an interrupted write, discard or grain move)', 'a repair copies the primary', () => `redundant grain table ${g} lags the primary (an interrupted write, discard or grain move)`, rgtFlags);
        else rgts.add('differs', g, 'corruption', 'differ from the primary', 'a repair copies the primary', () => `redundant grain table ${g} differs from the primary`, rgtFlags);
        if (repair && !dryRun && !this.readOnly) await this.store.write(this.rgd[g]! * SECTOR_SIZE, u32Bytes(table, 0, table.length));
      }
    } else if (this.rgd && this.rgd[g] === 0) {
      rgdes.add('missing', g, 'corruption', 'are missing', 'a repair leaves them', () => `redundant grain directory entry ${g} is missing`);
    }
  }
  findings.push(...gtes.findings(), ...rgts.findings(), ...rgdes.findings());
  if (this.compressed) return { findings, leakedBytes: 0 };
  // leaks: grain-sized slots after the metadata area that no table uses. Tables allocated
  // later (for directory entries that had none) and directories a resize moved past the
  // metadata area are metadata, not leaks: a slot holding any sector of them is in use, and
  // a repair never cuts the file before their end.
  const meta = new Set<number>();
  for (const dir of [this.gd, this.rgd]) if (dir) for (const e of dir) if (e !== 0) for (let s = 0; s < this.gtBytes / SECTOR_SIZE; s++) meta.add(e + s);
  const dirSectors = ceilDiv(this.gd.length * 4, SECTOR_SIZE);
  for (const at of [this.gdOffsetBytes, this.rgdOffsetBytes]) if (at > 0) for (let s = 0; s < dirSectors; s++) meta.add(at / SECTOR_SIZE + s);
  const slotUsed = new Set<number>();
  for (const t of meta) if (t >= this.overHeadSectors) slotUsed.add(this.overHeadSectors + Math.floor((t - this.overHeadSectors) / this.grainSectors) * this.grainSectors);
  let leaked = 0;
  let lastUsedEnd = this.overHeadSectors;
  for (const [s] of used) lastUsedEnd = Math.max(lastUsedEnd, s + this.grainSectors);
  for (const t of meta) lastUsedEnd = Math.max(lastUsedEnd, t + 1);
  for (let s = this.overHeadSectors; s < fileSectors; s += this.grainSectors) {
    if (used.has(s) || slotUsed.has(s)) continue;
    leaked += this.grainBytes;
  }
  if (leaked > 0) {
    const tail = Math.max(0, this.fileSize - lastUsedEnd * SECTOR_SIZE);
    const f: CheckFinding = { kind: 'leak', message: `${leaked} bytes of grains are not used by any grain table`, struct: 'grain table' };
    if (repair && dryRun && tail > 0) {
      if (leaked - Math.min(leaked, roundUp(tail, this.grainBytes)) === 0) f.wouldRepair = true;
      else f.message += ` (a repair would cut off ${tail} bytes at the end)`;
    } else if (repair && !this.readOnly && tail > 0) {
      await this.store.flush();
      await this.store.truncate(lastUsedEnd * SECTOR_SIZE);
      this.fileSize = lastUsedEnd * SECTOR_SIZE;
      this.nextFree = roundUp(this.fileSize, this.grainBytes);
      leaked -= Math.min(leaked, roundUp(tail, this.grainBytes));
      if (leaked === 0) f.repaired = true;
      else f.message += ` (${tail} bytes at the end were cut off; ${leaked} remain inside the file)`;
    }
    findings.push(f);
  }
  if (this.header.uncleanShutdown !== 0) findings.push({ kind: 'warning', message: 'the extent was not closed cleanly (uncleanShutdown is set)', struct: 'SparseExtentHeader', field: 'uncleanShutdown' });
  return { findings, leakedBytes: leaked };
}

/** A redundant grain table every entry of which lies in the grain area (or is 0 or 1), none twice. */
function intactCopy(copy: Uint32Array, outside: (e: number) => boolean): boolean {
  const seen = new Set<number>();
  for (const e of copy) {
    if (e <= 1) continue;
    if (outside(e) || seen.has(e)) return false;
    seen.add(e);
  }
  return true;
}

/**
 * Report every metadata overlap found at open as corruption. With `repair`: an embedded
 * descriptor running over the next structure is cut back to end before it when its text
 * ends there; a redundant GD or GT that overlaps anything is rebuilt from the primary at the
 * end of the file (rebuildRedundant). Overlaps among the primary structures cannot be mended
 * (which of the two holds the real entries is unknown): marked notRepairable. Returns whether
 * redundant metadata still overlaps something (its tables must then not be compared).
 */
async function checkOverlaps(this: SparseState, repair: boolean, dryRun: boolean, findings: CheckFinding[], hits: EntryProblem[]): Promise<boolean> {
  const m = this.map();
  const isDesc = (o: Overlap) => o.a.kind === 'descriptor' || o.b.kind === 'descriptor';
  const isRed = (o: Overlap) => isRedundant(o.a) || isRedundant(o.b);
  // the descriptor can shrink to end before the first structure starting inside it, if its text ends there
  let descriptorSectors: number | undefined;
  const dOff = m.descriptorOffset;
  const dEnd = dOff + m.descriptorSize;
  if (this.overlaps.some(isDesc)) {
    let limit = dEnd;
    let startsBefore = false;
    const consider = (start: number, end: number) => {
      if (end <= dOff || start >= dEnd) return;
      if (start <= dOff) startsBefore = true;
      else limit = Math.min(limit, start);
    };
    consider(0, 1);
    consider(m.gdOffset, m.gdOffset + m.gdSectors);
    if (m.rgd) consider(m.rgdOffset, m.rgdOffset + m.gdSectors);
    for (const dir of [m.gd, m.rgd]) if (dir) for (const e of dir) if (e !== 0) consider(e, e + m.gtSectors);
    if (!startsBefore && limit > dOff) {
      const text = await this.store.readZeroPadded(dOff * SECTOR_SIZE, (limit - dOff) * SECTOR_SIZE);
      if (text.indexOf(0) >= 0) descriptorSectors = limit - dOff;
    }
  }
  const left = this.overlaps.filter((o) => !(isDesc(o) && descriptorSectors !== undefined));
  const primaryOnly = left.filter((o) => !isRed(o));
  const redHits = hits.filter((p) => p.piece && isRedundant(p.piece));
  const primaryHits = hits.filter((p) => !(p.piece && isRedundant(p.piece)));
  const rebuild = (left.some(isRed) || redHits.length > 0) && primaryOnly.length === 0 && primaryHits.length === 0;
  const act = repair && !dryRun && !this.readOnly;
  for (const o of this.overlaps) {
    const f: CheckFinding = { kind: 'corruption', message: `metadata overlap: ${overlapMessage(o)}`, struct: 'SparseExtentHeader', field: o.b.field, offset: o.b.start * SECTOR_SIZE };
    const fixable = (isDesc(o) && descriptorSectors !== undefined) || (isRed(o) && rebuild);
    if (repair && fixable) {
      f.message += isDesc(o) && descriptorSectors !== undefined ? ` (repair: descriptorSize becomes ${descriptorSectors} sectors; the text fits)` : ' (repair: the redundant grain directory and tables are rebuilt from the primary at the end of the file)';
      if (dryRun) f.wouldRepair = true;
      else if (act) f.repaired = true;
    } else if (repair) {
      f.message += isDesc(o)
        ? ' (not repairable by vdkit: the descriptor text runs into the structure after it)'
        : ' (not repairable by vdkit: primary structures share sectors, so which holds the real entries is unknown; open read-only and copy the disk with convert)';
      f.notRepairable = true;
    }
    findings.push(f);
  }
  for (const p of hits) {
    const f: CheckFinding = { kind: 'corruption', message: p.message, struct: 'grain table', field: `GTE[${p.gi}]`, offset: p.sector * SECTOR_SIZE };
    const red = p.piece !== undefined && isRedundant(p.piece);
    if (repair && red && rebuild) {
      f.message += ' (repair: the redundant grain directory and tables are rebuilt from the primary at the end of the file)';
      if (dryRun) f.wouldRepair = true;
      else if (act) f.repaired = true;
    } else if (repair) {
      f.message += ' (not repairable by vdkit: the grain and a primary table share sectors, so one of them is already wrong; open read-only and copy the disk with convert)';
      f.notRepairable = true;
    }
    findings.push(f);
  }
  if (act) {
    if (descriptorSectors !== undefined) {
      const h = await rewriteHeader(this.store, this.path, (h) => (h.descriptorSize = BigInt(descriptorSectors)));
      this.header.descriptorSize = h.descriptorSize;
    }
    if (rebuild) await rebuildRedundant.call(this);
    this.overlaps = metadataOverlaps(this.map());
  }
  return act && rebuild ? this.overlaps.some(isRed) : left.some(isRed) || redHits.length > 0;
}

/**
 * A new redundant copy from the primary: the GTs copied, then the RGD, all past the end of
 * the file and past every grain an entry names; flushed; then one header write moves
 * rgdOffset. Killed before it, the old (overlapping) copy is still named and nothing is lost.
 */
async function rebuildRedundant(this: SparseState): Promise<void> {
  const gtSectors = this.gtBytes / SECTOR_SIZE;
  const gdSectors = ceilDiv(this.gd.length * 4, SECTOR_SIZE);
  const scan = await scanGrainEntries(this.store, this.map(), { limit: 0, stopAtLimit: false });
  let at = Math.max(roundUp(this.fileSize, this.grainBytes), roundUp(scan.highWater * SECTOR_SIZE, this.grainBytes)) / SECTOR_SIZE;
  const rgd = new Uint32Array(this.gd.length);
  const chunkTables = Math.max(1, Math.floor((1024 * 1024) / this.gtBytes));
  let pending: { g: number; to: number }[] = [];
  const writeChunk = async () => {
    if (pending.length === 0) return;
    const buf = Buffer.alloc(pending.length * this.gtBytes);
    for (let k = 0; k < pending.length; k++) (await this.store.readZeroPadded(this.gd[pending[k]!.g]! * SECTOR_SIZE, this.gtBytes)).copy(buf, k * this.gtBytes);
    await this.store.write(pending[0]!.to * SECTOR_SIZE, buf);
    pending = [];
  };
  for (let g = 0; g < this.gd.length; g++) {
    if (this.gd[g] === 0) continue;
    rgd[g] = at;
    pending.push({ g, to: at });
    at += gtSectors;
    if (pending.length >= chunkTables) await writeChunk();
  }
  await writeChunk();
  const rgdAt = at;
  if (rgdAt + gdSectors > 0xffffffff) throw new DiskError('NOSPACE', 'no room for a new redundant grain directory below sector 2^32', { path: this.path, field: 'rgdOffset' });
  await this.store.write(rgdAt * SECTOR_SIZE, Buffer.concat([u32Bytes(rgd, 0, rgd.length), Buffer.alloc(gdSectors * SECTOR_SIZE - rgd.length * 4)]));
  await this.store.flush();
  const h = await rewriteHeader(this.store, this.path, (h) => {
    h.rgdOffset = BigInt(rgdAt);
    h.flags |= FLAG_REDUNDANT_GD;
  });
  this.header.rgdOffset = h.rgdOffset;
  this.rgd = rgd;
  this.rgdOffsetBytes = rgdAt * SECTOR_SIZE;
  this.fileSize = Math.max(this.fileSize, (rgdAt + gdSectors) * SECTOR_SIZE);
  this.nextFree = Math.max(this.nextFree, roundUp(this.fileSize, this.grainBytes));
}

/** whether two grain slots (both inside the grain area) hold the same bytes */
async function sameGrain(this: SparseState, a: number, b: number, fileSectors: number): Promise<boolean> {
  const inside = (e: number) => e >= this.overHeadSectors && e < fileSectors;
  if (!inside(a) || !inside(b)) return false;
  const [x, y] = await Promise.all([this.store.readZeroPadded(a * SECTOR_SIZE, this.grainBytes), this.store.readZeroPadded(b * SECTOR_SIZE, this.grainBytes)]);
  return x.equals(y);
}
