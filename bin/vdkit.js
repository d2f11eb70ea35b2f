#!/usr/bin/env node
// Entry point of the `vdkit` command. It runs the bundled CLI (dist/cli/main.cjs, made by `npm run
// build` after tsc: one file loads faster than the ~150 modules of dist/src) and falls back to the
// compiled modules when there is no bundle or VDKIT_NO_BUNDLE=1 (say, after a bare `tsc`).
//
// The bundle is compiled here with node:vm, not require(), for one reason: a V8 code cache
// (main.cjs.cache, written by the build) lets V8 skip parsing and compiling what is in it, about
// half of `vdkit info`'s start (scripts/bundle-cli.mjs, BENCHMARKS.md "Start-up"). V8 rejects a
// cache made by another V8 or for other source, and then compiles the bundle as without one.
// VDKIT_DEBUG_STARTUP=1 says on stderr which of the two happened.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';

/** the bundle's `main`, or undefined when there is no bundle */
function loadBundle(file) {
  let source;
  try {
    source = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const cacheFile = `${file}.cache`;
  const writeCache = process.env.VDKIT_WRITE_CODE_CACHE === '1';
  let cachedData;
  if (!writeCache) {
    try {
      cachedData = readFileSync(cacheFile);
    } catch {
      // no cache: compiled as require() would
    }
  }
  // the CommonJS wrapper, strict as the ES modules it was bundled from
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {"use strict";${source}\n})`, {
    filename: file,
    cachedData,
    // import() of what the bundle leaves outside (node: built-ins, koffi) goes to Node's loader
    importModuleDynamically: vm.constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER ?? ((specifier) => import(specifier)),
  });
  if (process.env.VDKIT_DEBUG_STARTUP === '1') {
    process.stderr.write(`vdkit: ${file}, code cache ${cachedData === undefined ? 'absent' : script.cachedDataRejected ? 'rejected' : 'accepted'}\n`);
  }
  const module = { exports: {} };
  script.runInThisContext()(module.exports, createRequire(file), module, file, dirname(file));
  return async (argv) => {
    const status = await module.exports.main(argv);
    if (writeCache) {
      // after the run: the cache then holds the functions it compiled, not only the top level
      writeFileSync(`${cacheFile}.tmp`, script.createCachedData());
      renameSync(`${cacheFile}.tmp`, cacheFile);
    }
    return status;
  };
}

// A reader that stops early (`vdkit read ... | head`) is not an error of ours.
process.stdout.on('error', (err) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});
let run = process.env.VDKIT_NO_BUNDLE === '1' ? undefined : loadBundle(fileURLToPath(new URL('../dist/cli/main.cjs', import.meta.url)));
if (run === undefined) {
  const modules = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
  if (!existsSync(modules)) {
    process.stderr.write('vdkit: not built yet; run `npm run build` in the vdkit folder first\n');
    process.exit(1);
  }
  ({ main: run } = await import(modules));
}
process.exitCode = await run(process.argv.slice(2));
