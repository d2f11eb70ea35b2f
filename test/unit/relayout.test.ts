/**
 * The relayout engine (src/formats/common/relayout.ts) over an in-memory map that checks the
 * crash-safe order at every call: a copy is written only into units no entry names and no fixed
 * structure holds; entries are switched only after a flush that followed the copies; old places
 * are released only after a flush that followed the switch; the file is cut last. At the end the
 * content of every entry is what it was, compact leaves the entries dense from dataStart (after
 * dropping the zero ones), defragment leaves them in virtual order. Plus the pure close-up and
 * permutation-cycle plans (relayout-plan.ts) on random layouts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compactMap, defragmentMap, type MapItem, type RelayoutMap } from '../../src/formats/common/relayout.js';
import { planCloseUp, planCycles, type PlanItem } from '../../src/formats/common/relayout-plan.js';
import { mulberry32 } from '../helpers/prng.js';

const UNIT = 16;

interface Fake {
  map: RelayoutMap<number>;
  /** the entries' unit (virtual entry -> unit), as a reader of the file sees them after the last switch */
  table: Map<number, number>;
  file: Buffer;
  fixed: Uint8Array;
  log: string[];
}

/** entries 0..n-1 of one unit each, scattered, some all zeros; a few fixed units */
function fake(seed: number, n: number, opts: { len?: number; align?: number } = {}): Fake {
  const rnd = mulberry32(seed);
  const len = opts.len ?? 1;
  const size = 4 + n * len * 3;
  const fixed = new Uint8Array(size);
  fixed.fill(1, 0, 3);
  for (let u = 3; u < size; u++) if (rnd() < 0.05) fixed[u] = 1;
  const file = Buffer.alloc(size * UNIT);
  const table = new Map<number, number>();
  const used = new Uint8Array(size);
  for (let e = 0; e < n; e++) {
    for (;;) {
      const at = 3 + Math.floor(rnd() * (size - 3 - len));
      let ok = true;
      for (let u = at; u < at + len; u++) if (fixed[u] || used[u]) ok = false;
      if (!ok) continue;
      used.fill(1, at, at + len);
      table.set(e, at);
      if (e % 5 !== 3) file.fill(e + 1, at * UNIT, (at + len) * UNIT);
      break;
    }
  }
  const log: string[] = [];
  let state: 'clean' | 'copied' | 'copiesDurable' | 'switched' = 'clean';
  const inUse = (u: number) => (u < fixed.length && fixed[u] === 1) || [...table.values()].some((a) => u >= a && u < a + len);
  const f: Fake = { table, file, fixed, log, map: undefined as never };
  f.map = {
    path: 'fake',
    unit: UNIT,
    dataStart: 3,
    align: opts.align ?? 1,
    batch: 3,
    async entries() {
      return [...table.entries()].sort((a, b) => a[0] - b[0]).map(([entry, at]) => ({ entry, at, len }));
    },
    fixed: async () => fixed,
    droppable: async (it: MapItem<number>) => f.file.subarray(it.at * UNIT, (it.at + len) * UNIT).every((b) => b === 0),
    async drop(items) {
      for (const it of items) table.delete(it.entry);
      log.push('drop');
    },
    async read(into, at) {
      f.file.copy(into, 0, at, at + into.length);
      return into;
    },
    async write(data, at) {
      for (let u = at / UNIT; u < (at + data.length) / UNIT; u++) assert.ok(!inUse(u), `unit ${u} is written while in use`);
      assert.equal((at / UNIT - 3) % (opts.align ?? 1), 0, 'targets lie on the grid');
      if (at + data.length > f.file.length) f.file = Buffer.concat([f.file, Buffer.alloc(at + data.length - f.file.length)]);
      data.copy(f.file, at);
      state = 'copied';
    },
    async flush() {
      if (state === 'copied') state = 'copiesDurable';
      log.push('flush');
    },
    async setEntries(moves) {
      assert.equal(state, 'copiesDurable', 'entries switch only after the copies are durable');
      for (const m of moves) {
        assert.equal(table.get(m.item.entry), m.from);
        table.set(m.item.entry, m.to);
      }
      state = 'switched';
      log.push('switch');
    },
    async release() {
      assert.equal(log[log.length - 1], 'flush', 'old places are released only after the switch is durable');
      state = 'clean';
    },
    async cut(end) {
      for (const at of table.values()) assert.ok(at + len <= end, 'the cut keeps every entry');
      log.push('cut');
    },
  };
  return f;
}

function content(f: Fake, len: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const [e, at] of f.table) out.set(e, f.file.subarray(at * UNIT, (at + len) * UNIT).toString('hex'));
  return out;
}

test('relayout engine: compact drops zero entries, closes up below, keeps content, in the crash-safe order', async () => {
  for (let seed = 1; seed <= 30; seed++) {
    const f = fake(seed, 8 + (seed % 20));
    const before = content(f, 1);
    const r = await compactMap(f.map);
    const after = content(f, 1);
    for (const [e, hex] of before) {
      if (/^0+$/.test(hex)) assert.equal(after.has(e), false, `seed ${seed}: zero entry ${e} dropped`);
      else assert.equal(after.get(e), hex, `seed ${seed}: entry ${e} reads the same`);
    }
    assert.equal(r.dropped, before.size - after.size);
    // no free, non-fixed unit is left below any entry
    const top = Math.max(...f.table.values());
    const held = new Set(f.table.values());
    for (let u = 3; u < top; u++) assert.ok(held.has(u) || f.fixed[u] === 1, `seed ${seed}: unit ${u} left free below entry at ${top}`);
    assert.equal(f.log[f.log.length - 1], 'cut');
  }
});

test('relayout engine: defragment puts entries (of several units, on a grid) in virtual order, content kept', async () => {
  for (let seed = 1; seed <= 30; seed++) {
    const len = 1 + (seed % 3);
    const f = fake(seed, 6 + (seed % 15), { len, align: len });
    const before = content(f, len);
    await defragmentMap(f.map);
    assert.deepEqual(content(f, len), before, `seed ${seed}: content`);
    const order = [...f.table.entries()].sort((a, b) => a[0] - b[0]).map(([, at]) => at);
    for (let i = 1; i < order.length; i++) assert.ok(order[i]! > order[i - 1]!, `seed ${seed}: virtual order`);
  }
});

test('relayout engine: a cancel stops between batches with every entry intact', async () => {
  const f = fake(7, 20);
  const before = content(f, 1);
  const ac = new AbortController();
  await assert.rejects(defragmentMap(f.map, { signal: ac.signal, onProgress: (done) => done >= 3 && ac.abort() }), (e: Error & { code?: string }) => e.code === 'CANCELLED');
  assert.deepEqual(content(f, 1), before);
  assert.notEqual(f.log[f.log.length - 1], 'cut');
});

test('relayout plan: close-up moves only down, into units free at the batch start, and leaves no fitting hole', () => {
  for (let seed = 1; seed <= 40; seed++) {
    const rnd = mulberry32(seed);
    const size = 60;
    const fixed = new Uint8Array(size);
    for (let u = 0; u < size; u++) if (u < 2 || rnd() < 0.08) fixed[u] = 1;
    const used = new Uint8Array(size);
    const items: PlanItem[] = [];
    for (let k = 0; k < 12; k++) {
      const len = 1 + Math.floor(rnd() * 3);
      const at = 2 + Math.floor(rnd() * (size - 2 - len));
      let ok = true;
      for (let u = at; u < at + len; u++) if (fixed[u] || used[u]) ok = false;
      if (!ok) continue;
      used.fill(1, at, at + len);
      items.push({ at, len, solo: rnd() < 0.1 });
    }
    const plan = planCloseUp(items, fixed, 2, 4);
    const at = items.map((x) => x.at);
    for (const b of plan.batches) {
      if (b.moves.some((m) => items[m.item]!.solo)) assert.equal(b.moves.length, 1, 'a solo item moves alone');
      const busy = new Set<number>();
      at.forEach((a, i) => {
        for (let u = a; u < a + items[i]!.len; u++) busy.add(u);
      });
      for (const m of b.moves) {
        assert.ok(m.to < m.from, 'moves go down');
        for (let u = m.to; u < m.to + items[m.item]!.len; u++) assert.ok(!busy.has(u) && fixed[u] !== 1, `seed ${seed}: unit ${u} in use`);
        for (let u = m.to; u < m.to + items[m.item]!.len; u++) busy.add(u);
      }
      for (const m of b.moves) at[m.item] = m.to;
    }
    assert.deepEqual(at, plan.targets);
  }
});

test('relayout plan: permutation cycles use one scratch unit and stop only between cycles', () => {
  for (let seed = 1; seed <= 30; seed++) {
    const rnd = mulberry32(seed);
    const n = 1 + Math.floor(rnd() * 25);
    const slots = [...Array(n).keys()];
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [slots[i], slots[j]] = [slots[j]!, slots[i]!];
    }
    const items = slots.map((s) => ({ at: 5 + s, len: 1 }));
    const plan = planCycles(items, 5);
    const at = items.map((x) => x.at);
    for (const b of plan.batches) {
      assert.equal(b.moves.length, 1);
      const m = b.moves[0]!;
      assert.ok(!at.includes(m.to), 'the target is free');
      assert.ok(m.to >= 5 && m.to <= 5 + n, 'inside the area or its one scratch unit');
      // a stop is allowed only where the area is dense again (the scratch unit free)
      if (!b.noStopBefore) assert.ok(!at.includes(5 + n), 'no stop while the scratch unit is in use');
      at[m.item] = m.to;
    }
    assert.deepEqual(at, items.map((_, i) => 5 + i));
  }
});
