/**
 * Helpers for the malformed-input corpus: temp folders, byte poking at header offsets, and an
 * assertion that an open (or I/O call) fails fast with the expected DiskError, naming the file
 * and the field, without a big allocation.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import assert from 'node:assert/strict';
import { DiskError, type ErrorCode } from '../../src/index.js';
import { readAt } from '../helpers/bytes.js';
export { readAt };

/** the folder holding package.json, searched upward from this compiled file */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('package.json not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

export const SHARED = resolve(repoRoot(), '..', 'shared');

const made: string[] = [];
export function tempDir(tag: string): string {
  const d = mkdtempSync(join(tmpdir(), `vdkit-${tag}-`));
  made.push(d);
  return d;
}
export function removeTempDirs(): void {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
}

/** bunzip2 a file of the shared test data into `dir` (via the bunzip2 tool); returns the output path */
export function bunzip(src: string, dir: string, name: string): string {
  const out = join(dir, name);
  writeFileSync(out, execFileSync('bunzip2', ['-c', src], { maxBuffer: 64 * 1024 * 1024 }));
  return out;
}

export async function poke(path: string, offset: number, data: Buffer | number[]): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const b = Buffer.isBuffer(data) ? data : Buffer.from(data);
    await fh.write(b, 0, b.length, offset);
  } finally {
    await fh.close();
  }
}
export const u16le = (v: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return b;
};
export const u32le = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
};
export const u64le = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
};

export function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

export interface Expect {
  code: ErrorCode;
  /** the file the error must name (details.path or in the message) */
  path: string;
  /** details.field must equal this (string) or match it (RegExp) */
  field?: string | RegExp;
  /** the message must match */
  message?: RegExp;
  /** CPU time budget of the call, ms (default 100) */
  ms?: number;
}

const BIG = 64 * 1024 * 1024;

/**
 * Run `fn` (an open or an I/O call), which must reject with a DiskError as described, within
 * the time budget and with arrayBuffers growing by less than 64 MiB. The budget is CPU time
 * (this process's, its I/O threads included): it measures the work the call does whatever else the
 * machine runs; wall time only guards against a hang (10 s).
 */
export async function expectFailure(fn: () => Promise<unknown>, want: Expect): Promise<DiskError> {
  const budget = want.ms ?? 100;
  let best = Infinity;
  let e: DiskError | undefined;
  // A first call can pay for compiling code: one over budget is retried up to twice and the
  // fastest run counts. The error must be the same every time.
  for (let attempt = 0; attempt < 3 && best >= budget; attempt++) {
    const r = await attemptFailure(fn, want);
    best = Math.min(best, r.ms);
    e = r.error;
  }
  assert.ok(best < budget, `took ${best.toFixed(1)} ms of CPU (budget ${budget} ms)`);
  return e!;
}

async function attemptFailure(fn: () => Promise<unknown>, want: Expect): Promise<{ error: DiskError; ms: number }> {
  const memBefore = process.memoryUsage().arrayBuffers;
  let peak = memBefore;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().arrayBuffers);
  }, 2);
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  let caught: unknown;
  let value: unknown;
  try {
    value = await fn();
  } catch (err) {
    caught = err;
  }
  const cpu = process.cpuUsage(c0);
  const ms = (cpu.user + cpu.system) / 1000;
  assert.ok(performance.now() - t0 < 10_000, `the call ended (took ${(performance.now() - t0).toFixed(0)} ms of wall time)`);
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().arrayBuffers);
  if (caught === undefined) {
    // an unexpected success: close what was opened before failing
    const v = value as { close?: () => Promise<void> } | undefined;
    await v?.close?.().catch(() => {});
    assert.fail(`expected ${want.code} for ${want.path}, but the call succeeded`);
  }
  assert.ok(caught instanceof DiskError, `expected a DiskError, got ${String((caught as Error)?.stack ?? caught)}`);
  const e = caught;
  assert.equal(e.code, want.code, `code (message: ${e.message})`);
  assert.ok(e.details.path === want.path || e.message.includes(want.path), `error names ${want.path}: ${JSON.stringify(e.details.path)} / ${e.message}`);
  if (typeof want.field === 'string') assert.equal(e.details.field, want.field, `field (message: ${e.message})`);
  else if (want.field) assert.match(String(e.details.field), want.field, `field (message: ${e.message})`);
  if (want.field !== undefined) assert.ok(e.message.includes(String(e.details.field)), `message names the field: ${e.message}`);
  if (want.message) assert.match(e.message, want.message);
  assert.ok(peak - memBefore < BIG, `arrayBuffers grew by ${((peak - memBefore) / 2 ** 20).toFixed(1)} MiB`);
  return { error: e, ms };
}
