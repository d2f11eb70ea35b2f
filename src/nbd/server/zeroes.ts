/**
 * WRITE_ZEROES for backends without their own writeZeroes: ranges block status already reports
 * as reading zeros are left alone (so a fresh sparse target stays sparse when nbdcopy or
 * qemu-img pre-zero it), the rest is discarded where the backend can, else written with zeros.
 * NO_HOLE writes zeros everywhere (the range must end up allocated). FAST_ZERO succeeds only when
 * no data would have to be written, and otherwise fails at once without touching anything.
 */
import type { ExportBackend } from './backend.js';

export class FastZeroUnsupported extends Error {
  constructor() {
    super('zeroing this range would mean writing data (FAST_ZERO refused)');
  }
}

const CHUNK = 1024 * 1024;
let zeroChunk: Buffer | undefined;

export async function writeZeroes(backend: ExportBackend, offset: number, length: number, opts: { noHole: boolean; fastZero: boolean; fua: boolean }): Promise<void> {
  if (backend.writeZeroes) return backend.writeZeroes(offset, length, opts);
  if (opts.noHole) {
    if (opts.fastZero) throw new FastZeroUnsupported();
    await fill(backend, offset, length);
  } else {
    const todo: { offset: number; length: number }[] = [];
    for (const e of await backend.blockStatus(offset, length)) {
      if (e.state === 'data') todo.push({ offset: e.offset, length: e.length });
    }
    if (todo.length && opts.fastZero && !backend.discard) throw new FastZeroUnsupported();
    for (const r of todo) {
      if (backend.discard) await backend.discard(r.offset, r.length);
      else await fill(backend, r.offset, r.length);
    }
  }
  if (opts.fua) await backend.flush();
}

async function fill(backend: ExportBackend, offset: number, length: number): Promise<void> {
  zeroChunk ??= Buffer.alloc(CHUNK);
  for (let at = offset; at < offset + length; at += CHUNK) {
    const n = Math.min(CHUNK, offset + length - at);
    await backend.write(at, zeroChunk.subarray(0, n), { fua: false });
  }
}
