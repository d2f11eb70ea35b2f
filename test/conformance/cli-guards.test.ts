/**
 * The CLI's guards against silent surprises (issue 16): input that disagrees with --input-size,
 * a read range checked before anything is written, Ctrl-C and SIGTERM during long commands,
 * and exit statuses (2 for a wrong command line, non-zero for a target profile's refusal).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const BIN = join(REPO, 'bin', 'vdkit.js');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

function vdkit(args: string[], cwd: string, input?: Buffer): Promise<Run> {
  return new Promise((res, rej) => {
    const p = spawn(process.execPath, [BIN, ...args], { cwd });
    const out: Buffer[] = [];
    let err = '';
    p.stdout.on('data', (c: Buffer) => out.push(c));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    // vdkit may stop reading stdin early (that is what some of these tests check)
    p.stdin.on('error', () => {});
    p.on('error', rej);
    p.on('close', (code, signal) => res({ code, signal, stdout: Buffer.concat(out), stderr: err }));
    p.stdin.end(input ?? Buffer.alloc(0));
  });
}

async function inTemp(prefix: string, fn: (cwd: string) => Promise<void>): Promise<void> {
  const cwd = await mkdtemp(join(tmpdir(), prefix));
  try {
    await fn(cwd);
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
}

test('CLI convert from stdin: input longer or shorter than --input-size fails (INVAL naming --input-size), no target left', () =>
  inTemp('vdkit-guard-in-', async (cwd) => {
    const MiB = 2 ** 20;
    // longer: 3 MiB piped with --input-size 2M (and 100 bytes past a 512-byte size: the excess lies in the first sector read)
    const long = await vdkit(['convert', '-f', 'raw', '--input-size', '2M', '-O', 'vhdx', '-', 'long.vhdx'], cwd, randomBytes(3 * MiB));
    assert.equal(long.code, 1, long.stderr);
    assert.match(long.stderr, /INVAL \(16000\): -: --input-size: the input goes on past the size given \(2097152 bytes\)/);
    const tiny = await vdkit(['convert', '-f', 'raw', '--input-size', '512', '-O', 'raw', '-', 'tiny.raw'], cwd, randomBytes(612));
    assert.equal(tiny.code, 1, tiny.stderr);
    assert.match(tiny.stderr, /--input-size: the input goes on past the size given \(512 bytes\)/);
    // shorter: says so, not "metadata is corrupt"
    const short = await vdkit(['convert', '-f', 'raw', '--input-size', '2M', '-O', 'vhdx', '-', 'short.vhdx'], cwd, randomBytes(MiB));
    assert.equal(short.code, 1, short.stderr);
    assert.match(short.stderr, /--input-size: the input ended after 1048576 bytes, short of the size given \(expected 2097152, found 1048576\)/);
    assert.doesNotMatch(short.stderr, /corrupt/i);
    assert.deepEqual(await readdir(cwd), [], 'no target and no partial file left');
    // exactly the size: a disk with those bytes
    const data = randomBytes(2 * MiB);
    const exact = await vdkit(['convert', '-f', 'raw', '--input-size', '2M', '-O', 'vhdx', '-', 'exact.vhdx'], cwd, data);
    assert.equal(exact.code, 0, exact.stderr);
    const back = await vdkit(['read', '--offset', '0', '--length', '2M', 'exact.vhdx'], cwd);
    assert.ok(back.stdout.equals(data), 'the bytes piped in read back');
  }));
