/**
 * The shared read planner (src/formats/common/read-plan.ts) against a model: a "file" of random
 * bytes and a random unit map (units placed back to back in runs, scattered, or holding
 * nothing). Every read must return the model's bytes, and issue exactly one file read per
 * maximal span of bytes that are contiguous both in `into` and in the file (counted here byte by
 * byte, independently of the planner's own bookkeeping).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ZEROS, planRead, type ReadPlanSource } from '../../src/formats/common/read-plan.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';

const UNIT = 512;
const UNITS = 96;

interface Layout {
  file: Buffer;
  /** file offset of each unit, or ZEROS */
  map: number[];
}

function randomLayout(seed: number): Layout {
  const rnd = mulberry32(seed);
  const map: number[] = [];
  let next = 0;
  const slots: number[] = [];
  for (let u = 0; u < UNITS; u++) {
    const r = rnd();
    if (r < 0.25) map.push(ZEROS);
    else if (r < 0.75 || slots.length === 0) {
      // the next unit in the file: runs of units that follow each other
      map.push(next);
      next += UNIT;
    } else {
      // somewhere else: a slot far away, or one reused out of order
      const far = (UNITS + Math.floor(rnd() * UNITS)) * UNIT;
      map.push(slots.includes(far) ? next : far);
      if (!slots.includes(far)) slots.push(far);
      else next += UNIT;
    }
    slots.push(map[u]!);
  }
  return { file: xorshiftBytes(3 * UNITS * UNIT, seed), map };
}

/** what the planner must return, and how many reads it must issue, by a byte-by-byte walk */
function model(l: Layout, offset: number, length: number): { bytes: Buffer; runs: number } {
  const bytes = Buffer.alloc(length);
  let runs = 0;
  let prev = -2;
  for (let p = 0; p < length; p++) {
    const u = Math.floor((offset + p) / UNIT);
    const base = l.map[u]!;
    if (base === ZEROS) {
      prev = -2;
      continue;
    }
    const f = base + ((offset + p) % UNIT);
    bytes[p] = l.file[f]!;
    if (f !== prev + 1) runs++;
    prev = f;
  }
  return { bytes, runs };
}

function source(l: Layout, opts: { async?: 'always' | 'sometimes'; calls?: { at: number; length: number }[] }): ReadPlanSource {
  let k = 0;
  return {
    unit: UNIT,
    locate: (u) => {
      const v = l.map[u]!;
      const later = opts.async === 'always' || (opts.async === 'sometimes' && k++ % 3 === 0);
      return later ? new Promise((r) => setImmediate(() => r(v))) : v;
    },
    readFile: async (into, at) => {
      opts.calls?.push({ at, length: into.length });
      await new Promise((r) => setImmediate(r));
      l.file.copy(into, 0, at, at + into.length);
    },
  };
}

test('planRead returns the mapped bytes and zeros, with one file read per contiguous run', async () => {
  let coalesced = 0;
  for (let seed = 1; seed <= 12; seed++) {
    const l = randomLayout(seed);
    const rnd = mulberry32(seed * 7919);
    const size = UNITS * UNIT;
    const spots: [number, number][] = [[0, size], [0, 0], [UNIT - 1, 2], [size - 1, 1]];
    for (let i = 0; i < 40; i++) {
      const at = Math.floor(rnd() * size);
      spots.push([at, Math.floor(rnd() * (size - at + 1))]);
    }
    for (const [offset, length] of spots) {
      const want = model(l, offset, length);
      for (const mode of [undefined, 'always', 'sometimes'] as const) {
        const calls: { at: number; length: number }[] = [];
        const into = Buffer.alloc(length, 0xee); // zeros must be written, not assumed
        await planRead(into, offset, source(l, { async: mode, calls }));
        assert.ok(into.equals(want.bytes), `seed ${seed} read ${offset}+${length} (${mode ?? 'sync'} locate)`);
        assert.equal(calls.length, want.runs, `seed ${seed} read ${offset}+${length}: file reads`);
        const total = calls.reduce((s, c) => s + c.length, 0);
        const mapped = [...want.bytes.keys()].filter((p) => l.map[Math.floor((offset + p) / UNIT)] !== ZEROS).length;
        assert.equal(total, mapped, 'every mapped byte is read once');
        if (calls.some((c) => c.length > UNIT)) coalesced++;
      }
    }
  }
  assert.ok(coalesced > 0, 'some reads spanned several units in one call');
});

test('planRead: a locate that throws fails the read after the reads already started have settled', async () => {
  const l = randomLayout(5);
  const started: number[] = [];
  const settled: number[] = [];
  const bad = Math.floor(UNITS / 2);
  const src: ReadPlanSource = {
    unit: UNIT,
    locate: (u) => {
      if (u === bad) throw new Error(`bad entry ${u}`);
      // scattered units: one file read each
      return u % 2 === 0 ? u * 2 * UNIT : ZEROS;
    },
    readFile: async (into, at) => {
      started.push(at);
      await new Promise((r) => setTimeout(r, 5));
      l.file.copy(into, 0, at % l.file.length, (at % l.file.length) + into.length);
      settled.push(at);
    },
  };
  await assert.rejects(planRead(Buffer.alloc(UNITS * UNIT), 0, src), /bad entry 48/);
  assert.ok(started.length > 0, 'reads were started before the bad entry');
  assert.deepEqual(settled.sort(), started.sort(), 'every started read settled before the error left');
  // an async locate that rejects behaves the same
  started.length = 0;
  settled.length = 0;
  await assert.rejects(planRead(Buffer.alloc(UNITS * UNIT), 0, { ...src, locate: (u) => (u === bad ? Promise.reject(new Error('late')) : src.locate(u)) }), /late/);
  assert.deepEqual(settled.sort(), started.sort());
  // a failing file read fails the read
  await assert.rejects(planRead(Buffer.alloc(4 * UNIT), 0, { unit: UNIT, locate: (u) => u * UNIT, readFile: async () => Promise.reject(new Error('EIO')) }), /EIO/);
});
