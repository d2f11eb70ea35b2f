// Bundles the compiled CLI (dist/src/cli/main.js and what it imports) into dist/cli/, which
// bin/vdkit.js runs. Why: the layered source is ~150 small ES modules on a convert's path, and
// Node 20 resolves, reads and links each one at every start (about 80 ms more than the ~90
// modules before the redesign; a 1 GiB raw -> qcow2 convert paid it as 1.16x user CPU). One
// bundle with a few lazily loaded chunks starts in about the time of the old build.
// The per-command dynamic imports stay lazy (code splitting); packages (commander, koffi) stay
// in node_modules. The compression workers (deflate-worker: streamOptimized VMDK;
// compress-worker: compressed qcow2) are entries of their own, named as in the source tree,
// because each writer starts its worker by URL relative to its own module.
import { build } from 'esbuild';
import { rmSync } from 'node:fs';

rmSync('dist/cli', { recursive: true, force: true });
await build({
  entryPoints: ['dist/src/cli/main.js', 'dist/src/formats/vmdk/stream/deflate-worker.js', 'dist/src/formats/qcow2/compress-worker.js'],
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  outdir: 'dist/cli',
  entryNames: '[name]',
  chunkNames: 'chunk-[hash]',
  logLevel: 'warning',
});
