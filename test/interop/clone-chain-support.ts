/**
 * Shared by the chain-keeping clone tests (clone-chain*.test.ts): source chains made by qemu-img
 * and qemu-io or by vdkit, and `cloneAndCheck`, which clones a chain into one format and checks
 * the new chain link by link (see clone-chain.test.ts for the list of checks).
 */
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { Disk, backends, chainLinkNames, cloneChain, compare, describeChain } from '../../src/index.js';
import { createChild } from '../../src/ops/child.js';
import { run } from '../helpers/tools.js';
import { KiB, MiB, RawModel, Rng, assertWholeDiskEqual, planWrites, qemuMap, runOk } from './support.js';

export const QEMU_NAME: Record<string, string> = { vmdk: 'vmdk', qcow2: 'qcow2', vhd: 'vpc', vhdx: 'vhdx', vdi: 'vdi' };
/** formats whose children qemu opens with their parents */
export const QEMU_CHAINS = new Set(['vmdk', 'qcow2']);
/** formats qemu-img check handles (children of vhdx and vdi it cannot open at all) */
const QEMU_CHECKS = new Set(['vmdk', 'qcow2', 'vhdx', 'vdi']);
export const TARGETS = ['vmdk', 'qcow2', 'vhd', 'vhdx', 'vdi'];
export const CAPACITY = 16 * MiB;

export interface Source {
  /** the top link's path */
  top: string;
  /** link paths, base first */
  links: string[];
  /** raw file with the content of the top */
  raw: string;
}

type Range = { offset: number; length: number };

export async function qemuIo(format: string, path: string, cmds: string[]): Promise<void> {
  await runOk('qemu-io', ['-f', format, ...cmds.flatMap((c) => ['-c', c]), path], `qemu-io ${cmds.join('; ')}`);
}

/** qcow2 base <- mid <- top by qemu-img and qemu-io: partial clusters, a zero write hiding base data, the last sector */
export async function qemuQcow2Chain(dir: string): Promise<Source> {
  const [base, mid, top] = ['q-base.qcow2', 'q-mid.qcow2', 'q-top.qcow2'].map((n) => join(dir, n)) as [string, string, string];
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', base, '16M'], 'create base');
  await qemuIo('qcow2', base, ['write -P 0x11 0 1M', 'write -P 0x12 10M 64k', 'write -P 0x13 16380k 4k']);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'q-base.qcow2', '-F', 'qcow2', mid], 'create mid');
  await qemuIo('qcow2', mid, ['write -P 0x21 4k 1k', 'write -z 10M 64k', 'write -P 0x22 12M 128k']);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'q-mid.qcow2', '-F', 'qcow2', top], 'create top');
  await qemuIo('qcow2', top, ['write -P 0x31 100k 3k', 'write -P 0x32 16383k 512', 'write -z 12M 4k']);
  const raw = join(dir, 'q-top.raw');
  await runOk('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', top, raw], 'convert');
  return { top, links: [base, mid, top], raw };
}

/** VMDK base <- mid <- top (twoGbMaxExtentSparse) by qemu-img create -b */
export async function qemuVmdkChain(dir: string): Promise<Source> {
  const [base, mid, top] = ['v-base.vmdk', 'v-mid.vmdk', 'v-top.vmdk'].map((n) => join(dir, n)) as [string, string, string];
  await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', base, '16M'], 'create base');
  await qemuIo('vmdk', base, ['write -P 0x11 0 192k', 'write -P 0x12 10M 4k']);
  await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-b', 'v-base.vmdk', '-F', 'vmdk', mid], 'create mid');
  await qemuIo('vmdk', mid, ['write -P 0x21 4k 1k', 'write -P 0x22 3M 64k', 'write -P 0 10M 4k']);
  await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', '-b', 'v-mid.vmdk', '-F', 'vmdk', top], 'create top');
  await qemuIo('vmdk', top, ['write -P 0x31 100k 3k', 'write -P 0x32 16383k 512']);
  const raw = join(dir, 'v-top.raw');
  await runOk('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', top, raw], 'convert');
  return { top, links: [base, mid, top], raw };
}

/** a chain of three links made by vdkit, every write mirrored into a raw file */
export async function vdkitChain(dir: string, format: string, seed: number): Promise<Source> {
  const rng = new Rng(seed);
  const model = await RawModel.create(join(dir, `${format}-model.raw`), CAPACITY);
  const links = [join(dir, `d-base.${format}`)];
  let d = await Disk.create(links[0]!, { format, capacity: CAPACITY });
  for (let level = 0; level < 3; level++) {
    if (level > 0) {
      await d.close();
      d = await createChild(links[level - 1]!, join(dir, `d-${level}.${format}`));
      links.push(d.path);
    }
    for (const w of planWrites(rng, CAPACITY, [64 * KiB, MiB, 2 * MiB, 8 * MiB], 5)) {
      await d.write(w.offset, w.data);
      await model.write(w.offset, w.data);
    }
  }
  await d.close();
  await model.close();
  return { top: links[2]!, links, raw: model.path };
}

/** the ranges a link holds itself (data or zero), from vdkit's block status of the link alone */
async function ownRanges(path: string): Promise<{ ranges: Range[]; cluster: number; capacity: number }> {
  const d = await Disk.open(path, { readOnly: true, singleLink: true });
  try {
    const ranges = (await d.blockStatus()).filter((r) => r.state !== 'unallocated').map((r) => ({ offset: r.offset, length: r.length }));
    return { ranges, cluster: d.image.clusterSize, capacity: d.capacity };
  } finally {
    await d.close();
  }
}

/** the ranges qemu says the top of `path` holds itself (depth 0 of its map) */
async function qemuOwnRanges(path: string, format: string): Promise<Range[]> {
  return (await qemuMap(path, QEMU_NAME[format])).filter((e) => e.depth === 0 && e.present !== false).map((e) => ({ offset: e.start, length: e.length }));
}

function roundOut(ranges: readonly Range[], g: number, capacity: number): Range[] {
  return ranges.map((r) => {
    const start = Math.floor(r.offset / g) * g;
    return { offset: start, length: Math.min(capacity, Math.ceil((r.offset + r.length) / g) * g) - start };
  });
}

function inside(r: Range, set: readonly Range[]): boolean {
  // r is covered by the union of `set` (sorted or not)
  let at = r.offset;
  const end = r.offset + r.length;
  const sorted = [...set].sort((a, b) => a.offset - b.offset);
  for (const s of sorted) {
    if (s.offset > at) break;
    if (s.offset + s.length > at) at = s.offset + s.length;
    if (at >= end) return true;
  }
  return at >= end;
}

/** parts of `a` that `b` does not cover */
function minus(a: readonly Range[], b: readonly Range[]): Range[] {
  const out: Range[] = [];
  const sorted = [...b].sort((x, y) => x.offset - y.offset);
  for (const r of a) {
    let at = r.offset;
    const end = r.offset + r.length;
    for (const s of sorted) {
      if (s.offset + s.length <= at || s.offset >= end) continue;
      if (s.offset > at) out.push({ offset: at, length: s.offset - at });
      at = Math.max(at, s.offset + s.length);
    }
    if (at < end) out.push({ offset: at, length: end - at });
  }
  return out;
}

export async function sameContent(a: string, b: string, label: string): Promise<void> {
  const da = await Disk.open(a, { readOnly: true });
  const db = await Disk.open(b, { readOnly: true });
  try {
    const r = await compare(da, db);
    assert.ok(r.identical, `${label}: ${a} and ${b} differ at ${r.offset} (${r.reason})`);
  } finally {
    await da.close();
    await db.close();
  }
}

/** Clone `src` into `format` and check (a)..(e). */
export async function cloneAndCheck(t: TestContext, dir: string, src: Source, format: string, label: string): Promise<void> {
  const dst = join(dir, `${label}-to-${format}.${format}`);
  const n = src.links.length;
  const r = await cloneChain(src.top, dst, { format });
  const finals = chainLinkNames(resolve(dst), n);
  // (a) as many links, with the documented names
  assert.deepEqual(r.links, finals, `${label} -> ${format}: link names`);
  const listed = await describeChain(dst);
  assert.equal(listed.break, undefined, `${label} -> ${format}: chain breaks: ${listed.break?.reason}`);
  assert.deepEqual(listed.links.map((l) => resolve(dirname2(dst), l.path)).reverse(), finals, `${label} -> ${format}: the chain found from the top`);
  assert.ok(listed.links.every((l) => l.format === format), `${label} -> ${format}: every link is ${format}`);

  // (b) content: the top against the reference, each lower link against its source link
  if (QEMU_CHAINS.has(format)) {
    const cmp = await run('qemu-img', ['compare', '-f', QEMU_NAME[format]!, '-F', 'raw', dst, src.raw]);
    assert.equal(cmp.code, 0, `${label} -> ${format}: qemu-img compare: ${cmp.stdout}${cmp.stderr}`);
  } else {
    const d = await Disk.open(dst, { readOnly: true });
    try {
      await assertWholeDiskEqual(d, src.raw, `${label} -> ${format}`);
    } finally {
      await d.close();
    }
  }
  for (let k = 0; k < n - 1; k++) await sameContent(finals[k]!, src.links[k]!, `${label} -> ${format} link ${k}`);

  // (c) each link holds only its own ranges (rounded out to the target's clusters), and what it
  // left out of its source link's ranges reads as zeros there (all-zero blocks over zeros)
  for (let k = 0; k < n; k++) {
    const srcOwn = await ownRanges(src.links[k]!);
    const mine = await ownRanges(finals[k]!);
    const newOwn = QEMU_CHAINS.has(format) ? await qemuOwnRanges(finals[k]!, format) : mine.ranges;
    // the unit a link allocates in: its cluster, except a VHDX without a parent, whose payload
    // blocks are wholly present once written (its clusterSize is the sector its children track)
    const unit = format === 'vhdx' && k === 0 ? (JSON.parse((await runOk('qemu-img', ['info', '-f', 'vhdx', '--output=json', finals[k]!], 'info')).stdout) as { 'cluster-size': number })['cluster-size'] : mine.cluster;
    const allowed = roundOut(srcOwn.ranges, Math.max(unit, 512), mine.capacity);
    for (const x of newOwn) assert.ok(inside(x, allowed), `${label} -> ${format} link ${k}: holds ${x.offset}+${x.length}, which its source link does not (source ranges ${JSON.stringify(srcOwn.ranges)})`);
    assert.ok(newOwn.length > 0, `${label} -> ${format} link ${k}: holds nothing`);
    const left = minus(srcOwn.ranges, newOwn);
    if (left.length > 0) {
      const s = await Disk.open(src.links[k]!, { readOnly: true, singleLink: true });
      try {
        for (const x of left) assert.ok((await s.read(x.offset, x.length)).every((b) => b === 0), `${label} -> ${format} link ${k}: ${x.offset}+${x.length} of the source link is not zeros but was not copied`);
      } finally {
        await s.close();
      }
    }
  }

  // (d) consistency of every link
  for (const [k, f] of finals.entries()) {
    if (QEMU_CHECKS.has(format) && (QEMU_CHAINS.has(format) || k === 0)) {
      const chk = await run('qemu-img', ['check', '-f', QEMU_NAME[format]!, f]);
      assert.equal(chk.code, 0, `${label} -> ${format}: qemu-img check ${basename(f)}: ${chk.stdout}${chk.stderr}`);
    } else if (driverCheck(format)) {
      const d = await Disk.open(f, { readOnly: true, singleLink: true, cowByCaller: true, force: true });
      try {
        const report = await d.image.maintenance().check!({ repair: false });
        assert.deepEqual(report.findings.filter((x) => x.kind !== 'warning'), [], `${label} -> ${format}: vdkit check ${basename(f)}`);
      } finally {
        await d.close();
      }
    }
  }

  // (e) the names recorded are the final ones
  if (QEMU_CHAINS.has(format)) {
    const info = JSON.parse((await runOk('qemu-img', ['info', '--backing-chain', '--output=json', dst], 'qemu-img info')).stdout) as {
      filename: string;
      'backing-filename'?: string;
      'full-backing-filename'?: string;
      'backing-filename-format'?: string;
    }[];
    assert.equal(info.length, n, `${label} -> ${format}: qemu-img sees every link`);
    for (const [i, e] of info.entries()) {
      const k = n - 1 - i;
      assert.equal(resolve(dirname2(dst), e.filename), finals[k], `${label} -> ${format}: link ${k} file`);
      if (k === 0) assert.equal(e['backing-filename'], undefined, `${label} -> ${format}: the base has no backing file`);
      else {
        assert.equal(e['backing-filename'], basename(finals[k - 1]!), `${label} -> ${format}: link ${k} names its parent`);
        assert.equal(resolve(e['full-backing-filename']!), finals[k - 1], `${label} -> ${format}: link ${k} parent resolves`);
        // qcow2 records the parent's format too, found from the parent's bytes under its temporary name
        if (format === 'qcow2') assert.equal(e['backing-filename-format'], 'qcow2', `${label} -> ${format}: link ${k} backing format`);
      }
    }
  } else if (format === 'vhd' || format === 'vhdx') {
    for (let k = 1; k < n; k++) {
      const out = (await runOk('vhdiinfo', [finals[k]!], 'vhdiinfo')).stdout;
      const parent = /Parent filename\s*:\s*(.+)/.exec(out)?.[1]?.trim();
      // VHD shows the parent unicode name (a bare file name), VHDX the absolute_win32_path
      assert.equal(parent, format === 'vhd' ? basename(finals[k - 1]!) : finals[k - 1], `${label} -> ${format}: link ${k} parent per vhdiinfo\n${out}`);
      if (format === 'vhd') {
        // the dynamic header's parent time stamp (offset 56) is the parent's footer time stamp
        // (offset 24 of the footer copy at 0), read from the parent under its temporary name
        const child = await readFile(finals[k]!);
        const parentFooter = await readFile(finals[k - 1]!);
        const stamp = parentFooter.readUInt32BE(24);
        assert.ok(stamp > 0, 'parent footer has a time stamp');
        assert.equal(child.readUInt32BE(512 + 56), stamp, `${label} -> ${format}: link ${k} parent time stamp`);
      }
    }
  }
  for (const f of finals) {
    const bytes = await readFile(f);
    for (const enc of ['utf8', 'utf16le'] as const) assert.equal(bytes.indexOf(Buffer.from('vdkit-partial', enc)), -1, `${label} -> ${format}: ${basename(f)} mentions a temporary name (${enc})`);
  }
  assert.deepEqual((await readdir(dir)).filter((x) => x.includes('.vdkit-partial-')), [], 'no temporary files left');
  t.diagnostic(`${label} -> ${format}: ${n} links, ${r.bytesWritten} bytes written`);
}

/** whether vdkit can check links of this format (VHD: neither vdkit nor qemu-img checks; its content is compared) */
function driverCheck(format: string): boolean {
  return backends().find((b) => b.name === format)!.capabilities.check !== 'none';
}

function dirname2(p: string): string {
  return resolve(p, '..');
}

