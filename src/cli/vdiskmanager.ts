/**
 * `vdkit vdiskmanager`: vmware-vdiskmanager's own command line (build 3272444 usage), for
 * scripts written against it. One operation per run, as there:
 *   -c -s SIZE [-a ADAPTER] [-t TYPE] FILE   create          -> Disk.create
 *   -r SRC -t TYPE DST                       convert         -> convert
 *   -x SIZE FILE                             expand          -> resize
 *   -n OLD NEW                               rename          -> rename
 *   -d FILE / -k FILE                        defragment / shrink -> image.maintenance().defragment / compact
 *   -R FILE                                  check and repair -> checkDisk(repair)
 *   -e FILE                                  chain check     -> describeChain + checkDisk
 *   -q                                       no messages (errors still go to stderr)
 * Exit status: 0 success, 1 failure, 2 wrong usage (the usage text is printed).
 *
 * Design notes
 * - Sizes: a number with KB, MB or GB (also K/M/G, TB, decimals as "8192.0GB"), or a bare number
 *   of sectors, as the usage says; ranges checked as vdiskmanager does (1 MB up to 8192 GB,
 *   2040 GB for buslogic), and types 0 and 5 (-c) up to the VMDK driver's monolithicSparse limit
 *   (2047.5 GB), all before anything is printed. A size that is not whole sectors is rounded up.
 * - -c defaults: type 0 and adapter lsilogic (the usage: "Pass lsilogic for other adapter
 *   types"). Type 5 (streamOptimized) cannot be written in place, so -c -t 5 converts an empty
 *   disk made under a hidden temporary name. Type 6 is VMFS thin.
 * - -r keeps the source's adapter type and hardware version (vdiskmanager's -a is for -c only)
 *   and reads any format vdkit reads; the destination must not exist.
 * - -d and -k call the format driver's defragment/compact (Image contract) on the named link
 *   alone, keeping its identity, since neither changes what the disk reads as; a driver without
 *   them says VIX_E_DISK_NOTSUPPORTED. -k on a redo log is refused as vdiskmanager refuses it
 *   (CANTSHRINK). -p (prepare a mounted guest volume), -D (disks from other products) and the
 *   remote options -h/-u/-f are recognised and refused with a reason.
 * - Messages follow vdiskmanager's ("Virtual disk creation successful.", "Disk chain is
 *   consistent."); errors name the DiskError code and the VIX_E_* name and number.
 */
import { basename, dirname, join } from '../core/names.js';
import { DiskError, stockTextBelow } from '../core/errors.js';
import { SECTOR_SIZE } from '../core/ints.js';
import { Disk, openLinkIn } from '../disk.js';
import { hostFiles } from '../storage/file.js';
import type { InPlaceResult } from '../formats/types.js';
import { convert } from '../ops/convert.js';
import { resize } from '../ops/resize.js';
import { rename, unlink } from '../ops/rename.js';
import { checkDisk, openFindings } from '../ops/check.js';
import { describeChain } from '../ops/chain-list.js';
import { VIX_ERRORS, vixNameOf } from '../compat/vixdisklib.js';
import { MAX_MONOLITHIC_SPARSE_SECTORS } from '../formats/vmdk/create.js';

const MB = 1024 * 1024;
const GB = 1024 * MB;
/** the largest type 0 disk (one hosted sparse extent) vdkit makes, in the usage's units */
const SPARSE_MAX_GB = `${((MAX_MONOLITHIC_SPARSE_SECTORS * SECTOR_SIZE) / GB).toFixed(1)}GB`;

export const VDISKMANAGER_USAGE = `VMware Virtual Disk Manager compatible mode of vdkit.
Usage: vdkit vdiskmanager OPTIONS <disk-name> | <mount-point>
Offline disk manipulation utility
  Operations, only one may be specified at a time:
     -c                   : create disk.  Additional creation options must be specified.  Only local virtual disks can be created.
     -d                   : defragment the specified virtual disk. Only local virtual disks may be defragmented.
     -k                   : shrink the specified virtual disk. Only local virtual disks may be shrunk.
     -n <source-disk>     : rename the specified virtual disk; need to specify destination disk-name. Only local virtual disks may be renamed.
     -p                   : prepare the mounted virtual disk specified by the mount point for shrinking.
     -r <source-disk>     : convert the specified disk; need to specify destination disk-type.  For local destination disks the disk type must be specified.
     -x <new-capacity>    : expand the disk to the specified capacity. Only local virtual disks may be expanded.
     -R                   : check a sparse virtual disk for consistency and attempt to repair any errors.
     -e                   : check for disk chain consistency.
     -D                   : make disk deletable.  This should only be used on disks that have been copied from another product.

  Other Options:
     -q                   : do not log messages

  Additional options for create and convert:
     -a <adapter>         : (for use with -c only) adapter type (ide, buslogic, lsilogic). Pass lsilogic for other adapter types.
     -s <size>            : capacity of the virtual disk
     -t <disk-type>       : disk type id

  Disk types:
      0                   : single growable virtual disk
      1                   : growable virtual disk split in 2GB files
      2                   : preallocated virtual disk
      3                   : preallocated virtual disk split in 2GB files
      4                   : preallocated ESX-type virtual disk
      5                   : compressed disk optimized for streaming
      6                   : thin provisioned virtual disk - ESX 3.x and above

     The capacity can be specified in sectors, KB, MB or GB.
     The acceptable ranges:
                           ide/scsi adapter : [1MB, 8192.0GB]
                           buslogic adapter : [1MB, 2040.0GB]
                    disk type 0 (5 with -c) : at most ${SPARSE_MAX_GB}: one sparse extent addresses
                                              sectors below 2^32 (type 1 splits larger disks)
        ex 1: vdkit vdiskmanager -c -s 850MB -a ide -t 0 myIdeDisk.vmdk
        ex 2: vdkit vdiskmanager -d myDisk.vmdk
        ex 3: vdkit vdiskmanager -r sourceDisk.vmdk -t 0 destinationDisk.vmdk
        ex 4: vdkit vdiskmanager -x 36GB myDisk.vmdk
        ex 5: vdkit vdiskmanager -n sourceName.vmdk destinationName.vmdk
        ex 7: vdkit vdiskmanager -k myDisk.vmdk
`;

const TYPES: Record<string, { type: string; thin?: boolean }> = {
  '0': { type: 'monolithicSparse' },
  '1': { type: 'twoGbMaxExtentSparse' },
  '2': { type: 'monolithicFlat' },
  '3': { type: 'twoGbMaxExtentFlat' },
  '4': { type: 'vmfs' },
  '5': { type: 'streamOptimized' },
  '6': { type: 'vmfs', thin: true },
};

const ADAPTERS = ['ide', 'buslogic', 'lsilogic'];

class Usage extends Error {}

export interface VdiskmanagerIO {
  out(text: string): void;
  err(text: string): void;
}

const stdio: VdiskmanagerIO = {
  out: (t) => void process.stdout.write(t),
  err: (t) => void process.stderr.write(t),
};

/** "850MB", "36GB", "8192.0GB", "100KB", "2048" (sectors) -> bytes, whole sectors */
export function parseVdiskSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(kb|k|mb|m|gb|g|tb|t)?$/i.exec(text.trim());
  if (!m) throw new Usage(`bad capacity ${JSON.stringify(text)}: a number with KB, MB or GB, or a number of sectors`);
  const unit = (m[2] ?? '').toLowerCase()[0];
  const mult = unit === 'k' ? 1024 : unit === 'm' ? MB : unit === 'g' ? GB : unit === 't' ? 1024 * GB : SECTOR_SIZE;
  const bytes = Math.ceil((Number(m[1]) * mult) / SECTOR_SIZE) * SECTOR_SIZE;
  if (!Number.isSafeInteger(bytes)) throw new Usage(`capacity ${JSON.stringify(text)} is too large`);
  return bytes;
}

/**
 * The capacity a disk of vdiskmanager type `t` can have in vdkit: type 0 is one sparse extent, and
 * -c writes type 5 from an empty type 0 disk, so both stop where the VMDK driver's
 * monolithicSparse limit does (-r -t 5 streams from the source: its limit is the data written,
 * known only at the end). Checked before "Creating disk" is printed, so a size the driver would
 * refuse fails before any message says otherwise.
 */
function checkTypeLimit(t: string, op: '-c' | '-r', bytes: number, text: string): void {
  if ((t === '0' || (t === '5' && op === '-c')) && bytes > MAX_MONOLITHIC_SPARSE_SECTORS * SECTOR_SIZE) {
    throw new DiskError('INVAL', `capacity ${text} is more than a type ${t} disk holds (${SPARSE_MAX_GB}: one sparse extent addresses sectors below 2^32); use -t 1 (split in 2GB files) for larger disks`, {
      field: 'capacity',
      expected: `<= ${MAX_MONOLITHIC_SPARSE_SECTORS * SECTOR_SIZE}`,
      found: bytes,
    });
  }
}

function checkRangeFor(adapter: string, bytes: number, text: string): void {
  const max = adapter === 'buslogic' ? 2040 * GB : 8192 * GB;
  if (bytes < MB || bytes > max) {
    throw new DiskError('INVAL', `capacity ${text} is outside the acceptable range for ${adapter === 'buslogic' ? 'buslogic' : 'ide/scsi'} adapters [1MB, ${adapter === 'buslogic' ? '2040.0GB' : '8192.0GB'}]`, { field: 'capacity', found: bytes });
  }
}

interface Parsed {
  op: string;
  arg?: string;
  size?: string;
  adapter?: string;
  type?: string;
  quiet: boolean;
  remote: boolean;
  files: string[];
}

/** the operations; one per run */
const OPERATIONS = new Set(['-c', '-d', '-k', '-p', '-R', '-e', '-D', '-n', '-r', '-x']);

/** the options that take a value, and where it goes (-h, -u, -f: a remote host, refused later) */
const VALUES: Readonly<Record<string, (p: Parsed, v: string) => void>> = {
  '-n': (p, v) => (p.arg = v),
  '-r': (p, v) => (p.arg = v),
  '-x': (p, v) => (p.arg = v),
  '-s': (p, v) => (p.size = v),
  '-a': (p, v) => (p.adapter = v),
  '-t': (p, v) => (p.type = v),
  '-h': (p) => (p.remote = true),
  '-u': (p) => (p.remote = true),
  '-f': (p) => (p.remote = true),
};

function parse(argv: string[]): Parsed {
  const p: Parsed = { op: '', quiet: false, remote: false, files: [] };
  const ops: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (OPERATIONS.has(a)) ops.push(a);
    if (Object.hasOwn(VALUES, a)) {
      const v = argv[++i];
      if (v === undefined) throw new Usage(`${a} needs a value`);
      VALUES[a]!(p, v);
    } else if (a === '-q') {
      p.quiet = true;
    } else if (!OPERATIONS.has(a)) {
      if (a.startsWith('-') && a.length > 1) throw new Usage(`unknown option ${a}`);
      p.files.push(a);
    }
  }
  if (ops.length !== 1) throw new Usage(ops.length === 0 ? 'no operation given' : `only one operation may be specified at a time (got ${ops.join(' ')})`);
  p.op = ops[0]!;
  if (p.files.length !== 1) throw new Usage(p.files.length === 0 ? 'no disk name given' : `one disk name expected, got ${p.files.map((f) => JSON.stringify(f)).join(' ')}`);
  if (p.adapter !== undefined && p.op !== '-c') throw new Usage('-a is for use with -c only');
  if (p.size !== undefined && p.op !== '-c') throw new Usage('-s is for use with -c only (-x takes the new capacity)');
  if (p.type !== undefined && p.op !== '-c' && p.op !== '-r') throw new Usage('-t is for use with -c and -r only');
  return p;
}

function typeOf(t: string | undefined, what: string): { type: string; thin?: boolean } {
  const found = TYPES[t ?? ''];
  if (!found) throw new Usage(`${what}: disk type ${t === undefined ? 'missing' : JSON.stringify(t)}; use -t 0..6`);
  return found;
}

/** the driver's defragment/compact on one link, identity kept */
async function inPlace(path: string, what: 'compact' | 'defragment', say: (t: string) => void): Promise<InPlaceResult> {
  const image = await openLinkIn(hostFiles(), path, { cowByCaller: true, preserveIdentity: true });
  try {
    if (what === 'compact' && image.backing()) {
      throw new DiskError('CANTSHRINK', undefined, { path, field: 'parentFileNameHint', found: image.backing()!.hint });
    }
    const m = image.maintenance();
    const run = what === 'compact' ? m.compact : m.defragment;
    if (image.capabilities[what] === 'none' || !run) {
      throw new DiskError('NOTSUPPORTED', `${image.format} ${image.type} disks cannot be ${what === 'compact' ? 'shrunk' : 'defragmented'} yet`, { path, field: 'type', found: image.type });
    }
    const label = what === 'compact' ? 'Shrink' : 'Defragment';
    let last = -1;
    const result = await run.call(m, {
      onProgress: (done, total) => {
        const p = total === 0 ? 100 : Math.floor((100 * done) / total);
        if (p !== last && process.stdout.isTTY) say(`  ${label}: ${p}% done.\r`);
        last = p;
      },
    });
    say(`  ${label}: 100% done.\n`);
    return result;
  } finally {
    await image.close();
  }
}

async function operate(p: Parsed, say: (t: string) => void): Promise<number> {
  const file = p.files[0]!;
  if (p.remote) throw new DiskError('NOTSUPPORTED', 'remote (ESX) disks need VMware\'s tools: vdkit works on local disks only', { path: file, field: '-h' });
  switch (p.op) {
    case '-c': {
      if (p.size === undefined) throw new Usage('-c needs the capacity (-s SIZE)');
      const adapter = p.adapter ?? 'lsilogic';
      if (!ADAPTERS.includes(adapter)) throw new Usage(`adapter type ${JSON.stringify(adapter)}: ide, buslogic or lsilogic`);
      const { type, thin } = typeOf(p.type ?? '0', '-c');
      const capacity = parseVdiskSize(p.size);
      checkRangeFor(adapter, capacity, p.size);
      checkTypeLimit(p.type ?? '0', '-c', capacity, p.size);
      say(`Creating disk '${file}'\n`);
      if (type === 'streamOptimized') {
        const tmp = join(dirname(file), `.${basename(file, '.vmdk')}.vdkit-empty-${process.pid}.vmdk`);
        const empty = await Disk.create(tmp, { format: 'vmdk', capacity, adapterType: adapter });
        try {
          await convert(empty, file, { format: 'vmdk', type, adapterType: adapter });
        } finally {
          await empty.close();
          await unlink(tmp, { force: true });
        }
      } else {
        const d = await Disk.create(file, { format: 'vmdk', type, thin, capacity, adapterType: adapter });
        await d.close();
      }
      say('  Create: 100% done.\nVirtual disk creation successful.\n');
      return 0;
    }
    case '-r': {
      const { type, thin } = typeOf(p.type, '-r');
      const src = await Disk.open(p.arg!, { readOnly: true });
      try {
        const adapter = src.format === 'vmdk' ? src.readMetadata('adapterType') : undefined;
        const hw = src.format === 'vmdk' ? src.readMetadata('virtualHWVersion') : undefined;
        checkTypeLimit(p.type!, '-r', src.capacity, `${src.capacity} bytes (the source's)`);
        say(`Creating disk '${file}'\n`);
        await convert(src, file, {
          format: 'vmdk',
          type,
          thin,
          adapterType: adapter && ['ide', 'buslogic', 'lsilogic', 'pvscsi', 'legacyESX'].includes(adapter) ? adapter : undefined,
          hwVersion: hw && /^\d{1,3}$/.test(hw) ? hw : undefined,
        });
      } finally {
        await src.close();
      }
      say('  Convert: 100% done.\nVirtual disk conversion successful.\n');
      return 0;
    }
    case '-x': {
      const bytes = parseVdiskSize(p.arg!);
      const peek = await Disk.open(file, { readOnly: true, singleLink: true });
      const old = peek.capacity;
      const adapter = peek.format === 'vmdk' ? (peek.readMetadata('adapterType') ?? 'ide') : 'ide';
      await peek.close();
      if (bytes <= old) throw new DiskError('INVAL', `the new capacity (${bytes} bytes) must be larger than the current one (${old} bytes)`, { path: file, field: 'capacity', expected: `> ${old}`, found: bytes });
      checkRangeFor(adapter, bytes, p.arg!);
      await resize(file, bytes);
      say('  Grow: 100% done.\nDisk expansion completed successfully.\n');
      return 0;
    }
    case '-n': {
      await rename(p.arg!, file);
      say('Renaming completed successfully.\n');
      return 0;
    }
    case '-d': {
      await inPlace(file, 'defragment', say);
      say('Defragmentation completed successfully.\n');
      return 0;
    }
    case '-k': {
      await inPlace(file, 'compact', say);
      say('Shrink completed successfully.\n');
      return 0;
    }
    case '-R': {
      const report = await checkDisk(file, { repair: true, chain: false });
      const open = openFindings(report);
      const repaired = report.findings.filter((f) => f.repaired).length;
      for (const f of report.findings) say(`  ${f.repaired ? 'repaired' : f.kind}: ${f.message}\n`);
      if (open.corruptions > 0) {
        say(`The virtual disk, '${file}', is corrupted and could not be repaired.\n`);
        return 1;
      }
      if (repaired > 0) say(`The virtual disk, '${file}', was corrupted and has been successfully repaired.\n`);
      else say(`No errors were found on the virtual disk, '${file}'.\n`);
      return 0;
    }
    case '-e': {
      const chain = await describeChain(file);
      if (chain.break) {
        say(`Disk chain is not consistent: ${chain.break.reason} (${chain.break.code})\n`);
        return 1;
      }
      const report = await checkDisk(file, { repair: false });
      const open = openFindings(report);
      if (open.corruptions > 0) {
        say(`Disk chain is not consistent: ${open.corruptions} corruption${open.corruptions > 1 ? 's' : ''} found\n`);
        for (const r of [report, ...(report.links ?? [])]) for (const f of r.findings) if (f.kind === 'corruption') say(`  ${r.path}: ${f.message}\n`);
        return 1;
      }
      say('Disk chain is consistent.\n');
      return 0;
    }
    case '-p':
      throw new DiskError('NOTSUPPORTED', 'preparing a mounted guest volume for shrinking needs the guest (vmware-toolbox-cmd disk shrink); write zeros in free space, then -k', { path: file, field: '-p' });
    case '-D':
      throw new DiskError('NOTSUPPORTED', 'vdkit never marks disks non-deletable, so there is nothing to undo', { path: file, field: '-D' });
  }
  throw new Usage(`unknown operation ${p.op}`);
}

/** Run vmware-vdiskmanager's command line; resolves to the exit status. */
export async function vdiskmanager(argv: string[], io: VdiskmanagerIO = stdio): Promise<number> {
  // vmware-vdiskmanager has no --help (it prints the usage on any mistake); vdkit's other commands do
  if (argv.length === 1 && (argv[0] === '--help' || argv[0] === 'help')) {
    io.out(VDISKMANAGER_USAGE);
    return 0;
  }
  let p: Parsed;
  try {
    p = parse(argv);
  } catch (err) {
    if (!(err instanceof Usage)) throw err;
    io.err(`vdkit vdiskmanager: ${err.message}\n`);
    io.out(VDISKMANAGER_USAGE);
    return 2;
  }
  const say = (t: string) => {
    if (!p.quiet) io.out(t);
  };
  try {
    return await operate(p, say);
  } catch (err) {
    if (err instanceof Usage) {
      io.err(`vdkit vdiskmanager: ${err.message}\n`);
      io.out(VDISKMANAGER_USAGE);
      return 2;
    }
    if (err instanceof DiskError) {
      const vix = vixNameOf(err.code);
      io.err(`Failed to run ${p.op} on '${p.files[0]}': ${err.message} (${err.code} ${err.number}; ${vix} ${VIX_ERRORS[vix]?.number ?? ''})\n`);
      const stock = stockTextBelow(err);
      if (stock !== undefined) io.err(`  ${stock}\n`);
      return 1;
    }
    io.err(`vdkit vdiskmanager: INTERNAL: ${(err as Error)?.stack ?? String(err)}\n`);
    return 1;
  }
}
