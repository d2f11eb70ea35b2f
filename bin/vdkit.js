#!/usr/bin/env node
// Entry point of the `vdkit` command. It runs the bundled CLI (dist/cli/, made by `npm run build`
// after tsc: one file loads faster than the ~150 modules of dist/src) and falls back to the
// compiled modules when there is no bundle or VDKIT_NO_BUNDLE=1 (say, after a bare `tsc`).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const bundled = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
const modules = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
const main = process.env.VDKIT_NO_BUNDLE !== '1' && existsSync(bundled) ? bundled : modules;
if (!existsSync(main)) {
  process.stderr.write('vdkit: not built yet; run `npm run build` in the vdkit folder first\n');
  process.exit(1);
}
// A reader that stops early (`vdkit read ... | head`) is not an error of ours.
process.stdout.on('error', (err) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});
const { main: run } = await import(main);
process.exitCode = await run(process.argv.slice(2));
