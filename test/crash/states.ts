/**
 * The states a power cut could leave, from the files as they were before an operation and the
 * record of its I/O (src/storage/recording.ts).
 *
 * The model of the storage below (a disk with a volatile write cache):
 * - a cut comes after some number of issued events; every event before it was issued, none after;
 * - a write or truncate of a file is durable once a flush of that file has completed after it;
 *   the ones issued since the file's last completed flush may each have landed or not, in any
 *   order, and a write of several 512-byte sectors may have landed in part (a torn write);
 * - name changes (create, rename, link, remove) land in call order and at once, as a journalling
 *   file system commits them ahead of the data (the durability of the folder itself, cache mode
 *   'durable', is not modelled).
 * States: the prefix at every flush barrier (nothing in flight), the end, and seeded random cuts
 * with random subsets of what was in flight, whole writes reordered or cut into sectors.
 */
import { createHash } from 'node:crypto';
import type { IoEvent, RecordingNamespace } from '../../src/storage/recording.js';

export const SECTOR = 512;

export interface CrashState {
  /** name -> bytes */
  files: Map<string, Buffer>;
  /** events issued before the cut */
  cut: number;
  /** marks before the cut: how many of the operation's promises were kept */
  marks: number;
  /** how it was built, for messages */
  how: string;
  /** equal keys: equal states (a hash of what differs from the snapshot) */
  key: string;
}

export interface Recorded {
  before: Map<string, Buffer>;
  events: readonly IoEvent[];
  files: ReadonlyMap<number, string>;
  preexisting: ReadonlySet<number>;
}

export function recorded(before: Map<string, Buffer>, rec: RecordingNamespace): Recorded {
  return { before, events: rec.events.slice(), files: new Map(rec.files), preexisting: new Set(rec.preexisting) };
}

type DataEvent = Extract<IoEvent, { kind: 'write' | 'truncate' }>;

/**
 * A file's bytes while a state is built: shared with the snapshot until the first change (most
 * states leave most files alone), grown in doublings rather than per write.
 */
class FileBytes {
  private buf: Buffer;
  private len: number;
  private own = false;
  /** byte ranges changed since the snapshot (for the state's key) */
  readonly touched: [number, number][] = [];
  constructor(start: Buffer) {
    this.buf = start;
    this.len = start.length;
  }
  private room(end: number): void {
    if (this.own && end <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(end, this.own ? this.buf.length * 2 : this.len));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
    this.own = true;
  }
  apply(e: DataEvent): void {
    if (e.kind === 'truncate') {
      this.room(e.length);
      // bytes past a new, shorter end read as zeros if the file grows again
      if (e.length < this.len) this.buf.fill(0, e.length, this.len);
      this.touched.push([Math.min(e.length, this.len), Math.max(e.length, this.len)]);
      this.len = e.length;
      return;
    }
    const end = e.offset + e.data.length;
    this.room(end);
    e.data.copy(this.buf, e.offset);
    this.touched.push([e.offset, end]);
    this.len = Math.max(this.len, end);
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}

/**
 * The state after the first `cut` events, where of the data events in flight (after their
 * file's last completed flush) only the ones `pick` returns took effect, in that order.
 */
function build(r: Recorded, cut: number, pick: (inFlight: DataEvent[]) => DataEvent[]): { files: Map<string, Buffer>; key: string } {
  const contents = new Map<number, FileBytes>();
  const names = new Map<string, number>();
  let fresh = -1;
  const byName = new Map<string, number>();
  for (const id of r.preexisting) byName.set(r.files.get(id)!, id);
  for (const [name, bytes] of r.before) {
    const id = byName.get(name) ?? fresh--;
    names.set(name, id);
    contents.set(id, new FileBytes(bytes));
  }
  const file = (id: number) => {
    let f = contents.get(id);
    if (!f) contents.set(id, (f = new FileBytes(Buffer.alloc(0))));
    return f;
  };
  const lastFlush = new Map<number, number>();
  for (let i = 0; i < cut; i++) {
    const e = r.events[i]!;
    if (e.kind === 'flush') lastFlush.set(e.file, i);
  }
  const inFlight: DataEvent[] = [];
  for (let i = 0; i < cut; i++) {
    const e = r.events[i]!;
    switch (e.kind) {
      case 'write':
      case 'truncate':
        if (i < (lastFlush.get(e.file) ?? -1)) file(e.file).apply(e);
        else inFlight.push(e);
        break;
      case 'create':
        names.set(e.name, e.file);
        file(e.file);
        break;
      case 'rename': {
        const id = names.get(e.from);
        names.delete(e.from);
        if (id !== undefined) names.set(e.to, id);
        break;
      }
      case 'link': {
        const id = names.get(e.from);
        if (id !== undefined) names.set(e.to, id);
        break;
      }
      case 'remove':
        names.delete(e.name);
        break;
      default:
        break;
    }
  }
  for (const e of pick(inFlight)) file(e.file).apply(e);
  // the key: names, sizes and the bytes of every changed range (the rest is the snapshot's)
  const h = createHash('sha1');
  const out = new Map<string, Buffer>();
  for (const name of [...names.keys()].sort()) {
    const id = names.get(name)!;
    const f = file(id);
    const bytes = f.bytes();
    out.set(name, bytes);
    h.update(`${name}\0${id}\0${bytes.length}\0`);
    for (const [a, b] of merge(f.touched)) h.update(bytes.subarray(Math.min(a, bytes.length), Math.min(b, bytes.length)));
  }
  return { files: out, key: h.digest('hex') };
}

function merge(ranges: [number, number][]): [number, number][] {
  const sorted = ranges.slice().sort((x, y) => x[0] - y[0]);
  const out: [number, number][] = [];
  for (const [a, b] of sorted) {
    const last = out.at(-1);
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

function marksBefore(r: Recorded, cut: number): number {
  let n = 0;
  for (let i = 0; i < cut; i++) if (r.events[i]!.kind === 'mark') n++;
  return n;
}

/** Sector pieces of a write (a torn write lands some of them). */
function sectors(e: DataEvent): DataEvent[] {
  if (e.kind !== 'write' || e.data.length <= SECTOR) return [e];
  const out: DataEvent[] = [];
  // pieces follow sector boundaries of the file, as a disk tears them
  let at = e.offset;
  const end = e.offset + e.data.length;
  while (at < end) {
    const next = Math.min(end, (Math.floor(at / SECTOR) + 1) * SECTOR);
    out.push({ kind: 'write', file: e.file, offset: at, data: e.data.subarray(at - e.offset, next - e.offset) });
    at = next;
  }
  return out;
}

function shuffle<T>(a: T[], rnd: () => number): T[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/**
 * `count` states (seeded by `rnd`): first the barrier prefixes and the end, then random cuts.
 * A random state keeps each in-flight piece with a probability drawn per state (sometimes none
 * or all), as whole writes (reordered) or as sectors (torn writes).
 */
export function* crashStates(r: Recorded, count: number, rnd: () => number): Generator<CrashState> {
  const n = r.events.length;
  const barriers: number[] = [0];
  for (let i = 0; i < n; i++) if (r.events[i]!.kind === 'flush' || r.events[i]!.kind === 'mark') barriers.push(i + 1);
  barriers.push(n);
  let made = 0;
  for (const cut of [...new Set(barriers)]) {
    if (made >= count) return;
    // at a barrier nothing of the flushed file is in flight; other files' unflushed writes may be
    yield { ...build(r, cut, () => []), cut, marks: marksBefore(r, cut), how: `prefix ${cut} (none in flight)` };
    made++;
    if (made >= count) return;
    yield { ...build(r, cut, (f) => f), cut, marks: marksBefore(r, cut), how: `prefix ${cut} (all in flight landed)` };
    made++;
  }
  while (made < count) {
    const cut = 1 + Math.floor(rnd() * n);
    const style = rnd();
    const keep = style < 0.1 ? 0 : style < 0.2 ? 1 : rnd();
    const torn = rnd() < 0.6;
    let how = '';
    const built = build(r, cut, (inFlight) => {
      const pieces = torn ? inFlight.flatMap(sectors) : inFlight.slice();
      const chosen = shuffle(
        pieces.filter(() => rnd() < keep),
        rnd,
      );
      how = `cut ${cut}, ${chosen.length}/${pieces.length} ${torn ? 'sectors' : 'writes'} in flight landed (keep ${keep.toFixed(2)})`;
      return chosen;
    });
    yield { ...built, cut, marks: marksBefore(r, cut), how };
    made++;
  }
}
