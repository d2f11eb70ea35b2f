import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Disk } from '../../src/index.js';
import { chunkFor } from '../helpers/crash-pattern.js';

const WRITER = join(dirname(fileURLToPath(import.meta.url)), '../helpers/crash-writer.js');

/** Run the writer, SIGKILL it once it has acknowledged `acks` writes; return the last ack. */
function runAndKill(path: string, acks: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [WRITER, path], { stdio: ['ignore', 'pipe', 'pipe'] });
    let last = -1;
    let buf = '';
    let err = '';
    p.stderr.on('data', (c) => (err += c));
    p.stdout.on('data', (c: Buffer) => {
      buf += c.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) last = Number(l.slice(4));
      if (last >= acks) p.kill('SIGKILL');
    });
    p.on('error', reject);
    p.on('close', (_code, signal) => (signal === 'SIGKILL' ? resolve(last) : reject(new Error(`writer ended without being killed: ${err}`))));
  });
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
