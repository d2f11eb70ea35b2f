#!/usr/bin/env node
// Entry point of the `vdkit` command: the compiled CLI lives in dist/ (built by `npm ci` / `npm run build`).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
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
