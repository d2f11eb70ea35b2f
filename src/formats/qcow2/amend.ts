/**
 * qemu-img amend for qcow2: `compat` (0.10 / 1.1), `refcount_bits`, `lazy_refcounts`. Every
 * value is checked, and everything a change needs is known to be possible, before the first
 * write; the changes then run in QEMU's order (upgrade, refcount width, lazy refcounts,
 * downgrade), each ending in one header write (NOTES.md "Amend").
 */
import { DiskError } from '../../core/errors.js';
import { rewriteHeaderArea } from './links.js';
import { Refcounts } from './refcounts.js';
import type { Qcow2State } from './state.js';
import { AUTOCLEAR, COMPAT_LAZY_REFCOUNTS, decodeL1, decodeL2, encodeFeatureTable, EXT, getRefcount, INCOMPAT, MAX_REFTABLE_BYTES, maxRefcount, setRefcount, V2_HEADER_LENGTH, V3_HEADER_LENGTH } from './structs.js';
import { QCOW2_AMEND_OPTIONS } from './structs.js';


const COMPAT: Readonly<Record<string, 2 | 3>> = { '0.10': 2, v2: 2, '1.1': 3, v3: 3 };

function parse(path: string, options: Readonly<Record<string, string>>, h: { version: number; refcount_order: number; compatible_features: bigint }) {
  const bad = (field: string, message: string, found: string, expected: string) => new DiskError('INVAL', message, { path, field, found, expected });
  let version = h.version;
  let order = h.refcount_order;
  let lazy = (h.compatible_features & (1n << BigInt(COMPAT_LAZY_REFCOUNTS))) !== 0n;
  for (const [key, value] of Object.entries(options)) {
    if (key === 'compat') {
      const v = COMPAT[value];
      if (v === undefined) throw bad('compat', `unknown compat level "${value}"`, value, '0.10 or 1.1');
      version = v;
    } else if (key === 'refcount_bits') {
      const n = Number(value);
      if (!/^\d+$/.test(value) || ![1, 2, 4, 8, 16, 32, 64].includes(n)) throw bad('refcount_bits', 'refcount_bits is a power of two from 1 to 64', value, '1, 2, 4, 8, 16, 32, 64');
      order = Math.log2(n);
    } else if (key === 'lazy_refcounts') {
      if (value !== 'on' && value !== 'off') throw bad('lazy_refcounts', 'lazy_refcounts is on or off', value, 'on, off');
      lazy = value === 'on';
    } else {
      throw bad('options', `qcow2 has no amend option "${key}"`, key, QCOW2_AMEND_OPTIONS.map((o) => o.name).join(', '));
    }
  }
  // QEMU's rules: version 2 has 16-bit refcounts and no compatible features
  if (version === 2 && order !== 4) throw bad('refcount_bits', `compat=0.10 has 16-bit refcounts only (refcount_bits=${1 << order}): amend -o refcount_bits=16 with it`, String(1 << order), '16');
  if (version === 2 && lazy) throw bad('lazy_refcounts', 'lazy refcounts need compat=1.1: amend -o lazy_refcounts=off with it', 'on', 'off');
  return { version, order, lazy };
}

/** Change the options given; nothing is written unless every one of them can be made. */
export async function amend(this: Qcow2State, options: Readonly<Record<string, string>>): Promise<void> {
  const want = parse(this.path, options, this.h);
  if (want.version === 2 && this.h.version === 3) await refuseDowngrade.call(this);
  await this.prepareWrite();
  if (want.version === 3 && this.h.version === 2) await setVersion.call(this, 3);
  if (want.order !== this.h.refcount_order) await changeRefcountWidth.call(this, want.order);
  const lazyNow = (this.h.compatible_features & (1n << BigInt(COMPAT_LAZY_REFCOUNTS))) !== 0n;
  if (want.lazy !== lazyNow && this.h.version === 3) {
    this.h.compatible_features ^= 1n << BigInt(COMPAT_LAZY_REFCOUNTS);
    await this.writeHeaderFields(['compatible_features']);
  }
  if (want.version === 2 && this.h.version === 3) await setVersion.call(this, 2);
  await this.store.flush();
}

/** What version 2 cannot hold, named: refused before anything is written. */
async function refuseDowngrade(this: Qcow2State): Promise<void> {
  const refuse = (feature: string, field: string, found: unknown, struct = 'header') => {
    throw new DiskError('NOTSUPPORTED', `cannot amend to compat=0.10: the image uses ${feature}, which version 2 does not have`, { path: this.path, struct, field, found });
  };
  const names: [number, string][] = [[INCOMPAT.DATA_FILE, 'an external data file'], [INCOMPAT.COMPRESSION, 'a compression type other than zlib'], [INCOMPAT.EXTL2, 'extended L2 entries']];
  for (const [bit, what] of names) if (this.hasIncompat(bit)) refuse(what, 'incompatible_features', bit);
  if ((this.h.autoclear_features & (1n << BigInt(AUTOCLEAR.BITMAPS))) !== 0n || this.extension(EXT.BITMAPS)) refuse('persistent bitmaps', 'autoclear_features', 'bitmaps');
  // zero clusters (the L2 zero flag), in the active tables and every snapshot's
  const tables: [Buffer, number, string][] = [[this.l1, this.h.l1_size, 'l1']];
  for (const s of this.snapshots) tables.push([await this.store.read(s.l1Offset, s.l1Size * 8), s.l1Size, `snapshot[${s.index}].l1`]);
  const seen = new Set<number>();
  for (const [l1, n, name] of tables) {
    for (let i = 0; i < n; i++) {
      const e = decodeL1(l1, i);
      if (e.offset === 0 || seen.has(e.offset)) continue;
      seen.add(e.offset);
      const t = this.l2Cache.get(e.offset) ?? (await this.store.read(e.offset, this.clusterSize));
      for (let j = 0; j < this.g.l2Entries; j++) {
        if (decodeL2(t, j, this.g).kind === 'zero') refuse(`zero clusters (${name}[${i}], entry ${j}: write zeros as data or discard them first)`, `l2[${i}][${j}]`, 'zero flag', 'L2 table');
      }
    }
  }
}

/**
 * Cluster 0 rewritten for `version` in one write (links.ts rewriteHeaderArea): version 3 gets
 * QEMU's 112-byte header and its feature name table (clusters above 4 KiB, as create writes
 * it); version 2 the 72-byte header without the feature table.
 */
async function setVersion(this: Qcow2State, version: 2 | 3): Promise<void> {
  const exts = this.exts.filter((e) => e.type !== EXT.FEATURE_TABLE);
  if (version === 3) {
    if (this.clusterSize > 4096) exts.unshift({ type: EXT.FEATURE_TABLE, data: encodeFeatureTable() });
    Object.assign(this.h, { version: 3, header_length: V3_HEADER_LENGTH, incompatible_features: 0n, compatible_features: 0n, autoclear_features: 0n, refcount_order: 4, compression_type: 0 });
  } else {
    Object.assign(this.h, { version: 2, header_length: V2_HEADER_LENGTH, incompatible_features: 0n, compatible_features: 0n, autoclear_features: 0n });
  }
  const before = this.exts;
  this.exts = exts;
  try {
    await rewriteHeaderArea.call(this, this.backingName, this.backingFormat());
  } catch (err) {
    this.exts = before;
    throw err;
  }
}

/**
 * A new refcount table and blocks at the new width, written past everything in use; then the
 * header's refcount_order, refcount_table_offset and _clusters in one write (bytes 48..100);
 * the old table and blocks are free from then on (the new blocks give them refcount 0). Killed
 * before the header write, the new structure is unreferenced bytes past the old end.
 */
async function changeRefcountWidth(this: Qcow2State, order: number): Promise<void> {
  const cs = this.clusterSize;
  const old = this.refs;
  const used = (await old.lastUsed()) + 1;
  const oldMeta = new Set<number>();
  for (let c = 0; c < old.tableClusters; c++) oldMeta.add(old.tableOffset / cs + c);
  for (let rt = 0; rt < old.tableEntries; rt++) {
    const off = old.blockOffset(rt);
    if (off !== 0) oldMeta.add(off / cs);
  }
  // layout: blocks covering every cluster up to the end of the new structure, then the table
  const epb = (cs * 8) / (1 << order);
  const start = Math.max(Math.ceil(this.file.size / cs), used);
  let blocks = 1;
  let tableClusters = 1;
  for (;;) {
    const end = start + blocks + tableClusters;
    const b = Math.ceil(end / epb);
    const t = Math.ceil((b * 8) / cs);
    if (b === blocks && t === tableClusters) break;
    blocks = Math.max(blocks, b);
    tableClusters = Math.max(tableClusters, t);
  }
  if (tableClusters * cs > MAX_REFTABLE_BYTES) throw new DiskError('NOSPACE', "the new refcount table would exceed QEMU's 8 MiB limit", { path: this.path, field: 'refcount_bits', found: 1 << order });
  const out = Buffer.alloc((blocks + tableClusters) * cs);
  const max = maxRefcount(order);
  const set = (c: number, v: number) => setRefcount(out.subarray(Math.floor(c / epb) * cs, (Math.floor(c / epb) + 1) * cs), c % epb, order, v);
  const oldEpb = old.entriesPerBlock;
  for (let rt = 0; rt * oldEpb < used; rt++) {
    const b = await old.block(rt);
    if (!b) continue;
    for (let i = 0; i < oldEpb && rt * oldEpb + i < used; i++) {
      const c = rt * oldEpb + i;
      const v = oldMeta.has(c) ? 0 : getRefcount(b, i, old.order);
      if (v > max) {
        throw new DiskError('NOTSUPPORTED', `cluster ${c} has refcount ${v}, more than refcount_bits=${1 << order} holds (${max})`, { path: this.path, struct: 'refcount block', field: `refcount[${c}]`, expected: `<= ${max}`, found: v });
      }
      if (v !== 0) set(c, v);
    }
  }
  for (let c = start; c < start + blocks + tableClusters; c++) set(c, 1);
  const table = out.subarray(blocks * cs);
  for (let rt = 0; rt < blocks; rt++) table.writeBigUInt64BE(BigInt((start + rt) * cs), rt * 8);
  await this.writeRaw(start * cs, out);
  await this.store.flush();
  this.h.refcount_order = order;
  this.h.refcount_table_offset = BigInt((start + blocks) * cs);
  this.h.refcount_table_clusters = tableClusters;
  await this.writeHeaderFields(['refcount_table_offset', 'refcount_table_clusters', 'refcount_order']);
  await this.store.flush();
  this.refs = new Refcounts(this.path, this.store, this.g.clusterBits, order, (start + blocks) * cs, tableClusters, Buffer.from(table), this.file, async (offset, clusters) => {
    this.h.refcount_table_offset = BigInt(offset);
    this.h.refcount_table_clusters = clusters;
    await this.writeHeaderFields(['refcount_table_offset', 'refcount_table_clusters']);
  });
}
