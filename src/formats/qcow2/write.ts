/**
 * Writing (NOTES.md "Allocation and crash-safe write order"), per L2 table a request touches:
 * refcounts of the new L2 table and data clusters (written through by refcounts.ts), then the
 * data, then the L2 table (whole, when new) or its changed entries, then the L1 entry; clusters
 * the request stops using (copy-on-write sources, clusters turned into zero-flag entries) are
 * freed last. A killed writer leaves at worst clusters whose refcount is too high (leaks that
 * `check --repair` or `qemu-img check -r leaks` reclaims), never a table pointing at a cluster
 * of refcount 0 or at data not written yet.
 * - Copy-on-write: an L2 table or data cluster whose COPIED bit is clear (refcount != 1:
 *   internal snapshots share it, or it is compressed) is never written in place; a copy is
 *   made, pointed at, and the original's refcount lowered.
 * - Whole clusters of zeros become zero-flag entries (version 3) instead of data; in a base
 *   without a backing file, zeros over an unallocated cluster change nothing.
 */
import { isZero } from '../../binary/zeros.js';
import { DiskError } from '../../core/errors.js';
import type { Qcow2State } from './state.js';
import { decodeL1, decodeL2, encodeL1, encodeL2 } from './structs.js';

interface Plan {
  idx: number;
  /** guest offset of the cluster */
  start: number;
  action: 'inplace' | 'alloc' | 'zero';
  /** inplace: the bytes and where they go in the host file; alloc: the whole new cluster */
  data: Buffer;
  host: number;
  /** clusters to free after the L2 update (byte ranges) */
  free?: [number, number];
  /** alloc over zeros: the written bytes alone, at this offset in the cluster (the rest reads as zeros) */
  piece?: { at: number; bytes: Buffer };
}

/** A write within one L2 table's range (see the order in the file comment). */
export async function writeSlice(this: Qcow2State, l1i: number, data: Buffer, offset: number): Promise<void> {
  const cs = this.clusterSize;
  /** an external data file: data goes there at the guest offset, and has no refcounts here */
  const df = this.dataFile;
  const g = this.g;
  const v3 = this.h.version >= 3;
  const l1e = decodeL1(this.l1, l1i);
  let l2: Buffer;
  let fresh = false;
  let sharedL2 = 0;
  if (l1e.offset === 0) {
    l2 = Buffer.alloc(cs);
    fresh = true;
  } else {
    const cur = (await this.loadL2(l1i))!;
    if (l1e.copied) l2 = cur;
    else {
      // shared with a snapshot: write a copy, point the L1 entry at it, then drop one reference
      l2 = Buffer.from(cur);
      fresh = true;
      sharedL2 = l1e.offset;
    }
  }
  const end = offset + data.length;
  const plans: Plan[] = [];
  for (let c = Math.floor(offset / cs); c * cs < end; c++) {
    const start = c * cs;
    const from = Math.max(offset, start);
    const to = Math.min(end, start + cs);
    const piece = data.subarray(from - offset, to - offset);
    const idx = c - l1i * g.l2Entries;
    const whole = from === start && to >= Math.min(start + cs, this.capacity);
    const e = decodeL2(l2, idx, g);
    const field = `l2[${l1i}][${idx}]`;
    if (df) {
      if (e.kind === 'compressed') throw new DiskError('CORRUPT', 'compressed cluster in an image with an external data file (QEMU refuses them too)', { path: this.path, struct: 'L2 table', field, found: e.offset });
      if (e.kind === 'normal') {
        this.checkData(e, field);
        plans.push({ idx, start, action: 'inplace', data: piece, host: e.offset + (from - start) });
        continue;
      }
    }
    if (e.kind === 'normal' && e.copied) {
      this.checkData(e, field);
      if (whole && v3 && !this.storeZeros && isZero(piece)) plans.push({ idx, start, action: 'zero', data: piece, host: 0, free: [e.offset, cs] });
      else plans.push({ idx, start, action: 'inplace', data: piece, host: e.offset + (from - start) });
      continue;
    }
    // everything else gets a new cluster (or a zero entry): the old content, then the new bytes
    let content: Buffer;
    if (whole && piece.length === cs) content = piece;
    else {
      content = Buffer.alloc(cs);
      if (!whole) {
        if (e.kind === 'compressed') (await this.inflate({ offset: e.offset, csize: e.csize, field, cluster: start })).copy(content);
        else if (e.kind === 'normal') {
          this.checkData(e, field);
          await this.readHost(content, e.offset);
        }
      }
      piece.copy(content, from - start);
    }
    let free: [number, number] | undefined;
    if (df) {
      // the data file's cluster is where the guest's is (QEMU allocates so too); nothing to free.
      // Zeros stay zeros in the entries only while the data file need not read as the guest.
      if (!df.raw && isZero(content) && ((e.kind === 'unallocated' && this.backingName === undefined) || e.kind === 'zero')) continue;
      const overZeros = !whole && (e.kind === 'unallocated' || e.kind === 'zero');
      plans.push({ idx, start, action: 'alloc', data: content, host: start, piece: overZeros ? { at: from - start, bytes: piece } : undefined });
      continue;
    }
    if (e.kind === 'compressed') free = [e.offset, e.csize];
    else if (e.offset !== 0) free = [e.offset, cs];
    if (!this.storeZeros && isZero(content)) {
      if (e.kind === 'unallocated' && this.backingName === undefined) continue; // already reads as zeros
      if (e.kind === 'zero' && e.offset === 0) continue;
      if (v3) {
        plans.push({ idx, start, action: 'zero', data: content, host: 0, free });
        continue;
      }
    }
    const overZeros = !whole && (e.kind === 'unallocated' || e.kind === 'zero');
    plans.push({ idx, start, action: 'alloc', data: content, host: 0, free, piece: overZeros ? { at: from - start, bytes: piece } : undefined });
  }
  if (plans.length === 0) return;

  // 1. refcounts: the new L2 table first, then the data clusters (contiguous), as QEMU
  const eof = df ? df.size : this.file.size;
  const l2Off = fresh ? await this.refs.alloc(1) : l1e.offset;
  if (fresh) assertNoOverlap.call(this, l2Off, cs, 'a new L2 table');
  const target = df ? df.store : this.store;
  const allocs = plans.filter((p) => p.action === 'alloc');
  if (allocs.length > 0) {
    // (a data file's clusters were placed at their guest offsets above)
    const base = df ? 0 : await this.refs.alloc(allocs.length);
    if (!df) {
      assertNoOverlap.call(this, base, allocs.length * cs, 'new data clusters');
      allocs.forEach((p, i) => (p.host = base + i * cs));
    }
    // 2. data. Clusters past the old end of the file were never written (holes): over zeros
    //    only the new bytes go there, so partial writes keep the file sparse.
    const parts = allocs.map((p) => (p.piece && p.host >= eof ? { at: p.host + p.piece.at, bytes: p.piece.bytes } : { at: p.host, bytes: p.data }));
    for (let i = 0; i < parts.length; ) {
      let j = i + 1;
      while (j < parts.length && parts[j]!.at === parts[j - 1]!.at + parts[j - 1]!.bytes.length) j++;
      await target.writev(parts[i]!.at, coalesce(parts.slice(i, j).map((x) => x.bytes)));
      i = j;
    }
    if (df) {
      // a data file may end inside a cluster written in part: what lies past its end reads as zeros
      for (const x of parts) df.size = Math.max(df.size, x.at + x.bytes.length);
    } else {
      const end = base + allocs.length * cs;
      // the file can only be short of `end` when the last cluster was written partly (a hole)
      const last = parts[parts.length - 1]!;
      if (last.at + last.bytes.length < end && (await this.store.size()) < end) await this.store.truncate(end);
      this.file.size = Math.max(this.file.size, end);
    }
  }
  const inplace = plans.filter((p) => p.action === 'inplace');
  for (let i = 0; i < inplace.length; ) {
    // runs of clusters that follow each other in the file
    let j = i + 1;
    while (j < inplace.length && inplace[j]!.host === inplace[j - 1]!.host + inplace[j - 1]!.data.length) j++;
    const run = inplace.slice(i, j);
    await target.writev(run[0]!.host, coalesce(run.map((p) => p.data)));
    const last = run[run.length - 1]!;
    if (df) df.size = Math.max(df.size, last.host + last.data.length);
    else this.file.size = Math.max(this.file.size, last.host + last.data.length);
    i = j;
  }
  // a data file's new clusters are durable before the entries that name them
  if (df && allocs.length > 0) await df.store.flush();
  // 3. L2 entries, once the refcounts and data they name are durable: between two flushes a
  // power cut may keep any subset of the writes, and an entry that lands without them names a
  // cluster of refcount 0 (handed out again after the next open) or bytes never written
  // (found by the crash explorer, test/crash/; NOTES.md "Allocation and crash-safe write order")
  if (allocs.length > 0 || fresh) await this.store.flush();
  let lo = Infinity;
  let hi = -1;
  for (const p of plans) {
    if (p.action === 'inplace') continue;
    if (p.action === 'alloc') encodeL2(l2, p.idx, g, p.host, { copied: true });
    else encodeL2(l2, p.idx, g, 0, { zero: true });
    lo = Math.min(lo, p.idx);
    hi = Math.max(hi, p.idx);
  }
  if (fresh) {
    await this.store.write(l2Off, l2);
    this.file.size = Math.max(this.file.size, l2Off + cs);
    // 4. the L1 entry, once the table it names is durable
    await this.store.flush();
    encodeL1(this.l1, l1i, l2Off, true);
    await this.store.write(Number(this.h.l1_table_offset) + l1i * 8, this.l1.subarray(l1i * 8, l1i * 8 + 8));
    if (sharedL2) this.l2Cache.delete(sharedL2);
    this.cacheL2(l2Off, l2);
  } else if (hi >= 0) {
    const es = g.l2EntrySize;
    await this.store.write(l2Off + lo * es, l2.subarray(lo * es, (hi + 1) * es));
  }
  // 5. what is no longer referenced from here: the new entries made durable first, so that
  // a power loss cannot leave an old entry naming a cluster already handed to someone else
  const frees: number[] = [];
  for (const p of plans) {
    if (!p.free) continue;
    const [at, len] = p.free;
    for (let c = Math.floor(at / cs); c <= Math.floor((at + len - 1) / cs); c++) frees.push(c);
    this.inflated.delete(at);
  }
  if (sharedL2 || frees.length > 0) await this.store.flush();
  if (sharedL2) await this.refs.update(sharedL2 / cs, 1, -1);
  if (frees.length > 0) await this.refs.decrementMany(frees);
}

/**
 * QEMU's overlap check ("cached" mode), before clusters the allocator handed out are written:
 * the header, the L1 table, the refcount table and blocks, the snapshot table and the L2
 * tables in the cache must not lie there. The open-time check makes this unreachable for a
 * consistent image; it stops a write that would destroy metadata if refcounts were wrong.
 */
function assertNoOverlap(this: Qcow2State, at: number, bytes: number, what: string): void {
  const cs = this.clusterSize;
  const hit = (name: string, off: number, len: number) => {
    if (len > 0 && at < off + len && off < at + bytes) {
      throw new DiskError('CORRUPT', `refusing to write ${what} over the ${name} (the refcounts say the clusters are free): repair with \`vdkit check --repair\``, { path: this.path, struct: name, found: at, expected: `not in [${off}, ${off + len})` });
    }
  };
  hit('header', 0, cs);
  hit('L1 table', Number(this.h.l1_table_offset), this.h.l1_size * 8);
  hit('refcount table', this.refs.tableOffset, this.refs.tableClusters * cs);
  if (this.snapshots.length > 0) hit('snapshot table', Number(this.h.snapshots_offset), this.snapshotTableBytes);
  for (let c = at; c < at + bytes; c += cs) {
    if (this.refs.isBlockAt(c)) hit('refcount block', c, cs);
    // a cached table is confirmed against the L1 table (rare: only when the check would fire)
    if (this.l2Cache.has(c) && l1Names.call(this, c)) hit('L2 table', c, cs);
  }
}

function l1Names(this: Qcow2State, l2Offset: number): boolean {
  for (let i = 0; i < this.h.l1_size; i++) if (decodeL1(this.l1, i).offset === l2Offset) return true;
  return false;
}

/** Adjacent views of one buffer joined back into one view (a large write stays one piece). */
function coalesce(parts: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (const p of parts) {
    const last = out[out.length - 1];
    if (last && last.buffer === p.buffer && last.byteOffset + last.length === p.byteOffset) out[out.length - 1] = Buffer.from(p.buffer, last.byteOffset, last.length + p.length);
    else out.push(p);
  }
  return out;
}
