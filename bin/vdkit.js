#!/usr/bin/env node
// Entry point of the `vdkit` command. It runs the bundled CLI (dist/cli/main.cjs, made by `npm run
// build` after tsc: one file loads faster than the ~150 modules of dist/src) and falls back to the
// compiled modules when there is no bundle or VDKIT_NO_BUNDLE=1 (say, after a bare `tsc`).
//
// Start-up (issue 16 item 13; BENCHMARKS.md "Start-up", scripts/bundle-cli.mjs):
// - this file is CommonJS (bin/package.json), unlike the rest of the package: an ES module entry
//   point costs Node 20 about 7 ms of CPU more to start than a CommonJS one;
// - the bundle is compiled here with node:vm, not require(), for one reason: a V8 code cache
//   (main.cjs.cache, written by the build) lets V8 skip parsing and compiling what is in it,
//   about half of `vdkit info`'s start. V8 rejects a cache made by another V8 or for another
//   source, and then compiles the bundle as without one. VDKIT_DEBUG_STARTUP=1 says on stderr
//   which of the two happened.
'use strict';
const { existsSync, readFileSync, renameSync, writeFileSync } = require('node:fs');
const { createRequire } = require('node:module');
const { join } = require('node:path');
const vm = require('node:vm');

/** the bundle's `main`, or undefined when there is no bundle */
function loadBundle(file) {
  let source;
  try {
    // esbuild writes ASCII (it escapes the rest), which latin1 reads as it is, without decoding
    source = readFileSync(file, 'latin1');
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
  script.runInThisContext()(module.exports, createRequire(file), module, file, join(file, '..'));
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

/** the compiled modules' `main` (dist/src), when there is no bundle */
async function loadModules() {
  const modules = join(__dirname, '..', 'dist', 'src', 'cli', 'main.js');
  if (!existsSync(modules)) {
    process.stderr.write('vdkit: not built yet; run `npm run build` in the vdkit folder first\n');
    process.exit(1);
  }
  return (await import(modules)).main;
}

// A reader that stops early (`vdkit read ... | head`) is not an error of ours.
process.stdout.on('error', (err) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});
const bundled = process.env.VDKIT_NO_BUNDLE === '1' ? undefined : loadBundle(join(__dirname, '..', 'dist', 'cli', 'main.cjs'));
(bundled ? Promise.resolve(bundled) : loadModules())
  .then((run) => run(process.argv.slice(2)))
  .then((status) => {
    process.exitCode = status;
  });
