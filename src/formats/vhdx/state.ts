/**
 * The state of one open VHDX file and its session, shared by the data path (image.ts), the
 * links, metadata, check and maintenance functions (which take it as their first argument):
 * the parsed structures, the in-memory BAT (payload and sector bitmap states and offsets), the
 * BAT changes waiting for the log, the sector bitmap cache, and the primitives every writer
 * uses: header updates (a new FileWriteGuid per session, DataWriteGuid renewal), commits
 * through the log, BAT entry changes, the end of the session (close).
 */
import { DiskError } from '../../core/errors.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { CheckFinding } from '../types.js';
import { LogWriter, applyReplay, type Replay } from './log.js';
import { NULL_GUID, isNullGuid, newGuid } from '../../binary/guid.js';
import {
  HEADER_OFFSETS,
  HEADER_SIGNATURE,
  LOG_SECTOR,
  BITMAP,
  MiB,
  PAYLOAD,
  REGION_TABLE_OFFSETS,
  batEntry,
  bitmapIndex,
  chunkRatio,
  encodeHeader,
  payloadIndex,
  type HeaderValue,
  type ParentLocator,
} from './structs.js';
import { BITMAP_CACHE_BYTES, structureRanges, type StructureRange, type Region, type MetaItem, type HeaderSlot, type VhdxParams } from './layout.js';

const MAX_U64 = 2n ** 64n - 1n;

export class VhdxState {
  closed = false;
  /** a metadata commit failed: nothing more is written (a reopen replays the log) */
  broken = false;
  dataGuidRenewed = false;
  readonly bitmaps = new Map<number, Buffer>();
  readonly bitmapLimit: number;
  /** BAT entries changed in memory, not yet committed through the log: BAT index -> raw entry */
  readonly pending = new Map<number, bigint>();
  readonly logWriter: LogWriter | undefined;
  readonly sessionGuid = newGuid('le');

  // geometry
  readonly cr: number;
  readonly sectorsPerBlock: number;
  readonly sliceBytes: number;
  readonly blocks: number;

  /** set by open: where this image's file is named */
  namespace!: Namespace;
  constructor(
    readonly path: string,
    readonly store: ByteStore,
    readonly readOnly: boolean,
    readonly capacity: number,
    public params: VhdxParams,
    readonly headers: HeaderSlot[],
    public current: number,
    public regions: Region[],
    public bat: Region,
    readonly meta: Region,
    public items: MetaItem[],
    public virtualDiskId: Buffer,
    public locator: ParentLocator | undefined,
    /** payload block states and file offsets (MiB) */
    readonly pState: Uint8Array,
    readonly pOff: Uint32Array,
    /** sector bitmap block states and file offsets (MiB), per chunk */
    readonly bState: Uint8Array,
    readonly bOff: Uint32Array,
    public fileSize: number,
    public nextFree: number,
    readonly creator: string,
    /** OpenOptions.updateIdentityOnWrite: the first data write renews the DataWriteGuid */
    readonly updateIdentityOnWrite: boolean,
    /** what the open found (log replayed or pending, damaged copies, oddities), for check() and info() */
    readonly findings: CheckFinding[],
  ) {
    this.cr = chunkRatio(params.logicalSectorSize, params.blockSize);
    this.sectorsPerBlock = params.blockSize / params.logicalSectorSize;
    this.sliceBytes = this.sectorsPerBlock / 8;
    this.blocks = pState.length;
    this.bitmapLimit = Math.max(16, Math.floor(BITMAP_CACHE_BYTES / this.sliceBytes));
    const h = this.header;
    this.logWriter = readOnly || h.logLength === 0 ? undefined : new LogWriter(store, Number(h.logOffset), h.logLength);
  }


  get type(): string {
    return this.params.hasParent ? 'differencing' : this.params.leaveBlocksAllocated ? 'fixed' : 'dynamic';
  }

  get header(): HeaderValue {
    return this.headers[this.current]!.value!;
  }

  /**
   * A read-write session starts: the non-current header gets sequence+1 and a new FileWriteGuid
   * before anything else is written; then a pending log is replayed in place and emptied
   * (LogGuid 0); a damaged or different second region table is rewritten from the one in use.
   */
  async startSession(replay: Replay | undefined, chosen: number, tables: Buffer[]): Promise<void> {
    await this.updateHeader({});
    if (replay) {
      await applyReplay(this.store, replay);
      this.fileSize = await this.store.size();
    }
    if (!isNullGuid(this.header.logGuid)) await this.emptyLog();
    const other = 1 - chosen;
    if (!tables[other]!.equals(tables[chosen]!)) {
      await this.store.write(REGION_TABLE_OFFSETS[other]!, tables[chosen]!);
      await this.store.flush();
    }
  }

  // ------------------------------------------------------------------ headers

  /**
   * Write the non-current header slot with sequence+1, this session's FileWriteGuid and
   * `changes`, then flush; that slot becomes current. A torn write leaves the old header valid.
   */
  async updateHeader(changes: Partial<Pick<HeaderValue, 'dataWriteGuid' | 'logGuid'>>): Promise<void> {
    const cur = this.header;
    const slot = 1 - this.current;
    // the current header is the one with the higher number and the spec has no wrap-around: at
    // the largest u64 no header can become current any more (found by the fuzzer)
    if (cur.sequenceNumber >= MAX_U64) {
      throw new DiskError('NOTSUPPORTED', 'the header sequence number is at its largest value (2^64 - 1): no later header can be written, so the image can only be read (convert it to write)', { path: this.path, struct: 'header', field: 'sequenceNumber', found: cur.sequenceNumber });
    }
    const next: HeaderValue = { ...cur, ...changes, signature: HEADER_SIGNATURE, sequenceNumber: cur.sequenceNumber + 1n, fileWriteGuid: this.sessionGuid, version: 1, logVersion: 0 };
    const bytes = encodeHeader(next);
    await this.store.write(HEADER_OFFSETS[slot]!, bytes);
    await this.store.flush();
    this.headers[slot] = { value: { ...next, checksum: bytes.readUInt32LE(4) } };
    this.current = slot;
  }

  /** the first change of user data in a session renews the DataWriteGuid (unless opened not to) */
  async beginDataWrite(): Promise<void> {
    if (this.dataGuidRenewed || !this.updateIdentityOnWrite) return;
    this.dataGuidRenewed = true;
    await this.updateHeader({ dataWriteGuid: newGuid('le') });
  }

  /**
   * Every log entry is applied: mark the log empty (LogGuid 0) in both header slots, so that
   * neither copy sends a later open to replay entries whose FlushedFileOffset no longer holds
   * (the file is cut shorter after this by makeEmpty and repair).
   */
  async emptyLog(): Promise<void> {
    if (isNullGuid(this.header.logGuid) && isNullGuid(this.headers[1 - this.current]!.value?.logGuid ?? NULL_GUID)) return;
    await this.updateHeader({ logGuid: NULL_GUID });
    await this.updateHeader({ logGuid: NULL_GUID });
  }

  /** the structures of the file: header section, log, regions (never moved) */
  structures(): StructureRange[] {
    return structureRanges(this.regions, Number(this.header.logOffset), this.header.logLength);
  }

  get fixed(): boolean {
    return this.params.leaveBlocksAllocated && !this.params.hasParent;
  }

  /**
   * Make the buffered BAT changes (and `extra` 4 KiB sectors) durable through the log: flush the
   * data they point at, write a log entry (a new LogGuid first if the log is empty), flush,
   * write the sectors in place, flush. Changes too many for one entry go in several, each
   * complete before the next.
   */
  async commit(extra?: Map<number, Buffer>): Promise<void> {
    if (this.broken) throw new DiskError('FILEIO', 'an earlier metadata update of this image failed; close and reopen it (the log is replayed)', { path: this.path });
    const sectors = new Map<number, Buffer>(extra);
    if (this.pending.size === 0 && sectors.size === 0) return;
    try {
      const bySector = new Map<number, number[]>();
      for (const i of this.pending.keys()) {
        const s = Math.floor((i * 8) / LOG_SECTOR);
        const list = bySector.get(s);
        if (list) list.push(i);
        else bySector.set(s, [i]);
      }
      for (const [s, list] of bySector) {
        const fileOffset = this.bat.offset + s * LOG_SECTOR;
        const sector = sectors.get(fileOffset) ?? (await this.store.read(fileOffset, LOG_SECTOR));
        for (const i of list) sector.writeBigUInt64LE(this.pending.get(i)!, i * 8 - s * LOG_SECTOR);
        sectors.set(fileOffset, sector);
      }
      const writer = this.logWriter;
      if (!writer) throw new DiskError('NOTSUPPORTED', 'this VHDX has no log: its metadata cannot be updated safely', { path: this.path, struct: 'header', field: 'logLength', found: 0 });
      await this.store.flush();
      if (isNullGuid(this.header.logGuid)) {
        await this.updateHeader({ logGuid: newGuid('le') });
        writer.reset();
      }
      const list = [...sectors.entries()].sort((a, b) => a[0] - b[0]);
      const per = writer.maxSectorsPerEntry;
      for (let i = 0; i < list.length; i += per) {
        const part = list.slice(i, i + per);
        await writer.writeEntry(this.header.logGuid, part, this.fileSize);
        for (const [off, content] of part) await this.store.write(off, content);
        await this.store.flush();
      }
      this.pending.clear();
    } catch (e) {
      this.broken = true;
      throw e;
    }
  }

  blockLen(n: number): number {
    return Math.min(this.params.blockSize, this.capacity - n * this.params.blockSize);
  }

  setPayload(n: number, state: number, offMiB: number): void {
    this.pState[n] = state;
    this.pOff[n] = offMiB;
    const keep = state === PAYLOAD.FULLY_PRESENT || state === PAYLOAD.PARTIALLY_PRESENT;
    this.pending.set(payloadIndex(n, this.cr), batEntry(state, keep ? offMiB : 0));
  }

  /** every sector bitmap block NOT_PRESENT (the entries reach the file at the next commit), the cache emptied */
  dropBitmaps(): void {
    for (let k = 0; k < this.bState.length; k++) {
      if (this.bState[k] === BITMAP.NOT_PRESENT) continue;
      this.bState[k] = BITMAP.NOT_PRESENT;
      this.bOff[k] = 0;
      this.pending.set(bitmapIndex(k, this.cr), 0n);
    }
    this.bitmaps.clear();
  }

  async zeroFill(at: number, length: number): Promise<void> {
    const zeros = Buffer.alloc(Math.min(length, MiB));
    for (let done = 0; done < length; done += zeros.length) await this.store.write(at + done, zeros.subarray(0, Math.min(zeros.length, length - done)));
  }

  /** file offset of payload block n's slice of its chunk's sector bitmap */
  sliceOffset(n: number): number {
    return this.bOff[Math.floor(n / this.cr)]! * MiB + (n % this.cr) * this.sliceBytes;
  }

  async bitmap(n: number): Promise<Buffer> {
    const hit = this.bitmaps.get(n);
    if (hit) return hit;
    const read = await this.store.read(this.sliceOffset(n), this.sliceBytes);
    // a write may have cached (and changed) this bitmap while we were reading it: keep that one
    return this.bitmaps.get(n) ?? this.cacheBitmap(n, read);
  }

  cacheBitmap(n: number, bm: Buffer): Buffer {
    if (this.bitmaps.size >= this.bitmapLimit) this.bitmaps.delete(this.bitmaps.keys().next().value!);
    this.bitmaps.set(n, bm);
    return bm;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (!this.readOnly && !this.broken) {
        await this.commit();
        await this.emptyLog();
        await this.store.flush();
      }
    } finally {
      await this.store.close();
    }
  }

  checkWritable(): void {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
    if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.path });
  }
}
