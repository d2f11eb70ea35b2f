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

/** A file that grows with writes past its end and is cut or zero-extended by truncates. */
function applyData(file: Buffer, e: DataEvent): Buffer {
  if (e.kind === 'truncate') {
    const next = Buffer.alloc(e.length);
    file.copy(next, 0, 0, Math.min(file.length, e.length));
    return next;
  }
  const end = e.offset + e.data.length;
  if (end > file.length) {
    const next = Buffer.alloc(end);
    file.copy(next);
    file = next;
  }
  e.data.copy(file, e.offset);
  return file;
}

/**
 * The state after the first `cut` events, where of the data events in flight (after their
 * file's last completed flush) only `landed` took effect, in the order given.
 */
function build(r: Recorded, cut: number, pick: (inFlight: DataEvent[]) => DataEvent[]): Map<string, Buffer> {
  const contents = new Map<number, Buffer>();
  const names = new Map<string, number>();
  let fresh = -1;
  const byName = new Map<string, number>();
  for (const id of r.preexisting) byName.set(r.files.get(id)!, id);
  for (const [name, bytes] of r.before) {
    const id = byName.get(name) ?? fresh--;
    names.set(name, id);
    // a copy: writes are applied in place
    contents.set(id, Buffer.from(bytes));
  }
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
        if (i < (lastFlush.get(e.file) ?? -1)) contents.set(e.file, applyData(contents.get(e.file) ?? Buffer.alloc(0), e));
        else inFlight.push(e);
        break;
      case 'create':
        names.set(e.name, e.file);
        if (!contents.has(e.file)) contents.set(e.file, Buffer.alloc(0));
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
  for (const e of pick(inFlight)) {
    const file = 'file' in e ? e.file : 0;
    contents.set(file, applyData(contents.get(file) ?? Buffer.alloc(0), e));
  }
  const out = new Map<string, Buffer>();
  for (const [name, id] of names) out.set(name, contents.get(id) ?? Buffer.alloc(0));
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

export function stateKey(files: Map<string, Buffer>): string {
  const h = createHash('sha1');
  for (const name of [...files.keys()].sort()) {
    h.update(name + '\0');
    h.update(files.get(name)!);
    h.update('\0');
  }
  return h.digest('hex');
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
    yield { files: build(r, cut, () => []), cut, marks: marksBefore(r, cut), how: `prefix ${cut} (none in flight)` };
    made++;
    if (made >= count) return;
    yield { files: build(r, cut, (f) => f), cut, marks: marksBefore(r, cut), how: `prefix ${cut} (all in flight landed)` };
    made++;
  }
  while (made < count) {
    const cut = 1 + Math.floor(rnd() * n);
    const style = rnd();
    const keep = style < 0.1 ? 0 : style < 0.2 ? 1 : rnd();
    const torn = rnd() < 0.6;
    let how = '';
    const files = build(r, cut, (inFlight) => {
      const pieces = torn ? inFlight.flatMap(sectors) : inFlight.slice();
      const chosen = shuffle(
        pieces.filter(() => rnd() < keep),
        rnd,
      );
      how = `cut ${cut}, ${chosen.length}/${pieces.length} ${torn ? 'sectors' : 'writes'} in flight landed (keep ${keep.toFixed(2)})`;
      return chosen;
    });
    yield { files, cut, marks: marksBefore(r, cut), how };
    made++;
  }
}
