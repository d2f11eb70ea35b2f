/**
 * Progress (issue 16 item 12): the ops thin their reports at the source (core/progress.ts), and
 * the CLI draws them one way for every command (cli/progress.ts): a bar that erases what it
 * overwrites on a terminal, qemu-img's plain lines elsewhere, JSON for scripts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Disk, MemoryNamespace, convert, DiskError } from '../../src/index.js';
import { ProgressGate, throttleCounts } from '../../src/core/progress.js';
import { ProgressReporter, progressBar, progressFromOptions } from '../../src/cli/progress.js';

const MiB = 2 ** 20;

test('ProgressGate: the first report, then one per 100 ms and 1 % (both), the final one once', () => {
  let clock = 0;
  const gate = new ProgressGate({ now: () => clock });
  assert.equal(gate.pass(0, 1000), true, 'the first');
  clock = 500;
  assert.equal(gate.pass(5, 1000), false, 'time enough, but less than 1 %');
  assert.equal(gate.pass(10, 1000), true, '1 % and 100 ms');
  clock = 550;
  assert.equal(gate.pass(500, 1000), false, 'far on, but only 50 ms later');
  clock = 650;
  assert.equal(gate.pass(500, 1000), true);
  clock = 651;
  assert.equal(gate.pass(1000, 1000), true, 'the final report always');
  assert.equal(gate.pass(1000, 1000), false, 'the same final report again');
  assert.equal(gate.pass(1000, 1000, 'written 7'), true, 'a final report that says more');

  const seen: [number, number][] = [];
  const counts = throttleCounts((d, t) => seen.push([d, t]), { now: () => 0 })!;
  for (let k = 0; k <= 50; k++) counts(k, 50);
  assert.deepEqual(seen, [[0, 50], [50, 50]]);
  assert.equal(throttleCounts(undefined), undefined);
});

test('convert calls onProgress about once per 1 %, not once per chunk; first 0, last the total', async () => {
  const ns = new MemoryNamespace();
  const src = await Disk.create('/src.raw', { namespace: ns, format: 'raw', capacity: 64 * MiB });
  await src.write(0, Buffer.alloc(64 * MiB, 0x5a));
  const calls: { done: number; total: number }[] = [];
  // 64 KiB chunks: 1,024 of them, the per-chunk rate of a 2 GiB convert in 2 MiB chunks
  await convert(src, '/dst.qcow2', { namespace: ns, format: 'qcow2', chunkSize: 64 * 1024, onProgress: (p) => calls.push({ done: p.done, total: p.total }) });
  await src.close();
  assert.ok(calls.length >= 2 && calls.length <= 103, `${calls.length} calls for 1,024 chunks`);
  assert.deepEqual(calls[0], { done: 0, total: 64 * MiB });
  assert.deepEqual(calls.at(-1), { done: 64 * MiB, total: 64 * MiB });
  for (let k = 1; k < calls.length; k++) assert.ok(calls[k]!.done >= calls[k - 1]!.done + 0.01 * 64 * MiB || k === calls.length - 1, `call ${k} is 1 % on`);
});

test('convert: an abort still stops it (the signal is checked, not the thinned reports)', async () => {
  const ns = new MemoryNamespace();
  const src = await Disk.create('/src.raw', { namespace: ns, format: 'raw', capacity: 8 * MiB });
  await src.write(0, Buffer.alloc(8 * MiB, 1));
  const ac = new AbortController();
  let calls = 0;
  await assert.rejects(
    convert(src, '/dst.vmdk', { namespace: ns, format: 'vmdk', chunkSize: 64 * 1024, signal: ac.signal, onProgress: () => (calls++, ac.abort()) }),
    (e: unknown) => e instanceof DiskError && e.code === 'CANCELLED',
  );
  assert.equal(calls, 1);
  assert.equal(await ns.exists('/dst.vmdk'), false);
  await src.close();
});

/** a stream that records what is written */
function recorder(isTTY: boolean): { write(s: string): boolean; isTTY: boolean; text: string } {
  return {
    isTTY,
    text: '',
    write(s: string) {
      this.text += s;
      return true;
    },
  };
}

test('progress on a terminal: each redraw erases the rest of the line; a newline at the end', () => {
  const s = recorder(true);
  let clock = 0;
  const r = new ProgressReporter({ mode: 'bar', stream: s, now: () => clock });
  clock = 1000;
  r.update({ done: 1 * MiB, total: 100 * MiB }); // ETA 99s
  clock = 10_000;
  r.update({ done: 95 * MiB, total: 100 * MiB }); // ETA 1s: shorter
  r.end();
  const draws = s.text.split('\r').slice(1);
  assert.equal(draws.length, 2);
  assert.match(draws[0]!, /ETA 99s\x1b\[K$/);
  assert.match(draws[1]!, /ETA 1s\x1b\[K\n$/);
  r.end();
  assert.ok(s.text.endsWith('\x1b[K\n'), 'one newline, not two');
});

test('progress elsewhere: qemu-img plain lines, one per whole per cent at most, ending at 100.00', () => {
  const s = recorder(false);
  const r = progressFromOptions({ progress: true }, s)!;
  assert.equal(r.mode, 'lines');
  for (let k = 0; k <= 1000; k++) r.update({ done: k, total: 1000 });
  r.end();
  const lines = s.text.split('\n');
  assert.equal(lines.pop(), '');
  assert.equal(lines.length, 101);
  assert.equal(lines[0], '    (0.00/100%)');
  assert.equal(lines[12], '    (12.00/100%)');
  assert.equal(lines[100], '    (100.00/100%)');
  assert.ok(!s.text.includes('\r'));
});

test('progress as JSON lines; no reporter without -p or --json-progress', () => {
  const s = recorder(true);
  const r = progressFromOptions({ jsonProgress: true, progress: true }, s)!;
  r.update({ done: 5, total: 10, written: 3 });
  r.end();
  const o = JSON.parse(s.text) as { done: number; total: number; written: number; percent: number };
  assert.deepEqual([o.done, o.total, o.written, o.percent], [5, 10, 3, 50]);
  assert.equal(progressFromOptions({}, s), undefined);
  assert.equal(progressFromOptions({ progress: true }, recorder(true))!.mode, 'bar');
});

test('progressBar shows fraction, rate and ETA', () => {
  assert.match(progressBar(2 * MiB, 8 * MiB, 2, 20), /^\[#####\.{15}\]  25\.0%  1 MiB\/s  ETA 6s$/);
  assert.match(progressBar(10, 10, 1, 10), /^\[#{10}\] 100\.0%/);
});
