/**
 * compact and defragment killed (SIGKILL) at random moments, 20 runs each for monolithicSparse
 * and twoGbMaxExtentSparse: every run starts from the same fragmented image (data grains and
 * zero grains written in a random order); afterwards the disk reads exactly what it read
 * before, qemu-img check and vdkit check find no corruption (leaked grains are allowed), and a
 * second, uninterrupted run finishes the job (compact: no leaks left; defragment: grains in
 * virtual order).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFile, mkdir, readdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Disk, checkDisk, compact, createDisk, defragment } from '../../src/index.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';
import { sparseFiles, sparseTables } from '../helpers/sparse-tables.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';

const WORKER = join(dirname(fileURLToPath(import.meta.url)), '../helpers/vmdk-compact-kill-worker.js');
const MiB = 2 ** 20;
const GRAIN = 65536;
const SIZE = 16 * MiB;
const RUNS = 20;

interface Worker {
  /** start the operation; SIGKILL it after `delay` ms unless it finished first */
  go(delay: number): Promise<{ killed: boolean; ms: number }>;
  /** end a worker that was never started */
  stop(): void;
}

/** spawn a worker and wait until it is loaded (node's start-up is most of a run's cost) */
function startWorker(args: string[]): Promise<Worker> {
  return new Promise((resolveReady, rejectReady) => {
    const p = spawn(process.execPath, [WORKER, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let started = 0;
    let timer: NodeJS.Timeout | undefined;
    let settle: ((r: { killed: boolean; ms: number }) => void) | undefined;
    let fail: ((e: Error) => void) | undefined;
    p.stderr.on('data', (c) => (err += c));
    p.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out === 'ready\n') {
        resolveReady({
          go: (delay) =>
            new Promise((res, rej) => {
              settle = res;
              fail = rej;
              started = performance.now();
              p.stdin.write('go\n');
              if (Number.isFinite(delay)) timer = setTimeout(() => p.kill('SIGKILL'), delay);
            }),
          stop: () => p.kill('SIGKILL'),
        });
      }
    });
    p.on('error', rejectReady);
    p.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const ms = performance.now() - started;
      if (signal === 'SIGKILL') settle?.({ killed: true, ms });
      else if (code === 0 && out.includes('done')) settle?.({ killed: false, ms });
      else {
        const e = new Error(`worker ${args.join(' ')} failed (${code}): ${err}`);
        if (fail) fail(e);
        else rejectReady(e);
      }
    });
  });
}

async function copyDir(from: string, to: string): Promise<void> {
  await rm(to, { recursive: true, force: true });
  await mkdir(to);
  for (const n of await readdir(from)) await copyFile(join(from, n), join(to, n));
}

async function readAll(path: string): Promise<Buffer> {
  const d = await Disk.open(path, { readOnly: true });
  try {
    return await d.read(0, d.capacity);
  } finally {
    await d.close();
  }
}

async function assertSound(path: string, expected: Buffer, what: string, leaksAllowed: boolean): Promise<void> {
  assert.ok((await readAll(path)).equals(expected), `${what}: content changed`);
  const args = ['check', '-q', '-f', 'vmdk', path];
  const q = await run('qemu-img', args);
  assert.ok(q.code === 0 || q.code === 3, `${what}: ${describeRun('qemu-img', args, q)}`);
  const r = await checkDisk(path, { repair: false });
  const bad = r.findings.filter((f) => f.kind === 'corruption' || (!leaksAllowed && f.kind === 'leak'));
  assert.deepEqual(bad, [], `${what}: vdkit check`);
}

async function inVirtualOrder(img: string): Promise<boolean> {
  for (const f of await sparseFiles(img)) {
    const st = await sparseTables(f);
    if (!st.gte.filter((e) => e > 1).every((e, i) => e === st.overHead + i * st.grainSectors)) return false;
  }
  return true;
}

const CASES = (['monolithicSparse', 'twoGbMaxExtentSparse'] as const).flatMap((type) => (['compact', 'defrag'] as const).map((op) => ({ type, op })));

test('compact and defragment killed at random moments keep the content', { concurrency: true }, async (t) => {
  await Promise.all(CASES.map(({ type, op }) => t.test(`${op} ${type}`, async (t) => {
    if (!skipUnless(t, 'qemu-img')) return;
    const dir = (await tmpDir(t)).path;
    const template = join(dir, 'template');
    await mkdir(template);
    const rnd = mulberry32(type.length * 31 + op.length);
    // 256 grains: 160 of data and 64 of zeros written in a random order, 32 never written
    const grains = [...Array(SIZE / GRAIN).keys()].sort(() => rnd() - 0.5);
    const expected = Buffer.alloc(SIZE);
    const d = await createDisk(join(template, 'd.vmdk'), { type, capacity: SIZE });
    for (const [k, g] of grains.slice(0, 224).entries()) {
      const data = k < 160 ? xorshiftBytes(GRAIN, g + 1) : Buffer.alloc(GRAIN);
      data.copy(expected, g * GRAIN);
      await d.write(g * GRAIN, data);
    }
    await d.close();
    const work = join(dir, 'work');
    const img = join(work, 'd.vmdk');
    // how long an uninterrupted run takes, so the kills spread over all of it
    await copyDir(template, work);
    const full = await (await startWorker([op, img])).go(Infinity);
    await assertSound(img, expected, 'uninterrupted run', op === 'defrag');
    let killed = 0;
    let estimate = full.ms;
    const runs = RUNS;
    // the next worker loads while the previous run is checked
    let next = startWorker([op, img]);
    for (let i = 0; i < runs; i++) {
      await copyDir(template, work);
      const worker = await next;
      const r = await worker.go(rnd() * estimate * 1.1);
      next = startWorker([op, img]);
      if (r.killed) killed++;
      // a loaded machine makes single timings noisy: the fastest finished run sets the range
      else estimate = Math.min(estimate, r.ms);
      await assertSound(img, expected, `run ${i} (${r.killed ? `killed after ${r.ms.toFixed(1)} ms` : 'finished'})`, true);
      if (i % 4 === 0) {
        // the operation runs again over whatever the kill left and finishes the job
        if (op === 'compact') await compact(img);
        else await defragment(img);
        await assertSound(img, expected, `run ${i} rerun`, op === 'defrag');
        if (op === 'defrag') assert.ok(await inVirtualOrder(img), `run ${i} rerun: grains in virtual order`);
      }
    }
    (await next).stop();
    t.diagnostic(`${killed} of ${runs} runs killed; an uninterrupted run took ${full.ms.toFixed(1)} ms`);
    assert.ok(killed >= runs / 4, `enough runs were killed (${killed})`);
  })));
});
