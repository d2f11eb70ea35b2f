/**
 * Names that carry their own namespace: a URL whose scheme says where the bytes live (nbd://
 * and its kin, s3://, http:// and https://), or a member of an archive
 * (`vm.ova#disk1.vmdk`, `vm.ova#1`: storage/tar.ts, read-only). Anything that takes a path
 * (Disk.open, the CLI) asks `locate` once and gets the namespace and the name inside it; a name
 * no scheme claims stays a name of the caller's namespace (host files). Each scheme's code is
 * loaded only when a name uses it.
 */
import type { Namespace } from './namespace.js';

export interface Location {
  namespace: Namespace;
  /** the name inside `namespace`, safe to print (no credentials) */
  name: string;
  /**
   * the format the bytes are read as when the caller names none: a remote block export is a
   * raw disk unless told otherwise (-f qcow2 for an export that holds a qcow2 file's bytes)
   */
  defaultFormat?: string;
  /** the storage cannot be written at all (http:// objects): why, for a target refused up front */
  readOnly?: string;
  /**
   * names here cannot be created, only written into (an NBD export has its size): a convert
   * target is written as with -n. Object stores create names, so they leave this unset.
   */
  existingOnly?: boolean;
}

interface Scheme {
  /** e.g. "nbd", for messages */
  readonly name: string;
  matches(name: string): boolean;
  locate(name: string): Promise<Location>;
}

/** `vm.ova#disk1.vmdk` / `vm.ova#1`: the archive's host name, and the member or disk number */
const OVA_NAME = /^(.+\.(?:ova|tar))#(.+)$/i;

/** the extensions of disk images an OVA carries, for `vm.ova#N` */
const DISK_MEMBER = /\.(vmdk|vhd|vhdx|vdi|qcow2|img|raw)$/i;

const SCHEMES: Scheme[] = [
  {
    name: 'ova',
    matches: (n) => OVA_NAME.test(n),
    locate: async (n) => {
      const [, archive, member] = OVA_NAME.exec(n)!;
      const [{ TarNamespace }, { hostFiles }, { DiskError }, { safeMemberName }] = await Promise.all([import('./tar.js'), import('./file.js'), import('../core/errors.js'), import('../binary/tar.js')]);
      // the archive itself may live anywhere a name reaches (https://h/vm.ova#1, s3://b/vm.ova#1)
      const outer = await locate(archive!);
      const namespace = await TarNamespace.open(outer?.namespace ?? hostFiles(), outer?.name ?? archive!);
      let name = member!;
      if (/^\d+$/.test(name)) {
        // the Nth disk: OVF writers put disk files in the archive in the descriptor's order
        const disks = namespace.members.filter((m) => m.kind === 'file' && DISK_MEMBER.test(m.name) && safeMemberName(m.name) !== undefined);
        const i = Number(name);
        if (i < 1 || i > disks.length) throw new DiskError('FILENOTFOUND', `${archive} has ${disks.length} disk file(s); no disk #${i}`, { path: n, field: 'member', expected: `1..${disks.length}`, found: i });
        name = safeMemberName(disks[i - 1]!.name)!;
      }
      // the archive is read-only: a member is never a target
      return { namespace, name, readOnly: 'members of an OVA/tar archive are read-only: extract it first (vdkit ova extract)' };
    },
  },
  {
    name: 'nbd',
    matches: (n) => /^nbds?(\+unix)?:\/\//i.test(n),
    locate: async (n) => {
      const { NbdNamespace } = await import('../nbd/client/namespace.js');
      const { namespace, name } = await NbdNamespace.fromUri(n);
      return { namespace, name, defaultFormat: 'raw', existingOnly: true };
    },
  },
  {
    name: 's3',
    // s3:/ too: ops build names beside a target with core/names, which folds the double slash
    matches: (n) => /^s3:\/+/i.test(n),
    locate: async (n) => {
      const { S3Namespace } = await import('./s3/namespace.js');
      return S3Namespace.fromUrl(n);
    },
  },
  {
    name: 'http',
    matches: (n) => /^https?:\/\//i.test(n),
    locate: async (n) => {
      const { HttpNamespace } = await import('./http/namespace.js');
      // an object's bytes are a file's: the format is detected from them as for a file
      return { ...HttpNamespace.fromUrl(n), readOnly: 'http(s) objects are read-only: vdkit does not write over HTTP' };
    },
  },
];

/** true when a scheme claims `name` (it is not a host path) */
export function isLocationName(name: string): boolean {
  return SCHEMES.some((s) => s.matches(name));
}

/** the namespace and inner name of a URL `name`, or undefined for a plain name */
export async function locate(name: string): Promise<Location | undefined> {
  const s = SCHEMES.find((x) => x.matches(name));
  return s ? s.locate(name) : undefined;
}

/** the names of the schemes known (for help texts) */
export function schemeNames(): string[] {
  return SCHEMES.map((s) => s.name);
}
