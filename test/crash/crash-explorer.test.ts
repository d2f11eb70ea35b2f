/**
 * The crash-state explorer's fixed-seed slice (issue 14): every operation x format of
 * scenarios.ts, 200 power-cut states each (explore.ts says what is judged; states.ts how the
 * states are built), no finding allowed. Where qemu-img is installed, two states per cell are
 * also given to `qemu-img check`. Cells vdkit does not support are skipped with the reason.
 * Long runs: `npm run crash -- --states 2000 --seed N` (RELIABILITY.md).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exploreCell, formatCell, selectCells } from './explore.js';

const SEED = 20261207;
const STATES = 200;

test('crash explorer: 200 power-cut states per operation x format keep every flushed byte and check clean', async (t) => {
  const t0 = performance.now();
  let total = 0;
  let distinct = 0;
  for (const [op, f] of selectCells()) {
    await t.test(`${op.name} ${f.name}`, async (st) => {
      const c = await exploreCell(op, f, { states: STATES, seed: SEED, qemuSample: 2 });
      if (c.skipped) {
        st.skip(c.skipped);
        return;
      }
      st.diagnostic(formatCell(c));
      total += c.states;
      distinct += c.distinct;
      assert.equal(c.states, STATES, 'every state was built');
      assert.ok(c.events > 0, 'the operation did some I/O');
      assert.deepEqual(
        c.findings.map((x) => `[${x.kind}] ${x.how}: ${x.message}`),
        [],
        `${op.name} ${f.name}`,
      );
    });
  }
  t.diagnostic(`${total} states (${distinct} distinct) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
});
