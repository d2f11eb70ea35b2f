/**
 * Records every write, truncate and flush one file receives through FileStore, so a test can
 * build the states a power cut could leave: everything up to a flush barrier, plus any subset of
 * the sectors written after it, in any order (torn multi-sector writes included). The recording
 * patches FileStore's prototype for the lifetime of one `record()` call; until the storage layer
 * has a recording namespace this is the seam that sees every byte a driver sends to a file.
 */
import { FileStore } from '../../src/storage/file.js';

export type Op = { kind: 'write'; offset: number; data: Buffer } | { kind: 'truncate'; length: number } | { kind: 'flush' };

/** `run` gets the live list: `ops.length` after an awaited flush marks a barrier. */
export async function record<T>(path: string, run: (ops: readonly Op[]) => Promise<T>): Promise<{ ops: Op[]; result: T }> {
  const proto = FileStore.prototype as unknown as Record<string, (...a: unknown[]) => Promise<void>>;
  const saved = { write: proto.write!, writev: proto.writev!, truncate: proto.truncate!, flush: proto.flush! };
  const ops: Op[] = [];
  const mine = (s: FileStore) => s.name === path;
  proto.write = async function (this: FileStore, offset: unknown, data: unknown) {
    if (mine(this)) ops.push({ kind: 'write', offset: offset as number, data: Buffer.from(data as Buffer) });
    return saved.write.call(this, offset, data);
  };
  // one recorded op, written piece by piece through the unpatched write (FileStore's own
  // writev may call write, which would record the bytes twice)
  proto.writev = async function (this: FileStore, offset: unknown, data: unknown) {
    if (!mine(this)) return saved.writev.call(this, offset, data);
    ops.push({ kind: 'write', offset: offset as number, data: Buffer.concat(data as Buffer[]) });
    let at = offset as number;
    for (const b of data as Buffer[]) {
      await saved.write.call(this, at, b);
      at += b.length;
    }
  };
  proto.truncate = async function (this: FileStore, length: unknown) {
    if (mine(this)) ops.push({ kind: 'truncate', length: length as number });
    return saved.truncate.call(this, length);
  };
  proto.flush = async function (this: FileStore) {
    await saved.flush.call(this);
    if (mine(this)) ops.push({ kind: 'flush' });
  };
  try {
    const result = await run(ops);
    return { ops, result };
  } finally {
    Object.assign(proto, saved);
  }
}

/** Apply `ops` to a copy of `start` (a file grows with writes past its end, as files do). */
export function apply(start: Buffer, ops: readonly Op[]): Buffer {
  let file = Buffer.from(start);
  for (const op of ops) {
    if (op.kind === 'flush') continue;
    if (op.kind === 'truncate') {
      const next = Buffer.alloc(op.length);
      file.copy(next, 0, 0, Math.min(file.length, op.length));
      file = next;
      continue;
    }
    const end = op.offset + op.data.length;
    if (end > file.length) {
      const next = Buffer.alloc(end);
      file.copy(next);
      file = next;
    }
    op.data.copy(file, op.offset);
  }
  return file;
}

/**
 * A state a power cut could leave when the ops before `from` are durable (`from` follows a
 * completed flush) and those in [from, to) were in flight: every op before `from`, then a random
 * subset (each kept with probability `keep`) of the writes in flight, cut into 512-byte sectors
 * and applied in random order; truncates in flight land or not like any write.
 */
export function crashState(start: Buffer, ops: readonly Op[], from: number, to: number, rnd: () => number, keep: number): Buffer {
  const before = apply(start, ops.slice(0, from));
  const pieces: Op[] = [];
  for (const op of ops.slice(from, to)) {
    if (op.kind === 'write') {
      for (let at = 0; at < op.data.length; at += 512) pieces.push({ kind: 'write', offset: op.offset + at, data: op.data.subarray(at, Math.min(at + 512, op.data.length)) });
    } else if (op.kind === 'truncate') pieces.push(op);
  }
  const chosen = pieces.filter(() => rnd() < keep);
  for (let i = chosen.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [chosen[i], chosen[j]] = [chosen[j]!, chosen[i]!];
  }
  return apply(before, chosen);
}
