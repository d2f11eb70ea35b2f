/**
 * The layering rules of ARCHITECTURE.md as a check over the import graph of src/: a small
 * parser finds every import (static, re-export, dynamic import() with a literal), and each
 * edge is judged by the layer of both ends. Used by test/unit/layering.test.ts, on src/ and on
 * fixture trees with planted violations.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join, posix, relative, sep } from 'node:path';

/** lowest first; a file may import its own layer and those below it */
export const LAYERS: readonly { name: string; prefixes: readonly string[] }[] = [
  // the NBD wire codec is pure (binary/ tables, no sockets) and shared by the server (a front
  // end) and the client, which is a storage namespace (ARCHITECTURE.md: storage/ ... nbd (client))
  { name: 'core', prefixes: ['core/', 'binary/', 'nbd/protocol/'] },
  { name: 'storage', prefixes: ['storage/', 'nbd/client/'] },
  { name: 'formats', prefixes: ['formats/'] },
  { name: 'chain', prefixes: ['chain/'] },
  { name: 'block', prefixes: ['disk.ts', 'block/'] },
  // partition tables, LVM and volume probes read a Disk through a ByteSource: below ops and the front ends
  { name: 'inside', prefixes: ['inside/'] },
  { name: 'ops', prefixes: ['ops/'] },
  // the VD container (VirtualBox's VDOpen/VDMerge/VDCopyEx ...) drives the chain layer and ops
  { name: 'vd', prefixes: ['vd/'] },
  { name: 'front', prefixes: ['compat/', 'cli/', 'nbd/', 'web/', 'mount/'] },
  { name: 'package', prefixes: ['index.ts'] },
];

/** the one module of core/ that formats, chain, block and ops reach node: built-ins through */
export const PLATFORM = 'core/platform.ts';
/** layers that may import no node: module except through PLATFORM */
const PLATFORM_ONLY = new Set(['formats', 'chain', 'block', 'inside', 'ops', 'vd']);
/** node: modules only storage/ may import */
const FILE_SYSTEM = new Set(['node:fs', 'node:fs/promises', 'node:path', 'node:path/posix']);

export interface Violation {
  /** importing file, relative to the root, '/'-separated */
  file: string;
  /** the import as written */
  spec: string;
  rule: 'upward' | 'fs-outside-storage' | 'node-outside-platform' | 'unknown-layer';
}

export function layerOf(file: string): number {
  const i = LAYERS.findIndex((l) => l.prefixes.some((p) => file === p || file.startsWith(p)));
  return i;
}

/** the module specifiers a TypeScript source imports (comments ignored) */
export function importsOf(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const out: string[] = [];
  const patterns = [/\b(?:import|export)\s+(?:type\s+)?[^'";]*?\bfrom\s*['"]([^'"]+)['"]/g, /\bimport\s*['"]([^'"]+)['"]/g, /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g];
  for (const re of patterns) for (const m of code.matchAll(re)) out.push(m[1]!);
  return out;
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Every rule broken by the .ts files under `root` (a src/ folder). */
export async function checkLayering(root: string): Promise<Violation[]> {
  const violations: Violation[] = [];
  for (const abs of (await walk(root)).sort()) {
    const file = relative(root, abs).split(sep).join('/');
    const from = layerOf(file);
    if (from < 0) {
      violations.push({ file, spec: '', rule: 'unknown-layer' });
      continue;
    }
    const layer = LAYERS[from]!.name;
    for (const spec of importsOf(await readFile(abs, 'utf8'))) {
      if (spec.startsWith('node:')) {
        if (FILE_SYSTEM.has(spec) && layer !== 'storage') violations.push({ file, spec, rule: 'fs-outside-storage' });
        else if (PLATFORM_ONLY.has(layer)) violations.push({ file, spec, rule: 'node-outside-platform' });
        continue;
      }
      if (!spec.startsWith('.')) continue; // packages (commander): the front ends' business
      const target = posix.normalize(posix.join(posix.dirname(file), spec)).replace(/\.js$/, '.ts');
      const to = layerOf(target);
      if (to < 0 || to > from) violations.push({ file, spec, rule: to < 0 ? 'unknown-layer' : 'upward' });
    }
  }
  return violations;
}

export function describe(v: Violation): string {
  return `${v.file} -> ${v.spec} (${v.rule})`;
}

