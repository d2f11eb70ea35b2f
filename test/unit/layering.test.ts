/**
 * Layering is checked, not hoped for (ARCHITECTURE.md): core/binary < storage < formats < chain
 * < block (disk.ts) < inside (partition tables, LVM, volume probes) < ops < front ends (compat, cli, nbd) < index.ts; nothing imports upward;
 * only storage/ imports node:fs / node:path; formats, chain, block and ops reach node: built-ins
 * only through core/platform.ts. The checker runs over src/ and over a fixture tree with planted
 * violations, so a rule that stopped firing would fail here too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { checkLayering, describe, importsOf, type Violation } from '../helpers/layering.js';
import { repoRoot, tmpDir } from '../helpers/tools.js';

/**
 * Violations src/ still has, exactly: each is a known debt with its reason. A new violation
 * fails the test; so does an entry that no longer occurs (delete it when it is fixed).
 */
const ALLOWED: readonly string[] = [];

test('src/ keeps the layering rules (apart from the listed debts)', async () => {
  const found = (await checkLayering(join(await repoRoot(), 'src'))).map(describe);
  const fresh = found.filter((v) => !ALLOWED.includes(v));
  assert.deepEqual(fresh, [], `new layering violations:\n${fresh.join('\n')}`);
  const stale = ALLOWED.filter((a) => !found.includes(a));
  assert.deepEqual(stale, [], `fixed, so remove from ALLOWED:\n${stale.join('\n')}`);
});

test('the checker finds planted violations and lets the allowed edges be', async (t) => {
  const root = join((await tmpDir(t)).path, 'src');
  const files: Record<string, string> = {
    'core/platform.ts': "export { inflateSync } from 'node:zlib';\n",
    'core/names.ts': 'export const x = 1;\n',
    'storage/file.ts': "import { open } from 'node:fs/promises';\nimport { resolve } from 'node:path';\nimport { x } from '../core/names.js';\n",
    // allowed: platform, lower layers, type imports spread over lines, a commented-out import
    'formats/ok.ts': "import {\n  inflateSync,\n} from '../core/platform.js';\nimport type {\n  Thing,\n} from '../storage/file.js';\n// import { y } from '../ops/y.js';\n/* import 'node:fs'; */\n",
    // planted: upward static, upward dynamic, node:fs outside storage, node: outside platform
    'formats/up.ts': "import { run } from '../ops/convert.js';\nexport async function f() { return import('../cli/main.js'); }\n",
    'chain/fs.ts': "import { readFile } from 'node:fs/promises';\n",
    'ops/hash.ts': "import { createHash } from 'node:crypto';\nexport * from '../disk.js';\n",
    'cli/main.ts': "import { Command } from 'commander';\nimport { join } from 'node:path';\n",
    'ops/convert.ts': "export { helper } from './helper.js';\n",
    'mystery/x.ts': 'export {};\n',
    // inside/ reads a Disk (block) and is read by ops: upward to ops is planted, down to disk.ts allowed
    'inside/volumes.ts': "import type { Disk } from '../disk.js';\nimport { convert } from '../ops/convert.js';\n",
    'ops/list.ts': "import { listVolumes } from '../inside/volumes.js';\n",
  };
  for (const [name, text] of Object.entries(files)) {
    await mkdir(dirname(join(root, name)), { recursive: true });
    await writeFile(join(root, name), text);
  }
  const got = (await checkLayering(root)).map((v: Violation) => describe(v)).sort();
  assert.deepEqual(got, [
    'chain/fs.ts -> node:fs/promises (fs-outside-storage)',
    'cli/main.ts -> node:path (fs-outside-storage)',
    'formats/up.ts -> ../cli/main.js (upward)',
    'formats/up.ts -> ../ops/convert.js (upward)',
    'inside/volumes.ts -> ../ops/convert.js (upward)',
    'mystery/x.ts ->  (unknown-layer)',
    'ops/hash.ts -> node:crypto (node-outside-platform)',
  ]);
});

test('importsOf reads static, re-export, side-effect and dynamic imports', () => {
  const text = "import a from './a.js';\nimport type { B } from \"./b.js\";\nexport * from './c.js';\nimport './d.js';\nconst e = await import('./e.js');\n// import './f.js';\n";
  assert.deepEqual(importsOf(text).sort(), ['./a.js', './b.js', './c.js', './d.js', './e.js']);
});
