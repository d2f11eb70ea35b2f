/**
 * Ops, chain and block code never branch on a format's name (ARCHITECTURE.md): what differs
 * between formats is said by the driver (capabilities, alignment, selfNaming, sequentialTypes,
 * childType, linkFamily, normaliseType, the property table). This looks for a comparison with,
 * or a `case` on, a format-name literal in those folders; the checker is also run on a planted
 * line so a pattern that stopped matching would fail here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { repoRoot } from '../helpers/tools.js';

const FORMATS = ['vmdk', 'vdi', 'vhd', 'vhdx', 'qcow2', 'raw'];
const BRANCH = new RegExp(`(?:[!=]==?\\s*'(?:${FORMATS.join('|')})'|'(?:${FORMATS.join('|')})'\\s*[!=]==?|\\bcase\\s+'(?:${FORMATS.join('|')})'\\s*:)`);

/** Known debts, exactly (a fixed entry must be deleted): none left. */
const ALLOWED = new Set<string>();

function branches(text: string): number[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, (c) => c.replace(/[^\n]/g, ' ')).replace(/\/\/.*$/gm, '');
  return code.split('\n').flatMap((line, i) => (BRANCH.test(line) ? [i + 1] : []));
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

test('the pattern finds a planted branch and ignores comments and data', () => {
  assert.deepEqual(branches("if (img.format === 'vmdk') x();\n"), [1]);
  assert.deepEqual(branches("switch (f) {\n  case 'qcow2':\n}"), [2]);
  assert.deepEqual(branches("// format === 'vdi'\nconst rules = [{ format: 'vmdk' }];\n"), []);
});

test('src/ops, src/chain, src/block, src/vd and src/disk.ts branch on no format name', async () => {
  const src = join(repoRoot(), 'src');
  const files = [...(await walk(join(src, 'ops'))), ...(await walk(join(src, 'chain'))), ...(await walk(join(src, 'block'))), ...(await walk(join(src, 'vd'))), join(src, 'disk.ts')];
  const found: string[] = [];
  const allowedSeen = new Set<string>();
  for (const f of files) {
    const name = relative(src, f).split('\\').join('/');
    const lines = branches(await readFile(f, 'utf8'));
    if (lines.length === 0) continue;
    if (ALLOWED.has(name)) allowedSeen.add(name);
    else found.push(`${name}:${lines.join(',')}`);
  }
  assert.deepEqual(found, [], 'format-name branches outside the drivers');
  assert.deepEqual([...ALLOWED].filter((a) => !allowedSeen.has(a)), [], 'an allowed debt no longer occurs: delete it from ALLOWED');
});
