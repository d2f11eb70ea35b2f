/**
 * Check (and repair) a disk: its own file structures, then its chain (qemu-img check,
 * VixDiskLib_CheckRepair, VDRepair, vmware-vdiskmanager -R / -e).
 *
 * Design notes
 * - The named file is checked alone (one link): drivers that can mend what their open refuses
 *   check the file itself (Driver.checkFile: VDI, VHD); the others open it as one link and ask
 *   the image (read-write only for a repair that is not a dry run).
 * - Then the chain: when the file names a parent, the whole chain is opened read-only. A parent
 *   that is missing, has another identity (CID/UUID), another size or is itself unreadable is a
 *   finding on the child (struct "chain"), not a failure of the check: the child's own bytes
 *   were checked, and what is wrong is the link. When the chain opens, each parent is checked
 *   (never repaired: a repair writes only the file it was asked about) and its report is
 *   attached as `links`, nearest parent first.
 * - Files a stopped rename of the named disk left in its folder (ops/rename.ts
 *   renameLeftovers) are leaks of the disk; a repair removes them.
 */
import { locate } from '../storage/locations.js';
import { basename } from '../core/names.js';
import { DiskError } from '../core/errors.js';
import { Disk } from '../disk.js';
import { detectFormatIn, driverByName } from '../formats/registry.js';
import type { CheckFinding, CheckOptions, CheckReport, Driver } from '../formats/types.js';
import { hostFiles } from '../storage/file.js';
import { refuseUnsafe, type Namespace } from '../storage/namespace.js';
import { renameLeftovers } from './rename.js';

export interface CheckDiskOptions extends CheckOptions {
  /** format of the named file (detected when omitted) */
  format?: string;
  untrusted?: boolean;
  allowExternalExtents?: boolean;
  /** VMDK: check a raw-device disk (OpenOptions.allowRawDevice) */
  allowRawDevice?: boolean;
  /** check the chain links too (default true) */
  chain?: boolean;
  /** where the disk's files are named (default: host files); a repair refuses an 'unsafe' cache mode */
  namespace?: Namespace;
  /**
   * with `repair`: what may be changed (qemu-img check -r leaks|all; default all). 'leaks' repairs
   * only when a check finds nothing but leaks (and warnings): a disk with a corruption is left
   * as it is, since the drivers' repairs mend both at once (qemu-img would still free the leaks)
   */
  repairScope?: 'leaks' | 'all';
}

export async function checkDisk(path: string, opts: CheckDiskOptions): Promise<CheckReport> {
  if (!opts.namespace) {
    // a URL (nbd://...) names its own namespace; its bytes are raw unless a format is given
    const loc = await locate(path);
    if (loc) return checkDisk(loc.name, { ...opts, namespace: loc.namespace, format: opts.format ?? loc.defaultFormat });
  }
  const ns = opts.namespace ?? hostFiles();
  if (opts.repair && !opts.dryRun) refuseUnsafe(ns, 'repair', path);
  opts = { ...opts, namespace: ns };
  if (opts.repair && opts.repairScope === 'leaks') {
    const first = await checkDisk(path, { ...opts, repair: false, repairScope: undefined });
    if (openFindings(first).corruptions > 0) {
      first.findings.push({ kind: 'warning', message: 'nothing was repaired: a repair of leaks only does not touch a disk with corruptions (repair them and the leaks with -r all)', struct: 'check', field: 'repair' });
      return first;
    }
    if (openFindings(first).leaks === 0) return first;
  }
  const driver = opts.format ? driverByName(opts.format) : await detectFormatIn(ns, path);
  const report = await checkLink(driver, path, opts);
  await checkLeftovers(path, opts, report);
  if (opts.chain !== false) await checkChain(driver, path, opts, report);
  return report;
}

/** Files a stopped rename of this disk left in its folder (ops/rename.ts): a leak; a repair removes them. */
async function checkLeftovers(path: string, opts: CheckDiskOptions, report: CheckReport): Promise<void> {
  let stray: string[];
  try {
    stray = await renameLeftovers(path, opts.namespace);
  } catch (err) {
    if (err instanceof DiskError) return; // a disk that does not open: the structural check said why
    throw err;
  }
  for (const file of stray) {
    const f: CheckFinding = { kind: 'leak', message: `${file} was left by a stopped rename of this disk (no disk uses it)`, struct: 'folder', field: basename(file) };
    if (opts.repair && opts.dryRun) f.wouldRepair = true;
    else if (opts.repair) {
      await opts.namespace!.remove(file);
      f.repaired = true;
    }
    report.findings.push(f);
  }
}

/** The problems a report (and the reports of its links) leaves open. */
export function openFindings(report: CheckReport): { corruptions: number; leaks: number } {
  let corruptions = 0;
  let leaks = 0;
  for (const r of [report, ...(report.links ?? [])]) {
    for (const f of r.findings) {
      if (f.repaired) continue;
      if (f.kind === 'corruption') corruptions++;
      else if (f.kind === 'leak') leaks++;
    }
  }
  return { corruptions, leaks };
}

async function checkLink(driver: Driver, path: string, opts: CheckDiskOptions): Promise<CheckReport> {
  const mode = driver.capabilities.check;
  if (mode === 'none') throw new DiskError('NOTSUPPORTED', `${driver.name} images cannot be checked yet`, { path });
  if (opts.repair && mode !== 'repair') throw new DiskError('NOTSUPPORTED', `${driver.name} images can be checked but not repaired`, { path });
  const what: CheckOptions = { repair: opts.repair, ...(opts.dryRun ? { dryRun: true } : {}) };
  if (driver.checkFile) return driver.checkFile(opts.namespace!, path, what);
  const write = opts.repair && !opts.dryRun;
  if (write) {
    // a read-write open alone writes (a VHDX session renews a header): a file with nothing to
    // mend is checked read-only, so a repair of a sound file changes no byte
    const look = await checkLink(driver, path, { ...opts, repair: false, dryRun: false }).catch((err: unknown) => {
      if (err instanceof DiskError) return undefined; // the read-write open may mend what stopped it
      throw err;
    });
    if (look && look.findings.length === 0) return look;
  }
  // repair writes metadata, never data, so the lone link may be opened read-write
  const d = await Disk.open(path, { namespace: opts.namespace, format: driver.name, readOnly: !write, singleLink: true, cowByCaller: true, force: true, tolerateDamage: true, untrusted: opts.untrusted, allowExternalExtents: opts.allowExternalExtents, allowRawDevice: opts.allowRawDevice });
  try {
    const m = d.image.maintenance();
    if (!m.check) throw new DiskError('NOTSUPPORTED', `${driver.name} images cannot be checked yet`, { path });
    return await m.check(what);
  } finally {
    await d.close();
  }
}

async function checkChain(driver: Driver, path: string, opts: CheckDiskOptions, report: CheckReport): Promise<void> {
  const common = { namespace: opts.namespace, format: driver.name, untrusted: opts.untrusted, allowExternalExtents: opts.allowExternalExtents, allowRawDevice: opts.allowRawDevice };
  let hasParent = false;
  try {
    const one = await Disk.open(path, { ...common, readOnly: true, singleLink: true, ignoreChecksums: true });
    try {
      hasParent = one.image.backing() !== undefined;
    } finally {
      await one.close();
    }
  } catch (err) {
    if (!(err instanceof DiskError)) throw err;
    // the file's own damage is what the structural check reported; a link without a parent
    // identity (OPENPARENT from backing()) is a chain finding
    if (err.code !== 'OPENPARENT') return;
    report.findings.push({ kind: 'corruption', message: `broken chain: ${err.message}`, struct: 'chain', field: String(err.details.field ?? 'parent') });
    return;
  }
  if (!hasParent) return;
  let files: string[];
  try {
    const chain = await Disk.open(path, { ...common, readOnly: true });
    try {
      files = (await chain.info()).chain ?? [];
    } finally {
      await chain.close();
    }
  } catch (err) {
    if (!(err instanceof DiskError)) throw err;
    report.findings.push({ kind: 'corruption', message: `broken chain (${err.code}): ${err.message}`, struct: 'chain', field: String(err.details.field ?? 'parent') });
    return;
  }
  const links: CheckReport[] = [];
  for (const file of files.slice(1)) {
    const d = await detectFormatIn(opts.namespace!, file);
    if (d.capabilities.check === 'none') continue;
    try {
      links.push(await checkLink(d, file, { ...opts, repair: false, dryRun: false, format: d.name }));
    } catch (err) {
      if (!(err instanceof DiskError)) throw err;
      links.push({ path: file, format: d.name, findings: [{ kind: 'corruption', message: `cannot check this link: ${err.message}`, struct: 'chain', field: String(err.details.field ?? 'parent') }], leakedBytes: 0 });
    }
  }
  if (links.length > 0) report.links = links;
}
