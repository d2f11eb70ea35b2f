/**
 * Shared pieces of the NBD interop tests: images made by qemu-img/qemu-io with a known plan,
 * servers started in-process with serve(), URIs for the peers, and map comparisons.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { serve, type NbdServer, type ServeOptions } from '../../src/nbd/server/server.js';
import { describeRun, run, type RunResult } from '../helpers/tools.js';

export const MiB = 1024 * 1024;
export const SIZE = 8 * MiB;

export async function ok(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<RunResult> {
  const r = await run(cmd, args, { timeout: opts.timeout ?? 60_000, env: opts.env });
  assert.equal(r.code, 0, describeRun(cmd, args, r));
  return r;
}

/** the qemu-io commands every image gets (64 KiB aligned so every format and raw agree on data ranges) */
export const PLAN = ['write -P 0x61 0 64k', 'write -P 0x62 1M 192k', 'write -z 3M 64k', 'write -P 0x63 5M 64k', `write -P 0x64 ${SIZE - 65536} 64k`];
/** the non-zero ranges PLAN leaves */
export const PLAN_DATA: [number, number][] = [[0, 65536], [MiB, 192 * 1024], [5 * MiB, 65536], [SIZE - 65536, 65536]];

export interface Fixture {
  /** label */
  name: string;
  /** the file served */
  path: string;
  /** qemu's driver name for it */
  qemuFormat: string;
  /** the same content as a raw file */
  model: string;
  writable: boolean;
  /** qemu-img check understands it */
  checkable: boolean;
  /** other files of the chain, bottom first */
  links?: string[];
}

const QEMU_CREATE: Record<string, string[]> = {
  vmdk: ['-f', 'vmdk'],
  vdi: ['-f', 'vdi'],
  vpc: ['-f', 'vpc', '-o', 'force_size=on'],
  vhdx: ['-f', 'vhdx', '-o', 'block_size=1M'],
  qcow2: ['-f', 'qcow2'],
  raw: ['-f', 'raw'],
};

export async function makeFixture(dir: string, kind: string): Promise<Fixture> {
  const model = join(dir, `${kind}.model.raw`);
  if (kind === 'chain') {
    // base.vmdk <- mid.qcow2 <- top.qcow2: a cross-format chain, each link with its own writes
    const base = join(dir, 'base.vmdk');
    const mid = join(dir, 'mid.qcow2');
    const top = join(dir, 'top.qcow2');
    await ok('qemu-img', ['create', '-q', '-f', 'vmdk', base, String(SIZE)]);
    await ok('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0x11 0 256k', '-c', 'write -P 0x12 4M 64k', base]);
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.vmdk', '-F', 'vmdk', mid]);
    await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x21 64k 64k', '-c', 'write -z 4M 64k', '-c', 'write -P 0x22 6M 128k', mid]);
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', top]);
    await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x31 128k 64k', '-c', 'write -P 0x32 6M 64k', top]);
    await ok('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', top, model]);
    return { name: kind, path: top, qemuFormat: 'qcow2', model, writable: true, checkable: true, links: [base, mid] };
  }
  if (kind === 'streamOptimized') {
    const src = join(dir, 'so-src.qcow2');
    const path = join(dir, 'so.vmdk');
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', src, String(SIZE)]);
    await ok('qemu-io', ['-f', 'qcow2', ...PLAN.flatMap((c) => ['-c', c]), src]);
    await ok('qemu-img', ['convert', '-f', 'qcow2', '-O', 'vmdk', '-o', 'subformat=streamOptimized', src, path]);
    await ok('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', path, model]);
    return { name: kind, path, qemuFormat: 'vmdk', model, writable: false, checkable: true };
  }
  const ext = kind === 'vpc' ? 'vhd' : kind;
  const path = join(dir, `disk.${ext}`);
  await ok('qemu-img', ['create', '-q', ...QEMU_CREATE[kind]!, path, String(SIZE)]);
  await ok('qemu-io', ['-f', kind, ...PLAN.flatMap((c) => ['-c', c]), path]);
  await ok('qemu-img', ['convert', '-f', kind, '-O', 'raw', path, model]);
  return { name: kind, path, qemuFormat: kind, model, writable: true, checkable: ['vmdk', 'vdi', 'vhdx', 'qcow2'].includes(kind) };
}

export async function startServer(t: TestContext, opts: ServeOptions): Promise<NbdServer> {
  const s = await serve(opts);
  t.after(() => s.close());
  return s;
}

export function unixUri(server: NbdServer, name = ''): string {
  return `nbd+unix:///${encodeURIComponent(name)}?socket=${(server.address as { socket: string }).socket}`;
}

export function tcpUri(server: NbdServer, name = ''): string {
  const a = server.address as { host: string; port: number };
  return `nbd://${a.host}:${a.port}/${encodeURIComponent(name)}`;
}

export type Range = [number, number];

/** merge touching ranges */
export function merge(ranges: readonly Range[]): Range[] {
  const out: Range[] = [];
  for (const [o, l] of [...ranges].sort((a, b) => a[0] - b[0])) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] >= o) last[1] = Math.max(last[1], o + l - last[0]);
    else out.push([o, l]);
  }
  return out;
}

/** data ranges of `qemu-img map --output=json` */
export async function qemuDataRanges(path: string, format: string): Promise<Range[]> {
  const r = await ok('qemu-img', ['map', '-f', format, '--output=json', path]);
  return merge((JSON.parse(r.stdout) as { start: number; length: number; data: boolean }[]).filter((e) => e.data).map((e) => [e.start, e.length]));
}

/** `nbdinfo --map[=ctx] --json` as [offset, length, type] */
export async function nbdinfoMap(uri: string, context = 'base:allocation'): Promise<[number, number, number][]> {
  const r = await ok('nbdinfo', [`--map=${context}`, '--json', uri]);
  return (JSON.parse(r.stdout) as { offset: number; length: number; type: number }[]).map((e) => [e.offset, e.length, e.type]);
}

/** start a long-running tool; the test ends it */
export function background(t: TestContext | undefined, cmd: string, args: string[]): ChildProcess {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  child.on('error', () => {});
  t?.after(() => {
    if (child.exitCode === null) child.kill('SIGTERM');
  });
  Object.defineProperty(child, 'stderrText', { get: () => err });
  return child;
}
