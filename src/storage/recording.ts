/**
 * RecordingNamespace: wraps any namespace and records, in call order, every change an operation
 * makes to it: writes (offset and bytes), truncates and flushes per file, and creates, renames,
 * links and removes of names. With a snapshot of the files taken before, the record is the
 * operation's whole I/O history, from which a crash-state explorer can build every state a
 * power cut could leave (only what a flush made durable is sure to be there).
 *
 * Design notes
 * - Data events name a file by a number, not by its name: a store keeps writing to the same
 *   file after a rename (as an open file descriptor does), and two names of a hard link are one
 *   file. `files` gives the name each file had when the recording first saw it.
 * - A create with `overwrite` of an existing name empties that file: it is recorded as a
 *   truncate to 0 of it, so replaying the data events alone gives every file's bytes.
 * - A write is recorded when it is issued and a flush when it has completed, so a flush event
 *   means that every write of its file before it was durable.
 * - `mark` adds an event of the caller's (a test's "the operation promised this much here").
 */
import type { Namespace } from './namespace.js';
import type { ByteStore } from './store.js';
import { NamespaceWrapper, StoreWrapper } from './wrappers.js';

export type IoEvent =
  | { kind: 'write'; file: number; offset: number; data: Buffer }
  | { kind: 'truncate'; file: number; length: number }
  | { kind: 'flush'; file: number }
  | { kind: 'create'; file: number; name: string }
  | { kind: 'rename'; from: string; to: string }
  | { kind: 'link'; from: string; to: string }
  | { kind: 'remove'; name: string }
  | { kind: 'mark'; label: string };

export class RecordingNamespace extends NamespaceWrapper {
  readonly events: IoEvent[] = [];
  /** file number -> the name it had when first seen (files that existed before the recording) or was created under */
  readonly files = new Map<number, string>();
  /** file numbers of files that existed before the recording started */
  readonly preexisting = new Set<number>();
  private readonly ids = new Map<string, number>();
  private nextId = 1;
  /** false: pass everything through without recording (setting up, checking) */
  recording = true;

  constructor(inner: Namespace) {
    super(inner);
  }

  override get label(): string {
    return `recording:${this.inner.label}`;
  }

  /** the number of the file `name` names now (one is given to a name seen for the first time) */
  idOf(name: string): number {
    const abs = this.inner.absolute(name);
    let id = this.ids.get(abs);
    if (id === undefined) {
      id = this.nextId++;
      this.ids.set(abs, id);
      this.files.set(id, abs);
      this.preexisting.add(id);
    }
    return id;
  }

  mark(label: string): void {
    this.events.push({ kind: 'mark', label });
  }

  /** record `e` unless recording is off */
  push(e: IoEvent): void {
    if (this.recording) this.events.push(e);
  }

  override async open(name: string, opts?: { write?: boolean }): Promise<ByteStore> {
    const st = await this.inner.open(name, opts);
    return opts?.write ? new RecordingStore(st, this, this.idOf(name)) : st;
  }

  override async create(name: string, opts?: { overwrite?: boolean }): Promise<ByteStore> {
    const abs = this.inner.absolute(name);
    const existed = await this.inner.exists(abs);
    const st = await this.inner.create(name, opts);
    let id: number;
    if (existed) {
      id = this.idOf(abs);
      this.push({ kind: 'truncate', file: id, length: 0 });
    } else {
      id = this.nextId++;
      this.ids.set(abs, id);
      this.files.set(id, abs);
      this.push({ kind: 'create', file: id, name: abs });
    }
    return new RecordingStore(st, this, id);
  }

  override async rename(from: string, to: string): Promise<void> {
    const [a, b] = [this.inner.absolute(from), this.inner.absolute(to)];
    const id = this.idOf(a);
    await this.inner.rename(from, to);
    if (a === b) return;
    this.ids.set(b, id);
    this.ids.delete(a);
    this.push({ kind: 'rename', from: a, to: b });
  }

  override async link(from: string, to: string): Promise<boolean> {
    const [a, b] = [this.inner.absolute(from), this.inner.absolute(to)];
    const id = this.idOf(a);
    const made = await this.inner.link(from, to);
    if (made) {
      this.ids.set(b, id);
      this.push({ kind: 'link', from: a, to: b });
    }
    return made;
  }

  override async remove(name: string): Promise<void> {
    const abs = this.inner.absolute(name);
    const existed = await this.inner.exists(abs);
    await this.inner.remove(name);
    if (!existed) return;
    this.ids.delete(abs);
    this.push({ kind: 'remove', name: abs });
  }
}

/** A store opened for writing through a RecordingNamespace: records what it is asked to change, then does it. */
class RecordingStore extends StoreWrapper {
  constructor(
    inner: ByteStore,
    private readonly ns: RecordingNamespace,
    private readonly file: number,
  ) {
    super(inner);
  }
  override async write(offset: number, data: Buffer): Promise<void> {
    // copied: a caller may reuse its buffer once the write is done
    this.ns.push({ kind: 'write', file: this.file, offset, data: Buffer.from(data) });
    return this.inner.write(offset, data);
  }
  override async writev(offset: number, data: readonly Buffer[]): Promise<void> {
    this.ns.push({ kind: 'write', file: this.file, offset, data: Buffer.concat(data) });
    return this.inner.writev(offset, data);
  }
  override async truncate(length: number): Promise<void> {
    this.ns.push({ kind: 'truncate', file: this.file, length });
    return this.inner.truncate(length);
  }
  override async flush(): Promise<void> {
    await this.inner.flush();
    this.ns.push({ kind: 'flush', file: this.file });
  }
}
