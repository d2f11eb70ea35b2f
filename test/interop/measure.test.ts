/**
 * measure (qemu-img measure, VixDiskLib_SpaceNeededForClone) against what convert really writes
 * and against qemu-img:
 *
 * - a qcow2 chain made by qemu-img (base + overlay, 2600 MiB + 7 sectors, seeded random data in
 *   ranges that straddle grains, blocks, the 2047 MiB split-extent boundary and the end) is
 *   measured for the 13 kinds vdkit writes, converted to each, and the files compared: fixed and
 *   flat kinds to the byte; sparse kinds within 1 % + the format's metadata, never below what
 *   the convert wrote; vmfsThin against the blocks the flat file holds on this file system
 * - qemu-img measure -O qcow2 (three cluster sizes) and -O raw of the same chain: raw equal,
 *   qcow2 within qemu's own extra (it counts L2 tables for the whole disk) + 1 %
 * - --size alone: exactly the size of an empty image of each kind as vdkit creates it
 * - streamOptimized: an upper bound for qemu-img's and vdkit's own stream conversions of the chain
 * - the CLI prints qemu-img's two lines, --json, and refuses a call with neither FILE nor --size
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Disk, convert, measure } from '../../src/index.js';
import { measureLayout } from '../../src/formats/registry.js';
import { skipUnless, tmpDir } from '../helpers/tools.js';
import { MiB, Rng, runOk, seedOf } from './support.js';

const BIN = join(resolve(dirname(fileURLToPath(import.meta.url)), '../../..'), 'bin', 'vdkit.js');
const CAPACITY = 2600 * MiB + 7 * 512;

interface Kind {
  format: string;
  type?: string;
  /** the whole disk is in the files whatever the data: measure must be exact */
  exact: boolean;
}

const KINDS: Kind[] = [
  { format: 'qcow2', exact: false },
  { format: 'vmdk', type: 'monolithicSparse', exact: false },
  { format: 'vmdk', type: 'twoGbMaxExtentSparse', exact: false },
  { format: 'vmdk', type: 'monolithicFlat', exact: true },
  { format: 'vmdk', type: 'twoGbMaxExtentFlat', exact: true },
  { format: 'vmdk', type: 'vmfs', exact: true },
  { format: 'vmdk', type: 'vmfsThin', exact: false },
  { format: 'vdi', type: 'dynamic', exact: false },
  { format: 'vdi', type: 'fixed', exact: true },
  { format: 'vhd', type: 'dynamic', exact: false },
  { format: 'vhd', type: 'fixed', exact: true },
  { format: 'vhdx', type: 'dynamic', exact: false },
  { format: 'vhdx', type: 'fixed', exact: true },
  { format: 'raw', exact: true },
];

const label = (k: Kind) => `${k.format}${k.type ? ` ${k.type}` : ''}`;
const fileName = (k: Kind) => `out-${k.format}-${k.type ?? 'default'}.${k.format}`;

/** base: qemu-img create + vdkit writes of random data; overlay: qemu-img create -b + qemu-io writes */
async function makeChain(dir: string): Promise<string> {
  const base = join(dir, 'base.qcow2');
  const top = join(dir, 'top.qcow2');
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(CAPACITY)], 'qemu-img create');
  const rng = new Rng(seedOf('measure-chain'));
  const d = await Disk.open(base, {});
  try {
    const writes: [number, number][] = [
      [0, MiB],
      [5 * MiB + 4096, 200 * 1024],
      [64 * MiB - 32 * 1024, 64 * 1024],
      [2047 * MiB - 512 * 1024, MiB], // across the first split extent's end (4192256 sectors)
      [CAPACITY - 100 * 1024, 100 * 1024], // the last, partial, grain/block/cluster
    ];
    for (const [offset, length] of writes) await d.write(offset, rng.bytes(length));
  } finally {
    await d.close();
  }
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', top], 'qemu-img create -b');
  await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 2100M 3M', '-c', 'write -P 0xa5 300M 4k', top], 'qemu-io write');
  return top;
}

async function filesOf(path: string): Promise<{ bytes: number; allocated: number }> {
  const d = await Disk.open(path, { readOnly: true });
  const files = (await d.info()).files;
  await d.close();
  let bytes = 0;
  let allocated = 0;
  for (const f of new Set(files)) {
    const st = await stat(f);
    bytes += st.size;
    allocated += st.blocks * 512;
  }
  return { bytes, allocated };
}

function vdkit(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const p = spawn(process.execPath, [BIN, ...args], { cwd });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    p.on('error', rej);
    p.on('close', (code) => res({ code: code ?? -1, stdout, stderr }));
  });
}

test('measure: every kind vdkit writes, against the files its convert produces from a qemu-made chain', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-measure-')).path;
  const top = await makeChain(dir);
  const src = await Disk.open(top, { readOnly: true });
  try {
    assert.equal(src.capacity, CAPACITY);
    for (const k of KINDS) {
      const out = join(dir, fileName(k));
      const m = await measure(src, { format: k.format, type: k.type, name: out });
      const z = await measure(src, { format: k.format, type: k.type, name: out, detectZeroes: true });
      await convert(src, out, { format: k.format, type: k.type });
      const { bytes, allocated } = await filesOf(out);
      const metadata = measureLayout(k.format, { capacity: CAPACITY, type: k.type }, out).required([]);
      t.diagnostic(`${label(k)}: measure required ${m.required} (reading the data: ${z.required}), fully allocated ${m.fullyAllocated}; convert wrote ${bytes} bytes (${allocated} allocated)`);
      assert.ok(z.required <= m.required, `${label(k)}: reading the data can only find fewer units`);
      assert.equal(z.fullyAllocated, m.fullyAllocated);
      assert.ok(m.fullyAllocated >= m.required, `${label(k)}: fully allocated ${m.fullyAllocated} < required ${m.required}`);
      if (k.type === 'vmfsThin') {
        // a thin disk on VMFS takes its data in 1 MiB file blocks: at least what this file system holds,
        // at most one block per data range more (7 ranges) + 1 %
        assert.ok(m.required >= allocated - 4096, `${label(k)}: required ${m.required} below the ${allocated} bytes allocated`);
        assert.ok(m.required <= allocated * 1.01 + 7 * 2 * MiB, `${label(k)}: required ${m.required} far above the ${allocated} bytes allocated`);
        assert.equal(m.fullyAllocated, bytes, `${label(k)}: fully allocated is the files' length`);
      } else if (k.exact) {
        assert.equal(m.required, bytes, `${label(k)}: required must be the files' exact size`);
        assert.equal(m.fullyAllocated, bytes, `${label(k)}: fully allocated must be the files' exact size`);
      } else {
        for (const [how, r] of [['block status', m.required], ['reading the data', z.required]] as const) {
          assert.ok(r >= bytes, `${label(k)} (${how}): required ${r} is less than the ${bytes} bytes convert wrote`);
          assert.ok(r <= bytes * 1.01 + metadata, `${label(k)} (${how}): required ${r} is more than 1 % + ${metadata} metadata above ${bytes}`);
        }
      }
    }
  } finally {
    await src.close();
  }
});

test('measure: qemu-img measure agrees for qcow2 (three cluster sizes) and raw; vdkit matches its own convert', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-measure-q-')).path;
  const top = await makeChain(dir);
  const src = await Disk.open(top, { readOnly: true });
  try {
    for (const cs of [512, 4096, 65536]) {
      const q = JSON.parse((await runOk('qemu-img', ['measure', '--output=json', '-O', 'qcow2', '-o', `cluster_size=${cs}`, top], 'qemu-img measure')).stdout) as { required: number; 'fully-allocated': number };
      const m = await measure(src, { format: 'qcow2', clusterSize: cs });
      const z = await measure(src, { format: 'qcow2', clusterSize: cs, detectZeroes: true });
      const out = join(dir, `cs${cs}.qcow2`);
      await convert(src, out, { format: 'qcow2', clusterSize: cs });
      const bytes = (await stat(out)).size;
      // qemu-img counts L2 tables and refcounts (16 bits a cluster) as if the whole disk were
      // allocated; vdkit counts those the data needs
      const clustersAll = Math.ceil(CAPACITY / cs);
      const qemuExtra = clustersAll * 8 + (clustersAll + Math.ceil((clustersAll * 8) / cs)) * 2;
      t.diagnostic(`qcow2 cluster ${cs}: vdkit ${m.required} (reading the data ${z.required}) / ${m.fullyAllocated}, qemu-img ${q.required} / ${q['fully-allocated']}, vdkit convert wrote ${bytes}`);
      assert.ok(m.required <= q.required * 1.01 + 4 * cs, `cluster ${cs}: vdkit ${m.required} above qemu-img's ${q.required} + 1 %`);
      assert.ok(m.required >= q.required - q.required * 0.01 - qemuExtra * 1.05 - 8 * cs, `cluster ${cs}: vdkit ${m.required} below qemu-img's ${q.required} by more than qemu's whole-disk metadata (${qemuExtra}) + 1 %`);
      assert.ok(Math.abs(m.fullyAllocated - q['fully-allocated']) <= q['fully-allocated'] * 0.01 + 4 * cs, `cluster ${cs}: fully allocated ${m.fullyAllocated} vs qemu-img ${q['fully-allocated']}`);
      // the source's 64 KiB clusters hold zero padding that smaller target clusters skip: only
      // reading the data finds that, and then vdkit's number is its convert's size, give or take
      // the few clusters where the allocator places a new refcount block
      assert.ok(Math.abs(z.required - bytes) <= bytes * 0.01 + 8 * cs, `cluster ${cs}: vdkit ${z.required} (reading the data) vs its convert's ${bytes} bytes`);
      assert.ok(m.required >= bytes, `cluster ${cs}: vdkit ${m.required} below its convert's ${bytes} bytes`);
    }
    const qraw = JSON.parse((await runOk('qemu-img', ['measure', '--output=json', '-O', 'raw', top], 'qemu-img measure')).stdout) as { required: number; 'fully-allocated': number };
    const raw = await measure(src, { format: 'raw' });
    assert.equal(raw.required, qraw.required);
    assert.equal(raw.fullyAllocated, qraw['fully-allocated']);
  } finally {
    await src.close();
  }
});

test('measure --size: exactly the size of a fresh image of every kind', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-measure-size-')).path;
  for (const capacity of [CAPACITY, 20 * MiB]) {
    for (const k of KINDS) {
      const out = join(dir, `${capacity}-${fileName(k)}`);
      const m = await measure(undefined, { format: k.format, type: k.type, capacity, name: out });
      const d = await Disk.create(out, { format: k.format, type: k.type, capacity });
      await d.close();
      const { bytes, allocated } = await filesOf(out);
      if (k.type === 'vmfsThin') assert.ok(m.required <= allocated + 4096 && m.required >= 0, `${label(k)} ${capacity}: required ${m.required} vs ${allocated} allocated`);
      else assert.equal(m.required, bytes, `${label(k)} ${capacity}: measure --size must be the empty image's size`);
    }
  }
});

test('measure streamOptimized: an upper bound for qemu-img\'s and vdkit\'s stream conversions of the same chain', async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t, 'vdkit-measure-s-')).path;
  const top = await makeChain(dir);
  const src = await Disk.open(top, { readOnly: true });
  try {
    const m = await measure(src, { format: 'vmdk', type: 'streamOptimized' });
    const out = join(dir, 'stream.vmdk');
    await runOk('qemu-img', ['convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', top, out], 'qemu-img convert streamOptimized');
    const bytes = (await stat(out)).size;
    // vdkit's own writer, at its fastest and at its smallest level
    const ours: number[] = [];
    for (const level of [1, 9]) {
      const mine = join(dir, `stream-${level}.vmdk`);
      await convert(src, mine, { format: 'vmdk', type: 'streamOptimized', compressionLevel: level });
      ours.push((await stat(mine)).size);
    }
    t.diagnostic(`streamOptimized: vdkit bound ${m.required}, qemu-img wrote ${bytes}, vdkit wrote ${ours.join(' (level 1) and ')} (level 9) (${m.dataBytes} data bytes)`);
    assert.ok(m.required >= bytes, `bound ${m.required} is below qemu-img's ${bytes}`);
    for (const b of ours) assert.ok(m.required >= b, `bound ${m.required} is below vdkit's own stream of ${b} bytes`);
    assert.ok(m.notes.some((n) => /upper bound/.test(n)), 'the result says it is an upper bound');
    // the random part of the data does not compress: the bound is within a few % of the data
    assert.ok(m.required <= m.dataBytes * 1.05 + 256 * 1024, `bound ${m.required} too loose for ${m.dataBytes} data bytes`);
  } finally {
    await src.close();
  }
});

test('vdkit measure CLI: qemu-img\'s two lines, --json, --size without FILE, usage errors', async (t) => {
  if (!skipUnless(t, 'qemu-img')) return;
  const dir = (await tmpDir(t, 'vdkit-measure-cli-')).path;
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 's.qcow2'), '1G'], 'qemu-img create');
  await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 3M', join(dir, 's.qcow2')], 'qemu-io write');
  const r = await vdkit(['measure', '-O', 'qcow2', 's.qcow2'], dir);
  assert.equal(r.code, 0, r.stderr);
  const q = await runOk('qemu-img', ['measure', '-O', 'qcow2', 's.qcow2'].map((a) => (a === 's.qcow2' ? join(dir, a) : a)), 'qemu-img measure');
  const sizes = (s: string) => Object.fromEntries([...s.matchAll(/^(required|fully allocated) size: (\d+)$/gm)].map((x) => [x[1]!, Number(x[2])]));
  const ours = sizes(r.stdout);
  const theirs = sizes(q.stdout);
  assert.deepEqual(Object.keys(ours), ['required', 'fully allocated'], `qemu-img's two lines:\n${r.stdout}`);
  assert.equal(ours['fully allocated'], theirs['fully allocated']);
  // qemu-img adds the L2 tables of the whole 1 GiB (2 clusters); vdkit those of the data (1)
  assert.ok(Math.abs(ours.required! - theirs.required!) <= 2 * 65536, `required ${ours.required} vs qemu-img's ${theirs.required}`);
  const zr = await vdkit(['measure', '--detect-zeroes', '-O', 'vdi', 's.qcow2'], dir);
  assert.equal(zr.code, 0, zr.stderr);
  assert.match(zr.stdout, /^required size: (\d+)$/m);
  const j = await vdkit(['measure', '--json', '-O', 'vhd', '-o', 'subformat=fixed', '--size', '64M'], dir);
  assert.equal(j.code, 0, j.stderr);
  const parsed = JSON.parse(j.stdout) as { required: number; 'fully-allocated': number };
  assert.equal(parsed.required, 64 * MiB + 512);
  assert.equal(parsed['fully-allocated'], 64 * MiB + 512);
  const s = await vdkit(['measure', '-O', 'vmdk', '-t', 'streamOptimized', '--size', '1G'], dir);
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stderr, /upper bound/);
  assert.equal((await vdkit(['measure', '-O', 'qcow2'], dir)).code, 2, 'neither FILE nor --size');
  assert.equal((await vdkit(['measure', '-O', 'nosuch', '--size', '1M'], dir)).code, 2, 'an unknown format is wrong usage');
});
