/**
 * The VHDX log (metadata journal, vhd.md §16.5): finding the active sequence, replaying it in
 * place or into an in-memory overlay, and writing new entries.
 *
 * Reading. The log is a circular buffer of 4 KiB sectors at the header's LogOffset/LogLength.
 * Every sector is tried as the start of an entry; an entry is valid when its header (`loge`,
 * length a multiple of 4 KiB inside the log, tail inside the log, sequence > 0, LogGuid equal to
 * the header's), its CRC-32C over the whole entry, every descriptor (`desc`/`zero`, 4 KiB aligned
 * target, the entry's sequence number) and every data sector (`data`, sequence high/low) check.
 * A sequence is complete when the entries from the head's Tail up to the head follow one another
 * in the buffer with sequence numbers increasing by one. The active sequence is the complete one
 * with the highest head sequence number; entries after a bad CRC or a sequence gap are simply not
 * part of it ("stop at the last valid sequence"). Valid entries but no complete sequence at all
 * means the log promises changes it cannot deliver: the image is refused (CORRUPT, field "log").
 *
 * Writing (LogWriter). One entry per batch of changed 4 KiB metadata sectors: header sector with
 * the descriptors, then one data sector per descriptor; its Tail is itself (every earlier entry
 * has been applied and flushed before a new one is written), entries never wrap (an entry that
 * does not fit before the end of the buffer goes to its start). The caller's order is: flush the
 * data the new metadata points at, write the entry, flush, apply the sectors in place, flush.
 */
import { DiskError, atMost } from '../../core/errors.js';
import type { ByteStore } from '../../storage/store.js';
import {
  LOG_DATA_DESC_SIGNATURE,
  LOG_DATA_SECTOR_SIGNATURE,
  LOG_ENTRY_SIGNATURE,
  LOG_SECTOR,
  LOG_ZERO_DESC_SIGNATURE,
  LogDataDescriptor,
  LogDataSector,
  LogEntryHeader,
  LogZeroDescriptor,
  descriptorSectors,
  vhdxChecksum,
  withChecksum,
} from './structs.js';

/** one change a log entry makes: a 4 KiB sector's new content, or zeros over a range */
export type LogChange = { kind: 'data'; fileOffset: number; sector: Buffer } | { kind: 'zero'; fileOffset: number; length: number };

export interface LogEntry {
  /** byte offset of the entry inside the log */
  pos: number;
  length: number;
  tail: number;
  seq: bigint;
  flushedFileOffset: bigint;
  lastFileOffset: bigint;
  changes: LogChange[];
}

export interface LogScan {
  /** the active sequence, oldest first (empty: nothing to replay) */
  sequence: LogEntry[];
  /** valid entries carrying the LogGuid (whether or not they form a sequence) */
  validEntries: number;
}

/** largest zero range one log may ask for in total (zeros are kept per 4 KiB sector in an overlay) */
const MAX_ZERO_BYTES = 1024 * 1024 * 1024;
/** bound on the work the sequence search may do (crafted logs full of valid entries) */
const MAX_WALK_STEPS = 2_000_000;

/**
 * Parse the entry starting at `pos` of the log bytes, or undefined when it is not a valid entry
 * of the log identified by `logGuid`.
 */
function parseEntry(log: Buffer, pos: number, logGuid: Buffer): LogEntry | undefined {
  const L = log.length;
  if (log.toString('latin1', pos, pos + 4) !== LOG_ENTRY_SIGNATURE) return undefined;
  const h = LogEntryHeader.decode(log, pos);
  if (h.entryLength === 0 || h.entryLength % LOG_SECTOR !== 0 || h.entryLength > L) return undefined;
  if (h.tail % LOG_SECTOR !== 0 || h.tail >= L) return undefined;
  if (h.sequenceNumber === 0n || !h.logGuid.equals(logGuid)) return undefined;
  const sectors = h.entryLength / LOG_SECTOR;
  const descSectors = descriptorSectors(h.descriptorCount);
  if (descSectors > sectors) return undefined;
  // the entry's bytes (it may wrap around the end of the buffer)
  const entry = pos + h.entryLength <= L ? log.subarray(pos, pos + h.entryLength) : Buffer.concat([log.subarray(pos), log.subarray(0, pos + h.entryLength - L)]);
  if (vhdxChecksum(entry, 4) !== h.checksum) return undefined;
  const changes: LogChange[] = [];
  let dataIndex = 0;
  for (let i = 0; i < h.descriptorCount; i++) {
    const at = 64 + i * 32;
    const sig = entry.toString('latin1', at, at + 4);
    if (sig === LOG_DATA_DESC_SIGNATURE) {
      const d = LogDataDescriptor.decode(entry, at);
      if (d.sequenceNumber !== h.sequenceNumber || d.fileOffset % BigInt(LOG_SECTOR) !== 0n) return undefined;
      const sectorAt = (descSectors + dataIndex++) * LOG_SECTOR;
      if (sectorAt + LOG_SECTOR > entry.length) return undefined;
      const s = LogDataSector.decode(entry, sectorAt);
      if (s.signature !== LOG_DATA_SECTOR_SIGNATURE) return undefined;
      if ((BigInt(s.sequenceHigh) << 32n) + BigInt(s.sequenceLow) !== h.sequenceNumber) return undefined;
      const sector = Buffer.alloc(LOG_SECTOR);
      d.leadingBytes.copy(sector, 0);
      s.data.copy(sector, 8);
      d.trailingBytes.copy(sector, LOG_SECTOR - 4);
      changes.push({ kind: 'data', fileOffset: safe(d.fileOffset), sector });
    } else if (sig === LOG_ZERO_DESC_SIGNATURE) {
      const d = LogZeroDescriptor.decode(entry, at);
      if (d.sequenceNumber !== h.sequenceNumber || d.fileOffset % BigInt(LOG_SECTOR) !== 0n || d.zeroLength % BigInt(LOG_SECTOR) !== 0n) return undefined;
      changes.push({ kind: 'zero', fileOffset: safe(d.fileOffset), length: safe(d.zeroLength) });
    } else return undefined;
  }
  return { pos, length: h.entryLength, tail: h.tail, seq: h.sequenceNumber, flushedFileOffset: h.flushedFileOffset, lastFileOffset: h.lastFileOffset, changes };
}

/** a 64-bit field as a number; values past 2^53 become Infinity so every bound check refuses them */
function safe(v: bigint): number {
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(v);
}

/** Find the active sequence of the log `log` (the whole log region's bytes). */
export function scanLog(log: Buffer, logGuid: Buffer, path: string): LogScan {
  const L = log.length;
  const valid = new Map<number, LogEntry>();
  for (let pos = 0; pos + LOG_SECTOR <= L; pos += LOG_SECTOR) {
    const e = parseEntry(log, pos, logGuid);
    if (e) valid.set(pos, e);
  }
  if (valid.size === 0) return { sequence: [], validEntries: 0 };
  const heads = [...valid.values()].sort((a, b) => (a.seq < b.seq ? 1 : a.seq > b.seq ? -1 : 0));
  let steps = 0;
  for (const head of heads) {
    // walk from the head's tail to the head, each entry right after the previous one
    const chain: LogEntry[] = [];
    let e = valid.get(head.tail);
    while (e) {
      if (++steps > MAX_WALK_STEPS) throw new DiskError('CORRUPT', 'the log holds too many entries to search', { path, struct: 'log', field: 'log', expected: 'a log a writer could have made' });
      const prev = chain[chain.length - 1];
      if (prev && e.seq !== prev.seq + 1n) break;
      if (e.seq > head.seq || chain.length > valid.size) break;
      chain.push(e);
      if (e === head) return { sequence: chain, validEntries: valid.size };
      e = valid.get((e.pos + e.length) % L);
    }
  }
  throw new DiskError('CORRUPT', 'the log is broken: it holds valid entries but no complete sequence to replay (an entry its tail needs is damaged or missing)', {
    path,
    struct: 'log',
    field: 'log',
    expected: 'a complete log sequence',
    found: `${valid.size} valid entries, highest sequence ${heads[0]!.seq}`,
  });
}

/** What replaying a sequence does: every 4 KiB sector it sets (zeros included), and the file size it needs. */
export interface Replay {
  /** file offset (4 KiB aligned) -> the sector's content after the replay */
  sectors: Map<number, Buffer>;
  /** the file must be at least this long after the replay */
  lastFileOffset: number;
  /** the file must already be at least this long for the log to be trusted */
  flushedFileOffset: number;
}

const ZERO_SECTOR = Buffer.alloc(LOG_SECTOR);

/**
 * The effect of a sequence, checked against the file: targets must lie outside the headers
 * (64 KiB..192 KiB) and the log itself, inside the file as the log leaves it, and the file must
 * not be shorter than the head's FlushedFileOffset (it was truncated after the log was written).
 */
export function replayOf(sequence: readonly LogEntry[], fileSize: number, log: { offset: number; length: number }, path: string): Replay {
  const head = sequence[sequence.length - 1]!;
  const bad = (field: string, message: string, expected: unknown, found: unknown) => new DiskError('CORRUPT', message, { path, struct: 'logEntry', field, expected, found });
  const flushed = safe(head.flushedFileOffset);
  if (flushed > fileSize) throw bad('flushedFileOffset', 'the file is shorter than the log says it was when the log was written (truncated?)', `<= ${fileSize}`, head.flushedFileOffset);
  let last = 0;
  for (const e of sequence) last = Math.max(last, safe(e.lastFileOffset));
  const limit = 2 ** 48;
  if (last > limit) throw bad('lastFileOffset', 'the log asks for an absurd file size', `<= ${limit}`, last);
  const end = Math.max(fileSize, last);
  const sectors = new Map<number, Buffer>();
  let zeroBytes = 0;
  for (const e of sequence) {
    for (const [i, c] of e.changes.entries()) {
      const length = c.kind === 'data' ? LOG_SECTOR : c.length;
      const field = `descriptor[${i}].fileOffset`;
      if (c.fileOffset + length > end) throw bad(field, 'a log descriptor writes past the end of the file', atMost(end - length), c.fileOffset);
      if (c.fileOffset < 192 * 1024 && c.fileOffset + length > 64 * 1024) throw bad(field, 'a log descriptor writes over the headers', 'outside 65536..196607', c.fileOffset);
      if (c.fileOffset < log.offset + log.length && log.offset < c.fileOffset + length) throw bad(field, 'a log descriptor writes over the log itself', `outside ${log.offset}..${log.offset + log.length - 1}`, c.fileOffset);
      if (c.kind === 'data') sectors.set(c.fileOffset, c.sector);
      else {
        zeroBytes += c.length;
        if (zeroBytes > MAX_ZERO_BYTES) throw bad(`descriptor[${i}].zeroLength`, 'the log zeroes more than vdkit replays', `<= ${MAX_ZERO_BYTES} bytes in total`, c.length);
        for (let at = c.fileOffset; at < c.fileOffset + c.length; at += LOG_SECTOR) sectors.set(at, ZERO_SECTOR);
      }
    }
  }
  return { sectors, lastFileOffset: last, flushedFileOffset: flushed };
}

/** Replay in place: every sector written (in ascending order), the file grown to LastFileOffset, flushed. */
export async function applyReplay(store: ByteStore, r: Replay): Promise<void> {
  const offsets = [...r.sectors.keys()].sort((a, b) => a - b);
  for (let i = 0; i < offsets.length; ) {
    // contiguous sectors in one write
    let j = i + 1;
    while (j < offsets.length && offsets[j] === offsets[j - 1]! + LOG_SECTOR && j - i < 256) j++;
    await store.writev(offsets[i]!, offsets.slice(i, j).map((o) => r.sectors.get(o)!));
    i = j;
  }
  if ((await store.size()) < r.lastFileOffset) await store.truncate(r.lastFileOffset);
  await store.flush();
}

/**
 * A read-only view of a file as it will be after the replay: reads are patched with the
 * replayed sectors, and the file reads as grown to LastFileOffset (zeros past its real end).
 * This is how an image whose log needs replay opens read-only: the file itself is not touched.
 */
export class LogOverlayStore implements ByteStore {
  readonly readOnly = true;
  private readonly offsets: number[];

  constructor(
    private readonly base: ByteStore,
    private readonly replay: Replay,
    private readonly baseSize: number,
  ) {
    this.offsets = [...replay.sectors.keys()].sort((a, b) => a - b);
  }

  get name(): string {
    return this.base.name;
  }

  async size(): Promise<number> {
    return Math.max(this.baseSize, this.replay.lastFileOffset);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    await this.readInto(buf, offset);
    return buf;
  }

  async readInto(into: Buffer, offset: number): Promise<void> {
    const size = await this.size();
    if (offset + into.length > size) {
      throw new DiskError('CORRUPT', 'unexpected end of file', { path: this.name, offset: Math.max(offset, size), length: offset + into.length - size });
    }
    await this.fill(into, offset);
  }

  async readZeroPadded(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    const size = await this.size();
    const n = Math.max(0, Math.min(length, size - offset));
    if (n > 0) await this.fill(buf.subarray(0, n), offset);
    return buf;
  }

  private async fill(into: Buffer, offset: number): Promise<void> {
    const end = offset + into.length;
    const real = Math.max(0, Math.min(end, this.baseSize) - offset);
    if (real > 0) await this.base.readInto(into.subarray(0, real), offset);
    into.fill(0, real);
    // the replayed sectors that intersect [offset, end)
    let lo = 0;
    let hi = this.offsets.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.offsets[mid]! + LOG_SECTOR <= offset) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.offsets.length && this.offsets[i]! < end; i++) {
      const at = this.offsets[i]!;
      const sector = this.replay.sectors.get(at)!;
      const from = Math.max(at, offset);
      const to = Math.min(at + LOG_SECTOR, end);
      sector.copy(into, from - offset, from - at, to - at);
    }
  }

  async write(): Promise<void> {
    throw new DiskError('RDONLY', 'a VHDX whose log needs replay is read through an in-memory replay: open it read-write to replay the log', { path: this.name });
  }

  async writev(): Promise<void> {
    return this.write();
  }

  async truncate(): Promise<void> {
    return this.write();
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {
    await this.base.close();
  }
}

/** Test hooks: `afterLogFlush` runs once an entry is written and flushed, before it is applied (throw to stop there, as a crash would). */
export const vhdxLogHooks: { afterLogFlush?: () => void | Promise<void> } = {};

/** Writes log entries into the log region of one open image (see the module comment). */
export class LogWriter {
  /** where the next entry goes (byte offset inside the log) */
  private head = 0;
  private seq = 1n;

  constructor(
    private readonly store: ByteStore,
    readonly offset: number,
    readonly length: number,
  ) {}

  /** data sectors one entry can carry (the entry must leave a sector of the log free) */
  get maxSectorsPerEntry(): number {
    const room = this.length / LOG_SECTOR - 1;
    let n = room - 1;
    while (n > 0 && descriptorSectors(n) + n > room) n--;
    return n;
  }

  /** restart at the beginning of the log with sequence 1 (a new LogGuid makes older entries foreign) */
  reset(): void {
    this.head = 0;
    this.seq = 1n;
  }

  /**
   * Write one entry carrying `sectors` (file offset -> 4 KiB content) and flush it. The caller
   * applies the sectors in place afterwards (see `commit` in image.ts).
   */
  async writeEntry(logGuid: Buffer, sectors: readonly (readonly [number, Buffer])[], fileSize: number): Promise<void> {
    const n = sectors.length;
    const descSectors = descriptorSectors(n);
    const total = (descSectors + n) * LOG_SECTOR;
    if (total > this.length - LOG_SECTOR) throw new DiskError('INTERNAL', 'log entry larger than the log', { path: this.store.name, field: 'logLength' });
    if (this.head + total > this.length) this.head = 0;
    const entry = Buffer.alloc(total);
    const seq = this.seq;
    LogEntryHeader.encode(
      {
        signature: LOG_ENTRY_SIGNATURE,
        checksum: 0,
        entryLength: total,
        tail: this.head,
        sequenceNumber: seq,
        descriptorCount: n,
        logGuid,
        flushedFileOffset: BigInt(fileSize),
        lastFileOffset: BigInt(fileSize),
      },
      entry,
      0,
    );
    sectors.forEach(([fileOffset, content], i) => {
      LogDataDescriptor.encode(
        { signature: LOG_DATA_DESC_SIGNATURE, trailingBytes: content.subarray(LOG_SECTOR - 4), leadingBytes: content.subarray(0, 8), fileOffset: BigInt(fileOffset), sequenceNumber: seq },
        entry,
        64 + i * 32,
      );
      LogDataSector.encode(
        { signature: LOG_DATA_SECTOR_SIGNATURE, sequenceHigh: Number(seq >> 32n), data: content.subarray(8, LOG_SECTOR - 4), sequenceLow: Number(seq & 0xffffffffn) },
        entry,
        (descSectors + i) * LOG_SECTOR,
      );
    });
    withChecksum(entry, 4);
    await this.store.write(this.offset + this.head, entry);
    await this.store.flush();
    this.head += total;
    if (this.head >= this.length) this.head = 0;
    this.seq++;
    await vhdxLogHooks.afterLogFlush?.();
  }
}
