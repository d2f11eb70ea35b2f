/**
 * An NBD export as a ByteStore: reads and writes split at the server's maximum payload and
 * widened to its minimum block size, block status from base:allocation as the store's
 * extents (holes), and, when the server advertises CAN_MULTI_CONN, up to `connections`
 * connections with requests spread over them (the extra ones are opened when the first is busy,
 * so a short look at an export costs one connection).
 *
 * A connection that drops fails what it had in flight and the store stays failed: there is no
 * reconnect, so nothing is retried behind the caller's back and no write is reported done that
 * the server did not acknowledge. flush waits for every write in flight (on every connection)
 * and then sends one FLUSH: with CAN_MULTI_CONN a flush covers what all connections completed.
 */
import { DiskError } from '../../core/errors.js';
import type { ByteStore } from '../../storage/store.js';
import type { FileExtent } from '../../storage/holes.js';
import { Cmd, CmdFlag, TFlag } from '../protocol/constants.js';
import { NbdConnection, type ConnectOptions } from './connection.js';
import type { ExportFacts } from './handshake.js';
import type { ClientTls } from './tls.js';
import type { NbdUri } from './uri.js';

export interface NbdStoreOptions extends ConnectOptions {
  /** open for writing (refused on a read-only export) */
  write?: boolean;
  /** connections when the server allows several (CAN_MULTI_CONN); default 4 */
  connections?: number;
}

/** BLOCK_STATUS lengths are u32: ask for at most this much at once */
const MAX_STATUS_REQUEST = 2 ** 31;

export class NbdStore implements ByteStore {
  readonly name: string;
  readonly readOnly: boolean;
  private readonly conns: NbdConnection[];
  private opening: Promise<void> | undefined;
  private closed = false;
  /** writes, zeroes and trims not yet acknowledged: flush waits for them */
  private readonly writes = new Set<Promise<unknown>>();
  private broken: DiskError | undefined;
  /** connections opened over the store's life (tests count them) */
  connectionsOpened = 1;

  private constructor(
    private readonly uri: NbdUri,
    private readonly tls: ClientTls | undefined,
    first: NbdConnection,
    private readonly opts: NbdStoreOptions,
  ) {
    this.name = uri.display;
    this.conns = [first];
    this.readOnly = !opts.write;
  }

  static async open(uri: NbdUri, tls: ClientTls | undefined, opts: NbdStoreOptions = {}): Promise<NbdStore> {
    const c = await NbdConnection.connect(uri, tls, opts);
    if (opts.write && c.facts.flags & TFlag.READ_ONLY) {
      await c.close().catch(() => {});
      throw new DiskError('RDONLY', 'the NBD export is read-only: the server refuses writes', { path: uri.display, field: 'transmission flags', found: 'READ_ONLY' });
    }
    return new NbdStore(uri, tls, c, opts);
  }

  get facts(): ExportFacts {
    return this.conns[0]!.facts;
  }

  /** how many connections are open now */
  get connectionCount(): number {
    return this.conns.filter((c) => c.alive).length;
  }

  async size(): Promise<number> {
    return this.facts.size;
  }

  /** the least busy live connection; a busy pool grows when the server allows several */
  private pick(): NbdConnection {
    if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.name });
    if (this.broken) throw this.broken;
    let best: NbdConnection | undefined;
    for (const c of this.conns) if (c.alive && (!best || c.inFlight < best.inFlight)) best = c;
    if (!best) throw (this.broken = this.conns[0]!.failure ?? new DiskError('FILEIO', 'no NBD connection left', { path: this.name }));
    const want = this.facts.flags & TFlag.CAN_MULTI_CONN ? Math.max(1, this.opts.connections ?? 4) : 1;
    if (best.inFlight > 0 && this.conns.length < want && !this.opening) {
      this.opening = NbdConnection.connect(this.uri, this.tls, this.opts)
        .then((c) => {
          if (this.closed) return void c.close().catch(() => {});
          this.conns.push(c);
          this.connectionsOpened++;
        })
        .catch(() => {
          // the server took one connection but not another: go on with what there is
          this.opts.connections = this.conns.length;
        })
        .finally(() => {
          this.opening = undefined;
        });
    }
    return best;
  }

  private async send(type: number, flags: number, offset: number, length: number, payload?: Buffer, into?: Buffer): Promise<FileExtent[] | undefined> {
    const c = this.pick();
    try {
      return await c.request(type, flags, offset, length, payload, into);
    } catch (err) {
      // a connection that died leaves the store failed; a refused request (EIO on one range) does not
      if (!c.alive && c.failure && !this.closed) this.broken ??= c.failure;
      throw err;
    }
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.facts.size) {
      throw new DiskError('OUTOFRANGE', `${length} bytes at ${offset} lie outside the export (${this.facts.size} bytes)`, { path: this.name, offset, length });
    }
  }

  /** [offset, end) widened to the server's minimum block (clipped at the export's end) */
  private aligned(offset: number, length: number): { start: number; end: number } {
    const m = this.facts.minBlock;
    return { start: offset - (offset % m), end: Math.min(Math.ceil((offset + length) / m) * m, this.facts.size) };
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const b = Buffer.allocUnsafe(length);
    await this.readInto(b, offset);
    return b;
  }

  async readInto(into: Buffer, offset: number): Promise<void> {
    this.checkRange(offset, into.length);
    if (into.length === 0) return;
    const { start, end } = this.aligned(offset, into.length);
    if (start === offset && end === offset + into.length) return this.readAligned(into, offset);
    const tmp = Buffer.allocUnsafe(end - start);
    await this.readAligned(tmp, start);
    tmp.copy(into, 0, offset - start, offset - start + into.length);
  }

  private async readAligned(into: Buffer, offset: number): Promise<void> {
    const max = this.facts.maxPayload;
    const parts: Promise<unknown>[] = [];
    for (let at = 0; at < into.length; at += max) {
      const n = Math.min(max, into.length - at);
      parts.push(this.send(Cmd.READ, 0, offset + at, n, undefined, into.subarray(at, at + n)));
    }
    await Promise.all(parts);
  }

  async readZeroPadded(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    const have = Math.max(0, Math.min(length, this.facts.size - offset));
    if (have > 0) await this.readInto(out.subarray(0, have), offset);
    return out;
  }

  private checkWritable(): void {
    if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.name });
    if (this.closed) throw new DiskError('CLOSED', undefined, { path: this.name });
  }

  /** track a write-like request until the server acknowledges it (flush waits for these) */
  private tracked<T>(p: Promise<T>): Promise<T> {
    this.writes.add(p);
    const done = () => this.writes.delete(p);
    p.then(done, done);
    return p;
  }

  /** write `data` at `offset`; `fua`: durable when acknowledged (where the server offers FUA) */
  async write(offset: number, data: Buffer, opts: { fua?: boolean } = {}): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, data.length);
    if (data.length === 0) return;
    const { start, end } = this.aligned(offset, data.length);
    if (start !== offset || end !== offset + data.length) {
      // read-modify-write of the partial blocks at the edges
      const buf = Buffer.allocUnsafe(end - start);
      await this.readAligned(buf, start);
      data.copy(buf, offset - start);
      return this.writeAligned(start, buf, opts.fua);
    }
    return this.writeAligned(offset, data, opts.fua);
  }

  private async writeAligned(offset: number, data: Buffer, fua = false): Promise<void> {
    const flags = fua && this.facts.flags & TFlag.SEND_FUA ? CmdFlag.FUA : 0;
    const max = this.facts.maxPayload;
    const parts: Promise<unknown>[] = [];
    for (let at = 0; at < data.length; at += max) {
      const n = Math.min(max, data.length - at);
      parts.push(this.tracked(this.send(Cmd.WRITE, flags, offset + at, n, data.subarray(at, at + n))));
    }
    await Promise.all(parts);
    if (fua && !flags) await this.flush();
  }

  async writev(offset: number, data: readonly Buffer[]): Promise<void> {
    return this.write(offset, data.length === 1 ? data[0]! : Buffer.concat(data as Buffer[]));
  }

  /**
   * Make [offset, offset+length) read as zeros: WRITE_ZEROES where offered (`punch`: the server
   * may free the space, else NO_HOLE), otherwise zero buffers written.
   */
  async writeZeroes(offset: number, length: number, opts: { punch?: boolean; fua?: boolean } = {}): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length);
    if (length === 0) return;
    const { start, end } = this.aligned(offset, length);
    if (!(this.facts.flags & TFlag.SEND_WRITE_ZEROES) || start !== offset || end !== offset + length) {
      const step = Math.min(this.facts.maxPayload, 4 * 1024 * 1024);
      const zeros = Buffer.alloc(Math.min(step, length));
      const parts: Promise<void>[] = [];
      for (let at = 0; at < length; at += step) parts.push(this.write(offset + at, zeros.subarray(0, Math.min(step, length - at)), opts));
      await Promise.all(parts);
      return;
    }
    const flags = (opts.punch ? 0 : CmdFlag.NO_HOLE) | (opts.fua && this.facts.flags & TFlag.SEND_FUA ? CmdFlag.FUA : 0);
    const max = 2 ** 31 - (2 ** 31 % this.facts.minBlock);
    const parts: Promise<unknown>[] = [];
    for (let at = 0; at < length; at += max) parts.push(this.tracked(this.send(Cmd.WRITE_ZEROES, flags, offset + at, Math.min(max, length - at))));
    await Promise.all(parts);
  }

  /** NBD_CMD_TRIM where the server offers it (a hint: the range may then read as anything); false when not offered */
  async trim(offset: number, length: number): Promise<boolean> {
    this.checkWritable();
    this.checkRange(offset, length);
    if (!(this.facts.flags & TFlag.SEND_TRIM)) return false;
    const { start, end } = this.aligned(offset, length);
    // only whole blocks may be trimmed: shrink inward
    const s = start === offset ? start : start + this.facts.minBlock;
    const e = end === offset + length ? end : end - this.facts.minBlock;
    const max = 2 ** 31 - (2 ** 31 % this.facts.minBlock);
    const parts: Promise<unknown>[] = [];
    for (let at = s; at < e; at += max) parts.push(this.tracked(this.send(Cmd.TRIM, 0, at, Math.min(max, e - at))));
    await Promise.all(parts);
    return true;
  }

  async truncate(length: number): Promise<void> {
    this.checkWritable();
    if (length === this.facts.size) return;
    throw new DiskError('NOTSUPPORTED', 'an NBD export has a fixed size', { path: this.name, field: 'size', expected: this.facts.size, found: length });
  }

  async flush(): Promise<void> {
    if (this.readOnly || this.closed) return;
    // every write in flight must be acknowledged first: a FLUSH covers only completed writes
    while (this.writes.size > 0) await Promise.allSettled([...this.writes]);
    if (this.broken) throw this.broken;
    if (!(this.facts.flags & TFlag.SEND_FLUSH)) return;
    await this.send(Cmd.FLUSH, 0, 0, 0);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.opening;
    this.closed = true;
    await Promise.all(this.conns.map((c) => c.close().catch(() => {})));
  }

  /** holes and data from base:allocation; undefined when the server offers no block status */
  async extents(offset: number, length: number): Promise<FileExtent[] | undefined> {
    if (this.facts.allocationContext === undefined) return undefined;
    const out: FileExtent[] = [];
    const push = (e: FileExtent) => {
      const last = out[out.length - 1];
      if (last && last.data === e.data && last.offset + last.length === e.offset) last.length += e.length;
      else out.push({ ...e });
    };
    const end = offset + length;
    const inside = Math.min(end, this.facts.size);
    let at = offset;
    while (at < inside) {
      // BLOCK_STATUS wants aligned requests too: ask from the block start, keep what was asked
      const { start, end: stop } = this.aligned(at, Math.min(MAX_STATUS_REQUEST, inside - at));
      const got = (await this.send(Cmd.BLOCK_STATUS, 0, start, stop - start))!;
      let next = at;
      for (const e of got) {
        const s = Math.max(e.offset, at);
        const t = Math.min(e.offset + e.length, inside);
        if (t > s) push({ offset: s, length: t - s, data: e.data });
        next = Math.max(next, t);
      }
      if (next <= at) throw new DiskError('FILEIO', 'BLOCK_STATUS reply made no progress', { path: this.name, offset: at });
      at = next;
    }
    // past the end reads as a hole, as for files
    if (end > at) push({ offset: Math.max(at, offset), length: end - Math.max(at, offset), data: false });
    return out;
  }
}
