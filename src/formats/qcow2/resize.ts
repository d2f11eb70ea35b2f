/**
 * Growing the L1 table (create and resize) and resizing in place (NOTES.md "Resize").
 */
import { DiskError } from '../../core/errors.js';
import { refuseWithBitmaps } from './bitmap-write.js';
import type { Qcow2State } from './state.js';
import { INCOMPAT, l1EntriesFor } from './structs.js';

/**
 * Grow the L1 table to `entries` (create; QEMU's qcow2_grow_l1_table): the new table in fresh
 * clusters, then the header, then the old table freed.
 */
export async function growL1(this: Qcow2State, entries: number): Promise<void> {
  if (entries <= this.h.l1_size) return;
  const cs = this.clusterSize;
  const bytes = entries * 8;
  const at = await this.refs.alloc(Math.ceil(bytes / cs));
  const next = Buffer.alloc(bytes);
  this.l1.copy(next);
  await this.store.write(at, next);
  this.file.size = Math.max(this.file.size, at + bytes);
  const old = { offset: Number(this.h.l1_table_offset), size: this.h.l1_size };
  this.h.l1_size = entries;
  this.h.l1_table_offset = BigInt(at);
  await this.writeHeaderFields(['l1_size', 'l1_table_offset']);
  this.l1 = next;
  if (old.size > 0) await this.refs.update(old.offset / cs, Math.ceil((old.size * 8) / cs), -1);
}

/**
 * Give a new, empty image its size (create; QEMU creates with size 0 and then truncates):
 * the L1 table grown first, then the header's size field.
 */
export async function setInitialSize(this: Qcow2State, capacity: number): Promise<void> {
  await growL1.call(this, l1EntriesFor(capacity, this.g));
  this.h.size = BigInt(capacity);
  await this.writeHeaderFields(['size']);
}

/**
 * Resize in place (qemu-img resize). Grow: the L1 table first (a larger one in fresh clusters,
 * then the header points at it, as QEMU's qcow2_grow_l1_table), the tail of a partial last
 * cluster zeroed while still beyond the end, then the header's size field (one 8-byte write:
 * what makes the new size visible). Shrink: what lies beyond the new end is zeroed first
 * (v3: zero-flag entries, so its clusters are freed), then the size field; the L1 table keeps
 * its entries (a table longer than needed is valid), so growing again reads zeros there.
 */
export async function resize(this: Qcow2State, newCapacity: number): Promise<void> {
  refuseWithBitmaps.call(this, 'resize');
  try {
    await this.prepareWrite();
    const old = this.capacity;
    if (newCapacity < old && this.snapshots.length > 0) throw new DiskError('CANTSHRINK', 'an image with internal snapshots cannot be shrunk', { path: this.path, field: 'nb_snapshots', found: this.snapshots.length });
    if (this.hasIncompat(INCOMPAT.DATA_FILE)) throw new DiskError('NOTSUPPORTED', 'images with an external data file cannot be resized', { path: this.path, field: 'incompatible_features' });
    const cs = this.clusterSize;
    // What lies past the end must read as zeros should the disk grow (again). Grow: the tail
    // of the old last cluster, and anything still mapped past the old end (a shrink stopped
    // before its zeros), zeroed before the switch (the header size). Shrink: the switch first,
    // then the cut part zeroed while it is past the end, so a stop shows the old disk whole
    // or the new one.
    const zeroRanges = async (from: number, to: number, all: boolean) => {
      const zeros = Buffer.alloc(Math.max(cs, 1024 * 1024));
      for (const r of await this.blockStatus(from, to - from)) {
        if (r.state === 'unallocated' && !all) continue;
        for (let at = r.offset; at < r.offset + r.length; at += zeros.length) await this.write(zeros.subarray(0, Math.min(zeros.length, r.offset + r.length - at)), at);
      }
      await this.store.flush();
    };
    if (newCapacity > old) {
      await growL1.call(this, l1EntriesFor(newCapacity, this.g));
      // blockStatus and write see the new size in memory; the file keeps the old until the switch
      this.h.size = BigInt(newCapacity);
      try {
        const tail = Math.min(newCapacity, Math.ceil(old / cs) * cs) - old;
        if (tail > 0 && (await this.blockStatus(old - (old % cs), cs)).some((r) => r.state !== 'unallocated')) await this.write(Buffer.alloc(tail), old);
        const next = Math.ceil(old / cs) * cs;
        if (next < newCapacity) await zeroRanges(next, newCapacity, false);
      } finally {
        this.h.size = BigInt(old);
      }
      await this.store.flush();
      this.h.size = BigInt(newCapacity);
      await this.writeHeaderFields(['size']);
    } else {
      this.h.size = BigInt(newCapacity);
      await this.writeHeaderFields(['size']);
      await this.store.flush();
      this.h.size = BigInt(old);
      try {
        await zeroRanges(newCapacity, old, !!this.backingName);
      } finally {
        this.h.size = BigInt(newCapacity);
      }
    }
  } finally {
    await this.close();
  }
}
