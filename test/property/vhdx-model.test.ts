/**
 * Property test for VHDX: random sequences of write / read / block-status / flush / reopen /
 * "stopped after the log flush" (the writer dies once its log entry is durable: the reopen must
 * replay it) and, for chains, "new child", applied to a fixed VHDX, a dynamic VHDX and a
 * differencing chain (1 MiB blocks in the base, 2 MiB in the children), and to an in-memory
 * model of the raw bytes. Writes are biased toward sector and block boundaries and include
 * sub-sector pieces, which exercise sector bitmaps and the chain layer's sector copy-on-write.
 * Reads must always match the model; block status must be honest (a range not reported as data
 * reads as zeros); at the end the image reopened read-only matches the model, its log is empty
 * and vdkit check finds no corruption.
 *
 * Environment: VDKIT_PROP_RUNS (default 30 per kind); VDKIT_PROP_SEED / VDKIT_PROP_PATH replay.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, openSync, readSync, closeSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { Disk } from '../../src/index.js';
import { createChild } from '../../src/ops/child.js';
import { vhdxLogHooks } from '../../src/formats/vhdx/log.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { assertReadsLike, assertStatusHonest, rangeArb } from '../helpers/model.js';

const MiB = 2 ** 20;
const BLOCK = MiB;
/** four blocks and a partial fifth (two 2 MiB child blocks and a partial third) */
const CAPACITY = 4 * BLOCK + 7 * 512;
const RUNS = Number(process.env.VDKIT_PROP_RUNS ?? 30);
const SEED = process.env.VDKIT_PROP_SEED === undefined ? undefined : Number(process.env.VDKIT_PROP_SEED);
const PATH = process.env.VDKIT_PROP_PATH;

type Kind = 'fixed' | 'dynamic' | 'chain';
type Op =
  | { op: 'write'; offset: number; length: number; seed: number; zero: boolean }
  | { op: 'read'; offset: number; length: number }
  | { op: 'status'; offset: number; length: number }
  | { op: 'flush' }
  | { op: 'reopen' }
  | { op: 'stopAfterLog' }
  | { op: 'child' };

const BOUNDARIES = [0, 512, BLOCK, 2 * BLOCK, 3 * BLOCK, 4 * BLOCK, CAPACITY];
const range = rangeArb(CAPACITY, BOUNDARIES, [512, 4096, BLOCK, 2 * BLOCK]);
const opArb = (kind: Kind): fc.Arbitrary<Op> =>
  fc.oneof(
    { weight: 6, arbitrary: fc.tuple(range, fc.integer({ min: 1, max: 0x7fffffff }), fc.boolean()).map(([r, seed, z]) => ({ op: 'write' as const, ...r, seed, zero: z && seed % 5 === 0 })) },
    { weight: 2, arbitrary: range.map((r) => ({ op: 'read' as const, ...r })) },
    { weight: 1, arbitrary: range.map((r) => ({ op: 'status' as const, ...r })) },
    { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
    { weight: 1, arbitrary: fc.constant({ op: 'reopen' as const }) },
    { weight: 1, arbitrary: fc.constant({ op: 'stopAfterLog' as const }) },
    { weight: kind === 'chain' ? 1 : 0, arbitrary: fc.constant({ op: 'child' as const }) },
  );

/** the current header's LogGuid is zero (read with plain fs) */
function logIsEmpty(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const h = [64 * 1024, 128 * 1024].map((off) => {
      const b = Buffer.alloc(64);
      readSync(fd, b, 0, 64, off);
      return b;
    });
    const cur = h[0]!.readBigUInt64LE(8) >= h[1]!.readBigUInt64LE(8) ? h[0]! : h[1]!;
    return cur.subarray(48, 64).every((x) => x === 0);
  } finally {
    closeSync(fd);
  }
}

async function runSequence(kind: Kind, ops: Op[]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vdkit-vhdxprop-'));
  const model = Buffer.alloc(CAPACITY);
  let top = join(dir, 'base.vhdx');
  let d: Disk | undefined = await Disk.create(top, { format: 'vhdx', type: kind === 'fixed' ? 'fixed' : 'dynamic', capacity: CAPACITY, blockSize: BLOCK });
  try {
    if (kind === 'chain') {
      for (const [o, len, seed] of [
        [100, 70000, 1],
        [BLOCK + 777, 5000, 2],
        [3 * BLOCK - 10, 20, 3],
      ] as const) {
        const data = xorshiftBytes(len, seed);
        await d.write(o, data);
        data.copy(model, o);
      }
      await d.close();
      d = await createChild(top);
      top = d.path;
    }
    let depth = kind === 'chain' ? 1 : 0;
    for (const [i, o] of ops.entries()) {
      const when = `${kind} op ${i} ${JSON.stringify(o)}`;
      switch (o.op) {
        case 'write': {
          const data = o.zero ? Buffer.alloc(o.length) : xorshiftBytes(o.length, o.seed);
          await d.write(o.offset, data);
          data.copy(model, o.offset);
          await assertReadsLike(d, model, Math.max(0, o.offset - 600), Math.min(CAPACITY, o.offset + o.length + 600) - Math.max(0, o.offset - 600), when);
          break;
        }
        case 'read':
          await assertReadsLike(d, model, o.offset, o.length, when);
          break;
        case 'status':
          await assertStatusHonest(d, model, o.offset, o.length, when);
          break;
        case 'flush':
          await d.flush();
          break;
        case 'reopen':
          await d.close();
          d = undefined;
          d = await Disk.open(top);
          break;
        case 'stopAfterLog': {
          // the writer dies right after its log entry is durable; the reopen replays it
          vhdxLogHooks.afterLogFlush = () => {
            throw new Error('stopped after the log flush');
          };
          let stopped = false;
          try {
            await d.flush();
          } catch {
            stopped = true;
          } finally {
            vhdxLogHooks.afterLogFlush = undefined;
          }
          await d.close();
          d = undefined;
          if (stopped) assert.equal(logIsEmpty(top), false, `${when}: the log holds the entry`);
          d = await Disk.open(top);
          await assertReadsLike(d, model, 0, CAPACITY, `${when}: after the replay`);
          break;
        }
        case 'child':
          if (depth >= 3) break;
          await d.close();
          d = undefined;
          d = await createChild(top);
          top = d.path;
          depth++;
          break;
      }
    }
    await d.close();
    d = undefined;
    assert.ok(logIsEmpty(top), 'a clean close leaves an empty log');
    const r = await Disk.open(top, { readOnly: true });
    try {
      await assertReadsLike(r, model, 0, CAPACITY, `${kind} after the sequence, reopened`);
      await assertStatusHonest(r, model, 0, CAPACITY, `${kind} final status`);
    } finally {
      await r.close();
    }
    // the top link alone, as vdkit check opens it
    const link = await Disk.open(top, { readOnly: true, singleLink: true });
    try {
      const report = await link.image.maintenance().check!({ repair: false });
      assert.deepEqual(report.findings.filter((f) => f.kind === 'corruption'), [], 'vdkit check: no corruption');
    } finally {
      await link.close();
    }
  } finally {
    vhdxLogHooks.afterLogFlush = undefined;
    await d?.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const kind of ['fixed', 'dynamic', 'chain'] as const) {
  test(`VHDX ${kind}: random writes (incl. sub-sector), reads, status, reopens and replays match a raw model`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb(kind), { minLength: 1, maxLength: 25 }), (ops) => runSequence(kind, ops)),
      { numRuns: RUNS, seed: SEED, path: PATH, endOnFailure: true },
    );
  });
}
