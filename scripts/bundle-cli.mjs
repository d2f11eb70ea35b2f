// Bundles the compiled CLI (dist/src/cli/main.js and what it imports) into dist/cli/, which
// bin/vdkit.js runs. Why: the layered source is ~150 small ES modules on a convert's path, and
// Node 20 resolves, reads, compiles and links each one at every start (about 0.5 ms each, and the
// parse of every byte). Measured for `vdkit info` (issue 16 item 13, BENCHMARKS.md "Start-up"):
//
// - one CommonJS file, not ES module chunks: esbuild's code splitting made one chunk per set of
//   lazy imports reaching a module, so `info` loaded 40 files (30 of them 0.5–3 KB); ES modules
//   cannot use a V8 code cache on Node 20, a script compiled by node:vm can. The lazy imports of
//   the source stay lazy inside the file (esbuild runs a module's top level when first imported);
// - a V8 code cache beside it (main.cjs.cache, written by a run of `vdkit info` at the end of
//   the build): bin/vdkit.js compiles the bundle with it and V8 skips parsing and compiling what
//   that run compiled. A cache from another Node or V8 is rejected by V8 and the bundle is
//   compiled as without one;
// - whitespace and syntax minified (identifiers kept, so stack traces name functions): a third
//   fewer bytes to read and, for code not in the cache, to parse. VDKIT_NO_BUNDLE=1 runs dist/src.
//
// commander (CommonJS) is bundled, with its `require('node:child_process')` (child_process and
// net, a few ms) made lazy: commander spawns only for executable subcommands, which vdkit has none
// of. koffi (native) stays in node_modules, and so does @bokuweb/zstd-wasm (it finds its .wasm
// file beside its own module). The AWS SDK (@aws-sdk/client-s3, lib-storage: several MB, loaded
// only for s3:// names) stays outside too, so commands that never touch S3 read none of it. The compression workers (deflate-worker: streamOptimized VMDK;
// compress-worker: compressed qcow2) are ES module bundles of their own beside main.cjs, because
// each writer starts its worker by URL relative to its own module (import.meta.url, which in
// main.cjs is main.cjs's URL).
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** commander's child_process, loaded when first used (never, for vdkit) */
const lazyChildProcess = {
  name: 'lazy-child-process',
  setup(build) {
    build.onResolve({ filter: /^(node:)?child_process$/ }, (args) => (/[\\/]commander[\\/]/.test(args.importer) ? { path: 'child_process', namespace: 'lazy-builtin' } : undefined));
    build.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, () => ({
      contents: 'let m; module.exports = new Proxy({}, { get: (_t, k) => (m ??= require("node:child_process"))[k] });',
      loader: 'js',
    }));
  },
};

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  external: ['koffi', '@bokuweb/zstd-wasm', '@aws-sdk/client-s3', '@aws-sdk/lib-storage'],
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: 'warning',
};

rmSync('dist/cli', { recursive: true, force: true });
await build({
  ...common,
  entryPoints: ['dist/src/cli/main.js'],
  format: 'cjs',
  plugins: [lazyChildProcess],
  // import.meta does not exist in CommonJS: the source's import.meta.url (createRequire, worker
  // URLs) becomes main.cjs's own URL
  define: { 'import.meta.url': '__vdkitMetaUrl' },
  banner: { js: "const __vdkitMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  outfile: 'dist/cli/main.cjs',
});
await build({
  ...common,
  entryPoints: ['dist/src/formats/vmdk/stream/deflate-worker.js', 'dist/src/formats/qcow2/compress-worker.js'],
  format: 'esm',
  banner: { js: "import { createRequire as __vdkitCreateRequire } from 'node:module'; const require = __vdkitCreateRequire(import.meta.url);" },
  outdir: 'dist/cli',
  entryNames: '[name]',
});
// the workers are ES modules named .js; the package.json also ends Node's package-scope lookup
// for them here instead of a walk up to the repository's
writeFileSync('dist/cli/package.json', '{ "type": "module" }\n');

// A real import() left in main.cjs runs through Node's ES module loader at that point, not
// through the bundle: only packages kept outside it may be imported so.
const bundle = readFileSync('dist/cli/main.cjs');
// bin/vdkit.js reads it as latin1, which is right for ASCII only (esbuild's default charset)
if (!bundle.every((b) => b < 0x80)) throw new Error('dist/cli/main.cjs: not ASCII');
const left = [...bundle.toString('latin1').matchAll(/\bimport\((["'`])([^"'`]*)\1\)/g)].map((m) => m[2]).filter((s) => !common.external.includes(s) && !s.startsWith('node:'));
if (left.length > 0) throw new Error(`dist/cli/main.cjs: import() of ${left.join(', ')} was not bundled`);

// The code cache: what a run of `vdkit info` on a small qcow2 compiled (the functions every
// command runs: start-up, commander, the registry, Disk, detection, one driver's open). The image
// is made by the compiled library, so the run sees the same file a user's would.
const dir = mkdtempSync(join(tmpdir(), 'vdkit-bundle-'));
try {
  const image = join(dir, 'small.qcow2');
  const { Disk } = await import('../dist/src/disk.js');
  const d = await Disk.create(image, { format: 'qcow2', capacity: 64 * 1024 * 1024 });
  await d.write(1024 * 1024, Buffer.alloc(512, 0x5a));
  await d.close();
  const r = spawnSync(process.execPath, ['bin/vdkit.js', 'info', image], { encoding: 'utf8', env: { ...process.env, VDKIT_WRITE_CODE_CACHE: '1', VDKIT_NO_BUNDLE: '' } });
  if (r.status !== 0) throw new Error(`writing the code cache: vdkit info exited ${r.status}\n${r.stderr}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
