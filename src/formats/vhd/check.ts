/**
 * VHD consistency check and repair (VirtualBox's VHD repair, vhd-util check; qemu-img has no
 * check for vpc).
 *
 * Design notes
 * - Works on the file's bytes, not on an opened image: the open refuses a bad checksum or a
 *   missing end footer, which are what a repair mends.
 * - Footers: the one at the end is authoritative; dynamic and differencing images keep a copy at
 *   offset 0, which QEMU reads instead. A copy that differs, or one with a bad checksum or no
 *   cookie, is rewritten from the good one (either direction). When neither is intact, a
 *   footer whose fields are plausible (cookie, version 1, known type) and whose two copies agree
 *   gets its checksum recomputed; a fixed image (one footer) likewise. No end footer but a good
 *   copy (a file cut short): the copy is appended at the end.
 * - Dynamic header (no redundant copy): cookie, version, block size, maxTableEntries against the
 *   disk size, BAT inside the file are required (damage there is reported, not repaired); a bad
 *   checksum alone is recomputed once every field passed; a "next structure" offset other than
 *   all-ones is reset (warning). A maxTableEntries whose BAT would run past the end of the file
 *   or over what follows the entries in use (a block, a structure) is a corruption, repaired by
 *   cutting it to the entries in use (a whole sector of them): the blocks stay, and what is read
 *   never depends on the claim (a crafted claim once made check read the file as BAT entries).
 * - Memory and work are bounded by the file, not by the header: one finding per kind of bad
 *   entry with a count (common/findings.ts), the repair writes the BAT in 64 KiB windows.
 * - BAT: an entry whose block runs past the end of the file, overlaps the footer copy, header,
 *   BAT or parent locator data, or overlaps another block (the later entry in BAT order loses)
 *   is a corruption; a repair marks it unused (the block then reads as zeros, or from the parent
 *   in a differencing image). Used entries past the disk's last block: warning, cleared.
 * - Sector bitmaps are part of each block, so the block bound covers them; their bits are not
 *   judged (QEMU sets all of them, Disk2vhd too, vdkit only those written: all valid).
 * - Leaks: a gap of at least one block (bitmap + data) between the last structure and the
 *   footer (what an allocation killed before its BAT entry leaves): repaired by writing the
 *   footer right after the last structure, then cutting the file after it. Gaps of a block or
 *   more between blocks are reported (moving blocks is compaction, not repair).
 * - Fixed images: bytes between the data area and the footer (a shrink killed after its
 *   switch, before its cut): a leak, repaired like the dynamic tail leak (footer right after
 *   the data, then the cut).
 * - CHS geometry that describes more sectors than currentSize, or none: warning.
 * - Repair order, each step flushed: BAT entries, dynamic header, footer at the end (at its new
 *   place, then the cut), footer copy at offset 0. The file never ends without a valid footer:
 *   a footer moved for a leak is written before the cut; a kill at any point leaves an image
 *   that the next check repairs further.
 */
import { DiskError } from '../../core/errors.js';
import { ceilDiv, isPowerOfTwo, roundUp } from '../../core/ints.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { CheckFinding, CheckOptions, CheckReport } from '../types.js';
import { EntryFindings, checkFileWith } from '../common/findings.js';
import { readU32Array, u32Bytes } from '../../binary/tables.js';
import { capacityOf } from './layout.js';
import {
  BAT_UNUSED,
  DISK_TYPE_NAMES,
  DynamicHeader,
  FOOTER_CHECKSUM_AT,
  FOOTER_COOKIE,
  FOOTER_SIZE,
  Footer,
  HEADER_CHECKSUM_AT,
  HEADER_COOKIE,
  HEADER_SIZE,
  MAX_BAT_ENTRIES,
  MAX_BLOCK_SIZE,
  MAX_LOCATOR_BYTES,
  NO_OFFSET,
  PLATFORM,
  ParentLocatorEntry,
  SECTOR,
  geometrySectors,
  isMaxGeometry,
  vhdChecksum,
} from './structs.js';

/** Check (and repair) the VHD file at `path`, opening it read-write only for a real repair. */
export function checkVhdFile(ns: Namespace, path: string, opts: CheckOptions): Promise<CheckReport> {
  return checkFileWith(ns, path, opts, checkVhdStore);
}

interface FooterLook {
  cookie: boolean;
  sumOk: boolean;
  /** version 1.x and a known disk type */
  plausible: boolean;
  type: number;
}

function look(b: Buffer): FooterLook {
  const cookie = b.toString('latin1', 0, 8) === FOOTER_COOKIE;
  const type = b.readUInt32BE(Footer.offsetOf('diskType'));
  return {
    cookie,
    sumOk: vhdChecksum(b, FOOTER_CHECKSUM_AT) === b.readUInt32BE(FOOTER_CHECKSUM_AT),
    plausible: cookie && b.readUInt32BE(Footer.offsetOf('fileFormatVersion')) >>> 16 === 1 && DISK_TYPE_NAMES[type] !== undefined,
    type,
  };
}

/** `b` with its checksum field recomputed (a copy). */
function withSum(b: Buffer, at: number): Buffer {
  const c = Buffer.from(b);
  c.writeUInt32BE(vhdChecksum(c, at), at);
  return c;
}

/** bytes of BAT one repair write covers */
const BAT_WRITE_WINDOW = 64 * 1024;

const hex32 = (v: number) => `0x${v.toString(16).padStart(8, '0')}`;

export async function checkVhdStore(store: ByteStore, path: string, opts: CheckOptions): Promise<CheckReport> {
  const findings: CheckFinding[] = [];
  const repair = opts.repair;
  const write = repair && !opts.dryRun;
  const done = (f: CheckFinding) => {
    if (!repair) return;
    if (opts.dryRun) f.wouldRepair = true;
    else f.repaired = true;
  };
  const add = (f: CheckFinding) => {
    findings.push(f);
    return f;
  };
  let leakedBytes = 0;
  const report = (): CheckReport => ({ path, format: 'vhd', findings, leakedBytes, ...(repair && opts.dryRun ? { dryRun: true } : {}) });

  const fileSize = await store.size();
  if (fileSize < FOOTER_SIZE) throw new DiskError('INVALIDDISK', 'file is too short for a VHD footer', { path, struct: 'footer', field: 'cookie', expected: `>= ${FOOTER_SIZE} bytes`, found: fileSize });
  const tail = await store.read(fileSize - FOOTER_SIZE, FOOTER_SIZE);
  const head = await store.read(0, FOOTER_SIZE);
  const t = look(tail);
  const hd = look(head);
  const tailOk = t.plausible && t.sumOk;
  const headOk = hd.plausible && hd.sumOk && hd.type !== 2;

  // ---- the footer to trust, and what the two places need
  let footerBytes: Buffer;
  /** where the end footer is now (fileSize when there is none) */
  let footerAt = fileSize - FOOTER_SIZE;
  let endFinding: CheckFinding | undefined;
  let copyFinding: CheckFinding | undefined;
  if (tailOk) {
    footerBytes = tail;
  } else if (headOk) {
    footerBytes = head;
    if (t.cookie) {
      endFinding = add({ kind: 'corruption', message: `the footer at the end ${t.plausible ? 'has a bad checksum' : 'has impossible fields'}; a repair rewrites it from the intact copy at offset 0`, struct: 'footer', field: t.plausible ? 'checksum' : 'fileFormatVersion', offset: fileSize - FOOTER_SIZE });
    } else {
      footerAt = fileSize;
      endFinding = add({ kind: 'corruption', message: 'no footer at the end of the file (cut short, or killed during a write); a repair appends the intact copy from offset 0', struct: 'footer', field: 'cookie', offset: fileSize - FOOTER_SIZE });
    }
  } else if (t.plausible && (t.type === 2 || !hd.cookie || head.equals(tail))) {
    // no intact copy to take: the fields look right, the checksum alone is wrong
    footerBytes = withSum(tail, FOOTER_CHECKSUM_AT);
    endFinding = add({ kind: 'corruption', message: `footer checksum mismatch (stored ${hex32(tail.readUInt32BE(FOOTER_CHECKSUM_AT))}, computed ${hex32(footerBytes.readUInt32BE(FOOTER_CHECKSUM_AT))}) and no intact copy; the fields are plausible, so a repair recomputes the checksum`, struct: 'footer', field: 'checksum', offset: fileSize - FOOTER_SIZE });
  } else {
    if (!t.cookie && !hd.cookie) throw new DiskError('INVALIDDISK', 'not a VHD file: no "conectix" footer at the end of the file or at its start', { path, struct: 'footer', field: 'cookie', expected: FOOTER_COOKIE });
    add({ kind: 'corruption', message: 'neither the footer at the end nor its copy at offset 0 is intact (not repairable)', struct: 'footer', field: 'checksum' });
    return report();
  }
  const footer = Footer.decode(footerBytes, 0, path);
  const fixed = footer.diskType === 2;
  if (!fixed && !head.equals(footerBytes) && !(endFinding && !headOk)) {
    copyFinding = add({
      kind: 'corruption',
      message: `the footer copy at offset 0 ${!hd.cookie ? 'is missing' : !hd.sumOk ? 'has a bad checksum' : 'differs from the footer at the end'} (QEMU reads the copy); a repair rewrites it`,
      struct: 'footer copy',
      field: hd.cookie && hd.sumOk ? 'copy' : hd.cookie ? 'checksum' : 'cookie',
      offset: 0,
    });
  } else if (!fixed && endFinding && !headOk) {
    // both damaged but equal: the recomputed footer goes to both places
    copyFinding = add({ kind: 'corruption', message: 'the footer copy at offset 0 has the same bad checksum; a repair rewrites it too', struct: 'footer copy', field: 'checksum', offset: 0 });
  }

  let capacity: number;
  try {
    capacity = capacityOf(footer, path);
  } catch (err) {
    if (!(err instanceof DiskError)) throw err;
    add({ kind: 'corruption', message: `${err.message.replace(`${path}: `, '')} (not repairable)`, struct: 'footer', field: String(err.details.field) });
    return report();
  }
  const g = { cylinders: footer.cylinders, heads: footer.heads, sectors: footer.sectorsPerTrack };
  if (geometrySectors(g) === 0) add({ kind: 'warning', message: 'the CHS geometry is 0 (Virtual PC and QEMU size such disks by it)', struct: 'footer', field: 'cylinders' });
  else if (!isMaxGeometry(g) && geometrySectors(g) * SECTOR > Number(footer.currentSize)) {
    add({ kind: 'warning', message: `the CHS geometry ${g.cylinders}/${g.heads}/${g.sectors} describes ${geometrySectors(g) * SECTOR} bytes, more than currentSize ${footer.currentSize}`, struct: 'footer', field: 'cylinders' });
  }

  // ---- the structures, for dynamic and differencing images
  const limit = footerAt;
  let newFooterAt = endFinding && footerAt === fileSize ? roundUp(fileSize, SECTOR) : footerAt;
  let tailLeak: CheckFinding | undefined;
  let tailLeakBytes = 0;
  /** the BAT as the repair leaves it (entries set unused), and whether any changed */
  let batBefore: Uint32Array | undefined;
  let batAfter: Uint32Array | undefined;
  let batChanged = false;
  let headerFix: { bytes: Buffer; at: number; findings: CheckFinding[] } | undefined;
  let tableOffset = 0;
  if (fixed) {
    if (capacity > limit) add({ kind: 'corruption', message: `the data area is shorter than the disk (file cut short): ${limit} bytes for ${capacity} (not repairable)`, struct: 'footer', field: 'currentSize' });
    else {
      // the data area ends at the size (currentSize too, when a CHS size rule reads less: other
      // readers may use it); bytes after it, before the footer, are what a shrink killed
      // before its cut leaves
      const current = Number(footer.currentSize);
      const dataEnd = roundUp(current > capacity && current <= limit ? current : capacity, SECTOR);
      if (limit - dataEnd >= SECTOR) {
        leakedBytes += limit - dataEnd;
        tailLeak = add({ kind: 'leak', message: `${limit - dataEnd} bytes between the data area and the footer are used by nothing (a shrink stopped before its cut); a repair moves the footer there and cuts the file`, struct: 'footer', field: 'currentSize', offset: dataEnd });
        newFooterAt = dataEnd;
        tailLeakBytes = limit - dataEnd;
      }
    }
  } else {
    const r = await checkDynamic();
    if (r === 'fatal') {
      await repairFooters();
      return report();
    }
  }
  await repairFooters();
  return report();

  async function checkDynamic(): Promise<'ok' | 'fatal'> {
    const fatal = (struct: string, field: string, message: string): 'fatal' => {
      add({ kind: 'corruption', message: `${message} (not repairable)`, struct, field });
      return 'fatal';
    };
    if (footer.dataOffset === NO_OFFSET) return fatal('footer', 'dataOffset', 'a dynamic disk needs the offset of its dynamic header');
    const headerOffset = Number(footer.dataOffset);
    if (!Number.isSafeInteger(headerOffset) || headerOffset % SECTOR !== 0 || headerOffset < SECTOR || headerOffset + HEADER_SIZE > limit) return fatal('footer', 'dataOffset', `the dynamic header offset ${footer.dataOffset} is not a sector inside the file`);
    const headerBytes = await store.read(headerOffset, HEADER_SIZE);
    const header = DynamicHeader.decode(headerBytes, 0, path);
    if (header.cookie !== HEADER_COOKIE) return fatal('dynamicHeader', 'cookie', `no "${HEADER_COOKIE}" dynamic header at ${headerOffset}`);
    if (header.headerVersion >>> 16 !== 1) return fatal('dynamicHeader', 'headerVersion', `unsupported dynamic header version 0x${header.headerVersion.toString(16)}`);
    const blockSize = header.blockSize;
    if (!isPowerOfTwo(blockSize) || blockSize < SECTOR || blockSize > MAX_BLOCK_SIZE) return fatal('dynamicHeader', 'blockSize', `invalid block size ${blockSize}`);
    const need = ceilDiv(capacity, blockSize);
    const entries = header.maxTableEntries;
    if (entries < need) return fatal('dynamicHeader', 'maxTableEntries', `the BAT has ${entries} entries but the disk has ${need} blocks`);
    if (need > MAX_BAT_ENTRIES) return fatal('dynamicHeader', 'maxTableEntries', `the BAT is too large (${need} entries in use)`);
    const tOff = Number(header.tableOffset);
    if (!Number.isSafeInteger(tOff) || tOff < SECTOR || tOff + need * 4 > limit) return fatal('dynamicHeader', 'tableOffset', `the BAT at ${header.tableOffset} lies outside the file`);
    tableOffset = tOff;
    const headerFindings: CheckFinding[] = [];
    let nextHeader: Buffer = Buffer.from(headerBytes);
    if (header.dataOffset !== NO_OFFSET) {
      headerFindings.push(add({ kind: 'warning', message: `the dynamic header's next-structure offset is ${header.dataOffset}, not unused (all ones); a repair resets it`, struct: 'dynamicHeader', field: 'dataOffset', offset: headerOffset + 8 }));
      nextHeader.writeBigUInt64BE(NO_OFFSET, DynamicHeader.offsetOf('dataOffset'));
    }
    if (vhdChecksum(headerBytes, HEADER_CHECKSUM_AT) !== header.checksum) {
      headerFindings.push(add({ kind: 'corruption', message: `dynamic header checksum mismatch (stored ${hex32(header.checksum)}, computed ${hex32(vhdChecksum(headerBytes, HEADER_CHECKSUM_AT))}); every field is valid, so a repair recomputes it`, struct: 'dynamicHeader', field: 'checksum', offset: headerOffset + HEADER_CHECKSUM_AT }));
    }

    // structures blocks must not overlap (the BAT's end follows below)
    const regions: { name: string; start: number; end: number }[] = [
      { name: 'footer copy', start: 0, end: SECTOR },
      { name: 'dynamic header', start: headerOffset, end: headerOffset + HEADER_SIZE },
    ];
    if (footer.diskType === 4) {
      for (let i = 0; i < 8; i++) {
        const e = ParentLocatorEntry.decode(header.parentLocators, i * 24, path);
        if (e.platformCode === PLATFORM.NONE) continue;
        const off = Number(e.platformDataOffset);
        const len = e.platformDataLength;
        const field = `parentLocator[${i}].platformDataOffset`;
        if (len > MAX_LOCATOR_BYTES || !Number.isSafeInteger(off) || (len > 0 && (off < SECTOR || off + len > limit))) {
          add({ kind: 'corruption', message: `parent locator ${i} data (${len} bytes at ${e.platformDataOffset}) lies outside the file (not repairable; the parent is still found by the other locators or its name)`, struct: 'dynamicHeader', field });
          continue;
        }
        if (len === 0) continue;
        const space = e.platformDataSpace >= len ? e.platformDataSpace : e.platformDataSpace * SECTOR;
        const end = off + Math.min(Math.max(len, space), MAX_LOCATOR_BYTES);
        regions.push({ name: `parent locator ${i} data`, start: off, end: roundUp(Math.min(end, limit), SECTOR) });
      }
    }

    // the entries in use first; the header's claim for the rest is judged against the file
    const used = await readU32Array(store, tOff, need, 'be');
    const stride = roundUp(Math.ceil(blockSize / SECTOR / 8), SECTOR) + blockSize;
    // A BAT claimed past what follows the entries in use (the end of the file, a block, a
    // structure) is a wrong maxTableEntries, not a reason to drop blocks: the claim is cut to
    // the entries in use (a whole sector of them) and a repair writes that. The work stays
    // bounded by the file, whatever the header claims.
    const needEnd = tOff + need * 4;
    let firstAfter = limit;
    for (const r of regions) if (r.start >= needEnd) firstAfter = Math.min(firstAfter, r.start);
    for (let i = 0; i < need; i++) {
      const start = used[i]! * SECTOR;
      if (used[i] !== BAT_UNUSED && start >= needEnd && start + stride <= limit) firstAfter = Math.min(firstAfter, start);
    }
    let tableEntries = entries;
    if (tOff + entries * 4 > firstAfter) {
      tableEntries = Math.max(need, Math.floor((Math.min(roundUp(needEnd, SECTOR), firstAfter) - tOff) / 4));
      const what = firstAfter === limit ? 'the end of the file' : `what starts at ${firstAfter}`;
      headerFindings.push(add({ kind: 'corruption', message: `maxTableEntries ${entries} makes the BAT run past ${what}; the disk uses ${need} entries, so a repair sets it to ${tableEntries}`, struct: 'dynamicHeader', field: 'maxTableEntries', offset: headerOffset + DynamicHeader.offsetOf('maxTableEntries') }));
      nextHeader.writeUInt32BE(tableEntries, DynamicHeader.offsetOf('maxTableEntries'));
    }
    regions.push({ name: 'BAT', start: tOff, end: tOff + tableEntries * 4 });
    if (headerFindings.length > 0) {
      nextHeader = withSum(nextHeader, HEADER_CHECKSUM_AT);
      headerFix = { bytes: nextHeader, at: headerOffset, findings: headerFindings };
    }
    const bat = new Uint32Array(tableEntries);
    bat.set(used);
    if (tableEntries > need) bat.set(await readU32Array(store, needEnd, tableEntries - need, 'be'), need);
    batBefore = bat;
    batAfter = bat.slice();

    // bad entries: one finding per problem, however many entries share it
    const after = footer.diskType === 4 ? 'reads from the parent' : 'reads as zeros';
    const bad = new EntryFindings({ name: 'BAT', struct: 'BAT', offsetOf: (i) => tOff + 4 * i });
    const drop = (i: number, key: string, problem: string, detail: () => string, warning = false) => {
      batAfter![i] = BAT_UNUSED;
      batChanged = true;
      const repair = warning ? 'a repair marks them unused' : `a repair marks them unused (their blocks then ${after.replace('reads', 'read')})`;
      bad.add(key, i, warning ? 'warning' : 'corruption', problem, repair, () => `BAT entry ${i} ${detail()}; a repair marks it unused${warning ? '' : ` (block ${i} then ${after})`}`);
    };
    const live: number[] = [];
    for (let i = 0; i < bat.length; i++) {
      const e = bat[i]!;
      if (e === BAT_UNUSED) continue;
      if (i >= need) {
        drop(i, 'pastDisk', `name blocks past the disk's last block ${need - 1}`, () => `names a block (sector ${e}) past the disk's last block ${need - 1}`, true);
        continue;
      }
      const start = e * SECTOR;
      if (start + stride > limit) {
        drop(i, 'pastFile', 'name blocks that run past the end of the file', () => `names a block at sector ${e} that runs past the end of the file (${start + stride} > ${limit})`);
        continue;
      }
      const hit = regions.find((r) => start < r.end && r.start < start + stride);
      if (hit) {
        drop(i, `over ${hit.name}`, `name blocks that overlap the ${hit.name}`, () => `names a block at sector ${e} that overlaps the ${hit.name}`);
        continue;
      }
      live.push(i);
    }
    // overlapping blocks: sweep in file order; of two that overlap, the later BAT entry loses
    live.sort((a, b) => bat[a]! - bat[b]! || a - b);
    const kept: number[] = [];
    const losers: [number, number][] = [];
    let prev = -1;
    for (const i of live) {
      if (prev >= 0 && bat[i]! * SECTOR < bat[prev]! * SECTOR + stride) {
        const loser = i > prev ? i : prev;
        losers.push([loser, loser === i ? prev : i]);
        if (loser === prev) {
          kept.pop();
          kept.push(i);
          prev = i;
        }
        continue;
      }
      kept.push(i);
      prev = i;
    }
    losers.sort((a, b) => a[0] - b[0]);
    for (const [i, other] of losers) drop(i, 'overlap', 'name blocks that overlap another block', () => `names a block at sector ${bat[i]} that overlaps the block of BAT entry ${other}`);
    findings.push(...bad.findings());
    // leaks: gaps of a block or more between structures, and before the footer
    const spans = [...regions.map((r) => ({ start: r.start, end: r.end })), ...kept.map((i) => ({ start: bat[i]! * SECTOR, end: bat[i]! * SECTOR + stride }))].sort((a, b) => a.start - b.start);
    let end = 0;
    let inner = 0;
    for (const s of spans) {
      if (s.start - end >= stride) inner += s.start - end;
      end = Math.max(end, s.end);
    }
    if (inner > 0) {
      leakedBytes += inner;
      add({ kind: 'leak', message: `${inner} bytes between blocks are used by nothing (not repaired: reclaiming them means moving blocks, a compaction)`, struct: 'BAT', field: 'BAT' });
    }
    const usedEnd = roundUp(end, SECTOR);
    if (limit - usedEnd >= stride) {
      leakedBytes += limit - usedEnd;
      tailLeak = add({ kind: 'leak', message: `${limit - usedEnd} bytes before the footer belong to no block (an allocation stopped before its BAT entry); a repair moves the footer there and cuts the file`, struct: 'BAT', field: 'BAT', offset: usedEnd });
      newFooterAt = usedEnd;
      tailLeakBytes = limit - usedEnd;
    }
    return 'ok';
  }

  async function repairFooters(): Promise<void> {
    if (!repair) return;
    if (write && batChanged) {
      // in windows of the table, each written once when any entry in it changes
      const step = BAT_WRITE_WINDOW / 4;
      for (let w = 0; w < batAfter!.length; w += step) {
        const n = Math.min(step, batAfter!.length - w);
        let dirty = false;
        for (let j = w; j < w + n && !dirty; j++) dirty = batAfter![j] !== batBefore![j];
        if (!dirty) continue;
        await store.write(tableOffset + 4 * w, u32Bytes(batAfter!, w, w + n, 'be'));
      }
      await store.flush();
    }
    for (const f of findings) if (f.struct === 'BAT' && f.field !== 'BAT') done(f);
    if (headerFix) {
      if (write) {
        await store.write(headerFix.at, headerFix.bytes);
        await store.flush();
      }
      headerFix.findings.forEach(done);
    }
    const good = withSum(footerBytes, FOOTER_CHECKSUM_AT);
    if (endFinding || newFooterAt !== footerAt) {
      if (write) {
        await store.write(newFooterAt, good);
        await store.flush();
        if (newFooterAt + FOOTER_SIZE < fileSize) {
          await store.truncate(newFooterAt + FOOTER_SIZE);
          await store.flush();
        }
      }
      if (endFinding) done(endFinding);
      if (tailLeak) {
        done(tailLeak);
        if (!opts.dryRun) leakedBytes -= tailLeakBytes;
      }
    }
    if (copyFinding) {
      if (write) {
        await store.write(0, good);
        await store.flush();
      }
      done(copyFinding);
    }
  }
}
