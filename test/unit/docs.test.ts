/**
 * The documents say what the repository has (issue 16 item 14): every repository path a Markdown
 * file cites exists, the README's layout names every folder of src/ and every driver, and the
 * `--help` banner and package.json description name all six formats.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { repoRoot } from '../helpers/tools.js';
import { buildProgram } from '../../src/cli/main.js';
import { backends } from '../../src/formats/registry.js';

const ROOT = repoRoot();

/** folders that hold no documents of the project (dependencies, build output, data) */
const SKIP = new Set(['node_modules', 'dist', '.git', 'coverage']);

function markdownFiles(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    if (SKIP.has(name)) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) markdownFiles(p, out);
    else if (name.endsWith('.md')) out.push(p);
  }
  return out;
}

/** path-like words that start at one of the repository's top folders (or the ../shared beside it) */
const CITED = /(?<![\w./-])((?:\.\.\/)?(?:src|test|docs|bench|scripts|examples|bin|shared)\/[\w.*<>/-]*[\w*>])/g;
/** another project's tree cited by name (VirtualBox's sources live under src/VBox), not ours */
const FOREIGN = ['src/VBox/'];

/** a corpus case is cited by its name: the files beside it are <name>.json, <name>.qcow2.gz, ... */
function isCaseStem(path: string): boolean {
  const dir = join(path, '..');
  const stem = path.slice(dir.length + 1) + '.';
  return existsSync(dir) && readdirSync(dir).some((n) => n.startsWith(stem));
}

test('every repository path the Markdown files cite exists (no ../shared notes a clone lacks)', () => {
  const missing: string[] = [];
  for (const file of markdownFiles(ROOT)) {
    const lines = readFileSync(file, 'utf8').split('\n');
    lines.forEach((line, i) => {
      for (const m of line.matchAll(CITED)) {
        const cited = m[1]!;
        if (FOREIGN.some((f) => cited.startsWith(f))) continue;
        // a placeholder (<fmt>) or a glob (*.md): the folder before it must exist
        const fixed = cited.split(/[<*]/)[0]!;
        const path = join(ROOT, fixed);
        const ok = existsSync(path) || (cited !== fixed && existsSync(join(path, '..'))) || isCaseStem(path);
        if (!ok) missing.push(`${relative(ROOT, file)}:${i + 1}: ${cited}`);
      }
    });
  }
  assert.deepEqual(missing, []);
});

test("the README's layout names every folder of src/, every driver and src/formats/common", () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const layout = readme.slice(readme.indexOf('\n## Layout'));
  assert.ok(layout.length > 20, 'README has a Layout section');
  const src = join(ROOT, 'src');
  for (const d of readdirSync(src)) {
    if (statSync(join(src, d)).isDirectory()) assert.match(layout, new RegExp(`\`src/${d}[\`/]`), `Layout names src/${d}`);
  }
  const listed = /drivers \(([^);]*)/.exec(layout)?.[1]?.split(/,\s*/) ?? [];
  const drivers = backends().map((d) => d.name);
  for (const d of drivers) assert.ok(listed.includes(d), `Layout's driver list names ${d}: ${listed.join(', ')}`);
  // the other folders (common) are named on their own
  for (const f of readdirSync(join(src, 'formats'))) {
    if (statSync(join(src, 'formats', f)).isDirectory() && !drivers.includes(f)) assert.ok(layout.includes(`\`src/formats/${f}\``), `Layout names src/formats/${f}`);
  }
});

test('the --help banner and package.json description name every format', async () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { description: string };
  const banner = (await buildProgram([])).description();
  for (const d of backends()) {
    const name = d.name === 'qcow2' || d.name === 'raw' ? d.name : d.name.toUpperCase();
    assert.ok(new RegExp(`\\b${name}\\b`).test(pkg.description), `package.json description names ${name}: ${pkg.description}`);
    assert.ok(new RegExp(`\\b${name}\\b`).test(banner), `--help banner names ${name}: ${banner}`);
  }
  assert.doesNotMatch(pkg.description + banner, /later/, 'no formats promised for later');
});
