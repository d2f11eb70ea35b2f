/**
 * Reading a streamOptimized VMDK from a pipe, sector by sector as VirtualBox's sequential mode
 * does (vmdk.md §4.5 step 3). Nothing can be sought, so a stream is read by its markers alone:
 * the grain tables and directory are skipped, since every grain marker carries its own LBA.
 * That walk works for all three producer layouts: VMware's (tables after the data),
 * open-vmdk's and QEMU's (tables before `overHead`, which the walk starts at), with or without
 * an end-of-stream marker.
 *
 * Every count read from the input bounds only how far we skip or how much we inflate into a
 * buffer of one grain; nothing is allocated from an untrusted size.
 */
import { inflate, promisify } from '../../../core/platform.js';
import { DiskError } from '../../../core/errors.js';
import { SECTOR_SIZE, toSafeNumber } from '../../../core/ints.js';
import type { SequentialFormat, SequentialInput, SequentialReader } from '../../sequential.js';
import { COMPRESSION_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, GRAIN_MARKER_HEAD, MARKER_EOS, MarkerHead, SPARSE_MAGIC, SparseExtentHeader } from '../structs.js';

const inflateAsync = promisify(inflate);

/** `Driver.sequential` of the VMDK driver */
export const vmdkStreamReader: SequentialFormat = Object.freeze({
  description: 'streamOptimized VMDK',
  header: 'a VMDK sparse header',
  matches: (first: Buffer) => first.length >= 4 && first.readUInt32LE(0) === SPARSE_MAGIC,
  open: (reader: SequentialReader, first: Buffer) => streamInput(reader, first),
});

function streamInput(r: SequentialReader, first: Buffer): SequentialInput {
  const name = r.name;
  if (first.length < SECTOR_SIZE) throw new DiskError('CORRUPT', 'the input ended inside the header', { path: name, field: 'header', expected: SECTOR_SIZE, found: first.length });
  const h = SparseExtentHeader.decode(first, 0, name);
  const bad = (field: string, message: string, expected: unknown, found: unknown) => new DiskError('CORRUPT', message, { path: name, field, expected: String(expected), found: String(found) });
  if ((h.flags & FLAG_COMPRESSED) === 0 || (h.flags & FLAG_MARKERS) === 0) {
    throw new DiskError('NOTSUPPORTED', 'only streamOptimized VMDKs (compressed grains with markers) can be read from a pipe', { path: name, field: 'flags', found: `0x${h.flags.toString(16)}` });
  }
  if (h.compressAlgorithm !== COMPRESSION_DEFLATE) throw new DiskError('CMPUNSUP', undefined, { path: name, field: 'compressAlgorithm', found: h.compressAlgorithm });
  const grainSectors = toSafeNumber(h.grainSize, { path: name, field: 'grainSize' });
  if (grainSectors < 1 || grainSectors > 2048 || (grainSectors & (grainSectors - 1)) !== 0) throw bad('grainSize', 'invalid grain size', 'a power of two <= 2048 sectors', grainSectors);
  const capacitySectors = toSafeNumber(h.capacity, { path: name, field: 'capacity' });
  const capacity = capacitySectors * SECTOR_SIZE;
  if (capacitySectors <= 0 || !Number.isSafeInteger(capacity)) throw bad('capacity', 'invalid capacity', 'a positive number of sectors', h.capacity);
  const overHead = toSafeNumber(h.overHead, { path: name, field: 'overHead' });
  if (overHead < 1) throw bad('overHead', 'grains cannot start inside the header', '>= 1', overHead);
  const grainBytes = grainSectors * SECTOR_SIZE;
  return {
    name,
    format: 'vmdk',
    type: 'streamOptimized',
    capacity,
    async *pieces() {
      if (!(await r.skip(overHead * SECTOR_SIZE - SECTOR_SIZE))) return;
      // a few inflates run on libuv's threads while the next markers are parsed
      const pending: Promise<{ offset: number; data: Buffer }>[] = [];
      let lastLba = -1;
      for (;;) {
        const head = await r.read(SECTOR_SIZE);
        if (head.length === 0) break; // QEMU's streams have no end-of-stream marker
        if (head.length < SECTOR_SIZE) throw bad('marker', 'the input ends inside a sector', SECTOR_SIZE, head.length);
        const { val, size, type } = MarkerHead.decode(head, 0, name);
        if (size === 0) {
          if (type === MARKER_EOS) break;
          // GT, GD, footer or an unknown (progress) marker: skip what it says follows
          if (val > BigInt(Number.MAX_SAFE_INTEGER) / 512n) throw bad('marker', 'metadata marker too long', 'a sector count', val);
          if (!(await r.skip(Number(val) * SECTOR_SIZE))) throw bad('marker', 'the input ended inside a metadata block', `${val} sectors`, 'end of input');
          continue;
        }
        if (size > 2 * grainBytes) throw bad('size', 'compressed grain too large', `<= ${2 * grainBytes}`, size);
        if (val % BigInt(grainSectors) !== 0n || val >= BigInt(capacitySectors)) throw bad('lba', 'grain marker LBA not on a grain inside the disk', `a multiple of ${grainSectors} below ${capacitySectors}`, val);
        const lba = Number(val);
        if (lba <= lastLba) throw bad('lba', 'grains are not in ascending order (a stream read from a pipe must be)', `> ${lastLba}`, lba);
        lastLba = lba;
        const padded = Math.ceil((GRAIN_MARKER_HEAD + size) / SECTOR_SIZE) * SECTOR_SIZE;
        const rest = await r.exactly(padded - SECTOR_SIZE, 'grain');
        const z = Buffer.concat([head.subarray(GRAIN_MARKER_HEAD), rest]).subarray(0, size);
        const offset = lba * SECTOR_SIZE;
        const limit = Math.min(grainBytes, capacity - offset);
        const p = inflateAsync(z, { maxOutputLength: grainBytes, finishFlush: 2 }).then(
          (data) => {
            // a last grain inflates to a whole grain (VirtualBox wants that); the part past the end goes
            return { offset, data: data.length > limit ? data.subarray(0, limit) : data };
          },
          (err: unknown) => {
            throw new DiskError('ZLIB', 'cannot inflate compressed grain', { path: name, field: 'data', offset: lba * SECTOR_SIZE }, { cause: err });
          },
        );
        p.catch(() => {});
        pending.push(p);
        if (pending.length >= 8) yield await pending.shift()!;
      }
      while (pending.length > 0) yield await pending.shift()!;
    },
  };
}
