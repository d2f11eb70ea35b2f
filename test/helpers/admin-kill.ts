/**
 * Shared by the resize/rename kill tests (admin-kill, shrink-kill): the disks they kill hold
 * one pattern MiB at 2 MiB and zeros everywhere else, and after every kill the content, the
 * size and the checkers are asked about it.
 */
import assert from 'node:assert/strict';
import { Disk, checkDisk, openFindings } from '../../src/index.js';
import { xorshiftBytes } from './prng.js';
import { describeRun, run } from './tools.js';

export const MiB = 2 ** 20;
export const PATTERN = xorshiftBytes(MiB, 77);
export const PATTERN_AT = 2 * MiB;

export async function vdkitNoCorruption(path: string, what: string): Promise<void> {
  const report = await checkDisk(path, { repair: false });
  assert.equal(openFindings(report).corruptions, 0, `${what}: ${JSON.stringify(report.findings)}`);
}

/** the pattern at PATTERN_AT, zeros everywhere else, and nothing else; returns the size */
export async function assertContent(path: string, sizes: number[], what: string): Promise<number> {
  const d = await Disk.open(path, { readOnly: true });
  try {
    assert.ok(sizes.includes(d.capacity), `${what}: size ${d.capacity}, expected one of ${sizes}`);
    assert.ok((await d.read(PATTERN_AT, MiB)).equals(PATTERN), `${what}: the old data changed`);
    const zeros = Buffer.alloc(4 * MiB);
    for (const r of await d.blockStatus()) {
      if (r.state !== 'data') continue;
      for (let at = r.offset; at < r.offset + r.length; at += zeros.length) {
        const b = await d.read(at, Math.min(zeros.length, r.offset + r.length - at));
        // the pattern's bytes were checked above; blank them so the rest must be zeros
        const from = Math.max(PATTERN_AT, at);
        const to = Math.min(PATTERN_AT + MiB, at + b.length);
        if (from < to) b.fill(0, from - at, to - at);
        assert.ok(b.equals(zeros.subarray(0, b.length)), `${what}: bytes at ${at} are not zeros`);
      }
    }
    return d.capacity;
  } finally {
    await d.close();
  }
}

/** qemu-img check: no corruption (exit 2); leaks (exit 3) are what a killed allocation may leave */
export async function checkNoCorruption(path: string, format: string): Promise<void> {
  const args = ['check', '-q', '-f', format, path];
  const r = await run('qemu-img', args);
  assert.ok(r.code === 0 || r.code === 3, describeRun('qemu-img', args, r));
}

/** one kind of disk in the resize kill tests (admin-kill, shrink-kill), made by qemu-img */
export interface ResizeKind {
  label: string;
  ext: string;
  /** qemu-img's format name */
  qemu: string;
  /** qemu-img create options */
  create: string[];
  /** qemu-img check understands it */
  check: boolean;
  /** bytes each resize adds (admin-kill) or takes away (shrink-kill) */
  step: number;
}
