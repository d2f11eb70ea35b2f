/**
 * The browser build end to end: `vdkit web` serves dist/web, headless Chromium (Debian's, driven
 * by playwright-core, no browser download) opens the page and picks the files of a qcow2, a
 * two-file VMDK (twoGbMaxExtentSparse: descriptor + extent), a streamOptimized VMDK (the inflate
 * path), a VHD chain (parent and child picked together) and a VHDX. For each, the page's info,
 * chain and check text; its map's data ranges against `qemu-img map --output=json` (the VHD
 * child, which qemu cannot read, against `vdkit map --output=json`); its checksum against
 * `vdkit checksum`. Every request the page makes is recorded: GETs of the page's own files only,
 * no bodies. Screenshots of each view at 1280x800 go to dist/test-output/web/.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeRun, inCI, repoRoot, run, runVdkit, skipUnless, tmpDir, whichTool } from '../helpers/tools.js';

interface Range {
  start: number;
  length: number;
}

/** adjacent data ranges joined, as a set of runs to compare */
function dataRuns(ranges: readonly (Range & { data?: boolean; state?: string })[]): Range[] {
  const out: Range[] = [];
  for (const r of ranges) {
    if (!(r.data === true || r.state === 'data')) continue;
    const last = out[out.length - 1];
    if (last && last.start + last.length === r.start) last.length += r.length;
    else out.push({ start: r.start, length: r.length });
  }
  return out;
}

async function ok(cmd: string, args: string[], cwd?: string): Promise<string> {
  const r = cmd === 'vdkit' ? await runVdkit(args, cwd!) : await run(cmd, args, { cwd });
  assert.equal(r.code, 0, describeRun(cmd, args, r));
  return r.stdout;
}

interface Case {
  label: string;
  /** the files picked, in the order given to the file input */
  files: string[];
  /** the image the page should open on its own: the top */
  top: string;
  format: string;
  type: string;
  chain: string[];
  /**
   * the map's oracle: qemu-img's map of the top, or vdkit's where qemu cannot read it (a VHD
   * child) or reports every byte as data (qemu's vhdx driver has no block status: then the
   * page's data must at least lie inside qemu's)
   */
  mapBy: 'qemu' | 'vdkit';
}

async function makeCases(dir: string): Promise<Case[]> {
  const q = (...args: string[]) => ok('qemu-img', args, dir);
  const io = (file: string, ...cmds: string[]) => ok('qemu-io', [...cmds.flatMap((c) => ['-c', c]), file], dir);
  await q('create', '-q', '-f', 'qcow2', 'disk.qcow2', '64M');
  await io('disk.qcow2', 'write -P 0x5a 1M 2M', 'write -z 8M 1M', 'write -P 1 40M 64k');
  await q('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', 'split.vmdk', '32M');
  await io('split.vmdk', 'write -P 0x21 0 192k', 'write -P 0x22 20M 1M');
  await q('convert', '-f', 'qcow2', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'disk.qcow2', 'stream.vmdk');
  await q('create', '-q', '-f', 'vpc', 'parent.vhd', '32M');
  await io('parent.vhd', 'write -P 0x31 0 3M', 'write -P 0x32 16M 2M');
  await ok('vdkit', ['child', 'parent.vhd', 'child.vhd'], dir);
  await ok('vdkit', ['fill', 'child.vhd', '--start', String((2 << 20) / 512), '--count', String((4 << 20) / 512), '--value', '0x41'], dir);
  await q('create', '-q', '-f', 'vhdx', 'disk.vhdx', '48M');
  await io('disk.vhdx', 'write -P 0x51 4M 1M', 'write -P 0x52 30M 3M');
  return [
    { label: 'qcow2', files: ['disk.qcow2'], top: 'disk.qcow2', format: 'qcow2', type: 'v3', chain: ['disk.qcow2'], mapBy: 'qemu' },
    { label: 'vmdk-split', files: ['split-s001.vmdk', 'split.vmdk'], top: 'split.vmdk', format: 'vmdk', type: 'twoGbMaxExtentSparse', chain: ['split.vmdk'], mapBy: 'qemu' },
    { label: 'vmdk-stream', files: ['stream.vmdk'], top: 'stream.vmdk', format: 'vmdk', type: 'streamOptimized', chain: ['stream.vmdk'], mapBy: 'qemu' },
    { label: 'vhd-chain', files: ['parent.vhd', 'child.vhd'], top: 'child.vhd', format: 'vhd', type: 'differencing', chain: ['child.vhd', 'parent.vhd'], mapBy: 'vdkit' },
    { label: 'vhdx', files: ['disk.vhdx'], top: 'disk.vhdx', format: 'vhdx', type: 'dynamic', chain: ['disk.vhdx'], mapBy: 'vdkit' },
  ];
}

/** `vdkit web --port 0`: its URL, and a stop that resolves to its exit status */
async function startWeb(): Promise<{ url: string; stop(): Promise<number | null> }> {
  const child = spawn(process.execPath, [join(repoRoot(), 'bin', 'vdkit.js'), 'web', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let said = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      said += String(d);
      const m = /http:\/\/\S+\//.exec(said);
      if (m) resolve(m[0]);
    });
    child.stderr.on('data', (d: Buffer) => (said += String(d)));
    child.once('exit', (code) => reject(new Error(`vdkit web exited ${code} before listening: ${said}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    url,
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

test('the page reads picked images in the browser: info, chain, check, map and checksum as the CLI and qemu-img say', { timeout: 120_000 }, async (t) => {
  if (!skipUnless(t, 'qemu-img', 'qemu-io', 'chromium')) return;
  let chromium: typeof import('playwright-core').chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (err) {
    if (inCI()) throw err;
    t.skip(`playwright-core is not installed (npm ci installs it): ${(err as Error).message}`);
    return;
  }
  const dir = (await tmpDir(t, 'vdkit-web-')).path;
  const shots = join(repoRoot(), 'dist', 'test-output', 'web');
  await mkdir(shots, { recursive: true });
  const cases = await makeCases(dir);
  const server = await startWeb();
  const browser = await chromium.launch({ executablePath: whichTool('chromium'), args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] });
  const requests: { method: string; url: string; body: number }[] = [];
  const problems: string[] = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.setDefaultTimeout(15_000);
    page.on('request', (r) => requests.push({ method: r.method(), url: r.url(), body: r.postDataBuffer()?.length ?? 0 }));
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
    });
    await page.goto(server.url);
    assert.match(await page.locator('#privacy').innerText(), /never leave this machine/);

    for (const c of cases) {
      await t.test(c.label, async () => {
        await page.setInputFiles('#files', c.files.map((f) => join(dir, f)));
        await page.waitForFunction(() => ['info', 'check', 'map'].every((v) => ['done', 'error'].includes(document.getElementById(`view-${v}`)!.dataset.state!)), null, { timeout: 20_000 });
        await page.click('#tab-info');
        const info = page.locator('#view-info');
        assert.equal(await info.getAttribute('data-state'), 'done', await info.innerText());
        assert.equal(await page.locator('#info-format').innerText(), c.format);
        assert.equal(await page.locator('#info-type').innerText(), c.type);
        const links = await page.locator('#info-chain > li').evaluateAll((lis) => lis.map((li) => li.getAttribute('data-path')));
        assert.deepEqual(links, c.chain.map((f) => `/${f}`), 'the chain, top first');
        const size = JSON.parse((await ok('qemu-img', ['info', '--output=json', join(dir, c.chain[c.chain.length - 1]!)])) as string)['virtual-size'] as number;
        assert.match(await page.locator('#info-size').innerText(), new RegExp(`\\(${size.toLocaleString('en')} bytes\\)`));
        await page.screenshot({ path: join(shots, `${c.label}-info.png`) });

        assert.equal(await page.locator('#check-summary').innerText(), 'No errors were found on the image.');

        const mapped = JSON.parse((await page.locator('#view-map').getAttribute('data-map'))!) as { capacity: number; ranges: (Range & { state: string })[] };
        assert.equal(mapped.capacity, size);
        const oracle =
          c.mapBy === 'qemu'
            ? (JSON.parse(await ok('qemu-img', ['map', '--output=json', join(dir, c.top)])) as (Range & { data: boolean })[])
            : (JSON.parse(await ok('vdkit', ['map', '--output=json', c.top], dir)) as (Range & { data: boolean })[]);
        assert.deepEqual(dataRuns(mapped.ranges), dataRuns(oracle), `data ranges of ${c.top} (${c.mapBy === 'qemu' ? 'qemu-img' : 'vdkit'} map)`);
        assert.ok(dataRuns(mapped.ranges).length > 0, 'the image has data');
        if (c.mapBy === 'vdkit' && c.chain.length === 1) {
          const qemu = dataRuns(JSON.parse(await ok('qemu-img', ['map', '--output=json', join(dir, c.top)])) as (Range & { data: boolean })[]);
          for (const r of dataRuns(mapped.ranges)) assert.ok(qemu.some((q) => q.start <= r.start && r.start + r.length <= q.start + q.length), `data at ${r.start}+${r.length} is data for qemu-img too`);
        }

        await page.click('#tab-checksum');
        await page.click('#checksum-start');
        await page.waitForFunction(() => document.getElementById('view-checksum')!.dataset.state !== 'running', null, { timeout: 20_000 });
        const want = (await ok('vdkit', ['checksum', c.top], dir)).split(/\s+/)[0];
        assert.equal(await page.locator('#checksum-value').innerText(), want);
        if (c.label === 'vhd-chain') {
          await page.screenshot({ path: join(shots, `${c.label}-checksum.png`) });
          for (const v of ['check', 'map']) {
            await page.click(`#tab-${v}`);
            await page.screenshot({ path: join(shots, `${c.label}-${v}.png`) });
          }
        }
      });
    }

    await t.test('a checksum cancelled mid-way stops and says so', async () => {
      // a sparse raw file: no holes are known through a Blob, so every block is read and hashed
      const big = join(dir, 'big.raw');
      await ok('truncate', ['-s', '1G', big]);
      await page.setInputFiles('#files', [big]);
      await page.waitForFunction(() => document.getElementById('view-info')!.dataset.state === 'done');
      await page.click('#tab-checksum');
      await page.click('#checksum-start');
      await page.waitForFunction(() => (document.getElementById('checksum-progress') as HTMLProgressElement).value > 0);
      await page.click('#checksum-cancel');
      await page.waitForFunction(() => document.getElementById('view-checksum')!.dataset.state !== 'running');
      assert.equal(await page.locator('#view-checksum').getAttribute('data-state'), 'cancelled');
      assert.equal(await page.locator('#checksum-status').innerText(), 'cancelled');
      assert.equal(await page.locator('#checksum-value').innerText(), '');
      assert.equal(await page.locator('#checksum-start').isEnabled(), true, 'a new run can start');
    });

    await t.test('the tabs work from the keyboard', async () => {
      await page.focus('#tab-info');
      await page.keyboard.press('ArrowRight');
      assert.equal(await page.evaluate(() => document.activeElement?.id), 'tab-check');
      assert.equal(await page.locator('#view-check').isVisible(), true);
      await page.keyboard.press('End');
      assert.equal(await page.evaluate(() => document.activeElement?.id), 'tab-checksum');
    });

    await t.test('the dark scheme', async () => {
      await page.emulateMedia({ colorScheme: 'dark' });
      await page.click('#tab-map');
      await page.screenshot({ path: join(shots, 'dark-map.png') });
      const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      assert.notEqual(bg, 'rgb(253, 253, 252)', 'the dark scheme has its own background');
    });
  } finally {
    await browser.close();
    const status = await server.stop();
    assert.equal(status, 0, 'vdkit web stops cleanly on SIGTERM');
  }
  await writeFile(join(shots, 'requests.json'), JSON.stringify(requests, null, 2));
  assert.deepEqual(problems, [], 'no errors or warnings in the page');
  // the page asks for its own static files only, never sends a body (the images stay in the browser)
  const origin = new URL(server.url).origin;
  for (const r of requests) {
    assert.equal(r.method, 'GET', `${r.method} ${r.url}`);
    assert.equal(r.body, 0, `${r.url} carries a body`);
    assert.ok(r.url.startsWith(origin + '/'), `a request leaves the page's origin: ${r.url}`);
    assert.ok(['/', '/style.css', '/app.js', '/worker.js'].includes(new URL(r.url).pathname), `an unexpected request: ${r.url}`);
  }
  assert.ok(requests.some((r) => r.url.endsWith('/worker.js')), 'the worker was loaded (requests from it are recorded too)');
});

test('vdkit web serves its files only: GET and HEAD, nothing outside the folder, no bodies taken', async () => {
  const server = await startWeb();
  try {
    const index = await fetch(server.url);
    assert.equal(index.status, 200);
    assert.match(index.headers.get('content-type') ?? '', /text\/html/);
    assert.match(await index.text(), /never leave this machine/);
    assert.equal((await fetch(new URL('worker.js', server.url))).headers.get('content-type'), 'text/javascript; charset=utf-8');
    assert.equal((await fetch(new URL('/../package.json', server.url))).status, 404);
    assert.equal((await fetch(new URL('/%2e%2e/%2e%2e/package.json', server.url))).status, 404);
    assert.equal((await fetch(server.url, { method: 'POST', body: 'x' })).status, 405);
    assert.equal((await fetch(server.url, { method: 'HEAD' })).status, 200);
  } finally {
    assert.equal(await server.stop(), 0);
  }
});
