import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Disk } from '../../src/index.js';
import { chunkFor } from '../helpers/crash-pattern.js';
import { runKilledWhen } from '../helpers/spawn-lines.js';

const WRITER = join(dirname(fileURLToPath(import.meta.url)), '../helpers/crash-writer.js');

/** Run the writer, SIGKILL it once it has acknowledged `acks` writes; return the last ack. */
async function runAndKill(path: string, acks: number): Promise<number> {
  const r = await runKilledWhen(WRITER, [path], (line) => Number(line.slice(4)) >= acks);
  if (!r.killed) throw new Error('writer ended without being killed');
  return Number(r.lines.at(-1)!.slice(4));
}

for (const type of ['monolithicSparse', 'twoGbMaxExtentSparse', 'monolithicFlat'] as const) {
  test(`${type}: a process killed mid-write loses no acknowledged write`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vdkit-crash-'));
    try {
      const path = join(dir, 'c.vmdk');
      const capacity = 48 * 1024 * 1024;
      await (await Disk.create(path, { type, capacity })).close();
      const last = await runAndKill(path, 150);
      assert.ok(last >= 150, `writer acknowledged ${last} writes`);
      // Model: replay the acknowledged writes in order; later ones win.
      const model = Buffer.alloc(capacity);
      for (let i = 0; i <= last; i++) {
        const { offset, data } = chunkFor(i, capacity);
        data.copy(model, offset);
      }
      // The image opens (read-write too: it is only marked unclean) and holds every acknowledged byte.
      // Bytes of the write in flight at the kill may or may not be there, so skip its range.
      const inflight = chunkFor(last + 1, capacity);
      const d = await Disk.open(path);
      const got = await d.read(0, capacity);
      // leaks are allowed after a kill (a grain written before its table entry); corruption is not
      const report = await d.image.maintenance().check!({ repair: false });
      assert.deepEqual(report.findings.filter((f) => f.kind === 'corruption'), [], 'no corruption after the kill');
      await d.close();
      for (let at = 0; at < capacity; at += 65536) {
        const end = Math.min(at + 65536, capacity);
        if (end > inflight.offset && at < inflight.offset + inflight.data.length) continue;
        assert.ok(got.subarray(at, end).equals(model.subarray(at, end)), `block at ${at} differs after the kill`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}
