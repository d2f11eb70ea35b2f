/**
 * VHDX crash safety: a writer child process (test/helpers/vhdx-crash-writer.ts) is SIGKILLed at
 * a random moment — in a data write, a block allocation, a log write, the in-place apply or a
 * header update — 20 times, over a dynamic image and over a differencing child (sector bitmaps,
 * partially present blocks). After each kill:
 * - the image opens read-only (a pending log is replayed into memory, nothing is written) and
 *   every write acknowledged by a completed flush reads back, except where a write that was not
 *   acknowledged may have landed;
 * - it opens read-write (the log is replayed into the file) and reads the same;
 * - vdkit check finds no corruption (leaks from allocations never committed are allowed) and a
 *   clean close leaves the log empty.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Disk } from '../../src/index.js';
import { createChild } from '../../src/ops/child.js';
import { chunkFor } from '../helpers/crash-pattern.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';
import { runKilledWhen } from '../helpers/spawn-lines.js';
import { tmpDir } from '../helpers/tools.js';

const WRITER = join(dirname(fileURLToPath(import.meta.url)), '../helpers/vhdx-crash-writer.js');
const MiB = 2 ** 20;
const CAPACITY = 24 * MiB;
const RUNS = 20;

/** bytes that acknowledged writes decide: everything outside the writes that were started but not acknowledged */
function verify(got: Buffer, model: Buffer, unacked: { offset: number; data: Buffer }[], label: string): void {
  const holes = unacked.map((u) => [u.offset, u.offset + u.data.length] as const).sort((a, b) => a[0] - b[0]);
  let at = 0;
  const check = (from: number, to: number) => {
    if (to <= from || got.subarray(from, to).equals(model.subarray(from, to))) return;
    let i = from;
    while (got[i] === model[i]) i++;
    assert.fail(`${label}: byte ${i} reads ${got[i]}, the acknowledged writes say ${model[i]}`);
  };
  for (const [a, z] of holes) {
    check(at, Math.max(at, a));
    at = Math.max(at, z);
  }
  check(at, CAPACITY);
}

test(`a writer SIGKILLed at random moments (${RUNS} runs, dynamic and differencing): the image opens, replays its log, and every acknowledged write reads back`, async (t) => {
  const dir = (await tmpDir(t)).path;
  const rand = mulberry32(0x5eed);
  let replays = 0;
  for (let run = 0; run < RUNS; run++) {
    const kind = run % 2 === 0 ? 'dynamic' : 'differencing';
    const label = `run ${run} (${kind})`;
    const base = join(dir, `base-${run}.vhdx`);
    const model = Buffer.alloc(CAPACITY);
    const b = await Disk.create(base, { format: 'vhdx', capacity: CAPACITY, blockSize: MiB });
    let path = base;
    if (kind === 'differencing') {
      const content = xorshiftBytes(3 * MiB, run + 1);
      await b.write(2 * MiB + 123, content);
      content.copy(model, 2 * MiB + 123);
      await b.close();
      path = join(dir, `child-${run}.vhdx`);
      await (await createChild(base, path)).close();
    } else await b.close();

    const every = 1 + Math.floor(rand() * 4);
    const killAt = 3 + Math.floor(rand() * 60);
    const r = await runKilledWhen(WRITER, [path, String(every)], (_line, count) => count >= killAt);
    assert.ok(r.killed, `${label}: the writer was killed`);
    let lastAck = -1;
    let lastStart = -1;
    for (const l of r.lines) {
      const [what, i] = l.split(' ');
      if (what === 'ack') lastAck = Math.max(lastAck, Number(i));
      if (what === 'start') lastStart = Math.max(lastStart, Number(i));
    }
    for (let i = 0; i <= lastAck; i++) {
      const { offset, data } = chunkFor(i, CAPACITY);
      data.copy(model, offset);
    }
    const unacked = [];
    for (let i = lastAck + 1; i <= lastStart + 1; i++) unacked.push(chunkFor(i, CAPACITY));

    const ro = await Disk.open(path, { readOnly: true });
    if ((await ro.info()).warnings?.some((w) => /log/.test(w))) replays++;
    verify(await ro.read(0, CAPACITY), model, unacked, `${label}, read-only open`);
    await ro.close();
    const rw = await Disk.open(path);
    verify(await rw.read(0, CAPACITY), model, unacked, `${label}, read-write open (log replayed)`);
    await rw.close();
    const link = await Disk.open(path, { readOnly: true, singleLink: true });
    const report = await link.image.maintenance().check!({ repair: false });
    await link.close();
    assert.deepEqual(report.findings.filter((f) => f.kind === 'corruption'), [], `${label}: vdkit check`);
    assert.ok(report.findings.every((f) => f.kind !== 'warning' || f.struct !== 'header'), `${label}: both headers valid after a clean close`);
  }
  t.diagnostic(`${replays} of ${RUNS} kills left a log entry to replay`);
});
