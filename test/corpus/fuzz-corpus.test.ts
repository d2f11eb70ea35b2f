/**
 * Every case the fuzzer kept (test/corpus/fuzz/<format>/<name>.json beside its gzip'd files) runs
 * again as it did when found (same mode, same read and write offsets), in a worker process with
 * the fuzzer's limits: it must give no finding, and the outcome its sidecar names (a DiskError
 * code, or fine) when it names one.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { readSidecar } from '../fuzz/engine.js';
import { Pool } from '../fuzz/pool.js';
import { hasTool, inCI, repoRoot } from '../helpers/tools.js';

const ROOT = join(repoRoot(), 'test', 'corpus', 'fuzz');
const cases: { name: string; dir: string }[] = [];
if (existsSync(ROOT)) {
  for (const f of readdirSync(ROOT).sort()) {
    for (const j of readdirSync(join(ROOT, f)).sort()) if (j.endsWith('.json')) cases.push({ name: `${f}/${j.slice(0, -5)}`, dir: join(ROOT, f) });
  }
}

const tmp = mkdtempSync(join(tmpdir(), 'vdkit-fuzz-corpus-'));
// the fuzzer's own limit: 1 s of CPU time per case
const pool = new Pool({ jobs: 1, timeoutMs: 1000 });
after(async () => {
  await pool.close();
  rmSync(tmp, { recursive: true, force: true });
});

test('the fuzz corpus holds cases', () => {
  assert.ok(cases.length > 0, `no cases under ${ROOT}`);
});

let n = 0;
for (const c of cases) {
  test(`fuzz corpus ${c.name}`, async (t) => {
    const side = readSidecar(join(c.dir, `${c.name.split('/')[1]}.json`));
    // a case found by comparing qemu-img check before and after a repair needs qemu-img
    const qemuCheck = side.found?.kind === 'repair-worse';
    if (qemuCheck && !hasTool('qemu-img')) {
      assert.ok(!inCI(), 'qemu-img is required under CI');
      t.diagnostic('qemu-img not installed: the repair is run, qemu-img check is not compared');
    }
    const seedDir = join(tmp, `seed${++n}`);
    mkdirSync(seedDir);
    for (const [file, gz] of Object.entries(side.files)) writeFileSync(join(seedDir, file), gunzipSync(readFileSync(join(c.dir, gz))));
    const r = await pool.run({ id: n, seedName: c.name, seedDir, format: side.format, main: side.main, mutations: [], mode: side.mode, rngSeed: side.rngSeed, scratch: tmp, qemuCheck: qemuCheck && hasTool('qemu-img') });
    assert.equal(r.finding, undefined, `${c.name}: ${r.finding?.kind}: ${r.finding?.message}\n${r.finding?.stack ?? ''}`);
    if (side.expect.outcome) assert.equal(r.outcome, side.expect.outcome);
  });
}
