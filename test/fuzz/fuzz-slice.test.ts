/**
 * The fuzz slice of `npm test`: a fixed-seed run of 2,000 cases over every format, read-only and
 * read-write cases mixed, on the seeds vdkit and the test builders make (qemu-img and outside
 * seeds are left to long runs: they depend on what is installed). Cases run in two worker
 * processes with the fuzzer's limits (1 s of CPU time per case, 30 s wall; 256 MiB; no leaked
 * descriptor). No case may give a finding.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatSummary, fuzz } from './engine.js';

const CASES = Number(process.env.VDKIT_FUZZ_SLICE ?? 2000);

test(`fuzz slice: ${CASES} cases over every format (seed 20241207), no finding`, { timeout: 600_000 }, async () => {
  const s = await fuzz({ cases: CASES, seed: 20241207, mode: 'both', jobs: 2, qemuSeeds: false, outsideSeeds: false, minimise: false, progressEvery: 1e9 });
  const text = formatSummary(s);
  console.log(text);
  assert.equal(s.cases, CASES);
  for (const f of ['vmdk', 'vdi', 'vhd', 'vhdx', 'qcow2']) assert.ok((s.perFormat[f]?.cases ?? 0) >= CASES / 5 - 1, `${f} has its share of cases`);
  assert.deepEqual(s.findings.map((f) => `${f.kind} (${f.format}, ${f.seedName}, case ${f.caseIndex}): ${f.message}`), [], text);
});
