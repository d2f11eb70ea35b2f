/**
 * Opening a VMDK: the descriptor (a text file, or embedded in a monolithic sparse file, or
 * made up for a bare extent), each extent file it names (refusing names that leave its folder,
 * a file listed twice, and the descriptor itself), and each hosted sparse extent's header and
 * directories. Everything is validated here, before a VmdkImage (image.ts) or SparseExtent
 * (sparse.ts) is built; every failed open closes what it opened.
 */
import { basename } from '../../core/names.js';
import { DiskError } from '../../core/errors.js';
import { SECTOR_SIZE, ceilDiv, isPowerOfTwo, roundUp, toSafeNumber } from '../../core/ints.js';
import type { Namespace } from '../../storage/namespace.js';
import type { ByteStore } from '../../storage/store.js';
import type { OpenOptions } from '../types.js';
import { resolveBesideFile } from '../common/beside-file.js';
import { Descriptor, MAX_DESCRIPTOR_BYTES, looksLikeDescriptor, type ExtentLine } from './descriptor.js';
import { FlatExtent, SparseFileExtent, ZeroExtent, type Extent } from './extents.js';
import { EsxSparseExtent } from './esx-sparse.js';
import { VmdkImage } from './image.js';
import { readU32Array } from '../../binary/tables.js';
import { MAX_GD_ENTRIES, MAX_GRAIN_SECTORS, NO_PARENT, RAW_DEVICE_TYPES, checkDirectory } from './layout.js';
import { entryError, metadataOverlaps, overlapError, scanGrainEntries } from './overlap.js';
import { SparseExtent } from './sparse.js';
import {
  COMPRESSION_DEFLATE,
  COMPRESSION_NONE,
  COWD_MAGIC,
  FLAG_COMPRESSED,
  FLAG_MARKERS,
  FLAG_REDUNDANT_GD,
  FLAG_VALID_NEWLINE,
  GD_AT_END,
  KNOWN_FLAGS,
  MARKER_EOS,
  MARKER_FOOTER,
  MarkerHead,
  SESPARSE_CONST_MAGIC,
  SPARSE_MAGIC,
  SparseExtentHeader,
} from './structs.js';

/** 1 MiB, the size a descriptor may have at all (MAX_DESCRIPTOR_BYTES, QEMU's bound) */
const MAX_DESCRIPTOR_SECTORS = 2048;

/** Open one link; a child is opened like a base (the chain layer decides whether it may be written). */
export async function openVmdk(ns: Namespace, path: string, opts: OpenOptions = {}): Promise<VmdkImage> {
  const image = await openLinkIn(ns, path, opts);
  image.namespace = ns;
  return image;
}

async function openLinkIn(ns: Namespace, path: string, opts: OpenOptions): Promise<VmdkImage> {
  const readOnly = !!opts.readOnly;
  const store = await ns.open(path, { write: !readOnly });
  const opened: ByteStore[] = [store];
  try {
    const size = await store.size();
    const head = await store.readZeroPadded(0, Math.min(Math.max(size, 0), 4096));
    const magic = head.length >= 4 ? head.readUInt32LE(0) : 0;
    if (magic === SPARSE_MAGIC) return await openMonolithic(path, store, readOnly, opts.updateIdentityOnWrite ?? true, !!opts.tolerateDamage);
    if (magic === COWD_MAGIC || (head.length >= 8 && head.readBigUInt64LE(0) === SESPARSE_CONST_MAGIC)) {
      let esxStore: ByteStore = store;
      if (!readOnly && opts.tolerateDamage) {
        // checked, never written: reopened read-only (a plain read-write open is refused)
        await store.close();
        opened.length = 0;
        esxStore = await ns.open(path);
        opened.push(esxStore);
      }
      return await openBareEsx(path, esxStore, magic === COWD_MAGIC ? 'VMFSSPARSE' : 'SESPARSE', esxStore.readOnly);
    }
    if (!looksLikeDescriptor(head)) throw new DiskError('INVALIDDISK', 'not a VMDK file (no sparse header magic and no text descriptor)', { path });
    if (size > MAX_DESCRIPTOR_BYTES) {
      throw new DiskError('BADDESCRIPTOR', 'descriptor file is too large', { path, field: 'descriptor', expected: `<= ${MAX_DESCRIPTOR_BYTES} bytes`, found: size });
    }
    // The text ends at the first NUL: QEMU rewrites a descriptor file NUL-padded to whole sectors.
    const text = (await store.read(0, size)).toString('utf8').split('\0', 1)[0]!;
    await store.close();
    opened.length = 0;
    const descriptor = Descriptor.parse(text, path);
    const extents = await openExtents(ns, path, descriptor, opts, opened);
    const image = new VmdkImage(path, descriptor, extents, undefined, true, readOnly, opts.updateIdentityOnWrite === false);
    await image.markOpen();
    return image;
  } catch (err) {
    for (const s of opened) await s.close().catch(() => {});
    throw err;
  }
}

async function openMonolithic(path: string, store: ByteStore, readOnly: boolean, updateIdentityOnWrite: boolean, tolerateDamage: boolean): Promise<VmdkImage> {
  const sparse = await openSparseExtent(store, { readOnly, tolerateDamage });
  const text = await sparse.readEmbeddedDescriptor();
  let descriptor: Descriptor;
  let writable = true;
  if (text === undefined || text.trim() === '') {
    // A bare sparse extent (e.g. one -s001 file opened alone): describe it ourselves.
    writable = false;
    descriptor = Descriptor.build({
      cid: NO_PARENT - 1,
      createType: sparse.compressed ? 'streamOptimized' : 'monolithicSparse',
      extents: [{ access: 'RW', sectorCount: sparse.capacityBytes / SECTOR_SIZE, type: 'SPARSE', fileName: basename(path), offsetSectors: 0 }],
      ddb: [],
    });
  } else {
    descriptor = Descriptor.parse(text, path);
  }
  const lines = descriptor.extents();
  if (lines.length !== 1 || (lines[0]!.type !== 'SPARSE' && lines[0]!.type !== 'VMFSSPARSE')) {
    throw new DiskError('BADDESCRIPTOR', 'a monolithic sparse file must describe exactly one SPARSE extent (itself)', { path, field: 'extents', found: lines.length });
  }
  const line = lines[0]!;
  if (line.sectorCount * SECTOR_SIZE > sparse.capacityBytes) {
    throw new DiskError('CORRUPT', 'extent line is larger than the sparse header capacity', { path, field: 'capacity', expected: `>= ${line.sectorCount} sectors`, found: sparse.capacityBytes / SECTOR_SIZE });
  }
  // The embedded extent line names the file itself; whatever name it carries, the data is here.
  const extent = new SparseFileExtent(line, sparse, path, !readOnly && line.access === 'RW');
  const image = new VmdkImage(path, descriptor, [extent], writable ? sparse : undefined, writable, readOnly || sparse.readOnly || line.access !== 'RW', !updateIdentityOnWrite);
  await image.markOpen();
  return image;
}

/**
 * A COWD or SESparse file opened without its descriptor (as a bare -s001 file can be): it is
 * described as a link of its own, with no parent, so unallocated grains read as zeros. QEMU
 * cannot open these files alone; the descriptor (`-000001.vmdk`) is the normal way in.
 */
async function openBareEsx(path: string, store: ByteStore, type: 'VMFSSPARSE' | 'SESPARSE', readOnly: boolean): Promise<VmdkImage> {
  // the line's size is not known before the header is read: open with a provisional line
  const provisional: ExtentLine = { access: 'RDONLY', sectorCount: 1, type, fileName: basename(path), offsetSectors: 0 };
  const open = type === 'VMFSSPARSE' ? EsxSparseExtent.openCowd : EsxSparseExtent.openSeSparse;
  const probe = await open(provisional, store, { readOnly });
  const sectors = probe.capacityBytes / SECTOR_SIZE;
  const descriptor = Descriptor.build({
    cid: NO_PARENT - 1,
    createType: type === 'VMFSSPARSE' ? 'vmfsSparse' : 'seSparse',
    extents: [{ ...provisional, access: 'RW', sectorCount: sectors }],
    ddb: [],
  });
  const extent = probe.withLine(descriptor.extents()[0]!);
  // a COWD file opened read-write takes writes (SESparse refused that open above)
  return new VmdkImage(path, descriptor, [extent], undefined, false, readOnly);
}

/** Resolve an extent file name from a descriptor, refusing names that escape its folder. */
export function resolveExtentPath(ns: Namespace, descriptorPath: string, fileName: string, allowExternal: boolean): Promise<string> {
  return resolveBesideFile(ns, descriptorPath, fileName, allowExternal, { what: 'extent file', owner: 'descriptor', badName: 'BADDESCRIPTOR' });
}

/**
 * With allowRawDevice: the resolved name of a FLAT-like extent when it may name anything (every
 * extent of a raw-device link: a device, a partition, or a regular file standing in) or names a
 * device; undefined to apply the usual rules (resolveExtentPath).
 */
async function rawDeviceName(ns: Namespace, descriptorPath: string, fileName: string, rawLink: boolean): Promise<string | undefined> {
  if (fileName === '' || fileName.includes('\0')) return undefined;
  const full = ns.resolve(descriptorPath, fileName);
  const kind = await ns.kind(full);
  if (kind === 'missing') throw new DiskError('FILENOTFOUND', 'raw device or extent file not found', { path: full, field: 'extent file name', found: fileName });
  if (rawLink) return full;
  return (await ns.kind(await ns.realName(full))) === 'device' ? full : undefined;
}

/** the namespace's identity of a name ("same file"), or undefined when it cannot be had */
async function fileId(ns: Namespace, name: string): Promise<string | undefined> {
  return (await ns.stat(name).catch(() => undefined))?.id;
}

async function openExtents(ns: Namespace, path: string, descriptor: Descriptor, opts: OpenOptions, opened: ByteStore[]): Promise<Extent[]> {
  const readOnly = !!opts.readOnly;
  const out: Extent[] = [];
  // Each file once (by device and inode, so hard links and symbolic links count too), and never
  // the descriptor itself: two extents on one file would each allocate grains at its end, and an
  // acknowledged write of one would read back as the other's bytes. FLAT lines may share a file
  // in disjoint byte ranges, or in any ranges when at most one of them can be written.
  const seen = new Map<string, { line: ExtentLine; n: number }[]>();
  const self = await fileId(ns, path);
  if (self) seen.set(self, [{ line: { access: 'RW', sectorCount: 1, type: 'ZERO', offsetSectors: 0 }, n: 0 }]);
  const lines = descriptor.extents();
  // raw-device disks (VBOXHDDRAW style, ESX raw device mappings) name devices or partitions by
  // absolute path, and writes go straight to them: only on explicit request
  const rawLink = RAW_DEVICE_TYPES.has((descriptor.get('createType') ?? '').toLowerCase()) || lines.some((l) => l.type === 'VMFSRDM' || l.type === 'VMFSRAW');
  if (rawLink && !opts.allowRawDevice) {
    const what = lines.find((l) => l.type === 'VMFSRDM' || l.type === 'VMFSRAW')?.type ?? descriptor.get('createType');
    throw new DiskError('NOTSUPPORTED', `a raw-device VMDK (${what}) uses a device or partition in place: open it with allowRawDevice (--allow-raw-device)`, { path, field: 'allowRawDevice', found: what });
  }
  // A descriptor may name one file on many lines (up to the extent cap): its path is resolved
  // and checked once, and FLAT lines of one file share one open store (1001 lines opening and
  // checking the file each took over a second per check).
  const resolved = new Map<string, { file: string; id: string | undefined }>();
  const flatStores = new Map<string, { store: ByteStore; size: number }>();
  for (let n = 1; n <= lines.length; n++) {
    const line = lines[n - 1]!;
    if (line.type === 'ZERO') {
      out.push(new ZeroExtent(line, path));
      continue;
    }
    // a raw device mapping reads as the device it maps (on ESX the mapping file is that device)
    const flatLike = line.type === 'FLAT' || line.type === 'VMFS' || line.type === 'VMFSRDM' || line.type === 'VMFSRAW';
    let r = resolved.get(line.fileName!);
    if (!r) {
      const device = flatLike && opts.allowRawDevice ? await rawDeviceName(ns, path, line.fileName!, rawLink) : undefined;
      const file = device ?? (await resolveExtentPath(ns, path, line.fileName!, !!opts.allowExternalExtents));
      r = { file, id: await fileId(ns, file) };
      resolved.set(line.fileName!, r);
    }
    const { file, id } = r;
    if (id) {
      const key = id;
      const flat = (l: ExtentLine) => l.type === 'FLAT' || l.type === 'VMFS';
      const earlier = seen.get(key) ?? [];
      for (const prev of earlier) {
        if (prev.n === 0) throw new DiskError('BADDESCRIPTOR', `extent ${n} (${JSON.stringify(line.fileName)}) is the descriptor file itself`, { path, field: 'extent file name', found: line.fileName });
        // flat lines alias nothing when disjoint, and overlap harmlessly when no write can go through both
        const harmless = flat(prev.line) && flat(line) && (disjoint(prev.line, line) || readOnly || prev.line.access !== 'RW' || line.access !== 'RW');
        if (!harmless) {
          throw new DiskError('BADDESCRIPTOR', `extents ${prev.n} and ${n} name the same file ${JSON.stringify(line.fileName)}: each extent file may be listed once`, { path, field: 'extent file name', found: line.fileName });
        }
      }
      earlier.push({ line, n });
      seen.set(key, earlier);
    }
    const extentReadOnly = readOnly || line.access !== 'RW';
    if (flatLike) {
      const key = `${extentReadOnly}\0${file}`;
      let known = flatStores.get(key);
      const owns = !known;
      if (!known) {
        const store = await ns.open(file, { write: !extentReadOnly });
        opened.push(store);
        known = { store, size: await store.size() };
        flatStores.set(key, known);
      }
      out.push(new FlatExtent(line, known.store, file, line.offsetSectors * SECTOR_SIZE, known.size, extentReadOnly, owns));
      continue;
    }
    // ESXi delta extents: a check (and repair) opens them read-only; COWD is written in place
    // (cowd-write.ts), a read-write open of SESparse is refused (EsxSparseExtent)
    const store = await ns.open(file, { write: !(extentReadOnly || (line.type === 'SESPARSE' && !!opts.tolerateDamage)) });
    opened.push(store);
    if (line.type === 'SESPARSE') {
      out.push(await EsxSparseExtent.openSeSparse(line, store, { readOnly: store.readOnly }));
      continue;
    }
    // SPARSE or VMFSSPARSE: a hosted sparse (KDMV) or an ESX sparse (COWD) file; like QEMU, we
    // go by the magic, not by the extent type
    const head = await store.readZeroPadded(0, 4);
    if (head.readUInt32LE(0) === COWD_MAGIC) {
      let ro: ByteStore = store;
      if (!store.readOnly && opts.tolerateDamage) {
        await store.close();
        opened.pop();
        ro = await ns.open(file);
        opened.push(ro);
      }
      out.push(await EsxSparseExtent.openCowd(line, ro, { readOnly: ro.readOnly }));
      continue;
    }
    const sparse = await openSparseExtent(store, { readOnly: extentReadOnly, tolerateDamage: !!opts.tolerateDamage });
    if (line.sectorCount * SECTOR_SIZE > sparse.capacityBytes) {
      throw new DiskError('CORRUPT', 'extent line is larger than the sparse extent capacity', { path: file, field: 'capacity', expected: `>= ${line.sectorCount} sectors`, found: sparse.capacityBytes / SECTOR_SIZE });
    }
    out.push(new SparseFileExtent(line, sparse, file, !extentReadOnly));
  }
  return out;
}

/** two FLAT/VMFS lines on one file that share no byte */
function disjoint(a: ExtentLine, b: ExtentLine): boolean {
  return a.offsetSectors + a.sectorCount <= b.offsetSectors || b.offsetSectors + b.sectorCount <= a.offsetSectors;
}

// ------------------------------------------------------------------ hosted sparse extents

export interface SparseOpenOptions {
  readOnly: boolean;
  /**
   * opened for check / repair (OpenOptions.tolerateDamage): metadata that overlaps itself is
   * recorded for the check instead of refusing a read-write open, and every write other than a
   * repair is refused
   */
  tolerateDamage?: boolean;
}

/**
 * Open a hosted sparse extent: the header (or, for a stream with its directory at the end, the
 * footer) and both directories are validated before anything is built (NOTES.md "Validation");
 * the overlap rules decide whether a read-write open is allowed.
 */
export async function openSparseExtent(store: ByteStore, opts: SparseOpenOptions): Promise<SparseExtent> {
  const path = store.name;
  const fileSize = await store.size();
  if (fileSize < SECTOR_SIZE) {
    throw new DiskError('INVALIDDISK', 'file is too short for a sparse extent header', { path, struct: 'SparseExtentHeader', expected: '>= 512 bytes', found: fileSize });
  }
  const head = await store.read(0, SECTOR_SIZE);
  let header = SparseExtentHeader.decode(head, 0, path);
  const bad = (field: string, message: string, expected: unknown, found: unknown, code: 'CORRUPT' | 'UNSUPPORTEDDISKVERSION' | 'UNSUPPORTEDFEATURE' | 'CMPUNSUP' = 'CORRUPT') =>
    new DiskError(code, message, { path, struct: 'SparseExtentHeader', field, expected, found });

  if (header.version < 1 || header.version > 3) {
    throw bad('version', 'unsupported sparse extent version', '1, 2 or 3', header.version, 'UNSUPPORTEDDISKVERSION');
  }
  const unknown = header.flags & ~KNOWN_FLAGS;
  if (unknown & 0xffff0000) throw bad('flags', 'unknown incompatible flags', `bits of 0x${KNOWN_FLAGS.toString(16)}`, `0x${header.flags.toString(16)}`, 'UNSUPPORTEDFEATURE');
  if (header.flags & FLAG_MARKERS && !(header.flags & FLAG_COMPRESSED)) {
    throw bad('flags', 'markers without compression', 'compressed flag with markers', `0x${header.flags.toString(16)}`);
  }
  if (header.flags & FLAG_VALID_NEWLINE) {
    const ok = header.singleEndLineChar === 0x0a && header.nonEndLineChar === 0x20 && header.doubleEndLineChar1 === 0x0d && header.doubleEndLineChar2 === 0x0a;
    if (!ok) throw bad('singleEndLineChar', 'newline check bytes are damaged (file transferred in text mode?)', '0a 20 0d 0a', [header.singleEndLineChar, header.nonEndLineChar, header.doubleEndLineChar1, header.doubleEndLineChar2].map((b) => b.toString(16).padStart(2, '0')).join(' '));
  }
  if (header.compressAlgorithm !== COMPRESSION_NONE && header.compressAlgorithm !== COMPRESSION_DEFLATE) {
    throw bad('compressAlgorithm', 'unsupported compression algorithm', '0 or 1', header.compressAlgorithm, 'CMPUNSUP');
  }
  if (header.flags & FLAG_COMPRESSED && header.compressAlgorithm !== COMPRESSION_DEFLATE) {
    throw bad('compressAlgorithm', 'compressed flag set without deflate', 1, header.compressAlgorithm, 'CMPUNSUP');
  }

  // A stream with its grain directory at the end: the footer (last-but-one sector) holds the real header.
  if (header.gdOffset === GD_AT_END) {
    if (!(header.flags & FLAG_MARKERS)) throw bad('gdOffset', 'grain directory at end of file without markers', 'a sector number', 'GD_AT_END');
    if (fileSize % SECTOR_SIZE !== 0 || fileSize < 4 * SECTOR_SIZE) throw bad('footer', 'stream file length is not whole sectors', 'a multiple of 512', fileSize);
    const tail = await store.read(fileSize - 3 * SECTOR_SIZE, 3 * SECTOR_SIZE);
    const footerMarker = MarkerHead.decode(tail, 0, path);
    const eos = MarkerHead.decode(tail, 2 * SECTOR_SIZE, path);
    if (footerMarker.size !== 0 || footerMarker.type !== MARKER_FOOTER || eos.val !== 0n || eos.size !== 0 || eos.type !== MARKER_EOS) {
      throw bad('footer', 'invalid stream footer or end-of-stream marker', 'footer marker, footer, EOS at end of file', 'something else');
    }
    header = SparseExtentHeader.decode(tail, SECTOR_SIZE, path);
    if (header.gdOffset === GD_AT_END) throw bad('gdOffset', 'footer does not give the grain directory', 'a sector number', 'GD_AT_END');
  }

  const num = (v: bigint, field: string) => toSafeNumber(v, { path, struct: 'SparseExtentHeader', field });
  const grainSectors = num(header.grainSize, 'grainSize');
  if (!isPowerOfTwo(grainSectors) || grainSectors > MAX_GRAIN_SECTORS) {
    throw bad('grainSize', 'invalid grain size', `a power of two <= ${MAX_GRAIN_SECTORS} sectors`, grainSectors);
  }
  const numGTEs = header.numGTEsPerGT;
  if (!isPowerOfTwo(numGTEs) || numGTEs > 512) throw bad('numGTEsPerGT', 'invalid number of grain table entries', 'a power of two <= 512', numGTEs);
  const capacitySectors = num(header.capacity, 'capacity');
  if (capacitySectors * SECTOR_SIZE > Number.MAX_SAFE_INTEGER) throw bad('capacity', 'capacity is too large', '< 2^44 sectors', capacitySectors);
  const coverage = numGTEs * grainSectors;
  const numGDEntries = ceilDiv(capacitySectors, coverage);
  if (numGDEntries > MAX_GD_ENTRIES) throw bad('capacity', 'grain directory too large (L1 size too big)', `<= ${MAX_GD_ENTRIES} entries`, numGDEntries);

  const overHead = num(header.overHead, 'overHead');
  // compressed (streamOptimized) files too: every writer (VMware, VirtualBox, QEMU, vdkit)
  // pads the metadata to overHead before the first grain, so a shorter file lost its end; its
  // tables would read as an empty, clean disk (QEMU refuses it the same way)
  if (overHead * SECTOR_SIZE > fileSize) {
    throw bad('overHead', 'file truncated', `at least ${overHead * SECTOR_SIZE} bytes`, fileSize);
  }

  const descriptorOffset = num(header.descriptorOffset, 'descriptorOffset');
  const descriptorSize = num(header.descriptorSize, 'descriptorSize');
  if (descriptorSize > MAX_DESCRIPTOR_SECTORS) throw bad('descriptorSize', 'embedded descriptor too large', `<= ${MAX_DESCRIPTOR_SECTORS} sectors`, descriptorSize);
  if (descriptorOffset !== 0 && descriptorSize === 0) throw bad('descriptorSize', 'descriptor offset without a size', '> 0', 0);
  if (descriptorOffset !== 0 && (descriptorOffset + descriptorSize) * SECTOR_SIZE > fileSize) {
    throw bad('descriptorOffset', 'embedded descriptor lies past the end of the file', `<= ${fileSize} bytes`, (descriptorOffset + descriptorSize) * SECTOR_SIZE);
  }
  const gdBytes = numGDEntries * 4;
  const gdOffset = num(header.gdOffset, 'gdOffset');
  if (gdOffset === 0 || gdOffset * SECTOR_SIZE + gdBytes > fileSize) {
    throw bad('gdOffset', 'grain directory lies outside the file', `inside ${fileSize} bytes`, gdOffset * SECTOR_SIZE);
  }
  const gtSectors = ceilDiv(numGTEs * 4, SECTOR_SIZE);
  const gd = await readU32Array(store, gdOffset * SECTOR_SIZE, numGDEntries);
  checkDirectory(gd, 'GDE', gtSectors, fileSize, path);

  let rgd: Uint32Array | undefined;
  let rgdOffsetBytes = 0;
  if (header.flags & FLAG_REDUNDANT_GD) {
    const rgdOffset = num(header.rgdOffset, 'rgdOffset');
    if (rgdOffset !== 0) {
      if (rgdOffset * SECTOR_SIZE + gdBytes > fileSize) throw bad('rgdOffset', 'redundant grain directory lies outside the file', `inside ${fileSize} bytes`, rgdOffset * SECTOR_SIZE);
      if (rgdOffset === gdOffset) throw bad('rgdOffset', 'redundant grain directory is the primary one', `!= ${gdOffset}`, rgdOffset);
      rgd = await readU32Array(store, rgdOffset * SECTOR_SIZE, numGDEntries);
      checkDirectory(rgd, 'RGDE', gtSectors, fileSize, path);
      rgdOffsetBytes = rgdOffset * SECTOR_SIZE;
    }
  }
  const readOnly = opts.readOnly || store.readOnly;
  if (!readOnly && header.flags & FLAG_COMPRESSED) {
    throw new DiskError('CMPRDONLY', 'streamOptimized (compressed) extents can only be opened read-only', { path });
  }
  const extent = new SparseExtent(store, header, { grainSectors, numGTEs, capacitySectors, gd, rgd, fileSize, gdOffsetBytes: gdOffset * SECTOR_SIZE, rgdOffsetBytes }, readOnly);
  // Overlap rules (overlap.ts, NOTES.md): checked on every open so that check reports them;
  // a read-write open is refused, except the one a check --repair makes to mend them.
  extent.overlaps = header.flags & FLAG_COMPRESSED ? [] : metadataOverlaps(extent.map());
  if (!readOnly && extent.overlaps.length > 0) {
    const err = overlapError(path, extent.overlaps[0]!);
    if (!opts.tolerateDamage) throw err;
    extent.refusal = err;
  }
  if (!readOnly && !opts.tolerateDamage) {
    // every entry inside the grain area and apart from the tables, and new grains past the
    // highest sector any entry names (a truncated file must not get a grain an entry still names)
    const scan = await scanGrainEntries(store, extent.map(), { limit: 1, stopAtLimit: true });
    if (scan.problems.length > 0) throw entryError(path, scan.problems[0]!);
    extent.nextFree = Math.max(extent.nextFree, roundUp(scan.highWater * SECTOR_SIZE, extent.grainBytes));
  }
  return extent;
}
