/**
 * Shared by the repair kill tests: run a repair in a child process (repair-runner.ts) and
 * SIGKILL it at a random moment, 20 runs on copies of one damaged template. Afterwards a check
 * finds no corruption that was not there before, an image whose corruptions are already gone
 * opens and reads the expected content, and a second repair finishes the job (clean, expected
 * content, qemu-img check clean where it knows the format).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
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

/** Run the repair; SIGKILL it `delayMs` after it says it is ready. Resolves with whether it was killed, and its time when it was not. */
export function repairKilledAfter(path: string, delayMs: number): Promise<{ killed: boolean; ms?: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [RUNNER, path], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let timer: NodeJS.Timeout | undefined;
    p.stderr.on('data', (c) => (err += c));
    p.stdout.on('data', (c: Buffer) => {
      const before = out;
      out += c.toString();
      if (!before.includes('ready\n') && out.includes('ready\n')) {
        if (delayMs <= 0) p.kill('SIGKILL');
        else timer = setTimeout(() => p.kill('SIGKILL'), delayMs);
      }
    });
    p.on('error', reject);
    p.on('close', (code, signal) => {
      // a pending timer would keep the test process alive for its whole delay
      clearTimeout(timer);
      if (signal === 'SIGKILL') resolve({ killed: true });
      else if (code === 0) resolve({ killed: false, ms: Number(/done ([\d.]+)/.exec(out)?.[1]) });
      else reject(new Error(`repair runner failed (${code}): ${err}`));
    });
  });
}

const corruptFields = (r: CheckReport) => r.findings.filter((f) => f.kind === 'corruption' && !f.repaired).map((f) => f.field!);
const problems = (r: CheckReport) => r.findings.filter((f) => f.kind !== 'warning' && !f.repaired).length;

/**
 * The 20 killed repairs of `template` (which must hold at least one corruption or leak);
 * `qemuFormat`: qemu-img check must call the finished image clean.
 */
export async function repairKillRuns(t: TestContext, label: string, template: string, expected: Buffer, seed: number, qemuFormat?: string): Promise<void> {
  const dir = (await tmpDir(t, `vdkit-repair-kill-${label}-`)).path;
  const original = await checkDisk(template, { repair: false, chain: false });
  const before = new Set(corruptFields(original));
  const total = problems(original);
  assert.ok(total > 0, `${label}: the template is damaged: ${JSON.stringify(original.findings)}`);
  // how long a whole repair takes here: kills land anywhere in [0, 1.2 x that]
  const probe = join(dir, 'probe');
  await copyFile(template, probe);
  const whole = await repairKilledAfter(probe, 60_000);
  assert.equal(whole.killed, false);
  const rnd = mulberry32(seed);
  let killedMidway = 0;
  const one = async (i: number) => {
    const p = join(dir, `run${i}.${label}`);
    await copyFile(template, p);
    const r = await repairKilledAfter(p, rnd() * whole.ms! * 1.2);
    const after = await checkDisk(p, { repair: false, chain: false });
    const now = corruptFields(after);
    for (const f of now) assert.ok(before.has(f), `${label} run ${i}: a killed repair left a new corruption ${f}: ${JSON.stringify(after.findings)}`);
    const left = problems(after);
    if (left > 0 && left < total) killedMidway++;
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
  t.diagnostic(`${label}: whole repair ${whole.ms} ms; ${killedMidway} of ${RUNS} kills left a half-done repair`);
}
