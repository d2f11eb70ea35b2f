/**
 * Property test for qcow2: random sequences of write / read / block-status / flush / reopen (and,
 * for chains, "new child") applied to qcow2 images and to an in-memory model of the raw bytes.
 * Kinds: 512-byte clusters (an L2 table maps only 32 KiB, refcount blocks fill fast), 64 KiB
 * clusters, version 2 with 4 KiB clusters, and a chain (4 KiB base, 64 KiB children over it).
 * Writes are biased toward cluster and L2-table boundaries, include sub-cluster pieces and
 * all-zero buffers (zero flags over data and over a parent). Reads must always match the model;
 * block status must be honest; at the end the image reopened read-only matches the model and
 * vdkit's check finds neither leaks nor corruptions in any link.
 *
 * Environment: VDKIT_PROP_RUNS (default 40 per kind); VDKIT_PROP_SEED / VDKIT_PROP_PATH replay.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { Disk } from '../../src/index.js';
import { openLink } from '../../src/disk.js';
import { createChild } from '../../src/ops/child.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { assertReadsLike, assertStatusHonest } from '../helpers/model.js';

const KiB = 1024;
const RUNS = Number(process.env.VDKIT_PROP_RUNS ?? 40);
const SEED = process.env.VDKIT_PROP_SEED === undefined ? undefined : Number(process.env.VDKIT_PROP_SEED);
const PATH = process.env.VDKIT_PROP_PATH;

interface Kind {
  name: string;
  clusterSize: number;
  type: 'v2' | 'v3';
  capacity: number;
  chain: boolean;
}

const KINDS: Kind[] = [
  { name: '512-byte clusters', clusterSize: 512, type: 'v3', capacity: 3 * 32 * KiB + 5 * 512, chain: false },
  { name: '64 KiB clusters', clusterSize: 64 * KiB, type: 'v3', capacity: 1024 * KiB + 7 * 512, chain: false },
  { name: 'version 2, 4 KiB clusters', clusterSize: 4 * KiB, type: 'v2', capacity: 640 * KiB + 512, chain: false },
  { name: 'chain', clusterSize: 4 * KiB, type: 'v3', capacity: 768 * KiB + 512, chain: true },
];

type Op =
  | { op: 'write'; offset: number; length: number; seed: number; zero: boolean }
  | { op: 'read'; offset: number; length: number }
  | { op: 'status'; offset: number; length: number }
  | { op: 'flush' }
  | { op: 'reopen' }
  | { op: 'child' };

function arbitraries(k: Kind): fc.Arbitrary<Op> {
  const cs = k.clusterSize;
  const span = (cs * cs) / 8;
  const boundaries = [0, cs, 2 * cs, span, 2 * span, 64 * KiB, k.capacity].filter((b) => b <= k.capacity);
  const position = fc.oneof(
    { weight: 3, arbitrary: fc.tuple(fc.constantFrom(...boundaries), fc.integer({ min: -1500, max: 1500 })).map(([b, d]) => b + d) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: Math.floor(k.capacity / cs) - 1 }).map((c) => c * cs) },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: k.capacity - 1 }) },
  );
  const length = fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: 1, max: 600 }) },
    { weight: 2, arbitrary: fc.constantFrom(cs, 2 * cs, 64 * KiB) },
    { weight: 2, arbitrary: fc.integer({ min: 1, max: 200 * KiB }) },
  );
  const range = fc.tuple(position, length).map(([p, len]) => {
    const offset = Math.max(0, Math.min(p, k.capacity - 1));
    return { offset, length: Math.min(len, k.capacity - offset) };
  });
  return fc.oneof(
    { weight: 6, arbitrary: fc.tuple(range, fc.integer({ min: 1, max: 0x7fffffff }), fc.boolean()).map(([r, seed, z]) => ({ op: 'write' as const, ...r, seed, zero: z && seed % 3 === 0 })) },
    { weight: 2, arbitrary: range.map((r) => ({ op: 'read' as const, ...r })) },
    { weight: 1, arbitrary: range.map((r) => ({ op: 'status' as const, ...r })) },
    { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
    { weight: 1, arbitrary: fc.constant({ op: 'reopen' as const }) },
    { weight: k.chain ? 1 : 0, arbitrary: fc.constant({ op: 'child' as const }) },
  );
}

async function runSequence(k: Kind, ops: Op[]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vdkit-qcow2prop-'));
  const model = Buffer.alloc(k.capacity);
  let top = join(dir, 'base.qcow2');
  const links = [top];
  let d: Disk | undefined = await Disk.create(top, { format: 'qcow2', type: k.type, capacity: k.capacity, clusterSize: k.clusterSize });
  try {
    if (k.chain) {
      for (const [o, len, seed] of [
        [100, 70000, 1],
        [300 * KiB + 777, 5000, 2],
      ] as const) {
        const data = xorshiftBytes(len, seed);
        await d.write(o, data);
        data.copy(model, o);
      }
      await d.close();
      d = await createChild(top);
      top = d.path;
      links.push(top);
    }
    let depth = k.chain ? 1 : 0;
    for (const [i, o] of ops.entries()) {
      const when = `${k.name} op ${i} ${JSON.stringify(o)}`;
      switch (o.op) {
        case 'write': {
          const data = o.zero ? Buffer.alloc(o.length) : xorshiftBytes(o.length, o.seed);
          await d.write(o.offset, data);
          data.copy(model, o.offset);
          const a = Math.max(0, o.offset - 600);
          await assertReadsLike(d, model, a, Math.min(k.capacity, o.offset + o.length + 600) - a, when);
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
        case 'child':
          if (depth >= 3) break;
          await d.close();
          d = undefined;
          d = await createChild(top);
          top = d.path;
          links.push(top);
          depth++;
          break;
      }
    }
    await d.close();
    d = undefined;
    const r = await Disk.open(top, { readOnly: true });
    try {
      await assertReadsLike(r, model, 0, k.capacity, `${k.name} after the sequence, reopened`);
      await assertStatusHonest(r, model, 0, k.capacity, `${k.name} final status`);
    } finally {
      await r.close();
    }
    for (const p of links) {
      const link = await openLink(p, { readOnly: true });
      try {
        const report = await link.maintenance().check!({ repair: false });
        assert.deepEqual(report.findings, [], `${k.name}: check of ${p}`);
      } finally {
        await link.close();
      }
    }
  } finally {
    await d?.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const k of KINDS) {
  test(`qcow2 ${k.name}: random writes (sub-cluster, zeros), reads, status and reopens match a raw model; check stays clean`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(arbitraries(k), { minLength: 1, maxLength: 25 }), (ops) => runSequence(k, ops)),
      { numRuns: RUNS, seed: SEED, path: PATH, endOnFailure: true },
    );
  });
}
