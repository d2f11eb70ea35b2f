/**
 * The NBD protocol fuzzer's CI slice: every saved regression input, then 10,000 mutated
 * sessions (fixed seed, so a failure reproduces with `npm run fuzz:nbd -- --seed 1 --cases 10000`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fuzz, loadRegressions, loadSeeds, runCase } from '../fuzz/nbd-fuzz.js';

test('NBD fuzzer: saved regressions still pass', async () => {
  for (const r of loadRegressions()) {
    const f = await runCase(r.input, r.config);
    assert.equal(f, undefined, `${r.name}: ${f?.kind} ${f?.detail}`);
  }
});

test('NBD fuzzer: the recorded seeds run clean unchanged', async () => {
  const seeds = loadSeeds();
  assert.ok(seeds.length >= 8, 'recorded and built seeds are there');
  for (const s of seeds) {
    for (const tlsMode of ['off', 'require'] as const) {
      const f = await runCase(s.bytes, { tlsMode, extendedHeaders: true, readOnly: false });
      assert.equal(f, undefined, `${s.name}: ${f?.kind} ${f?.detail}`);
    }
  }
});

test('NBD fuzzer: 10,000 mutated sessions, no crash, hang or unbounded allocation', async () => {
  const findings = await fuzz({ cases: 10_000, seed: 1 });
  assert.deepEqual(findings.map((f) => `${f.kind}: ${f.detail.split('\n')[0]}`), []);
});
