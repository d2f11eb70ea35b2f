/**
 * Shared pieces of the interop tests: a seeded PRNG, a raw "model" file that mirrors every
 * write, byte comparison of a Disk against a raw file, and small readers of VMDK on-disk facts
 * (descriptor CID, sparse header bytes) done with plain fs so they do not trust vdkit's parser.
 */
import assert from 'node:assert/strict';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import type { Disk } from '../../src/index.js';
import { describeRun, run, type RunResult } from '../helpers/tools.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const SECTOR = 512;
export const GRAIN = 64 * KiB;

import { Rng, mulberry32 } from '../helpers/prng.js';
import { firstDifference } from '../helpers/model.js';

export { Rng, mulberry32 };

/** Stable 32-bit seed from a test name (FNV-1a), so every case has its own fixed sequence. */
export function seedOf(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export interface PlannedWrite {
  offset: number;
  data: Buffer;
}

/**
 * A seeded write sequence over a disk of `capacity` bytes: writes straddling each of the
 * `boundaries` (grain, grain-table, extent), the last sector, the very first bytes, random
 * offsets; lengths 1 B..200 KiB; some buffers all zero (over written and unwritten ground).
 */
export function planWrites(rng: Rng, capacity: number, boundaries: readonly number[], randomCount: number): PlannedWrite[] {
  const out: PlannedWrite[] = [];
  const maxLen = 200 * KiB;
  const fill = (len: number): Buffer => (rng.float() < 0.15 ? Buffer.alloc(len) : rng.bytes(len));
  const add = (offset: number, len: number, data?: Buffer) => {
    offset = Math.max(0, Math.min(offset, capacity - 1));
    len = Math.max(1, Math.min(len, capacity - offset));
    out.push({ offset, data: data ?? fill(len) });
  };
  add(0, rng.int(1, 4 * KiB));
  for (const b of boundaries) {
    if (b <= 0 || b >= capacity) continue;
    // one byte before the boundary to a few bytes or many KiB after it
    add(b - 1, rng.pick([2, 513, rng.int(2, maxLen)]));
    add(b - rng.int(1, 3 * SECTOR), rng.int(SECTOR, 8 * KiB));
  }
  // the last sector, the last byte, and a write running to the very end
  add(capacity - SECTOR, SECTOR);
  add(capacity - 1, 1);
  add(capacity - rng.int(1, maxLen), maxLen);
  for (let i = 0; i < randomCount; i++) {
    const len = rng.int(1, maxLen);
    const aligned = rng.float() < 0.3;
    let offset = rng.int(0, capacity - 1);
    if (aligned) offset -= offset % GRAIN;
    add(offset, len);
  }
  // zero buffers over ground that was just written (must read back as zeros)
  for (const w of out.slice(0, 4)) add(w.offset, Math.min(w.data.length, 7 * KiB), Buffer.alloc(Math.min(w.data.length, 7 * KiB)));
  // and a rewrite of an earlier range with new bytes (in-place update of an allocated grain)
  const again = out[Math.floor(out.length / 2)]!;
  add(again.offset, again.data.length);
  return out;
}

/** A plain sparse raw file of the disk's size that receives the same writes. */
export class RawModel {
  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly capacity: number,
  ) {}

  static async create(path: string, capacity: number): Promise<RawModel> {
    const fh = await open(path, 'w+');
    await fh.truncate(capacity);
    return new RawModel(path, fh, capacity);
  }

  /** adopt an existing raw file (e.g. a qemu-img convert -O raw output) */
  static async open(path: string): Promise<RawModel> {
    const fh = await open(path, 'r+');
    const { size } = await fh.stat();
    return new RawModel(path, fh, size);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    assert.ok(offset + data.length <= this.capacity, 'model write past the end');
    let done = 0;
    while (done < data.length) done += (await this.fh.write(data, done, data.length - done, offset + done)).bytesWritten;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return readExact(this.fh, offset, length);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

export async function readExact(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
    if (bytesRead === 0) break; // past the end: zeros
    done += bytesRead;
  }
  return buf;
}


/** Assert that bytes [offset, offset+length) of the disk equal the same bytes of the raw file. */
export async function assertRangeEqual(disk: Disk, raw: RawModel | FileHandle, offset: number, length: number, label: string): Promise<void> {
  const want = raw instanceof RawModel ? await raw.read(offset, length) : await readExact(raw, offset, length);
  const got = await disk.read(offset, length);
  if (!got.equals(want)) {
    const i = firstDifference(got, want);
    assert.fail(`${label}: vdkit read differs from the reference at byte ${offset + i} (vdkit 0x${got[i]?.toString(16)}, reference 0x${want[i]?.toString(16)}), range ${offset}+${length}`);
  }
}

/**
 * Compare every byte of the disk with a raw file, in `chunk`-sized pieces. Every byte is read
 * through vdkit (unless `holeEvery` says otherwise); the reference is read only where the raw
 * file has data: its holes (found with `qemu-img map -f raw`, i.e. SEEK_DATA/SEEK_HOLE) read as
 * zeros by definition, and reading gigabytes of holes costs seconds on some hosts.
 */
export async function assertWholeDiskEqual(disk: Disk, rawPath: string, label: string, opts: { chunk?: number; holeEvery?: number } = {}): Promise<void> {
  const chunk = opts.chunk ?? 4 * MiB;
  // holeEvery = k > 1: of the chunks where the reference is a hole, read only every k-th through
  // vdkit (flat extents make vdkit read the holes of a multi-GiB file). Default 1: skip nothing.
  const holeEvery = opts.holeEvery ?? 1;
  let holeChunks = 0;
  const dataRanges = (await qemuMap(rawPath, 'raw')).filter((e) => e.data || !e.zero);
  const fh = await open(rawPath, 'r');
  try {
    const { size } = await fh.stat();
    assert.equal(size, disk.capacity, `${label}: reference raw file size vs vdkit capacity`);
    const a = Buffer.alloc(chunk);
    const b = Buffer.alloc(chunk);
    const zeros = Buffer.alloc(chunk);
    let r = 0; // first data range that may still intersect
    for (let at = 0; at < disk.capacity; at += chunk) {
      const n = Math.min(chunk, disk.capacity - at);
      const got = a.subarray(0, n);
      while (r < dataRanges.length && dataRanges[r]!.start + dataRanges[r]!.length <= at) r++;
      const hole = r >= dataRanges.length || dataRanges[r]!.start >= at + n;
      let want: Buffer;
      if (hole) {
        if (holeChunks++ % holeEvery !== 0 && at + chunk < disk.capacity) continue;
        want = zeros.subarray(0, n);
        await disk.readInto(got, at);
      } else {
        want = b.subarray(0, n);
        await Promise.all([disk.readInto(got, at), readInto(fh, want, at)]);
      }
      if (!got.equals(want)) {
        const i = firstDifference(got, want);
        assert.fail(`${label}: vdkit read differs from the raw reference at byte ${at + i} (vdkit 0x${got[i]!.toString(16)}, raw 0x${want[i]!.toString(16)}${hole ? ', a hole of the raw file' : ''})`);
      }
    }
  } finally {
    await fh.close();
  }
}

async function readInto(fh: FileHandle, into: Buffer, offset: number): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await fh.read(into, done, into.length - done, offset + done);
    if (bytesRead === 0) {
      into.fill(0, done);
      return;
    }
    done += bytesRead;
  }
}

// ------------------------------------------------------------------ VMDK facts read with plain fs

/** The text descriptor of a VMDK: the file itself, or the embedded one of a monolithic sparse file. */
export async function descriptorText(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const head = await readExact(fh, 0, 512);
    if (head.toString('latin1', 0, 4) === 'KDMV') {
      const off = Number(head.readBigUInt64LE(28));
      const size = Number(head.readBigUInt64LE(36));
      const text = await readExact(fh, off * 512, size * 512);
      const nul = text.indexOf(0);
      return text.subarray(0, nul < 0 ? text.length : nul).toString('utf8');
    }
  } finally {
    await fh.close();
  }
  return readFile(path, 'utf8');
}

/** `CID=` of a descriptor, lower-case hex as written. */
export function cidOf(descriptor: string): string {
  const m = /^\s*CID\s*=\s*"?([0-9a-fA-F]{1,8})"?\s*$/m.exec(descriptor);
  assert.ok(m, `no CID= line in descriptor:\n${descriptor}`);
  return m[1]!.toLowerCase();
}

/** Sparse extent header facts straight from the bytes. */
export async function sparseHeader(path: string): Promise<{ magic: string; version: number; flags: number; uncleanShutdown: number; capacitySectors: number; gdOffset: bigint }> {
  const fh = await open(path, 'r');
  try {
    const h = await readExact(fh, 0, 512);
    return {
      magic: h.toString('latin1', 0, 4),
      version: h.readUInt32LE(4),
      flags: h.readUInt32LE(8),
      uncleanShutdown: h[72]!,
      capacitySectors: Number(h.readBigUInt64LE(12)),
      gdOffset: h.readBigUInt64LE(56),
    };
  } finally {
    await fh.close();
  }
}

/** Extent file names of a descriptor, resolved beside it. */
export function extentFiles(descriptor: string): { access: string; sectors: number; type: string; file?: string }[] {
  const out: { access: string; sectors: number; type: string; file?: string }[] = [];
  for (const line of descriptor.split(/\r?\n/)) {
    const m = /^\s*(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)(?:\s+"([^"]*)")?/.exec(line);
    if (m) out.push({ access: m[1]!, sectors: Number(m[2]), type: m[3]!, file: m[4] });
  }
  return out;
}

// ------------------------------------------------------------------ tool wrappers

/** Run a tool and assert it exited 0, printing the whole exchange otherwise. */
export async function runOk(cmd: string, args: string[], what: string): Promise<RunResult> {
  const r = await run(cmd, args);
  assert.equal(r.code, 0, `${what} failed\n${describeRun(cmd, args, r)}`);
  return r;
}

export interface QemuInfo {
  'virtual-size': number;
  format: string;
  'format-specific'?: { type: string; data: { cid?: number; 'parent-cid'?: number; 'create-type'?: string; extents?: { filename: string; 'virtual-size': number; compressed?: boolean; format?: string }[] } };
}

export async function qemuInfo(path: string): Promise<QemuInfo> {
  const r = await runOk('qemu-img', ['info', '-f', 'vmdk', '--output=json', path], 'qemu-img info');
  return JSON.parse(r.stdout) as QemuInfo;
}

export interface MapEntry {
  start: number;
  length: number;
  depth: number;
  /** qemu >= 6.0: false where no layer of the chain has the range */
  present?: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

export async function qemuMap(path: string, format = 'vmdk'): Promise<MapEntry[]> {
  const r = await runOk('qemu-img', ['map', '-f', format, '--output=json', path], 'qemu-img map');
  return JSON.parse(r.stdout) as MapEntry[];
}

/** `Media size: ... (N bytes)` from vmdkinfo. */
export function vmdkinfoMediaSize(stdout: string): number | undefined {
  const m = /Media size:[^\n(]*\((\d+) bytes\)/.exec(stdout);
  return m ? Number(m[1]) : undefined;
}

/** Grain table entry covering byte `offset` of a hosted sparse extent, read from the raw bytes. */
export async function grainTableEntry(path: string, offset: number): Promise<number> {
  const fh = await open(path, 'r');
  try {
    const h = await readExact(fh, 0, 512);
    const grainSectors = Number(h.readBigUInt64LE(20));
    const numGTEs = h.readUInt32LE(44);
    const gdOffset = Number(h.readBigUInt64LE(56));
    const gi = Math.floor(offset / (grainSectors * SECTOR));
    const g = Math.floor(gi / numGTEs);
    const gde = (await readExact(fh, gdOffset * SECTOR + g * 4, 4)).readUInt32LE(0);
    if (gde === 0) return 0;
    return (await readExact(fh, gde * SECTOR + (gi % numGTEs) * 4, 4)).readUInt32LE(0);
  } finally {
    await fh.close();
  }
}

export type Status = 'data' | 'zero' | 'unallocated';

/** qemu-img map entries as vdkit block states (present=false: unallocated; zero without data: zero). */
export function mapToStatus(entries: readonly MapEntry[]): { offset: number; length: number; state: Status }[] {
  return mergeStatus(
    entries.map((e) => ({
      offset: e.start,
      length: e.length,
      state: e.present === false ? 'unallocated' : e.data ? 'data' : e.zero ? 'zero' : 'data',
    })),
  );
}

export function mergeStatus(list: readonly { offset: number; length: number; state: Status }[]): { offset: number; length: number; state: Status }[] {
  const out: { offset: number; length: number; state: Status }[] = [];
  for (const r of list) {
    const last = out[out.length - 1];
    if (last && last.state === r.state && last.offset + last.length === r.offset) last.length += r.length;
    else out.push({ offset: r.offset, length: r.length, state: r.state });
  }
  return out;
}

/** The states block status gives over [offset, offset+length). */
export function statesOver(status: readonly { offset: number; length: number; state: Status }[], offset: number, length: number): Set<Status> {
  const s = new Set<Status>();
  for (const r of status) if (r.offset < offset + length && offset < r.offset + r.length) s.add(r.state);
  return s;
}
