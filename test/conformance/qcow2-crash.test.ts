/**
 * qcow2 crash safety: a writer process (test/helpers/qcow2-crash-writer.ts) writes, flushes and
 * acknowledges chunks until it is SIGKILLed at a random moment, 20 times (512 B, 4 KiB and
 * 64 KiB clusters; every fourth run writes the top of a chain over a base with data, through the
 * chain layer's copy-on-write). After each kill:
 * - every write acknowledged after a completed flush reads back (the range of the write in
 *   flight may hold either content);
 * - `qemu-img check` finds no corruption (exit 0, or 3 for leaks: clusters allocated by the write
 *   in flight) and vdkit's check agrees on the corruption count;
 * - `vdkit check --repair` (the library call) reclaims the leaks, after which qemu-img check
 *   exits 0.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Disk } from '../../src/index.js';
import { openLink } from '../../src/disk.js';
import { createChild } from '../../src/ops/child.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';
import { qcow2ChunkFor } from '../helpers/qcow2-crash-pattern.js';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';

const WRITER = join(dirname(fileURLToPath(import.meta.url)), '../helpers/qcow2-crash-writer.js');
const MiB = 2 ** 20;
const RUNS = 20;

/** Start the writer, SIGKILL it `delayMs` after its first acknowledgement; the acknowledged count. */
function runAndKill(path: string, delayMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [WRITER, path], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    let err = '';
    let last = -1;
    let timer: NodeJS.Timeout | undefined;
    p.stderr.on('data', (c) => (err += c));
    p.stdout.on('data', (c: Buffer) => {
      buf += c.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) {
        if (!l.startsWith('ack ')) continue;
        last = Number(l.slice(4));
        timer ??= setTimeout(() => p.kill('SIGKILL'), delayMs);
      }
    });
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal === 'SIGKILL') resolve(last);
      else reject(new Error(`writer ended on its own (${code}): ${err}`));
    });
  });
}

interface QemuCheck {
  corruptions?: number;
  leaks?: number;
  'check-errors'?: number;
}

async function qemuCheck(path: string): Promise<{ code: number; json: QemuCheck; text: string }> {
  const args = ['check', '--output=json', path];
  const r = await run('qemu-img', args);
  let json: QemuCheck = {};
  try {
    json = JSON.parse(r.stdout) as QemuCheck;
  } catch {
    /* reported below */
  }
  return { code: r.code, json, text: describeRun('qemu-img', args, r) };
}

test(`qcow2: ${RUNS} writers killed at random moments lose no flushed write and leave no corruption`, async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const rand = mulberry32(0x9c0f2);
  const dir = (await tmpDir(t, 'vdkit-qcow2-crash-')).path;
  let leaky = 0;
  for (let runNo = 0; runNo < RUNS; runNo++) {
    const cs = [512, 4096, 65536][runNo % 3]!;
    const chain = runNo % 4 === 3;
    const capacity = 24 * MiB;
    const base = join(dir, `r${runNo}-base.qcow2`);
    const model = Buffer.alloc(capacity);
    const b = await Disk.create(base, { format: 'qcow2', capacity, clusterSize: cs });
    let top = base;
    let topCs = cs;
    if (chain) {
      const seed = xorshiftBytes(3 * MiB, runNo + 1);
      await b.write(MiB, seed);
      seed.copy(model, MiB);
      await b.close();
      top = join(dir, `r${runNo}-top.qcow2`);
      const c = await createChild(base, top);
      topCs = c.image.clusterSize;
      await c.close();
    } else await b.close();

    const delay = Math.floor(rand() * 250);
    const last = await runAndKill(top, delay);
    const label = `run ${runNo} (cluster ${cs}${chain ? ', chain' : ''}, killed ${delay} ms after the first ack, ${last + 1} acks)`;
    for (let i = 0; i <= last; i++) {
      const { offset, data } = qcow2ChunkFor(i, capacity, topCs);
      data.copy(model, offset);
    }
    const inflight = qcow2ChunkFor(last + 1, capacity, topCs);

    const d = await Disk.open(top, { readOnly: true });
    const got = await d.read(0, capacity);
    await d.close();
    for (let at = 0; at < capacity; at += 65536) {
      const end = Math.min(at + 65536, capacity);
      const lo = Math.max(at, inflight.offset);
      const hi = Math.min(end, inflight.offset + inflight.data.length);
      if (lo < hi) {
        // outside the write in flight, its block must still match
        assert.ok(got.subarray(at, lo).equals(model.subarray(at, lo)) && got.subarray(hi, end).equals(model.subarray(hi, end)), `${label}: bytes around the write in flight at ${at}`);
        continue;
      }
      assert.ok(got.subarray(at, end).equals(model.subarray(at, end)), `${label}: block at ${at} differs`);
    }

    const q = await qemuCheck(top);
    assert.ok(q.code === 0 || q.code === 3, `${label}: qemu-img check exit ${q.code}\n${q.text}`);
    assert.equal(q.json.corruptions ?? 0, 0, `${label}: corruptions\n${q.text}`);
    if ((q.json.leaks ?? 0) > 0) leaky++;
    const link = await openLink(top, { cowByCaller: true });
    const report = await link.maintenance().check!({ repair: false });
    assert.equal(report.findings.filter((f) => f.kind === 'corruption').length, 0, `${label}: vdkit check finds no corruption`);
    assert.equal(report.findings.filter((f) => f.kind === 'leak').reduce((n, f) => n + (f.count ?? 1), 0), q.json.leaks ?? 0, `${label}: vdkit and qemu-img count the same leaks`);
    await link.maintenance().check!({ repair: true });
    await link.close();
    const after = await qemuCheck(top);
    assert.equal(after.code, 0, `${label}: after vdkit's repair\n${after.text}`);
  }
  t.diagnostic(`${leaky} of ${RUNS} kills left leaks (repaired)`);
});
