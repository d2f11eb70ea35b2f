/**
 * Power-cut states of a COWD (vmfsSparse) extent under writes that allocate grains and grain
 * tables (cowd-write.ts): every flush prefix plus random subsets of the sectors written after it.
 * Each state must open (read-only, and read-write: no overlapping pieces), check without
 * corruption (leaked space below freeSector is allowed: ESX reuses none either), and read, sector
 * by sector, as the disk was at the barrier or as the next round left it, every flushed write
 * intact. An entry written before its grain and freeSector are durable would fail this: the
 * entry could name sectors past the end of the file or below freeSector.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Disk, checkDisk } from '../../src/index.js';
import { BuildRng, buildCowd, esxDescriptor, writeExtent } from '../helpers/esx-sparse-builder.js';
import { mulberry32, xorshiftBytes } from '../helpers/prng.js';
import { crashState, record } from '../helpers/write-recorder.js';

const SECTOR = 512;

test('COWD: every power-cut state after allocating writes keeps flushed data, opens read-write and checks without corruption', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vdkit-cowd-crash-'));
  try {
    // 4 grain tables of 16-sector grains (32 MiB each), two of them absent, some grains held
    const sectors = 4 * 4096 * 16;
    const capacity = sectors * SECTOR;
    const built = buildCowd(new BuildRng(77), { capacitySectors: sectors, grainSectors: 16, fill: 0.002, missingTables: [1, 3] });
    const extent = join(dir, 'd-delta.vmdk');
    const desc = join(dir, 'd.vmdk');
    await writeExtent(extent, built);
    await writeFile(desc, esxDescriptor({ cid: '0000c0d1', createType: 'vmfsSparse', extents: [{ sectors, type: 'VMFSSPARSE', file: 'd-delta.vmdk' }] }));
    const start = await readFile(extent);

    const rnd = mulberry32(4321);
    const models: Buffer[] = [Buffer.from(built.content)];
    const ends: number[] = [0];
    const { ops } = await record(extent, async (live) => {
      const d = await Disk.open(desc);
      for (let r = 0; r < 4; r++) {
        const model = Buffer.from(models.at(-1)!);
        const used: { offset: number; length: number }[] = [];
        for (let w = 0; w < 5; w++) {
          const length = (1 + Math.floor(rnd() * 40)) * SECTOR;
          const offset = Math.floor(rnd() * ((capacity - length) / SECTOR)) * SECTOR;
          if (used.some((u) => offset < u.offset + u.length && u.offset < offset + length)) continue;
          const data = xorshiftBytes(length, 300 + r * 10 + w);
          await d.write(offset, data);
          data.copy(model, offset);
          used.push({ offset, length });
        }
        await d.flush();
        ends.push(live.length);
        models.push(model);
      }
      await d.close();
    });
    assert.ok(ops.filter((o) => o.kind === 'flush').length >= 8, 'the writes were flushed');

    // per round, the sectors whose content the round changed (the only ones a cut may leave new)
    const changed: number[][] = [];
    for (let k = 0; k + 1 < models.length; k++) {
      const list: number[] = [];
      for (let at = 0; at < capacity; at += SECTOR) {
        if (!models[k]!.subarray(at, at + SECTOR).equals(models[k + 1]!.subarray(at, at + SECTOR))) list.push(at);
      }
      changed.push(list);
    }
    let states = 0;
    const got = Buffer.alloc(capacity); // one buffer for every state: 128 MiB fresh each time was most of the test's time
    for (let k = 0; k + 1 < models.length; k++) {
      const cuts = [ends[k]!];
      for (let i = ends[k]!; i < ends[k + 1]! - 1; i++) if (ops[i]!.kind === 'flush') cuts.push(i + 1);
      for (let s = 0; s < 24; s++) {
        const keep = s % 12 === 0 ? 0 : s % 12 === 1 ? 1 : rnd();
        const from = cuts[s % cuts.length]!;
        let to = from;
        while (to < ops.length && ops[to]!.kind !== 'flush') to++;
        await writeFile(extent, crashState(start, ops, from, to, rnd, keep));
        const where = `round ${k} state ${s} (ops ${from}..${to}, keep ${keep.toFixed(2)})`;
        const report = await checkDisk(desc, { repair: false });
        assert.deepEqual(report.findings.filter((f) => f.kind === 'corruption'), [], `${where}: corruption`);
        const d = await Disk.open(desc, { readOnly: true });
        await d.readInto(got, 0);
        await d.close();
        // sectors the round changed may read either content; every other sector the flushed one
        for (const at of changed[k]!) {
          const g = got.subarray(at, at + SECTOR);
          assert.ok(g.equals(models[k]!.subarray(at, at + SECTOR)) || g.equals(models[k + 1]!.subarray(at, at + SECTOR)), `${where}: sector ${at / SECTOR} reads neither the flushed nor the next content`);
          models[k]!.copy(got, at, at, at + SECTOR);
        }
        assert.ok(got.equals(models[k]!), `${where}: a sector the round did not write changed`);
        // and it takes writes again (no piece overlaps another)
        await (await Disk.open(desc)).close();
        states++;
      }
    }
    assert.ok(states >= 90, `${states} crash states checked`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
