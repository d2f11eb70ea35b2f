/**
 * Helpers for tests that drive outside tools (qemu-img, qemu-io, vmdkinfo, bunzip2).
 *
 * - `hasTool(name)` looks the name up on PATH once and caches the answer.
 * - `run(cmd, args)` never throws for a non-zero exit: it returns {stdout, stderr, code}, so a
 *   test can assert on the exit status and print what the tool said.
 * - `skipUnless(t, ...tools)` skips a test whose tools are missing, with the reason; when the
 *   CI environment variable is set (CI installs every tool) a missing tool fails the test.
 * - `tmpDir()` / `sharedTestdata()` / `bunzip()` for scratch folders and the outside images.
 */
import { execFile, spawn } from 'node:child_process';
import { accessSync, constants, existsSync, openSync, closeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';

/** Debian packages that provide each tool, for skip messages. */
const PACKAGE_OF: Record<string, string> = {
  'qemu-img': 'qemu-utils',
  'qemu-io': 'qemu-utils',
  vmdkinfo: 'libvmdk-utils',
  vhdiinfo: 'libvhdi-utils',
  bunzip2: 'bzip2',
  'qemu-nbd': 'qemu-utils',
  nbdinfo: 'libnbd-bin',
  nbdcopy: 'libnbd-bin',
  nbdsh: 'python3-libnbd',
  nbdkit: 'nbdkit',
  nbdfuse: 'nbdfuse',
  fusermount3: 'fuse3',
  openssl: 'openssl',
  sfdisk: 'fdisk',
  sgdisk: 'gdisk',
  mmls: 'sleuthkit',
  blkid: 'util-linux',
  'mkfs.ext2': 'e2fsprogs',
  'mkfs.ext3': 'e2fsprogs',
  'mkfs.ext4': 'e2fsprogs',
  'mkfs.fat': 'dosfstools',
  mkntfs: 'ntfs-3g',
  'mkfs.exfat': 'exfatprogs',
  'mkfs.xfs': 'xfsprogs',
  'mkfs.btrfs': 'btrfs-progs',
  mkswap: 'util-linux',
  debugfs: 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  chromium: 'chromium',
};

/** folders searched after PATH: e2fsprogs lives in /usr/sbin, which a user's PATH often lacks */
const SBIN = ['/usr/sbin', '/sbin'];

const toolCache = new Map<string, string | undefined>();

/** Full path of an executable on PATH, or undefined (looked up once per name). */
export function whichTool(name: string): string | undefined {
  if (toolCache.has(name)) return toolCache.get(name);
  let found: string | undefined;
  if (name.includes('/')) {
    found = isExecutable(name) ? name : undefined;
  } else {
    for (const dir of [...(process.env.PATH ?? '').split(delimiter), ...SBIN]) {
      if (!dir) continue;
      const p = join(dir, name);
      if (isExecutable(p)) {
        found = p;
        break;
      }
    }
  }
  toolCache.set(name, found);
  return found;
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function hasTool(name: string): boolean {
  return whichTool(name) !== undefined;
}

/** True when running under CI, where missing tools are failures, not skips. */
export function inCI(): boolean {
  const v = process.env.CI;
  return v !== undefined && v !== '' && v.toLowerCase() !== 'false' && v !== '0';
}

/**
 * Skip `t` unless every tool is on PATH; returns whether the test may go on.
 * Use as `if (!skipUnless(t, 'qemu-img')) return;`. Under CI a missing tool throws, failing the test.
 */
export function skipUnless(t: TestContext, ...tools: string[]): boolean {
  const missing = tools.filter((n) => !hasTool(n));
  if (missing.length === 0) return true;
  const reason = missing.map((n) => `${n} not installed: install ${PACKAGE_OF[n] ?? 'it'} (looked on PATH)`).join('; ');
  if (inCI()) throw new Error(`${reason} — CI is set, so missing tools fail instead of skipping`);
  t.skip(reason);
  return false;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  /** exit status; 127 when the command could not be started; 128+n style when killed (signal set) */
  code: number;
  signal?: string;
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** milliseconds; the child is killed when exceeded (default 120 s) */
  timeout?: number;
  maxBuffer?: number;
}

/** Run a command (no shell); resolves with its output and exit status, whatever the status. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolvePromise) => {
    execFile(
      cmd,
      args,
      { cwd: opts.cwd, env: opts.env, timeout: opts.timeout ?? 120_000, maxBuffer: opts.maxBuffer ?? 64 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (!err) return resolvePromise({ stdout, stderr, code: 0 });
        const e = err as NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals | null; killed?: boolean };
        if (typeof e.code === 'number') return resolvePromise({ stdout, stderr, code: e.code });
        if (e.signal) return resolvePromise({ stdout, stderr: `${stderr}\n[killed by ${e.signal}${e.killed ? ' (timeout?)' : ''}]`, code: 128, signal: e.signal });
        // could not start (ENOENT, EACCES) or output too large
        resolvePromise({ stdout: stdout ?? '', stderr: `${stderr ?? ''}${e.message}`, code: e.code === 'ENOENT' ? 127 : 126 });
      },
    );
  });
}

/** Run this repository's `vdkit` command (bin/vdkit.js, the bundled CLI) in `cwd`; resolves whatever the status. */
export function runVdkit(args: readonly string[], cwd: string): Promise<RunResult> {
  return run(process.execPath, [join(repoRoot(), 'bin', 'vdkit.js'), ...args], { cwd });
}

/** Format a RunResult for assertion messages. */
export function describeRun(cmd: string, args: readonly string[], r: RunResult): string {
  return `$ ${cmd} ${args.map((a) => (/[\s'"]/.test(a) ? JSON.stringify(a) : a)).join(' ')}\n-> exit ${r.code}\nstdout: ${r.stdout.trim()}\nstderr: ${r.stderr.trim()}`;
}

export interface TmpDir {
  path: string;
  cleanup(): Promise<void>;
}

/**
 * A fresh folder under os.tmpdir(). With a test context it is removed when the test ends
 * (set VDKIT_KEEP_TMP=1 to keep it for a post-mortem).
 */
export async function tmpDir(t?: TestContext, prefix = 'vdkit-test-'): Promise<TmpDir> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  const dir: TmpDir = {
    path,
    async cleanup() {
      if (process.env.VDKIT_KEEP_TMP) return;
      await rm(path, { recursive: true, force: true });
    },
  };
  if (t) t.after(() => dir.cleanup());
  return dir;
}

let rootCache: string | undefined;

/** The repository root: the first folder at or above this (compiled) file holding package.json. */
export function repoRoot(): string {
  if (rootCache) return rootCache;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return (rootCache = dir);
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** Path of an outside sample image: <repo>/../shared/testdata/outside/<name>. */
export function sharedTestdata(name: string): string {
  return resolve(repoRoot(), '..', 'shared', 'testdata', 'outside', name);
}

/**
 * Test data outside the repository (../shared/testdata): true when every file is there. A user who
 * clones the repository alone gets a skip with the reason printed; under CI (which has ../shared
 * beside the clone) a missing file fails the test, as a missing tool does.
 */
export function haveTestdata(t: TestContext, ...files: string[]): boolean {
  const missing = files.filter((f) => !existsSync(f));
  if (missing.length === 0) return true;
  const reason = `needs ${missing.join(', ')} (the shared test data beside the repository)`;
  if (inCI()) throw new Error(`${reason} — CI is set, so missing test data fails instead of skipping`);
  t.skip(reason);
  return false;
}

/**
 * For a part of a test that needs outside data: true when the file is there; else, outside CI,
 * prints why that part was left out (the rest of the test still runs) and returns false.
 */
export function optionalTestdata(t: TestContext, file: string, part: string): boolean {
  if (existsSync(file)) return true;
  const reason = `${part}: needs ${file} (the shared test data beside the repository)`;
  if (inCI()) throw new Error(`${reason} — CI is set, so missing test data fails instead of skipping`);
  t.diagnostic(`left out ${reason}`);
  return false;
}

/** Decompress `srcBz2` into `dest` with `bunzip2 -c` (streamed to the file, never buffered). */
export function bunzip(srcBz2: string, dest: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    let fd: number;
    try {
      fd = openSync(dest, 'w', 0o644);
    } catch (err) {
      reject(err);
      return;
    }
    const child = spawn('bunzip2', ['-c', srcBz2], { stdio: ['ignore', fd, 'pipe'] });
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => (stderr += s));
    let settled = false;
    const done = (err?: Error) => {
      if (settled) return;
      settled = true;
      try {
        closeSync(fd);
      } catch {
        /* already closed */
      }
      if (err) reject(err);
      else resolvePromise();
    };
    child.on('error', (err) => done(err));
    child.on('close', (code, signal) => {
      if (code === 0) done();
      else done(new Error(`bunzip2 -c ${srcBz2} failed (exit ${code ?? signal}): ${stderr.trim()}`));
    });
  });
}
