/**
 * Internal snapshots (qcow2.md §8): the table read and bounded at open, and its entries encoded
 * for a rewrite (snapshot-write.ts creates, applies and deletes snapshots).
 */
import { DiskError, atMost } from '../../core/errors.js';
import { toSafeNumber } from '../../core/ints.js';
import type { ByteStore } from '../../storage/store.js';
import { type HeaderValue, MAX_SNAPSHOT_EXTRA, MAX_SNAPSHOT_TABLE_BYTES, MAX_SNAPSHOTS, SnapshotHeader } from './structs.js';

export interface SnapshotInfo {
  index: number;
  id: string;
  name: string;
  l1Offset: number;
  l1Size: number;
  /** seconds since the epoch */
  date: number;
  vmStateSize: number;
  /** virtual disk size at the time (extra data), when recorded */
  diskSize?: number;
  dateNsec: number;
  /** guest clock at the time, nanoseconds */
  vmClockNsec: number;
  /** instruction count (extra data), -1 when not recorded */
  icount: number;
  /** the entry's bytes as stored (kept as they are when the table is rewritten) */
  raw: Buffer;
}

export /**
 * The snapshot table (qcow2.md §8): every size bounded (65536 entries, 1 KiB of extra data
 * each, 64 MiB in all) and inside the file before anything is allocated for it.
 */
async function readSnapshots(path: string, store: ByteStore, h: HeaderValue, fileSize: number, cs: number): Promise<{ list: SnapshotInfo[]; bytes: number }> {
  const n = h.nb_snapshots;
  if (n === 0) return { list: [], bytes: 0 };
  const bad = (field: string, message: string, expected?: unknown, found?: unknown) => new DiskError('CORRUPT', message, { path, struct: 'snapshot table', field, expected, found });
  if (n > MAX_SNAPSHOTS) throw new DiskError('CORRUPT', 'too many snapshots', { path, struct: 'header', field: 'nb_snapshots', expected: `<= ${MAX_SNAPSHOTS}`, found: n });
  const offset = toSafeNumber(h.snapshots_offset, { path, struct: 'header', field: 'snapshots_offset' });
  if (offset === 0 || offset % cs !== 0) throw new DiskError('CORRUPT', 'snapshot table offset is not a cluster boundary after the header', { path, struct: 'header', field: 'snapshots_offset', found: offset });
  // smallest possible table: 40 bytes per entry
  if (offset + n * 40 > fileSize) throw new DiskError('CORRUPT', 'snapshot table lies past the end of the file', { path, struct: 'header', field: 'snapshots_offset', expected: atMost(fileSize - n * 40), found: offset });
  const limit = Math.min(fileSize, offset + MAX_SNAPSHOT_TABLE_BYTES);
  // a window over the table, refilled as entries are parsed
  let win: Buffer = Buffer.alloc(0);
  let winAt = offset;
  const bytes = async (at: number, len: number, field: string): Promise<Buffer> => {
    if (at + len > limit) throw bad(field, at + len > fileSize ? 'snapshot table runs past the end of the file' : 'snapshot table larger than 64 MiB', `<= ${limit}`, at + len);
    if (at < winAt || at + len > winAt + win.length) {
      winAt = at;
      win = await store.read(at, Math.min(limit - at, Math.max(len, 64 * 1024)));
    }
    return win.subarray(at - winAt, at - winAt + len);
  };
  const out: SnapshotInfo[] = [];
  let at = offset;
  for (let i = 0; i < n; i++) {
    const field = `snapshot[${i}]`;
    const s = SnapshotHeader.decode(await bytes(at, 40, field), 0, path);
    if (s.extra_data_size > MAX_SNAPSHOT_EXTRA) throw bad(`${field}.extra_data_size`, 'snapshot extra data too large', `<= ${MAX_SNAPSHOT_EXTRA}`, s.extra_data_size);
    if (h.version >= 3 && s.extra_data_size < 16) throw bad(`${field}.extra_data_size`, 'version 3 snapshots carry at least 16 bytes of extra data', '>= 16', s.extra_data_size);
    const extra = await bytes(at + 40, s.extra_data_size, field);
    let vmStateSize = s.vm_state_size;
    let diskSize: number | undefined;
    const icount = s.extra_data_size >= 24 ? Number(extra.readBigInt64BE(16)) : -1;
    if (s.extra_data_size >= 8) vmStateSize = Number(extra.readBigUInt64BE(0) & BigInt(Number.MAX_SAFE_INTEGER));
    if (s.extra_data_size >= 16) diskSize = Number(extra.readBigUInt64BE(8) & BigInt(Number.MAX_SAFE_INTEGER));
    const strAt = at + 40 + s.extra_data_size;
    const id = (await bytes(strAt, s.id_str_size, field)).toString('utf8');
    const name = (await bytes(strAt + s.id_str_size, s.name_size, field)).toString('utf8');
    const l1Offset = s.l1_table_offset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(s.l1_table_offset);
    const entryEnd = strAt + s.id_str_size + s.name_size;
    const raw = Buffer.from(await bytes(at, entryEnd - at, field));
    const vmClockNsec = Number(s.vm_clock_nsec & BigInt(Number.MAX_SAFE_INTEGER));
    out.push({ index: i, id, name, l1Offset, l1Size: s.l1_size, date: s.date_sec, vmStateSize, diskSize, dateNsec: s.date_nsec, vmClockNsec, icount, raw });
    at = entryEnd;
    at = Math.ceil(at / 8) * 8;
  }
  return { list: out, bytes: at - offset };
}

/** bytes of QEMU 7.2's extra data: vm_state_size_large, disk_size, icount */
export const SNAPSHOT_EXTRA_BYTES = 24;

/**
 * A new table entry as QEMU 7.2 writes one (qcow2_write_snapshots): the 40-byte record, 24
 * bytes of extra data (VM state 0, the disk size, icount 0 as qemu-img's), id, name; not padded
 * (the table pads each entry to 8 bytes).
 */
export function encodeSnapshotEntry(e: { l1Offset: number; l1Size: number; id: string; name: string; date: Date; diskSize: number }): Buffer {
  const id = Buffer.from(e.id, 'utf8');
  const name = Buffer.from(e.name, 'utf8');
  const head = SnapshotHeader.encode({
    l1_table_offset: BigInt(e.l1Offset),
    l1_size: e.l1Size,
    id_str_size: id.length,
    name_size: name.length,
    date_sec: Math.floor(e.date.getTime() / 1000),
    date_nsec: (e.date.getTime() % 1000) * 1e6,
    vm_clock_nsec: 0n,
    vm_state_size: 0,
    extra_data_size: SNAPSHOT_EXTRA_BYTES,
  });
  const extra = Buffer.alloc(SNAPSHOT_EXTRA_BYTES);
  extra.writeBigUInt64BE(BigInt(e.diskSize), 8);
  return Buffer.concat([head, extra, id, name]);
}

/** The table of these entries (each padded to 8 bytes, as the reader expects). */
export function encodeSnapshotTable(entries: readonly Buffer[]): Buffer {
  const pad = (n: number) => Math.ceil(n / 8) * 8;
  const out = Buffer.alloc(entries.reduce((n, e) => n + pad(e.length), 0));
  let at = 0;
  for (const e of entries) {
    e.copy(out, at);
    at += pad(e.length);
  }
  return out;
}
