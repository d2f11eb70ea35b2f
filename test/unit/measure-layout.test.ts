/**
 * The pieces of measure that need no outside tool: unit counting over runs, each format's
 * refusal of options its create would refuse, the streamOptimized bound's arithmetic, and
 * measure's own handling of capacities and aborts (over an in-memory-sized qcow2 made by vdkit).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Disk, DiskError, measure } from '../../src/index.js';
import { groupsTouched, unitCount } from '../../src/formats/common/measure.js';
import { measureLayout } from '../../src/formats/registry.js';
import { tmpDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const isInval = (e: unknown) => e instanceof DiskError && e.code === 'INVAL';

test('unitCount and groupsTouched count shared groups once', () => {
  const runs = [
    { first: 0, count: 3 },
    { first: 5, count: 2 }, // same group of 8 as the first run
    { first: 8, count: 1 },
    { first: 40, count: 20 }, // groups 5, 6, 7
  ];
  assert.equal(unitCount(runs), 26);
  assert.equal(groupsTouched(runs, 8), 5);
  assert.equal(groupsTouched([], 8), 0);
  assert.equal(groupsTouched([{ first: 7, count: 2 }], 8), 2);
});

test('measure layouts refuse what create refuses', () => {
  assert.throws(() => measureLayout('vmdk', { capacity: MiB, type: 'bogus' }), isInval);
  assert.throws(() => measureLayout('vmdk', { capacity: MiB, adapterType: 'scsi9' }), isInval);
  assert.throws(() => measureLayout('vhd', { capacity: 3000 * 1024 * MiB }), isInval);
  assert.throws(() => measureLayout('vhdx', { capacity: MiB, blockSize: 3 * MiB }), isInval);
  assert.throws(() => measureLayout('qcow2', { capacity: MiB, clusterSize: 1000 }), isInval);
  assert.throws(() => measureLayout('vdi', { capacity: 0 }), isInval);
  assert.throws(() => measureLayout('nosuch', { capacity: MiB }), (e: unknown) => e instanceof DiskError && e.code === 'NOTSUPPORTED');
});

test('streamOptimized bound: a grain at deflate\'s worst case plus its marker, whole sectors', () => {
  const l = measureLayout('vmdk', { capacity: 64 * MiB, type: 'streamOptimized' });
  const one = l.required([{ first: 0, count: 1 }]) - l.required([]);
  assert.equal(one % 512, 0);
  assert.ok(one > 65536 + 12 && one <= 65536 + 1024, `per grain ${one}`);
  assert.equal(l.fullyAllocated, l.required([{ first: 0, count: 1024 }]));
  assert.ok(l.notes.length === 1);
});

test('measure: a larger target capacity, rounding to the format, and abort', async (t) => {
  const dir = (await tmpDir(t, 'vdkit-measure-unit-')).path;
  const d = await Disk.create(join(dir, 'a.qcow2'), { format: 'qcow2', capacity: 8 * MiB });
  await d.write(MiB, Buffer.alloc(4096, 1));
  const small = await measure(d, { format: 'vhd' });
  const big = await measure(d, { format: 'vhd', capacity: 1024 * MiB + 100 });
  assert.equal(big.capacity, 1024 * MiB + 512, 'VHD rounds up to a sector');
  assert.equal(big.dataBytes, small.dataBytes, 'the data is the source\'s whatever the target size');
  assert.ok(big.required > small.required, 'a larger BAT');
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(measure(d, { format: 'vhd', signal: ac.signal }), (e: unknown) => e instanceof DiskError && e.code === 'CANCELLED');
  await assert.rejects(measure(undefined, { format: 'vhd' }), isInval);
  // two 64 KiB clusters holding 4 KiB of data each (at 1 MiB and 4 MiB): block status counts 16
  // target clusters of 4 KiB for each, reading the data only the one that is not zeros
  const piece = Buffer.alloc(65536);
  piece.fill(7, 0, 4096);
  await d.write(4 * MiB, piece);
  const counted = await measure(d, { format: 'qcow2', clusterSize: 4096 });
  const read = await measure(d, { format: 'qcow2', clusterSize: 4096, detectZeroes: true });
  await d.close();
  assert.equal(counted.required - read.required, 2 * 15 * 4096);
});
