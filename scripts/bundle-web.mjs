// Bundles the browser build into dist/web/ (run by `npm run build`; `vdkit web` serves it):
// worker.js, the Web Worker that runs the library on the picked files (web/worker.ts), app.js,
// the page's script (web/app.ts), and the static files of web/ (index.html, style.css).
//
// The library runs unchanged; three modules are swapped, the way the layering rule allows:
// - core/platform.js -> web/platform.ts (sha256/sha1 and inflate in plain JS, randomness from
//   crypto.getRandomValues, NOTSUPPORTED for what the browser build does not do yet);
// - storage/file.js -> web/stubs/host-files.ts and storage/locations.js -> web/stubs/locations.ts
//   (no host files, no URL schemes: the page names only the picked files, a BlobNamespace);
// - the global Buffer -> web/buffer-shim.ts (the npm `buffer` package plus BigInt reads/writes).
// Any other node: import reaching the bundle fails the build, naming the module that made it.
// esbuild compiles the TypeScript sources directly (it strips types; `tsc -p web` checks them).
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist/web');
/** the gzip size the core bundle should stay under (issue 21: < 300 KiB) */
const GZIP_BUDGET = 300 * 1024;

const SWAPS = [
  [/[\\/]src[\\/]core[\\/]platform\.(js|ts)$/, 'web/platform.ts'],
  [/[\\/]src[\\/]storage[\\/]file\.(js|ts)$/, 'web/stubs/host-files.ts'],
  [/[\\/]src[\\/]storage[\\/]locations\.(js|ts)$/, 'web/stubs/locations.ts'],
];
const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));

const browserSwaps = {
  name: 'vdkit-browser',
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) => {
      if (args.kind === 'entry-point') return undefined;
      if (builtins.has(args.path) || args.path.startsWith('node:')) {
        return { errors: [{ text: `${args.path} reached the browser build (imported by ${args.importer.replace(root + '/', '')}): swap or avoid the module that imports it` }] };
      }
      if (!args.path.startsWith('.')) return undefined;
      const target = resolve(args.resolveDir, args.path);
      for (const [re, swap] of SWAPS) if (re.test(target)) return { path: join(root, swap) };
      return undefined;
    });
  },
};

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const common = {
  absWorkingDir: root,
  outdir: out,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['chrome109', 'firefox115', 'safari16'],
  plugins: [browserSwaps],
  minify: true,
  sourcemap: 'linked',
  logLevel: 'warning',
};
// the library, in the worker: Buffer is injected here only (the page script has no use for it)
await build({ ...common, entryPoints: { worker: 'web/worker.ts' }, inject: ['web/buffer-shim.ts'] });
await build({ ...common, entryPoints: { app: 'web/app.ts' } });
for (const f of ['index.html', 'style.css']) copyFileSync(join(root, 'web', f), join(out, f));

const worker = readFileSync(join(out, 'worker.js'));
const gz = gzipSync(worker, { level: 9 }).length;
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
if (process.env.VDKIT_BUNDLE_QUIET !== '1') console.log(`dist/web/worker.js: ${kib(worker.length)}, gzip ${kib(gz)} (budget ${kib(GZIP_BUDGET)}); app.js: ${kib(readFileSync(join(out, 'app.js')).length)}`);
if (gz > GZIP_BUDGET) throw new Error(`dist/web/worker.js is ${kib(gz)} gzipped, over the ${kib(GZIP_BUDGET)} budget`);
