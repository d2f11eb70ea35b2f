/**
 * VDI allocations cut by a kill at every write boundary (what SIGKILL leaves: the syscalls made
 * so far, in order): check must find no corruption (leaks allowed), a repair must leave it
 * clean, and every block must read as before or after the write that was cut. The old order
 * (map entry before the header count) failed: a kill between the two left cBlocksAllocated below
 * a live entry, a real corruption since VirtualBox's and QEMU's allocators put the next block at
 * slot cBlocksAllocated. VirtualBox and QEMU write the header first; so does vdkit now.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Disk, checkDisk } from '../../src/index.js';
import { xorshiftBytes } from '../helpers/prng.js';
import { apply, record } from '../helpers/write-recorder.js';
import { tmpDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

test('VDI: a kill between any two writes of block allocations leaves at most leaks; repair is clean; data is old or new', async (t) => {
  const dir = (await tmpDir(t)).path;
  const path = join(dir, 'k.vdi');
  const capacity = 8 * MiB;
  const d0 = await Disk.create(path, { format: 'vdi', capacity });
  await d0.write(0, xorshiftBytes(65536, 1)); // one block allocated before
  await d0.close();
  const start = await readFile(path);
  // writes into fresh blocks (one block, then two at once) and one into an allocated block
  const writes = [
    { offset: 3 * MiB + 4096, data: xorshiftBytes(65536, 2) },
    { offset: 5 * MiB - 65536, data: xorshiftBytes(2 * 65536, 3) },
    { offset: 8192, data: xorshiftBytes(4096, 4) },
  ];
  const models: Buffer[] = [Buffer.alloc(capacity)];
  xorshiftBytes(65536, 1).copy(models[0]!, 0);
  /** ops.length after each write: a kill there leaves models[i + 1] */
  const ends: number[] = [];
  const { ops } = await record(path, async (live) => {
    const d = await Disk.open(path);
    ends.push(live.length);
    for (const w of writes) {
      await d.write(w.offset, w.data);
      const m = Buffer.from(models.at(-1)!);
      w.data.copy(m, w.offset);
      models.push(m);
      ends.push(live.length);
    }
    await d.close();
  });
  assert.ok(ops.filter((o) => o.kind === 'write').length >= 6, 'allocations wrote data, header and map');
  let leaks = 0;
  for (let k = 0; k <= ops.length; k++) {
    // the write in progress at op k: its model before and after (past the last: the close)
    const at = ends.findIndex((e) => e >= k);
    const w = at < 0 ? models.length - 1 : at;
    const before = models[Math.max(0, w - 1)]!;
    const after = models[w]!;
    await writeFile(path, apply(start, ops.slice(0, k)));
    const report = await checkDisk(path, { repair: false });
    const bad = report.findings.filter((f) => f.kind === 'corruption');
    assert.deepEqual(bad, [], `killed after op ${k} of ${ops.length}: ${JSON.stringify(report.findings)}`);
    leaks += report.findings.filter((f) => f.kind === 'leak' && f.field === 'cBlocksAllocated').length;
    await checkDisk(path, { repair: true });
    assert.deepEqual((await checkDisk(path, { repair: false })).findings, [], `after op ${k}: clean after repair`);
    const d = await Disk.open(path, { readOnly: true });
    try {
      const got = await d.read(0, capacity);
      for (let b = 0; b < capacity; b += 65536) {
        const g = got.subarray(b, b + 65536);
        assert.ok(g.equals(before.subarray(b, b + 65536)) || g.equals(after.subarray(b, b + 65536)), `after op ${k}: bytes at ${b} are neither old nor new`);
      }
    } finally {
      await d.close();
    }
  }
  assert.ok(leaks > 0, 'some kill landed between the header count and the map entry');
});
