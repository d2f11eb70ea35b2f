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

// The bundle (dist/cli/, scripts/bundle-cli.mjs) is what `vdkit` runs: it must keep the lazy
// loading above (code splitting), not one file with every driver in it.
test('CLI start-up, bundled: --version loads a small part of the bundle, convert the drivers too', async (t) => {
  const CLI = join(REPO, 'dist', 'cli');
  const { readdir, stat } = await import('node:fs/promises');
  const names = await readdir(CLI).catch(() => [] as string[]);
  if (!names.includes('main.js')) {
    if (process.env.CI === 'true') assert.fail('dist/cli/main.js missing: npm run build makes the bundle');
    t.skip('no bundle in dist/cli (a bare tsc build): run npm run build');
    return;
  }
  const total = (await Promise.all(names.map((n) => stat(join(CLI, n)).then((s) => s.size)))).reduce((a, b) => a + b, 0);
  const dir = await mkdtemp(join(tmpdir(), 'vdkit-startup-'));
  try {
    const base = pathToFileURL(CLI).href + '/';
    const hook = join(dir, 'hook.mjs');
    await writeFile(hook, `export async function load(url, context, next) { if (url.startsWith(${JSON.stringify(base)})) process.stderr.write('LOADED ' + url.slice(${base.length}) + '\\n'); return next(url, context); }\n`);
    const bytes = async (args: string[]) => {
      const r = spawnSync(process.execPath, ['--no-warnings', '--experimental-loader', pathToFileURL(hook).href, BIN, ...args], { encoding: 'utf8', cwd: dir });
      const files = r.stderr.split('\n').filter((l) => l.startsWith('LOADED ')).map((l) => l.slice(7));
      assert.ok(files.includes('main.js'), `vdkit ${args.join(' ')} runs the bundle (loaded: ${files.join(', ')})`);
      return { status: r.status, size: (await Promise.all(files.map((f) => stat(join(CLI, f)).then((s) => s.size)))).reduce((a, b) => a + b, 0) };
    };
    const version = await bytes(['--version']);
    assert.equal(version.status, 0);
    const img = join(dir, 'a.raw');
    await writeFile(img, Buffer.alloc(65536, 1));
    const convert = await bytes(['convert', '-O', 'qcow2', img, join(dir, 'a.qcow2')]);
    assert.equal(convert.status, 0);
    assert.ok(version.size < total * 0.2, `--version loads ${version.size} of ${total} bundle bytes`);
    assert.ok(convert.size > version.size * 3, `convert loads ${convert.size} bytes, --version ${version.size}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
