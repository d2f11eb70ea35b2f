/**
 * Target profiles: what each place a disk goes to (ESXi, Workstation, VirtualBox, Hyper-V,
 * Azure, AWS, GCP, QEMU) accepts, as data, with two uses:
 *
 * - `applyTarget` turns a profile into convert options (format, type, adapter, hardware version,
 *   block/cluster size, exact VHD sizing) and the rounded capacity (Azure: whole MiB, at least
 *   20 MiB); options the caller gave explicitly win, and any that makes the result unacceptable
 *   to the target is reported as a conflict.
 * - `lint` explains what an existing image lacks for a target: each finding names the field,
 *   says why, and how to fix it. Severity `error` means the target refuses the image, `warning`
 *   that it may work with caveats or extra steps, `info` a hint.
 *
 * The rules and where they come from are written down in docs/targets.md; keep the two in step.
 * Only what Disk.info() and the formats' metadata expose is checked (createType, VHD/VHDX type,
 * sizes, the VMDK sparse header version and descriptor version, ddb keys, parent links).
 */
import { DiskError } from '../core/errors.js';
import { roundUp } from '../core/ints.js';
import type { Disk } from '../disk.js';
import { DEFAULT_FORMAT, backends, driverByName } from '../formats/registry.js';
import type { ConvertOptions } from './convert.js';

export type TargetName = 'esxi' | 'workstation' | 'virtualbox' | 'hyperv' | 'azure' | 'aws' | 'gcp' | 'qemu';
export type Severity = 'error' | 'warning' | 'info';

export interface LintFinding {
  severity: Severity;
  /** what is checked: format, type, capacity, adapterType, version, toolsVersion, parent, ... */
  field: string;
  message: string;
  /** how to get an acceptable image */
  fix?: string;
}

/** one row of what a target makes of a format (and some of its types); the first match decides */
export interface AcceptRule {
  readonly format: string;
  /** types this rule covers (normalised: VMDK createType, fixed/dynamic, v2/v3); all when absent */
  readonly types?: readonly string[];
  readonly verdict: 'ok' | Severity;
  /** why, when the verdict is not ok */
  readonly why?: string;
}

/** versions of one image format a target reads */
export interface FormatVersions {
  readonly format: string;
  /** an image of a sequential (stream) type must have this header version */
  readonly streamVersion?: number;
  /** descriptor `version=` values (VMDK) */
  readonly descriptorVersions?: readonly number[];
  /** header versions (VMDK sparse header) */
  readonly versions?: readonly number[];
}

export interface TargetProfile {
  readonly name: TargetName;
  readonly title: string;
  /** what a convert for this target writes */
  readonly format: string;
  readonly type: string;
  readonly adapterType?: string;
  readonly hwVersion?: string;
  readonly blockSize?: number;
  readonly clusterSize?: number;
  /** VHD: false = the exact size (force_size); true would round to a CHS geometry */
  readonly chsRounding?: boolean;
  /** the virtual size is rounded up to a multiple of this */
  readonly sizeMultiple: number;
  /** whether a size that is not a multiple is refused (error) or only discouraged (warning) */
  readonly sizeRule: 'error' | 'warning';
  readonly minCapacity?: number;
  readonly maxCapacity?: number;
  /** what the target reads of images in a format (which may differ from the profile's own) */
  readonly reads?: readonly FormatVersions[];
  /** ddb.toolsVersion matters here (vSphere guest customization) */
  readonly wantsToolsVersion: boolean;
  /** the target takes one standalone disk: a child (redo log, differencing image) is refused */
  readonly standalone: boolean;
  /** a disk of the profile's own format and type must be its data plus one 512-byte footer, nothing else (Azure page blobs) */
  readonly dataPlusFooter?: boolean;
  /** the file name the target wants for a disk of its own format (a regular expression over the path) */
  readonly fileName?: { readonly pattern: RegExp; readonly why: string; readonly fix: string };
  /** the target reads VMware's ddb keys (adapter, hardware and tools versions) of its own format */
  readonly vmwareDdb?: boolean;
  readonly accepts: readonly AcceptRule[];
  /** where the rules come from (URLs, or sections of the project's shared docs) */
  readonly sources: readonly string[];
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

const HOSTED_VMDK = ['monolithicSparse', 'twoGbMaxExtentSparse', 'monolithicFlat', 'twoGbMaxExtentFlat'];

/** what most targets ask, so a profile below names only where it differs: 512-byte sizes, refused otherwise; no tools version; children allowed */
const USUAL = { sizeMultiple: 512, sizeRule: 'error', wantsToolsVersion: false, standalone: false } as const;
type ProfileEntry = Omit<TargetProfile, 'name' | keyof typeof USUAL> & Partial<Pick<TargetProfile, keyof typeof USUAL>>;

/** each entry as a whole profile, named by its key */
function profiles(entries: Record<TargetName, ProfileEntry>): Readonly<Record<TargetName, TargetProfile>> {
  return Object.freeze(Object.fromEntries(Object.entries(entries).map(([name, p]) => [name, { name: name as TargetName, ...USUAL, ...p }])) as Record<TargetName, TargetProfile>);
}

export const TARGETS: Readonly<Record<TargetName, TargetProfile>> = profiles({
  esxi: {
    title: 'VMware ESXi datastore disk',
    format: 'vmdk',
    vmwareDdb: true,
    type: 'vmfs',
    adapterType: 'lsilogic',
    hwVersion: '4',
    reads: [{ format: 'vmdk', streamVersion: 3 }],
    wantsToolsVersion: true,
    standalone: true,
    accepts: [
      { format: 'vmdk', types: ['vmfs'], verdict: 'ok' },
      { format: 'vmdk', types: ['streamOptimized'], verdict: 'warning', why: 'a streamOptimized disk is a transport format: ESXi takes it through an OVF/OVA deploy or a vSphere import, not attached as is' },
      { format: 'vmdk', types: ['monolithicFlat'], verdict: 'warning', why: 'ESXi 7 refuses some hosted flat descriptors ("Unsupported or invalid disk type 2"); re-import with vmkfstools -i or convert to vmfs' },
      { format: 'vmdk', types: ['monolithicSparse', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat'], verdict: 'error', why: 'hosted (Workstation) disk types cannot be powered on on ESXi ("Unsupported or invalid disk type 7") until re-imported with vmkfstools -i' },
      { format: '*', verdict: 'error', why: 'ESXi runs only VMDK disks' },
    ],
    sources: [
      'https://docs.vmware.com/de/VMware-vSphere/5.5/com.vmware.vsphere.storage.doc/GUID-9CC98802-82D9-44B0-9735-97675258FAAE.html (vmkfstools disk formats: 2gbsparse cannot be powered on before re-import)',
      'https://kb.vmware.com/s/article/1022242 (types of supported virtual disks on ESXi)',
      'shared/research/peers.md §2 items 1, 2, 7-9 (disk type 2/7, "sparse VMDK version too old", monolithicFlat + lsilogic)',
      'shared/formats/vmdk.md §1 (ESXi does not run hosted types), §3.4 (version 3 for streamOptimized), ddb table (adapterType, toolsVersion)',
    ],
  },
  workstation: {
    title: 'VMware Workstation / Fusion / Player',
    format: 'vmdk',
    vmwareDdb: true,
    type: 'monolithicSparse',
    adapterType: 'lsilogic',
    hwVersion: '4',
    accepts: [
      { format: 'vmdk', types: HOSTED_VMDK, verdict: 'ok' },
      { format: 'vmdk', types: ['vmfs'], verdict: 'warning', why: 'a vmfs (ESXi) descriptor is meant for a datastore; hosted products expect a hosted type' },
      { format: 'vmdk', types: ['streamOptimized'], verdict: 'warning', why: 'a streamOptimized disk is read through an OVF/OVA import, not run directly' },
      { format: '*', verdict: 'error', why: 'VMware hosted products run VMDK disks only' },
    ],
    sources: ['https://vdc-download.vmware.com/vmwb-repository/dcr-public/ae1a858c-2f59-4a75-b333-f2ddfa631fbd/4ae542fa-c7ec-4713-a3a0-6fef938b03d1/doc/vddkDataStruct.5.3.html (VDDK disk types: monolithic sparse is the hosted default)', 'shared/formats/vmdk.md §1 (hosted products run all hosted types)'],
  },
  virtualbox: {
    title: 'Oracle VirtualBox',
    format: 'vdi',
    type: 'dynamic',
    reads: [{ format: 'vmdk', descriptorVersions: [1], versions: [1, 3] }],
    accepts: [
      { format: 'vdi', verdict: 'ok' },
      { format: 'vmdk', types: [...HOSTED_VMDK, 'vmfs'], verdict: 'ok' },
      { format: 'vmdk', types: ['streamOptimized'], verdict: 'warning', why: 'VirtualBox opens streamOptimized disks read-only (they come in through an OVA import)' },
      { format: 'vhd', verdict: 'ok' },
      { format: 'raw', verdict: 'ok' },
      { format: 'vhdx', verdict: 'warning', why: 'VirtualBox reads VHDX but does not write it' },
      { format: '*', verdict: 'error', why: 'VirtualBox runs VDI, VMDK, VHD and raw disks' },
    ],
    sources: ['shared/formats/vdi.md (VirtualBox header rules)', 'shared/formats/vmdk.md §3.4 (VirtualBox accepts sparse versions 1 and 3, not 2) and descriptor table (version: VirtualBox only 1), table 1.1 (vmfs: VirtualBox reads and writes it)', 'shared/formats/vhd.md §18 (VirtualBox: VHDX read-only)', 'shared/research/peers.md §2 item 64 (VirtualBox: VHD but not VHDX)'],
  },
  hyperv: {
    title: 'Microsoft Hyper-V',
    format: 'vhdx',
    type: 'dynamic',
    blockSize: 32 * MiB,
    maxCapacity: 64 * TiB,
    accepts: [
      { format: 'vhdx', verdict: 'ok' },
      { format: 'vhd', verdict: 'warning', why: 'Hyper-V runs VHD on generation 1 VMs only; generation 2 VMs need VHDX' },
      { format: '*', verdict: 'error', why: 'Hyper-V runs VHDX and VHD disks only' },
    ],
    sources: ['https://learn.microsoft.com/powershell/module/hyper-v/resize-vhd (VHD and VHDX are the Hyper-V disk formats)', 'shared/formats/vhd.md §17 (a Windows 8 / Hyper-V sample: block size 32 MiB, logical 512 / physical 4096)'],
  },
  azure: {
    title: 'Microsoft Azure (managed disk / page blob upload)',
    format: 'vhd',
    type: 'fixed',
    dataPlusFooter: true,
    chsRounding: false,
    sizeMultiple: MiB,
    minCapacity: 20 * MiB,
    maxCapacity: 32 * TiB,
    standalone: true,
    accepts: [
      { format: 'vhd', types: ['fixed'], verdict: 'ok' },
      { format: 'vhd', verdict: 'error', why: 'Azure takes fixed VHDs only (Add-AzVhd converts a dynamic one while uploading; an upload of the file as it is needs it fixed)' },
      { format: '*', verdict: 'error', why: 'Azure imports fixed VHD files only (VHDX and others must be converted)' },
    ],
    sources: [
      'https://learn.microsoft.com/powershell/module/az.compute/add-azvhd ("needs to be a .vhd file and in size N * MiB + 512 bytes"; dynamic VHDs converted to fixed)',
      'https://learn.microsoft.com/ja-jp/dotnet/api/azure.resourcemanager.compute.models.diskcreationdata.uploadsizebytes?view=azure-dotnet (upload size between 20 MiB + 512 and 32 TiB + 512)',
      'https://github.com/qemu/qemu/commit/ecdb0d5651eb9a9604c23e342cfd993a49140309 (Azure needs 1 MB alignment and an exact BAT)',
      'http://www.systemcentercentral.com/faq-are-vhds-in-microsoft-azure-fixed-or-dynamic/ ("Azure supports VHD format, fixed disks")',
      'shared/research/peers.md §2 items 14-21; shared/formats/vhd.md §3 (Azure: fixed, whole MiB, force_size)',
    ],
  },
  aws: {
    title: 'Amazon EC2 VM Import',
    format: 'vmdk',
    vmwareDdb: true,
    type: 'streamOptimized',
    adapterType: 'lsilogic',
    hwVersion: '4',
    reads: [{ format: 'vmdk', streamVersion: 3 }],
    standalone: true,
    accepts: [
      { format: 'vmdk', types: ['streamOptimized'], verdict: 'ok' },
      { format: 'vmdk', verdict: 'error', why: 'VM Import takes VMDKs in the stream-optimized ESX subformat only' },
      { format: 'vhd', types: ['fixed', 'dynamic'], verdict: 'ok' },
      { format: 'vhdx', types: ['fixed', 'dynamic'], verdict: 'ok' },
      { format: 'raw', verdict: 'ok' },
      { format: '*', verdict: 'error', why: 'VM Import takes stream-optimized VMDK, VHD, VHDX and raw disks' },
    ],
    sources: [
      'https://docs.aws.amazon.com/imagebuilder/latest/APIReference/API_S3ExportConfiguration.html (VM Import/Export disk formats: VHD, stream-optimized ESX VMDK, raw)',
      'https://docs.aws.amazon.com/vm-import/latest/userguide/start-image-export.html',
      'shared/research/peers.md §2 items 1, 5 (AWS only accepts streamOptimized; version 3 streams); shared/formats/vmdk.md §4 (stream layout ESXi and AWS accept)',
    ],
  },
  gcp: {
    title: 'Google Compute Engine image import',
    format: 'raw',
    type: 'raw',
    fileName: { pattern: /(^|\/)disk\.raw$/, why: 'a manual Compute Engine import wants the file named disk.raw inside a .tar.gz', fix: 'mv FILE disk.raw && tar --format=oldgnu -Sczf image.tar.gz disk.raw' },
    sizeMultiple: GiB,
    sizeRule: 'warning',
    standalone: true,
    accepts: [
      { format: 'raw', verdict: 'ok' },
      { format: 'vmdk', verdict: 'info', why: '`gcloud compute images import` converts VMDK; a manual import (images create --source-uri) takes only a raw disk.raw in a .tar.gz' },
      { format: 'vhd', verdict: 'info', why: '`gcloud compute images import` converts VHD; a manual import takes only a raw disk.raw in a .tar.gz' },
      { format: '*', verdict: 'warning', why: 'a manual Compute Engine import takes a raw disk.raw in a .tar.gz; the import tool documents VMDK and VHD' },
    ],
    sources: [
      'https://cloud.google.com/compute/docs/images/image-management-best-practices (the disk\'s bytes in a file named disk.raw, archived with tar and gzip)',
      'https://cloud.google.com/compute/docs/import/importing-virtual-disks (the import tool supports most formats, including VMDK and VHD)',
      'https://cloud.google.com/compute/docs/reference/rest/v1/images/insert (image size is diskSizeGb, whole GB)',
    ],
  },
  qemu: {
    title: 'QEMU / KVM (libvirt, Proxmox, OpenStack)',
    format: 'qcow2',
    type: 'v3',
    clusterSize: 64 * 1024,
    accepts: [
      { format: 'qcow2', types: ['v3'], verdict: 'ok' },
      { format: 'qcow2', verdict: 'info', why: 'qcow2 version 2 (compat 0.10) lacks zero clusters and lazy refcounts; QEMU runs it' },
      { format: 'raw', verdict: 'ok' },
      { format: '*', verdict: 'info', why: 'QEMU runs it, but internal snapshots, backing chains of any format and discard need qcow2' },
    ],
    sources: ['shared/formats/qcow2.md (qcow2 v3 as QEMU 7.2 creates it)', 'qemu-img 7.2 `qemu-img info` (every format vdkit writes opens in QEMU)'],
  },
});

export function targetByName(name: string): TargetProfile {
  const p = (TARGETS as Record<string, TargetProfile>)[name.toLowerCase()];
  if (!p) throw new DiskError('INVAL', `unknown target ${JSON.stringify(name)}`, { field: 'target', expected: Object.keys(TARGETS).join(', ') });
  return p;
}

/** type names as info() reports them, so rules can compare */
function normaliseType(format: string, type: string | undefined): string | undefined {
  if (type === undefined) return undefined;
  const driver = backends().find((d) => d.name === format);
  return driver ? driver.normaliseType(type) : type.toLowerCase();
}

function verdictOf(profile: TargetProfile, format: string, type: string | undefined): AcceptRule {
  for (const r of profile.accepts) {
    if (r.format !== '*' && r.format !== format) continue;
    if (r.types && (type === undefined || !r.types.includes(type))) continue;
    return r;
  }
  return { format: '*', verdict: 'error', why: `${profile.title} does not take ${format}` };
}

export interface AppliedTarget {
  /** convert options: the caller's, with the profile filling what the caller left open */
  options: ConvertOptions;
  /** the target's virtual size (the source's, or the caller's, rounded as the target needs) */
  capacity: number;
  /** what the profile chose, one line each, for telling the user */
  choices: string[];
  /** explicit options that make the result unacceptable (or doubtful) for the target */
  conflicts: LintFinding[];
}

/**
 * Convert options for a target. Options set in `opts` win over the profile; the capacity is
 * rounded up to what the target takes (and raised to its minimum) even when given explicitly,
 * since the target refuses anything else; above the target's maximum it is an error.
 */
export function applyTarget(profile: TargetProfile, opts: ConvertOptions, sourceCapacity: number): AppliedTarget {
  const choices: string[] = [];
  const conflicts: LintFinding[] = [];
  const out: ConvertOptions = { ...opts };
  const pick = <K extends keyof ConvertOptions>(key: K, value: ConvertOptions[K] | undefined, label: string) => {
    if (value === undefined) return;
    if (opts[key] === undefined) {
      out[key] = value;
      choices.push(`${label} ${String(value)}`);
    } else if (String(opts[key]) !== String(value)) {
      choices.push(`${label} ${String(opts[key])} (yours; the profile would choose ${String(value)})`);
    }
  };
  pick('format', profile.format, 'format');
  const format = (out.format ?? DEFAULT_FORMAT).toLowerCase();
  const sameFormat = format === profile.format;
  // type and format-specific options only make sense for the profile's own format
  if (sameFormat) {
    pick('type', profile.type, 'type');
    pick('adapterType', profile.adapterType, 'adapter');
    pick('hwVersion', profile.hwVersion, 'hardware version');
    pick('blockSize', profile.blockSize, 'block size');
    pick('clusterSize', profile.clusterSize, 'cluster size');
    pick('chsRounding', profile.chsRounding, 'CHS rounding');
  }
  // the type the convert will write: the caller's, the profile's, or the format's default
  const writes = out.type ?? (sameFormat ? profile.type : driverByName(format).capabilities.createTypes[0]);
  const rule = verdictOf(profile, format, normaliseType(format, writes));
  if (rule.verdict !== 'ok') {
    conflicts.push({ severity: rule.verdict, field: 'format', message: `${format}${out.type ? ` ${out.type}` : ''}: ${rule.why}`, fix: `leave out -O/-t to get ${profile.format} ${profile.type}` });
  }
  const base = opts.capacity ?? sourceCapacity;
  let capacity = roundUp(base, profile.sizeMultiple);
  if (profile.minCapacity !== undefined) capacity = Math.max(capacity, profile.minCapacity);
  if (capacity !== base) choices.push(`size ${capacity} bytes (from ${base}: ${profile.name} takes ${describeMultiple(profile)}${profile.minCapacity ? `, at least ${profile.minCapacity / MiB} MiB` : ''})`);
  if (profile.maxCapacity !== undefined && capacity > profile.maxCapacity) {
    throw new DiskError('INVAL', `${profile.title} takes disks of at most ${profile.maxCapacity} bytes`, { field: 'capacity', expected: `<= ${profile.maxCapacity}`, found: capacity });
  }
  out.capacity = capacity;
  return { options: out, capacity, choices, conflicts };
}

function describeMultiple(p: TargetProfile): string {
  return p.sizeMultiple === GiB ? 'whole GiB sizes' : p.sizeMultiple === MiB ? 'whole MiB sizes' : `multiples of ${p.sizeMultiple} bytes`;
}

function sizeUnit(p: TargetProfile): string {
  return p.sizeMultiple === GiB ? 'a whole number of GiB' : p.sizeMultiple === MiB ? 'a whole number of MiB' : `a multiple of ${p.sizeMultiple} bytes`;
}

/** What `disk` lacks for `profile`; empty when the target takes it as it is. */
export async function lint(disk: Disk, profile: TargetProfile): Promise<LintFinding[]> {
  const info = await disk.info();
  const findings: LintFinding[] = [];
  const format = info.format;
  const type = normaliseType(format, info.type);
  const fixConvert = `vdkit convert --target ${profile.name} ${disk.path} NEW`;
  const add = (severity: Severity, field: string, message: string, fix?: string) => findings.push({ severity, field, message, ...(fix ? { fix } : {}) });

  const rule = verdictOf(profile, format, type);
  if (rule.verdict !== 'ok') {
    // the format is right when some type of it would do: then it is the type that is wrong
    const formatOk = profile.accepts.some((r) => r.format === format && r.verdict === 'ok');
    add(rule.verdict, formatOk ? 'type' : 'format', `${format} ${info.type}: ${rule.why}`, fixConvert);
  }

  const link = disk.image.backing();
  if (link !== undefined || info.numLinks > 1) {
    add(profile.standalone ? 'error' : 'info', 'parent', `the image is a child of ${link?.hint || info.parent || 'another image'}: ${profile.standalone ? `${profile.title} takes one standalone disk` : 'its parents must travel with it'}`, `${fixConvert} (copies the whole chain into one disk)`);
  }

  // size
  const cap = info.capacity;
  if (cap % profile.sizeMultiple !== 0) {
    add(profile.sizeRule, 'capacity', `virtual size ${cap} bytes is not ${sizeUnit(profile)} (${profile.name} ${profile.sizeRule === 'error' ? 'refuses it' : 'sizes disks that way'})`, `${fixConvert} (rounds up to ${roundUp(cap, profile.sizeMultiple)})`);
  }
  if (profile.minCapacity !== undefined && cap < profile.minCapacity) add('error', 'capacity', `virtual size ${cap} bytes is below the ${profile.minCapacity}-byte minimum`, fixConvert);
  if (profile.maxCapacity !== undefined && cap > profile.maxCapacity) add('error', 'capacity', `virtual size ${cap} bytes is above the ${profile.maxCapacity}-byte maximum`);

  // VHD footer layout: a fixed VHD is its data and one footer, nothing else (Azure reads it as a page blob)
  const own = format === profile.format;
  if (profile.dataPlusFooter && own && type === profile.type && info.fileSize !== cap + 512) {
    add('error', 'fileSize', `file is ${info.fileSize} bytes; a fixed VHD of ${cap} bytes must be exactly ${cap + 512} (data + 512-byte footer)`, fixConvert);
  }

  for (const r of (profile.reads ?? []).filter((x) => x.format === format)) {
    if (type !== undefined && driverByName(format).sequentialTypes.includes(type) && r.streamVersion !== undefined && info.version !== undefined && info.version !== r.streamVersion) {
      add('error', 'version', `sparse header version ${info.version}: ${profile.title} wants version ${r.streamVersion} for streamOptimized (older streams are refused: "Not a supported disk format (sparse VMDK version too old)")`, fixConvert);
    }
    if (r.versions && info.version !== undefined && !r.versions.includes(info.version)) {
      add('error', 'version', `sparse header version ${info.version}: ${profile.title} reads versions ${r.versions.join(' and ')}`, fixConvert);
    }
    const descriptorVersion = descriptorVersionOf(disk);
    if (r.descriptorVersions && descriptorVersion !== undefined && !r.descriptorVersions.includes(descriptorVersion)) {
      add('error', 'descriptor.version', `descriptor version=${descriptorVersion}: ${profile.title} reads only version=${r.descriptorVersions.join(', ')}`, fixConvert);
    }
  }
  if (own) {
    if (profile.vmwareDdb) {
      const adapter = info.adapterType;
      if (adapter === undefined) add('warning', 'adapterType', `no ddb.adapterType: ${profile.title} then guesses the controller`, `vdkit meta ${disk.path} adapterType ${profile.adapterType ?? 'lsilogic'}`);
      else if (!['ide', 'buslogic', 'lsilogic', 'pvscsi', 'legacyESX'].includes(adapter)) add('warning', 'adapterType', `ddb.adapterType "${adapter}" is not one VMware writes`, `vdkit meta ${disk.path} adapterType ${profile.adapterType ?? 'lsilogic'}`);
      if (info.hwVersion === undefined) add('info', 'hwVersion', 'no ddb.virtualHWVersion (informational; VMware tools write it)', `vdkit meta ${disk.path} virtualHWVersion ${profile.hwVersion ?? '4'}`);
      if (disk.readMetadata('toolsVersion') === undefined) {
        add(profile.wantsToolsVersion ? 'warning' : 'info', 'toolsVersion', `no ddb.toolsVersion${profile.wantsToolsVersion ? ': vSphere uses it to allow guest customization' : ''}`, `vdkit meta ${disk.path} toolsVersion 2147483647`);
      }
    }
  }

  if (profile.fileName && own && !profile.fileName.pattern.test(disk.path)) add('info', 'name', profile.fileName.why, profile.fileName.fix);
  return findings;
}

function descriptorVersionOf(disk: Disk): number | undefined {
  const image = disk.image as { descriptorText?: () => string };
  if (typeof image.descriptorText !== 'function') return undefined;
  const m = /^\s*version\s*=\s*"?(\d+)"?\s*$/m.exec(image.descriptorText());
  return m ? Number(m[1]) : undefined;
}

/** true when nothing in `findings` makes the target refuse the image */
export function accepted(findings: readonly LintFinding[]): boolean {
  return !findings.some((f) => f.severity === 'error');
}
