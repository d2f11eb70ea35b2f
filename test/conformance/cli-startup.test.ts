import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const BIN = join(REPO, 'bin', 'vdkit.js');
const SRC = pathToFileURL(join(REPO, 'dist', 'src')).href + '/';

/** the modules of dist/src that `vdkit ARGS` loads (a loader hook lists them on stderr), relative to dist/src */
async function loaded(args: string[], dir: string): Promise<{ status: number | null; modules: string[] }> {
  const hook = join(dir, 'hook.mjs');
  await writeFile(hook, `export async function load(url, context, next) { if (url.startsWith(${JSON.stringify(SRC)})) process.stderr.write('LOADED ' + url.slice(${SRC.length}) + '\\n'); return next(url, context); }\n`);
  // the module graph of dist/src, not the bundle bin/vdkit.js runs by default (dist/cli/, made from it with the same lazy imports)
  const r = spawnSync(process.execPath, ['--no-warnings', '--experimental-loader', pathToFileURL(hook).href, BIN, ...args], { encoding: 'utf8', cwd: dir, env: { ...process.env, VDKIT_NO_BUNDLE: '1' } });
  const modules = r.stderr.split('\n').filter((l) => l.startsWith('LOADED ')).map((l) => l.slice(7));
  return { status: r.status, modules };
}

// issue 16 item 13: `vdkit --version` loaded every driver and op (86 modules) before printing "0.1.0".
// A command module that imports Disk, a driver or an op at its top brings that back; these fail then.
test('CLI start-up: --version and --help load no driver, op or Disk; a command loads its own module only', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vdkit-startup-'));
  try {
    const heavy = (m: string) => /^(formats|ops|chain|storage)\//.test(m) || m === 'disk.js';

    const version = await loaded(['--version'], dir);
    assert.equal(version.status, 0);
    assert.deepEqual(version.modules.filter(heavy), [], '--version');
    assert.deepEqual(version.modules.filter((m) => m.startsWith('cli/commands/')), [], '--version loads no command module');

    const help = await loaded(['--help'], dir);
    assert.equal(help.status, 0);
    assert.deepEqual(help.modules.filter(heavy), [], '--help');
    assert.ok(help.modules.includes('cli/commands/convert.js'), '--help lists every command');

    const usage = await loaded(['convert', '--from', '1', 'a', 'b'], dir);
    assert.equal(usage.status, 2);
    // convert's own module and its helper modules (convert-args.js), no other command's
    const commandModules = usage.modules.filter((m) => m.startsWith('cli/commands/'));
    assert.ok(commandModules.includes('cli/commands/convert.js'), commandModules.join(' '));
    assert.deepEqual(commandModules.filter((m) => !/^cli\/commands\/convert(-[a-z]+)?\.js$/.test(m)), [], commandModules.join(' '));

    const info = await loaded(['info', join(dir, 'missing.vmdk')], dir);
    assert.equal(info.status, 1);
    assert.deepEqual(info.modules.filter((m) => m.startsWith('cli/commands/')), ['cli/commands/info.js']);
    assert.deepEqual(info.modules.filter((m) => m.startsWith('ops/') && m !== 'ops/properties.js'), [], 'info loads no op but the properties Disk uses');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// The bundle (dist/cli/, scripts/bundle-cli.mjs) is what `vdkit` runs: one CommonJS script that
// bin/vdkit.js compiles with the V8 code cache the build wrote beside it. Before it, `info` loaded
// 40 ES module files of the bundle (esbuild's chunks for the lazy imports) and no code cache could
// be used: about +70 ms of CPU above `node -e 0`, the target being 60 (BENCHMARKS.md "Start-up").
test('CLI start-up, bundled: info and --version read one script of the repository, with its code cache; the workers run beside it', async (t) => {
  const CLI = join(REPO, 'dist', 'cli');
  const { readdir } = await import('node:fs/promises');
  const names = await readdir(CLI).catch(() => [] as string[]);
  if (!names.includes('main.cjs')) {
    if (process.env.CI === 'true') assert.fail('dist/cli/main.cjs missing: npm run build makes the bundle');
    t.skip('no bundle in dist/cli (a bare tsc build): run npm run build');
    return;
  }
  assert.ok(names.includes('main.cjs.cache'), `the build writes the code cache (dist/cli: ${names.join(' ')})`);
  const dir = await mkdtemp(join(tmpdir(), 'vdkit-startup-'));
  try {
    // every file of the repository loaded as a module: through a loader hook (ES modules, and
    // CommonJS ones while a hook is set) and from require.cache at exit (CommonJS)
    const root = pathToFileURL(REPO).href + '/';
    const hook = join(dir, 'hook.mjs');
    await writeFile(hook, `export async function load(url, context, next) { if (url.startsWith(${JSON.stringify(root)})) process.stderr.write('LOADED ' + url.slice(${root.length}) + '\\n'); return next(url, context); }\n`);
    const preload = join(dir, 'preload.cjs');
    await writeFile(preload, `process.on('exit', () => { for (const f of Object.keys(require.cache)) if (f.startsWith(${JSON.stringify(REPO + '/')})) process.stderr.write('LOADED ' + f.slice(${REPO.length + 1}) + '\\n'); });\n`);
    const vdkit = (args: string[]) => {
      const r = spawnSync(process.execPath, ['--no-warnings', '-r', preload, '--experimental-loader', pathToFileURL(hook).href, BIN, ...args], {
        encoding: 'utf8',
        cwd: dir,
        env: { ...process.env, VDKIT_DEBUG_STARTUP: '1', VDKIT_NO_BUNDLE: '' },
      });
      const lines = r.stderr.split('\n');
      return { status: r.status, stderr: r.stderr, modules: [...new Set(lines.filter((l) => l.startsWith('LOADED ')).map((l) => l.slice(7)))], cache: lines.find((l) => l.includes('code cache')) };
    };

    const version = vdkit(['--version']);
    assert.equal(version.status, 0, version.stderr);
    assert.deepEqual(version.modules, ['bin/vdkit.js']);
    assert.match(version.cache ?? '', /dist\/cli\/main\.cjs, code cache accepted$/, version.stderr);

    const { Disk } = await import('../../src/disk.js');
    const image = join(dir, 'small.qcow2');
    const d = await Disk.create(image, { format: 'qcow2', capacity: 64 * 1024 * 1024 });
    await d.write(1024 * 1024, Buffer.alloc(512, 0x5a));
    await d.close();
    const info = vdkit(['info', image]);
    assert.equal(info.status, 0, info.stderr);
    assert.deepEqual(info.modules, ['bin/vdkit.js'], 'info loads no module file but the entry point (the bundle is compiled from one script)');
    assert.match(info.cache ?? '', /code cache accepted$/, info.stderr);

    // the compression workers are started by URL relative to the bundle (dist/cli/compress-worker.js)
    const raw = join(dir, 'a.raw');
    await writeFile(raw, Buffer.alloc(256 * 1024, 7));
    const convert = vdkit(['convert', '-c', '-O', 'qcow2', raw, join(dir, 'a.qcow2')]);
    assert.equal(convert.status, 0, convert.stderr);
    assert.ok(convert.modules.includes('dist/cli/compress-worker.js'), convert.modules.join(' '));
    const back = await Disk.open(join(dir, 'a.qcow2'), { readOnly: true });
    try {
      assert.deepEqual(await back.read(0, 256 * 1024), Buffer.alloc(256 * 1024, 7));
    } finally {
      await back.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
