// Bundles the compiled CLI (dist/src/cli/main.js and what it imports) into dist/cli/, which
// bin/vdkit.js runs. Why: the layered source is ~150 small ES modules on a convert's path, and
// Node 20 resolves, reads and links each one at every start (about 80 ms more than the ~90
// modules before the redesign; a 1 GiB raw -> qcow2 convert paid it as 1.16x user CPU). One
// bundle with a few lazily loaded chunks starts in about the time of the old build.
// The per-command dynamic imports stay lazy (code splitting). commander is bundled into main.js
// (Node 20 loads a CommonJS package into an ES module through its CJS translator, file by file:
// about 10 ms of every start), with its `require('node:child_process')` (child_process and net,
// a few ms more) made lazy: commander spawns only for executable subcommands, which vdkit has none
// of. koffi (native) stays in node_modules. The compression workers (deflate-worker: streamOptimized VMDK;
// compress-worker: compressed qcow2) are entries of their own, named as in the source tree,
// because each writer starts its worker by URL relative to its own module.
import { build } from 'esbuild';
import { rmSync, writeFileSync } from 'node:fs';

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

rmSync('dist/cli', { recursive: true, force: true });
await build({
  entryPoints: ['dist/src/cli/main.js', 'dist/src/formats/vmdk/stream/deflate-worker.js', 'dist/src/formats/qcow2/compress-worker.js'],
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: ['koffi'],
  plugins: [lazyChildProcess],
  // the bundled CommonJS (commander) requires node: built-ins: give the ES module bundle a require
  banner: { js: "import { createRequire as __vdkitCreateRequire } from 'node:module'; const require = __vdkitCreateRequire(import.meta.url);" },
  outdir: 'dist/cli',
  entryNames: '[name]',
  chunkNames: 'chunk-[hash]',
  logLevel: 'warning',
});
// Node looks up the package scope of every module it loads (ES module or CommonJS?): a
// package.json beside the chunks ends each lookup there instead of a walk up to the repository's
// (about 2 % of `vdkit info`'s CPU, paired runs)
writeFileSync('dist/cli/package.json', '{ "type": "module" }\n');
