/**
 * Shared by the repair kill tests: run a repair in a child process (repair-runner.ts) and
 * SIGKILL it at a random one of its write/flush/truncate steps, 20 runs on copies of one
 * damaged template. Afterwards a check
 * finds no corruption that was not there before, an image whose corruptions are already gone
 * opens and reads the expected content, and a second repair finishes the job (clean, expected
 * content, qemu-img check clean where it knows the format).
 */
import assert from 'node:assert/strict';
import { runKilledAtStep } from './spawn-lines.js';
import { copyFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Disk, checkDisk, openFindings } from '../../src/index.js';
import type { CheckReport } from '../../src/formats/types.js';
import { mulberry32 } from './prng.js';
import { describeRun, run, tmpDir } from './tools.js';

const RUNS = 20;
const RUNNER = join(dirname(fileURLToPath(import.meta.url)), 'repair-runner.js');

/**
 * Run the repair; SIGKILL it when it prints `step <killAt>` (its writes, flushes and truncates
 * are numbered; the kill lands just before or after that step). Resolves with whether it was
 * killed, and its time and step count when it was not.
 */
export async function repairKilledAt(path: string, killAt: number): Promise<{ killed: boolean; ms?: number; steps?: number }> {
  const r = await runKilledAtStep(RUNNER, [path], killAt);
  if (r.killed) return { killed: true };
  const m = r.lines.map((l) => /^done ([\d.]+) (\d+)$/.exec(l)).find((x) => x);
  if (!m) throw new Error(`repair runner ended without "done": ${r.lines.slice(-3).join(' | ')}`);
  return { killed: false, ms: Number(m[1]), steps: Number(m[2]) };
}

const corruptFields = (r: CheckReport) => r.findings.filter((f) => f.kind === 'corruption' && !f.repaired).map((f) => f.field!);
const problems = (r: CheckReport) => r.findings.filter((f) => f.kind !== 'warning' && !f.repaired).length;

/**
 * The 20 killed repairs of `template` (which must hold at least one corruption or leak);
 * `qemuFormat`: qemu-img check must call the finished image clean. `allOrNothing`: the repair
 * mends every corruption in one write, so a kill leaves either all of the template's
 * corruptions or none (then qemu-img check too finds none).
 */
export async function repairKillRuns(t: TestContext, label: string, template: string, expected: Buffer, seed: number, qemuFormat?: string, allOrNothing = false): Promise<void> {
  const dir = (await tmpDir(t, `vdkit-repair-kill-${label}-`)).path;
  const original = await checkDisk(template, { repair: false, chain: false });
  const before = new Set(corruptFields(original));
  const total = problems(original);
  assert.ok(total > 0, `${label}: the template is damaged: ${JSON.stringify(original.findings)}`);
  // how many steps a whole repair takes: each run kills at a random one of them
  const probe = join(dir, 'probe');
  await copyFile(template, probe);
  const whole = await repairKilledAt(probe, Infinity);
  assert.equal(whole.killed, false);
  assert.ok(whole.steps! > 0, `${label}: the repair writes something`);
  const rnd = mulberry32(seed);
  let killedMidway = 0;
  let untouched = 0;
  let finished = 0;
  const one = async (i: number) => {
    const p = join(dir, `run${i}.${label}`);
    await copyFile(template, p);
    const r = await repairKilledAt(p, 1 + Math.floor(rnd() * whole.steps!));
    const after = await checkDisk(p, { repair: false, chain: false });
    const now = corruptFields(after);
    for (const f of now) assert.ok(before.has(f), `${label} run ${i}: a killed repair left a new corruption ${f}: ${JSON.stringify(after.findings)}`);
    if (allOrNothing) {
      assert.ok(now.length === 0 || now.length === corruptFields(original).length, `${label} run ${i}: a killed repair mended only some corruptions: ${JSON.stringify(after.findings)}`);
      if (now.length === 0 && qemuFormat) {
        const args = ['check', '-f', qemuFormat, p];
        const q = await run('qemu-img', args);
        assert.ok(q.code === 0 || q.code === 3, `${label} run ${i} after the kill: ${describeRun('qemu-img', args, q)}`);
      }
    }
    const left = problems(after);
    if (left > 0 && left < total) killedMidway++;
    else if (left === total) untouched++;
    else finished++;
    if (now.length === 0) {
      // every corruption already mended: the image opens and reads what the repair promises
      const d = await Disk.open(p, { readOnly: true });
      const got = await d.read(0, expected.length);
      await d.close();
      assert.ok(got.equals(expected), `${label} run ${i}: content after the kill (killed: ${r.killed})`);
    }
    const fixed = await checkDisk(p, { repair: true, chain: false });
    assert.deepEqual(openFindings(fixed), { corruptions: 0, leaks: 0 }, `${label} run ${i}: a second repair finishes: ${JSON.stringify(fixed.findings)}`);
    const d = await Disk.open(p, { readOnly: true });
    const got = await d.read(0, expected.length);
    await d.close();
    assert.ok(got.equals(expected), `${label} run ${i}: content after the second repair`);
    if (qemuFormat) {
      const args = ['check', '-f', qemuFormat, p];
      const q = await run('qemu-img', args);
      assert.equal(q.code, 0, describeRun('qemu-img', args, q));
    }
  };
  for (let i = 0; i < RUNS; i += 4) await Promise.all([i, i + 1, i + 2, i + 3].filter((k) => k < RUNS).map(one));
  t.diagnostic(`${label}: template ${[...before].join(', ') || 'no'} corruption, ${total} findings in all; whole repair ${whole.steps} steps, ${whole.ms} ms; of ${RUNS} kills ${untouched} left it as it was, ${killedMidway} half-done, ${finished} done`);
}
