/**
 * The backing link (name + format extension) and identity: qcow2 records no identity of its
 * backing file, only its name and format (parentLink 'name'). makeEmpty is the commit side.
 */
import { DiskError } from '../../core/errors.js';
import type { BackingChange, BackingLink } from '../types.js';
import type { Qcow2State } from './state.js';
import { decodeL1, decodeL2, encodeHeaderArea, EXT, formatToQemu, headerAreaSize, MAX_BACKING_NAME, V2_HEADER_LENGTH } from './structs.js';

export function backing(this: Qcow2State): BackingLink | undefined {
  if (this.backingName === undefined) return undefined;
  const fmt = this.backingFormat();
  // the name exactly as stored: the chain layer decides what it may follow (json:, nbd:, ...)
  return fmt === undefined ? { hint: this.backingName } : { hint: this.backingName, format: fmt };
}

/**
 * Rewrite the backing file name and the backing format extension (the new parent's format,
 * as the chain layer found it: `link.parent.format`); undefined removes both. The caller
 * (rebase, merge) has already copied in whatever the old backing chain supplied.
 */
export async function setBacking(this: Qcow2State, link: BackingChange | undefined): Promise<void> {
  await this.prepareWrite();
  await rewriteHeaderArea.call(this, link?.hint, link?.parent?.format);
}

/** Write cluster 0 anew with this backing name and format (both undefined: none). */
export async function rewriteHeaderArea(this: Qcow2State, name: string | undefined, format: string | undefined): Promise<void> {
  const nameBytes = name === undefined ? undefined : Buffer.from(name, 'utf8');
  if (nameBytes && (nameBytes.length === 0 || nameBytes.length > MAX_BACKING_NAME)) {
    throw new DiskError('NAMETOOLONG', 'a backing file name has 1 to 1023 bytes', { path: this.path, struct: 'header', field: 'backing_file_size', expected: `1..${MAX_BACKING_NAME}`, found: nameBytes.length });
  }
  const exts = this.exts.filter((e) => e.type !== EXT.BACKING_FORMAT);
  if (nameBytes && format !== undefined) exts.unshift({ type: EXT.BACKING_FORMAT, data: Buffer.from(formatToQemu(format), 'latin1') });
  const headerLength = this.h.version === 2 ? V2_HEADER_LENGTH : this.h.header_length;
  const need = headerAreaSize(headerLength, exts, nameBytes);
  if (need > this.clusterSize) {
    throw new DiskError('NAMETOOLONG', 'the header, its extensions and the backing file name do not fit in cluster 0', { path: this.path, struct: 'header', field: 'backing_file_size', expected: `<= ${this.clusterSize} bytes in all`, found: need });
  }
  const area = encodeHeaderArea(this.h, this.headerTail, exts, nameBytes);
  // zeros over what the old name and extensions used beyond the new end
  const out = Buffer.alloc(Math.max(area.length, this.headerArea));
  area.copy(out);
  await this.store.write(0, out);
  this.exts = exts;
  this.backingName = name;
  this.h.backing_file_offset = nameBytes ? BigInt(area.length - nameBytes.length) : 0n;
  this.h.backing_file_size = nameBytes?.length ?? 0;
  this.headerArea = area.length;
}

/**
 * Drop every mapping (commit empties the top): the L1 table is cleared first (from then on
 * the old L2 tables and data only leak), flush, then their refcounts are lowered, flush, then
 * the file is cut after the last cluster still in use.
 */
export async function makeEmpty(this: Qcow2State): Promise<void> {
  this.refuseDataFile('emptying the image');
  await this.prepareWrite();
  const l2s: number[] = [];
  for (let i = 0; i < this.h.l1_size; i++) {
    const e = decodeL1(this.l1, i);
    if (e.offset !== 0) l2s.push(e.offset);
  }
  if (l2s.length > 0) {
    const zero = Buffer.alloc(this.l1.length);
    await this.store.write(Number(this.h.l1_table_offset), zero);
    // each step durable before the next: a power cut keeps any subset of the writes since the
    // last flush, and refcounts lowered (or the file cut) before the cleared L1 table lands
    // leave entries naming clusters of refcount 0 or past the end (crash explorer, commit)
    await this.store.flush();
    const tables: Buffer[] = [];
    for (const off of l2s) tables.push(this.l2Cache.get(off) ?? (await this.store.read(off, this.clusterSize)));
    this.l1 = zero;
    this.l2Cache.clear();
    this.inflated.clear();
    const cs = this.clusterSize;
    const frees: number[] = [];
    l2s.forEach((off, t) => {
      frees.push(off / cs);
      const l2 = tables[t]!;
      for (let i = 0; i < this.g.l2Entries; i++) {
        const e = decodeL2(l2, i, this.g);
        if (e.kind === 'compressed') for (let c = Math.floor(e.offset / cs); c <= Math.floor((e.offset + e.csize - 1) / cs); c++) frees.push(c);
        else if (e.offset !== 0) frees.push(e.offset / cs);
      }
    });
    await this.refs.decrementMany(frees);
  }
  const last = await this.refs.lastUsed();
  const end = Math.max((last + 1) * this.clusterSize, Number(this.h.l1_table_offset) + this.l1.length);
  if (end < this.file.size) {
    await this.store.flush();
    await this.store.truncate(end);
    this.file.size = end;
  }
  this.refs.freeIndex = 0;
}
