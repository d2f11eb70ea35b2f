/**
 * VDI consistency check and repair (qemu-img check -f vdi, VBoxManage repairhd / VDRepair).
 *
 * Design notes
 * - Works on the file's bytes, not on an opened image: the open refuses a map whose entries
 *   share a block or point past the file, and those are exactly what a repair mends. The header
 *   must pass the open's field checks (parseHeader): a header we cannot trust is reported, never
 *   rewritten.
 * - Findings, by what they risk:
 *   corruption: a map entry past the data area (>= cBlocks) or past the end of the file, two
 *   entries naming one physical block, cBlocksAllocated below a used slot + 1 (the next
 *   allocation, VirtualBox's, QEMU's or ours, would overwrite a live block), a differencing
 *   image without a parent UUID;
 *   leak: physical blocks no entry names — holes inside the data area, and bytes after the last
 *   block; cBlocksAllocated above the entries and at or past every used slot (a kill between
 *   the header and the map entry of an allocation, in VirtualBox's and QEMU's order and ours:
 *   nothing is lost; QEMU's check counts any difference as a corruption, VirtualBox's repair
 *   ignores the count);
 *   warning: a base carrying a parent UUID (the VirtualBox 3.x copy bug), cbDisk not a multiple
 *   of 512.
 * - Which entry keeps a shared block: the first in map order (VirtualBox's choice); in a fixed
 *   image the entry whose index is its own block (map[i] = i) wins, and a dropped entry of a
 *   fixed image gets its own block back when nobody else uses it.
 * - A dropped entry becomes FREE (VirtualBox's repair does the same): the block reads as zeros
 *   in a base, and as the parent's block in a differencing image.
 * - Repair order, each step flushed before the next, so a repair killed at any point leaves an
 *   image that opens, reads what the finished repair would (or the old valid data), and needs
 *   at worst another repair for leaks:
 *   1. bad map entries set FREE, cBlocksAllocated = the valid entries, stray parent UUIDs
 *      nulled: ONE write from the header to the last changed entry (map.ts
 *      writeHeaderAndMap, as compact does), so the count never disagrees with the entries on
 *      disk (QEMU calls that corruption). After it only leaks are left (holes, the tail). The
 *      write falls back to entries-then-header only for a map not right after the header or a
 *      span over 64 MiB (then a kill between leaves the count off until the next repair);
 *   2. holes filled by moving the highest blocks down (copy, flush, then the map entry: a kill
 *      after the copy leaves an unreferenced copy in a hole, which is still a hole; the count
 *      does not change);
 *   3. the file cut after the last block (a kill before this leaves a trailing leak).
 * - One finding per kind of bad entry with a count (common/findings.ts), so a garbage
 *   map of millions of entries costs a typed array, not a finding each; the map is bounded by
 *   the file (parseHeader).
 * - A dry run does all the arithmetic and writes nothing; legacy v0 images are never written.
 */
import { DiskError } from '../../core/errors.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { CheckFinding, CheckOptions, CheckReport } from '../types.js';
import { EntryFindings, checkFileWith } from '../common/findings.js';
import { readU32Array, u32Bytes } from '../../binary/tables.js';
import { parseHeader } from './open.js';
import { writeHeaderAndMap } from './map.js';
import { BLOCK_FREE, BLOCK_ZERO, NULL_UUID, PRE_HEADER_SIZE, TYPE_DIFF, TYPE_FIXED, VdiHeaderV1, VdiHeaderV1Plus, isNullUuid, uuidToText } from './structs.js';

const PROBLEM_PAST_DATA = 1;
const PROBLEM_PAST_FILE = 2;
const PROBLEM_SHARED = 3;
/** flag: a fixed image's entry pointed back at its own block */
const PROBLEM_OWN_BLOCK = 0x80;

/** Check (and repair) the VDI file at `path`, opening it read-write only for a real repair. */
export function checkVdiFile(ns: Namespace, path: string, opts: CheckOptions): Promise<CheckReport> {
  return checkFileWith(ns, path, opts, checkVdiStore);
}

export async function checkVdiStore(store: ByteStore, path: string, opts: CheckOptions): Promise<CheckReport> {
  const findings: CheckFinding[] = [];
  const report = (leakedBytes: number): CheckReport => ({ path, format: 'vdi', findings, leakedBytes, ...(opts.repair && opts.dryRun ? { dryRun: true } : {}) });
  let parsed;
  try {
    parsed = await parseHeader(store, path);
  } catch (err) {
    if (!(err instanceof DiskError) || err.code !== 'CORRUPT') throw err;
    findings.push({ kind: 'corruption', message: `${err.message.replace(`${path}: `, '')} (not repairable: the header is the only copy)`, struct: err.details.struct, field: err.details.field });
    return report(0);
  }
  const { h, kind, fileSize } = parsed;
  const repair = opts.repair && kind !== 'v0';
  const write = repair && !opts.dryRun;
  const done = (f: CheckFinding) => {
    if (!repair) return;
    if (opts.dryRun) f.wouldRepair = true;
    else f.repaired = true;
  };
  const fixed = h.type === TYPE_FIXED;
  const stride = h.cbBlock + h.cbBlockExtra;
  const fileBlocks = fileSize > h.offData ? Math.floor((fileSize - h.offData) / stride) : 0;
  const slots = Math.min(h.cBlocks, fileBlocks);
  const map = await readU32Array(store, h.offBlocks, h.cBlocks);
  /** physical block -> the virtual block that keeps it (-1: nobody) */
  const owner = new Int32Array(slots).fill(-1);
  /** the first and the last entry a repair changes (-1: none) */
  let firstChanged = -1;
  let lastChanged = -1;
  /** per entry, its problem (PROBLEM_*), and for a shared block the entry that keeps it */
  const problemOf = new Uint8Array(map.length);
  const sharedWith = new Int32Array(map.length);

  // fixed images: entries that are their own block claim it first
  if (fixed) for (let i = 0; i < map.length; i++) if (map[i] === i && i < slots) owner[i] = i;
  const original = map.slice();
  for (let i = 0; i < map.length; i++) {
    const e = map[i]!;
    if (e >= BLOCK_ZERO || (fixed && e === i && e < slots)) continue;
    let problem = 0;
    if (e >= h.cBlocks) problem = PROBLEM_PAST_DATA;
    else if (e >= fileBlocks) problem = PROBLEM_PAST_FILE;
    else if (owner[e]! >= 0) {
      problem = PROBLEM_SHARED;
      sharedWith[i] = owner[e]!;
    }
    if (problem === 0) {
      owner[e] = i;
      continue;
    }
    map[i] = BLOCK_FREE;
    problemOf[i] = problem;
    if (firstChanged < 0) firstChanged = i;
    lastChanged = i;
  }
  // a dropped entry of a fixed image gets its own block back when it is free
  if (fixed) {
    for (let i = firstChanged; i >= 0 && i <= lastChanged; i++) {
      if (problemOf[i] !== 0 && i < slots && owner[i]! < 0) {
        map[i] = i;
        owner[i] = i;
        problemOf[i] |= PROBLEM_OWN_BLOCK;
      }
    }
  }
  // one finding per problem, however many entries share it (a garbage map has millions)
  const pending: CheckFinding[] = [];
  {
    const after = h.type === TYPE_DIFF ? 'reads from the parent' : 'reads as zeros';
    const bad = new EntryFindings({ name: 'blockMap', struct: 'VdiHeader', offsetOf: (i) => h.offBlocks + 4 * i });
    for (let i = firstChanged; i >= 0 && i <= lastChanged; i++) {
      const code = problemOf[i]!;
      if (code === 0) continue;
      const e = original[i]!;
      const base = code & ~PROBLEM_OWN_BLOCK;
      const [what, detail] =
        base === PROBLEM_PAST_DATA
          ? ['point past the data area', `points past the data area (physical block ${e}, cBlocks ${h.cBlocks})`]
          : base === PROBLEM_PAST_FILE
            ? ['point past the end of the file', `points past the end of the file (physical block ${e}; the file holds ${fileBlocks})`]
            : ['point at physical blocks other entries use', `points at physical block ${e}, which blockMap[${sharedWith[i]}] uses too`];
      const own = (code & PROBLEM_OWN_BLOCK) !== 0;
      const repair = own ? 'a repair points each back at its own block (fixed image)' : `a repair frees them (their virtual blocks then ${after.replace('reads', 'read')})`;
      bad.add(`${code}`, i, 'corruption', what, repair, () => `block map entry ${i} ${detail}; ${own ? `a repair points it back at its own block ${i} (fixed image)` : `a repair frees the entry (virtual block ${i} then ${after})`}`);
    }
    pending.push(...bad.findings());
    findings.push(...pending);
  }
  let used = 0;
  let maxIndex = -1;
  for (let p = 0; p < slots; p++) {
    if (owner[p]! < 0) continue;
    used++;
    maxIndex = p;
  }

  // cBlocksAllocated against the entries: allocators (VirtualBox's, QEMU's, ours) put the next
  // block at slot cBlocksAllocated, so a count at or above every used slot only leaves slots
  // unused (a leak: what an allocation killed between the header and the map entry leaves, in
  // all three writers' order); a count below a used slot gets a live block overwritten
  const countHigh = h.cBlocksAllocated > used && h.cBlocksAllocated >= maxIndex + 1;
  const countFinding: CheckFinding | undefined =
    h.cBlocksAllocated !== used
      ? {
          kind: countHigh ? 'leak' : 'corruption',
          message: countHigh
            ? `cBlocksAllocated is ${h.cBlocksAllocated} but the block map has ${used} valid allocated blocks: ${h.cBlocksAllocated - used} counted slot${h.cBlocksAllocated - used === 1 ? ' is' : 's are'} used by no entry (an allocation interrupted before its map entry); a repair sets the count from the map`
            : `cBlocksAllocated is ${h.cBlocksAllocated} but the block map has ${used} valid allocated blocks, the highest at slot ${maxIndex}: the next allocation would overwrite a live block`,
          struct: 'VdiHeader',
          field: 'cBlocksAllocated',
          offset: VdiHeaderV1.offsetOf('cBlocksAllocated'),
        }
      : undefined;
  if (countFinding) findings.push(countFinding);

  // parent UUIDs
  let linkFinding: CheckFinding | undefined;
  if (h.type === TYPE_DIFF && isNullUuid(h.uuidLinkage)) {
    findings.push({ kind: 'corruption', message: 'differencing image without a parent UUID (its parent cannot be found; not repairable)', struct: 'VdiHeader', field: 'uuidLinkage' });
  } else if (h.type !== TYPE_DIFF && (!isNullUuid(h.uuidLinkage) || !isNullUuid(h.uuidParentModify))) {
    linkFinding = { kind: 'warning', message: `base image carries a parent UUID ${uuidToText(h.uuidLinkage)} (VirtualBox 3.x copy bug; QEMU refuses such images); a repair clears it`, struct: 'VdiHeader', field: 'uuidLinkage' };
    findings.push(linkFinding);
  }
  if (h.cbDisk % 512n !== 0n) findings.push({ kind: 'warning', message: `cbDisk ${h.cbDisk} is not a multiple of 512 (read as ${parsed.capacity} bytes, rounded up as QEMU does; VirtualBox rounds down)`, struct: 'VdiHeader', field: 'cbDisk' });

  // leaks: holes inside the data area (dynamic images), bytes after the last block
  const holes: number[] = [];
  if (!fixed) for (let p = 0; p < maxIndex; p++) if (owner[p]! < 0) holes.push(p);
  const holeFinding: CheckFinding | undefined =
    holes.length > 0
      ? { kind: 'leak', message: `${holes.length} physical block${holes.length === 1 ? '' : 's'} inside the data area ${holes.length === 1 ? 'is' : 'are'} used by no map entry (first: ${holes[0]}); a repair moves the last blocks into ${holes.length === 1 ? 'it' : 'them'}`, struct: 'VdiHeader', field: 'blockMap', offset: h.offData + holes[0]! * stride }
      : undefined;
  if (holeFinding) findings.push(holeFinding);
  const dataEnd = h.offData + (fixed ? h.cBlocks : used) * stride;
  const lastEnd = h.offData + (fixed ? h.cBlocks : maxIndex + 1) * stride;
  const tail = Math.max(0, fileSize - Math.max(lastEnd, h.offData));
  const tailFinding: CheckFinding | undefined =
    tail > 0 ? { kind: 'leak', message: `${tail} bytes after the last block are used by nothing; a repair cuts them off`, struct: 'data area', field: 'fileSize', offset: fileSize - tail } : undefined;
  if (tailFinding) findings.push(tailFinding);

  if (kind === 'v0' && opts.repair && findings.some((f) => f.kind !== 'warning' || f === linkFinding)) {
    findings.push({ kind: 'warning', message: 'legacy v0 images are not repaired (convert the image instead)', struct: 'VdiHeader', field: 'version' });
  }
  if (!repair) return report(holes.length * stride + tail);

  // ---- repair (dry run: the same decisions, no writes)
  // step 1: the dropped entries, the count and the cleared parent UUIDs in one write (the count
  // matches the entries on disk at every moment: QEMU calls any difference a corruption)
  const next = { ...h, cBlocksAllocated: used };
  if (linkFinding) {
    next.uuidLinkage = Buffer.from(NULL_UUID);
    next.uuidParentModify = Buffer.from(NULL_UUID);
  }
  if (write && (lastChanged >= 0 || countFinding || linkFinding)) {
    if (lastChanged >= 0) {
      // the span reaches the last changed entry; the entries between come from `map` unchanged
      await writeHeaderAndMap(store, kind, next, map, lastChanged);
    } else {
      const bytes = kind === 'v1+' ? VdiHeaderV1Plus.encode(next) : VdiHeaderV1.encode(next as unknown as Parameters<typeof VdiHeaderV1.encode>[0]);
      await store.write(PRE_HEADER_SIZE, bytes.subarray(PRE_HEADER_SIZE));
    }
    await store.flush();
  }
  pending.forEach(done);
  if (countFinding) done(countFinding);
  if (linkFinding) done(linkFinding);

  if (holes.length > 0) {
    let top = maxIndex;
    const buf = write ? Buffer.alloc(stride) : Buffer.alloc(0);
    for (const hole of holes) {
      while (top > hole && owner[top]! < 0) top--;
      if (top <= hole) break;
      const v = owner[top]!;
      if (write) {
        await store.readInto(buf, h.offData + top * stride);
        await store.write(h.offData + hole * stride, buf);
        await store.flush();
        map[v] = hole;
        await store.write(h.offBlocks + 4 * v, u32Bytes(map, v, v + 1));
        await store.flush();
      }
      owner[hole] = v;
      owner[top] = -1;
      top--;
    }
    done(holeFinding!);
  }

  if (fileSize > dataEnd && fileSize > h.offData) {
    if (write) {
      await store.truncate(Math.max(dataEnd, h.offData));
      await store.flush();
    }
    if (tailFinding) done(tailFinding);
  }
  return report(opts.dryRun ? holes.length * stride + tail : 0);
}
