/**
 * The defragment move plan (src/formats/common/relayout-plan.ts) replayed on random layouts:
 * every batch only writes where nothing is in use when the batch starts (no item's current
 * place, no fixed unit, no other destination of the batch), every move starts where its item
 * is, and at the end every item sits at its target, targets in the given order, back to back
 * except where an item does not fit before a fixed unit.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planRelayout, type PlanItem } from '../../src/formats/common/relayout-plan.js';
import { mulberry32 } from '../helpers/prng.js';

interface Layout {
  items: PlanItem[];
  fixed: Uint8Array;
  start: number;
}

/** items of 1..maxLen units scattered over a file with fixed units among them, in shuffled final order */
function randomLayout(seed: number, count: number, maxLen: number, fixedShare: number): Layout {
  const rnd = mulberry32(seed);
  const size = count * maxLen * 3 + 8;
  const fixed = new Uint8Array(size);
  const used = new Uint8Array(size);
  const start = 1 + Math.floor(rnd() * 4);
  for (let u = 0; u < start; u++) fixed[u] = 1;
  for (let u = start; u < size; u++) if (rnd() < fixedShare) fixed[u] = 1;
  const items: PlanItem[] = [];
  while (items.length < count) {
    const len = 1 + Math.floor(rnd() * maxLen);
    const at = start + Math.floor(rnd() * (size - start - len));
    let ok = true;
    for (let u = at; u < at + len; u++) if (fixed[u] || used[u]) ok = false;
    if (!ok) continue;
    used.fill(1, at, at + len);
    items.push({ at, len });
  }
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return { items, fixed, start };
}

function replay(l: Layout, batch: number): { moves: number; maxUnit: number } {
  const plan = planRelayout(l.items, l.fixed, l.start, batch);
  const at = l.items.map((x) => x.at);
  const busy = (u: number, except = -1) => (u < l.fixed.length && l.fixed[u] === 1) || at.some((a, i) => i !== except && u >= a && u < a + l.items[i]!.len);
  let moves = 0;
  let maxUnit = 0;
  let placedBefore = 0;
  for (const b of plan.batches) {
    const claimed = new Set<number>();
    for (const m of b.moves) {
      assert.equal(m.from, at[m.item], 'a move starts where its item is');
      for (let u = m.to; u < m.to + l.items[m.item]!.len; u++) {
        assert.ok(!busy(u), `unit ${u} is in use when the batch starts`);
        assert.ok(!claimed.has(u), `unit ${u} is written twice in one batch`);
        claimed.add(u);
        maxUnit = Math.max(maxUnit, u);
      }
    }
    for (const m of b.moves) at[m.item] = m.to;
    moves += b.moves.length;
    assert.ok(b.placed >= placedBefore, 'progress never goes back');
    for (let i = 0; i < b.placed; i++) assert.equal(at[i], plan.targets[i], `item ${i} is in place once counted as placed`);
    placedBefore = b.placed;
  }
  assert.deepEqual(at, plan.targets, 'every item ends at its target');
  let pos = l.start;
  l.items.forEach((x, i) => {
    const t = plan.targets[i]!;
    assert.ok(t >= pos, 'targets follow the final order');
    // a gap is left only where the item does not fit before a fixed unit
    for (let s = pos; s < t; s++) {
      let clash = false;
      for (let u = s; u < s + x.len; u++) if (l.fixed[u] === 1) clash = true;
      assert.ok(clash, `item ${i} could have started at unit ${s}`);
    }
    for (let u = t; u < t + x.len; u++) assert.ok(!(u < l.fixed.length && l.fixed[u] === 1), 'no target on a fixed unit');
    pos = t + x.len;
  });
  assert.equal(plan.finalEnd, pos);
  return { moves, maxUnit };
}

test('relayout plan: random layouts end in order, and no batch writes over anything in use', () => {
  for (let seed = 1; seed <= 60; seed++) {
    const maxLen = seed % 3 === 0 ? 1 : 1 + (seed % 5);
    replay(randomLayout(seed, 10 + (seed % 40), maxLen, (seed % 4) * 0.05), 1 + (seed % 9));
  }
});

test('relayout plan: items already in order do not move; a reversed row needs spare room past the end', () => {
  const fixed = new Uint8Array(2).fill(1);
  const inOrder = Array.from({ length: 20 }, (_, i) => ({ at: 2 + i, len: 1 }));
  assert.equal(planRelayout(inOrder, fixed, 2, 8).batches.length, 0);
  const reversed = Array.from({ length: 20 }, (_, i) => ({ at: 21 - i, len: 1 }));
  const r = replay({ items: reversed, fixed, start: 2 }, 8);
  assert.ok(r.moves >= 20 && r.moves <= 40, `moves ${r.moves}`);
  assert.ok(r.maxUnit >= 22, 'spare room past the final layout was used');
});

test('relayout plan: an item overlapping another is refused as an internal error', () => {
  assert.throws(() => planRelayout([{ at: 3, len: 2 }, { at: 4, len: 1 }], new Uint8Array(0), 0, 4), (e: Error & { code?: string }) => e.code === 'INTERNAL');
});
