/**
 * The CLI's guards against silent surprises (issue 16): input that disagrees with --input-size,
 * a read range checked before anything is written, Ctrl-C and SIGTERM during long commands,
 * and exit statuses (2 for a wrong command line, non-zero for a target profile's refusal).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, open, readdir, rm } from 'node:fs/promises';
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

test('CLI read and fill: a range running off the end fails (OUTOFRANGE) before any byte is written', () =>
  inTemp('vdkit-guard-range-', async (cwd) => {
    assert.equal((await vdkit(['create', '-f', 'raw', 'd.raw', '64M'], cwd)).code, 0);
    const r = await vdkit(['read', '--offset', '63M', '--length', '2M', 'd.raw'], cwd);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /OUTOFRANGE \(16007\): d\.raw: .*\(expected "end <= 67108864", found 68157440\)/);
    assert.equal(r.stdout.length, 0, 'nothing on stdout');
    const hex = await vdkit(['read', '--hex', '--offset', '63M', '--length', '2M', 'd.raw'], cwd);
    assert.equal(hex.code, 1);
    assert.equal(hex.stdout.length, 0, 'no hex dump either');
    // fill: sectors 129000.. run past the last sector (131071); none of them is filled (it wrote
    // 1 MiB at a time, and filled the first 2048 before failing)
    const f = await vdkit(['fill', '--start', '129000', '--count', '3000', '--value', '0x5a', 'd.raw'], cwd);
    assert.equal(f.code, 1, f.stderr);
    assert.match(f.stderr, /OUTOFRANGE/);
    const tail = await vdkit(['read', '--offset', String(129000 * 512), '--length', String(2072 * 512), 'd.raw'], cwd);
    assert.equal(tail.code, 0, tail.stderr);
    assert.ok(tail.stdout.equals(Buffer.alloc(2072 * 512)), 'the sectors that fit stay zero');
    // the last byte is still readable
    assert.equal((await vdkit(['read', '--offset', String(64 * 2 ** 20 - 1), '--length', '1', 'd.raw'], cwd)).stdout.length, 1);
  }));

/** a 512 MiB raw with 1 MiB of random bytes every 8 MiB, written sparse: a convert runs long enough to stop */
async function bigSparseRaw(path: string): Promise<void> {
  const f = await open(path, 'w');
  try {
    await f.truncate(512 * 2 ** 20);
    for (let at = 0; at < 512 * 2 ** 20; at += 8 * 2 ** 20) await f.write(randomBytes(2 ** 20), 0, 2 ** 20, at);
  } finally {
    await f.close();
  }
}

/** spawn `vdkit convert --json-progress ...` and send `sig` when its first progress line arrives */
function convertStoppedBy(sig: NodeJS.Signals, args: string[], cwd: string): Promise<Run & { sent: boolean }> {
  return new Promise((res, rej) => {
    const p = spawn(process.execPath, [BIN, 'convert', '--json-progress', ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    let sent = false;
    p.stdout.on('data', (c: Buffer) => out.push(c));
    p.stderr.on('data', (c: Buffer) => {
      err += c.toString();
      if (!sent && err.includes('\n')) {
        sent = true;
        p.kill(sig);
      }
    });
    p.on('error', rej);
    p.on('close', (code, signal) => res({ code, signal, stdout: Buffer.concat(out), stderr: err, sent }));
  });
}

test('CLI convert: SIGINT / SIGTERM cancel it, remove the partial target, say "cancelled", exit 130 / 143', () =>
  inTemp('vdkit-guard-sig-', async (cwd) => {
    await bigSparseRaw(join(cwd, 'src.raw'));
    for (const [sig, code, format] of [['SIGINT', 130, 'qcow2'], ['SIGTERM', 143, 'vmdk']] as const) {
      const r = await convertStoppedBy(sig, ['-f', 'raw', '-O', format, 'src.raw', `dst.${format}`], cwd);
      assert.ok(r.sent, `${sig} was sent after the first progress line: ${r.stderr}`);
      assert.equal(r.signal, null, `${sig}: vdkit handled the signal instead of being killed by it`);
      assert.equal(r.code, code, `${sig}: exit status (stderr: ${r.stderr})`);
      assert.equal(r.stderr.trim().split('\n').at(-1), 'vdkit: cancelled');
      assert.deepEqual(await readdir(cwd), ['src.raw'], `${sig}: no target and no .vdkit-partial-* file left`);
    }
  }));

test('CLI exit statuses: unknown format or type and a size past 2^53 are wrong usage (2); a target profile\'s refusal fails (1)', () =>
  inTemp('vdkit-guard-exit-', async (cwd) => {
    const usage = async (args: string[], text: RegExp) => {
      const r = await vdkit(args, cwd);
      assert.equal(r.code, 2, `vdkit ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, text, args.join(' '));
    };
    await usage(['create', '-f', 'nosuch', 'a.img', '1M'], /^vdkit: -f: unknown format "nosuch" \(known: vmdk, vdi, vhd, vhdx, qcow2, raw\)$/m);
    await usage(['create', '-t', 'nosuch', 'a.vmdk', '1M'], /-t: unknown vmdk type "nosuch" \(known: monolithicSparse, /);
    await usage(['create', '-f', 'qcow2', '-t', 'nosuch', 'a.qcow2', '1M'], /-t: unknown qcow2 type "nosuch" \(known: v3, v2/);
    await usage(['create', '-f', 'vhd', '-o', 'subformat=huge', 'a.vhd', '1M'], /-o: unknown vhd type "huge"/);
    await usage(['create', 'ok.vmdk', '99999T'], /size: 99999T is too large: the most vdkit takes is 9007199254740991 bytes/);
    await usage(['info', '-f', 'nosuch', 'a.img'], /-f: unknown format "nosuch"/);
    await usage(['convert', '-O', 'nosuch', 'a.img', 'b.img'], /-O: unknown format "nosuch"/);
    await usage(['convert', '-O', 'vdi', '-t', 'nosuch', 'a.img', 'b.vdi'], /-t: unknown vdi type "nosuch" \(known: dynamic, fixed/);
    await usage(['convert', '--target', 'mars', 'a.img', 'b.img'], /--target: unknown target "mars"/);
    await usage(['measure', '-O', 'qcow2', '-t', 'v9', '--size', '1M'], /-t: unknown qcow2 type "v9"/);
    assert.deepEqual(await readdir(cwd), [], 'nothing created');

    // known spellings still pass: qemu's format name, type numbers and aliases
    assert.equal((await vdkit(['create', '-f', 'vpc', 'v.vhd', '1M'], cwd)).code, 0);
    assert.equal((await vdkit(['create', '-f', 'qcow2', '-t', '0.10', 'q.qcow2', '1M'], cwd)).code, 0);
    assert.equal((await vdkit(['create', '-t', '1', 's.vmdk', '1M'], cwd)).code, 0);
    assert.equal((await vdkit(['create', '-f', 'raw', 'd.raw', '8M'], cwd)).code, 0);
    await usage(['resize', 'd.raw', '99999T'], /size: 99999T is too large/);

    // -O against the profile: the image is made as asked, and the command says the target refuses it, exit 1
    const refused = await vdkit(['convert', '--target', 'azure', '-O', 'vhdx', 'd.raw', 'az.vhdx'], cwd);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /az\.vhdx: azure would refuse it/);
    const taken = await vdkit(['convert', '--target', 'azure', 'd.raw', 'az.vhd'], cwd);
    assert.equal(taken.code, 0, taken.stderr);
    assert.match(taken.stderr, /az\.vhd: nothing blocks azure/);
  }));
