/**
 * `-p/--progress` of every command that has it, as a user sees it (issue 16 item 12): on a
 * pipe (a log, CI) qemu-img's plain `    (12.00/100%)` lines, where it printed nothing; on a
 * terminal a bar whose every redraw erases the rest of the line (no "ETA 26ss"), ended by a
 * newline. And `vdkit defrag` says how many blocks it moved for every format it defragments.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Disk } from '../../src/index.js';
import { describeRun, repoRoot, runVdkit, tmpDir } from '../helpers/tools.js';

const MiB = 2 ** 20;
const LINE = /^ {4}\((\d{1,3}\.\d\d)\/100%\)$/;

/** `vdkit args` in `cwd`, exit 0; its stderr's progress lines as numbers */
async function progressLines(args: string[], cwd: string): Promise<{ stdout: string; percents: number[] }> {
  const r = await runVdkit(args, cwd);
  assert.equal(r.code, 0, describeRun('vdkit', args, r));
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  for (const l of lines) assert.match(l, LINE, `vdkit ${args.join(' ')}: stderr line ${JSON.stringify(l)}`);
  const percents = lines.map((l) => Number(LINE.exec(l)![1]));
  assert.ok(percents.length >= 1, `vdkit ${args.join(' ')} prints progress on a pipe`);
  assert.equal(percents.at(-1), 100, `vdkit ${args.join(' ')} ends at 100 %`);
  for (let k = 1; k < percents.length; k++) assert.ok(Math.floor(percents[k]!) > Math.floor(percents[k - 1]!), `one line per whole per cent at most: ${percents.join(', ')}`);
  return { stdout: r.stdout, percents };
}

/**
 * `n` units of `unit` bytes written in reverse virtual order, so the file holds them backwards,
 * in a disk of twice that (VDI needs a spare block index to move blocks)
 */
async function fragmented(path: string, format: string, unit: number, n: number, create: Record<string, unknown> = {}): Promise<void> {
  const d = await Disk.create(path, { format, capacity: 2 * n * unit, ...create });
  for (let k = n - 1; k >= 0; k--) await d.write(k * unit, Buffer.alloc(4096, k + 1));
  await d.close();
}

test('-p on a pipe prints plain progress lines: convert, commit, rebase, compact, defrag', async (t) => {
  const cwd = (await tmpDir(t, 'vdkit-progress-')).path;
  await fragmented(join(cwd, 'a.vmdk'), 'vmdk', 64 * 1024, 64);
  await progressLines(['convert', '-p', '-O', 'qcow2', 'a.vmdk', 'b.qcow2'], cwd);
  await progressLines(['compact', '-p', 'b.qcow2'], cwd);
  await progressLines(['defrag', '-p', 'a.vmdk'], cwd);

  // a three-link chain: rebase the top onto nothing (copies what the parents held), commit another
  await fragmented(join(cwd, 'base.vmdk'), 'vmdk', 64 * 1024, 32);
  for (const args of [['child', 'base.vmdk', 'mid.vmdk'], ['fill', 'mid.vmdk', '--start', '0', '--count', '8'], ['child', 'mid.vmdk', 'top.vmdk'], ['fill', 'top.vmdk', '--start', '64', '--count', '8']]) {
    const r = await runVdkit(args, cwd);
    assert.equal(r.code, 0, describeRun('vdkit', args, r));
  }
  const rebased = await progressLines(['rebase', '-p', '-b', '', 'top.vmdk'], cwd);
  assert.match(rebased.stdout, /top\.vmdk now has parent none/);
  const committed = await progressLines(['commit', '-p', 'mid.vmdk'], cwd);
  assert.match(committed.stdout, /committed .* into .*base\.vmdk/);
});

function scriptAvailable(t: TestContext): boolean {
  if (spawnSync('sh', ['-c', 'command -v script'], { encoding: 'utf8' }).status === 0) return true;
  if (process.env.CI === 'true') assert.fail('the `script` command (util-linux) is needed for a pseudo-terminal under CI=true');
  t.skip('the `script` command (util-linux) is not installed: no pseudo-terminal to test with');
  return false;
}

test('-p on a terminal: every redraw erases the rest of the line, and the bar ends with a newline', async (t) => {
  if (!scriptAvailable(t)) return;
  const cwd = (await tmpDir(t, 'vdkit-progress-tty-')).path;
  await fragmented(join(cwd, 'a.vmdk'), 'vmdk', 64 * 1024, 64);
  const bin = join(repoRoot(), 'bin', 'vdkit.js');
  for (const args of [['convert', '-p', '-O', 'vdi', 'a.vmdk', 'b.vdi'], ['defrag', '-p', 'a.vmdk']]) {
    const cmd = [process.execPath, bin, ...args].map((a) => JSON.stringify(a)).join(' ');
    // the pseudo-terminal is stdout and stderr alike: the bar and the command's report
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { cwd, encoding: 'utf8' });
    assert.equal(r.status, 0, `${cmd}: ${r.stdout}${r.stderr}`);
    const draws = r.stdout.split('\r').slice(1).filter((s) => s.startsWith('['));
    assert.ok(draws.length >= 1, `a bar is drawn: ${JSON.stringify(r.stdout)}`);
    for (const d of draws) assert.match(d, /^\[[#.]{30}\] +\d+\.\d%  .* ETA \d+s\x1b\[K/, `each redraw erases what a longer one left: ${JSON.stringify(d)}`);
    // (the terminal turns "\n" into "\r\n")
    assert.match(draws.at(-1)!, /^\[#{30}\] 100\.0%.*\x1b\[K$/, 'the last draw is 100 %');
    assert.match(r.stdout, /\[#{30}\] 100\.0%[^\r]*\x1b\[K\r?\n/, 'the bar\'s line is ended');
  }
});

test('vdkit defrag says how many blocks it moved for every format it defragments', async (t) => {
  const cwd = (await tmpDir(t, 'vdkit-defrag-moved-')).path;
  const cases: [name: string, format: string, unit: number, create?: Record<string, unknown>][] = [
    ['a.vmdk', 'vmdk', 64 * 1024],
    ['a.qcow2', 'qcow2', 64 * 1024],
    ['a.vhdx', 'vhdx', MiB, { blockSize: MiB }],
    ['a.vhd', 'vhd', 2 * MiB],
    ['a.vdi', 'vdi', MiB],
  ];
  for (const [name, format, unit, create] of cases) {
    await fragmented(join(cwd, name), format, unit, 8, create);
    let r = await runVdkit(['defrag', name], cwd);
    assert.equal(r.code, 0, describeRun('vdkit', ['defrag', name], r));
    const m = /, (\d+) data blocks? moved\n$/.exec(r.stdout);
    assert.ok(m, `${format}: vdkit defrag says what it moved: ${JSON.stringify(r.stdout)}`);
    assert.ok(Number(m[1]) >= 4, `${format}: ${m[1]} moves for 8 blocks in reverse order`);
    r = await runVdkit(['defrag', name], cwd);
    assert.match(r.stdout, /, 0 data blocks moved \(already in virtual order\)\n$/, `${format} again: ${r.stdout}`);
  }
});
