/**
 * Reading an OVA: `ova info` (members, the descriptor's disks and VM settings), `ova verify`
 * (the manifest's digests against the members) and `ova extract` (members to a folder, refusing
 * any name that would leave it and any link). The archive's members come from storage/tar.ts;
 * every size used to read comes from the archive's own index, checked against the file's size.
 */
import { DiskError } from '../../core/errors.js';
import { createHash } from '../../core/platform.js';
import { safeMemberName } from '../../binary/tar.js';
import { isZero } from '../../binary/zeros.js';
import { hostFiles } from '../../storage/file.js';
import type { Namespace } from '../../storage/namespace.js';
import { readTarIndex, type TarMember } from '../../storage/tar.js';
import type { ByteStore } from '../../storage/store.js';
import { readOvf, type OvfSummary } from './ovf.js';

/** the largest descriptor or manifest read into memory */
export const MAX_TEXT_MEMBER = 16 * 1024 * 1024;

export interface OvaContents {
  path: string;
  members: TarMember[];
  /** the .ovf member (the first one) */
  descriptorName?: string;
  descriptor?: string;
  ovf?: OvfSummary;
  manifestName?: string;
  manifest?: ManifestEntry[];
}

export interface ManifestEntry {
  algorithm: string;
  name: string;
  digest: string;
}

const ALGORITHMS: Record<string, string> = { SHA1: 'sha1', SHA256: 'sha256', SHA512: 'sha512' };

/** `SHA256(disk1.vmdk)= hex` lines; a line that is not one is BADDESCRIPTOR naming its number */
export function parseManifest(text: string, path: string): ManifestEntry[] {
  const out: ManifestEntry[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    const m = /^\s*(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)\s*$/.exec(line);
    if (!m) throw new DiskError('BADDESCRIPTOR', `manifest line ${i + 1} is not ALGORITHM(name)= digest`, { path, field: `line ${i + 1}`, found: line.slice(0, 120) });
    out.push({ algorithm: m[1]!, name: m[2]!, digest: m[3]!.toLowerCase() });
  });
  return out;
}

async function readText(store: ByteStore, m: TarMember, path: string): Promise<string> {
  if (m.size > MAX_TEXT_MEMBER) throw new DiskError('CORRUPT', `${m.name} is ${m.size} bytes; a descriptor or manifest is at most ${MAX_TEXT_MEMBER}`, { path, member: m.name, field: 'size', found: m.size });
  return (await store.read(m.offset, m.size)).toString('utf8');
}

async function withArchive<T>(path: string, ns: Namespace, fn: (store: ByteStore, members: TarMember[]) => Promise<T>): Promise<T> {
  const store = await ns.open(path);
  try {
    return await fn(store, await readTarIndex(store, path));
  } finally {
    await store.close();
  }
}

/** The archive's members, descriptor and manifest. */
export async function readOva(path: string, opts: { namespace?: Namespace } = {}): Promise<OvaContents> {
  return withArchive(path, opts.namespace ?? hostFiles(), async (store, members) => {
    const out: OvaContents = { path, members };
    const files = members.filter((m) => m.kind === 'file');
    const ovf = files.find((m) => /\.ovf$/i.test(m.name));
    if (ovf) {
      out.descriptorName = ovf.name;
      out.descriptor = await readText(store, ovf, `${path}#${ovf.name}`);
      out.ovf = readOvf(out.descriptor, `${path}#${ovf.name}`);
    }
    const mf = files.find((m) => /\.mf$/i.test(m.name));
    if (mf) {
      out.manifestName = mf.name;
      out.manifest = parseManifest(await readText(store, mf, `${path}#${mf.name}`), `${path}#${mf.name}`);
    }
    return out;
  });
}

export interface VerifyResult {
  ok: boolean;
  manifest?: string;
  checked: { name: string; algorithm: string; expected: string; found?: string; ok: boolean; problem?: string }[];
  /** members the manifest does not list (the manifest and signature excepted) */
  unlisted: string[];
}

/**
 * Check every manifest entry against the member it names (read in 1 MiB pieces). A missing
 * manifest, a listed member that is missing, or a digest that differs makes `ok` false.
 */
export async function verifyOva(path: string, opts: { namespace?: Namespace; signal?: AbortSignal } = {}): Promise<VerifyResult> {
  const ova = await readOva(path, opts);
  if (!ova.manifest) return { ok: false, checked: [], unlisted: ova.members.filter((m) => m.kind === 'file').map((m) => m.name) };
  return withArchive(path, opts.namespace ?? hostFiles(), async (store) => {
    const checked: VerifyResult['checked'] = [];
    const buf = Buffer.allocUnsafe(1024 * 1024);
    for (const e of ova.manifest!) {
      const m = ova.members.find((x) => x.kind === 'file' && (x.name === e.name || safeMemberName(x.name) === safeMemberName(e.name)));
      if (!m) {
        checked.push({ name: e.name, algorithm: e.algorithm, expected: e.digest, ok: false, problem: 'missing from the archive' });
        continue;
      }
      const h = createHash(ALGORITHMS[e.algorithm]!);
      for (let at = 0; at < m.size; at += buf.length) {
        if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path });
        const piece = buf.subarray(0, Math.min(buf.length, m.size - at));
        await store.readInto(piece, m.offset + at);
        h.update(piece);
      }
      const found = h.digest('hex');
      checked.push({ name: e.name, algorithm: e.algorithm, expected: e.digest, found, ok: found === e.digest, problem: found === e.digest ? undefined : 'digest differs' });
    }
    const listed = new Set(ova.manifest!.map((e) => safeMemberName(e.name) ?? e.name));
    const unlisted = ova.members.filter((m) => m.kind === 'file' && m.name !== ova.manifestName && !/\.cert$/i.test(m.name) && !listed.has(safeMemberName(m.name) ?? m.name)).map((m) => m.name);
    return { ok: checked.every((c) => c.ok), manifest: ova.manifestName, checked, unlisted };
  });
}

/**
 * Why a member cannot be extracted, or undefined: an absolute name or one with `..`, a link
 * (a symlink or hard link could point a later member outside the folder), a device or FIFO.
 */
export function refusal(m: TarMember): string | undefined {
  if (m.kind === 'symlink' || m.kind === 'hardlink') return `is a ${m.kind === 'symlink' ? 'symbolic' : 'hard'} link (to ${JSON.stringify(m.linkname)})`;
  if (m.kind === 'other') return 'is a device, FIFO or other special file';
  if (safeMemberName(m.name) === undefined) return 'has an absolute name or one that leaves the folder (..)';
  if (m.kind === 'file' && safeMemberName(m.name)!.includes('/')) return 'is in a subfolder (OVA members are flat; vdkit extracts flat archives only)';
  return undefined;
}

/**
 * Every regular member to `dir` (which must exist), each under a hidden partial name and
 * renamed when whole. The whole archive is checked first: one refused member and nothing is
 * written. Existing files are not replaced unless `overwrite`.
 */
export async function extractOva(path: string, dir: string, opts: { namespace?: Namespace; overwrite?: boolean; signal?: AbortSignal } = {}): Promise<string[]> {
  const ns = opts.namespace ?? hostFiles();
  return withArchive(path, ns, async (store, members) => {
    for (const m of members) {
      if (m.kind === 'dir' && safeMemberName(m.name) !== undefined && !safeMemberName(m.name)!.includes('/')) continue;
      const why = m.kind === 'dir' ? 'is a subfolder (OVA members are flat)' : refusal(m);
      if (why) throw new DiskError('PERMISSIONS', `refusing to extract ${path}: member ${JSON.stringify(m.name)} ${why}`, { path, member: m.name, field: 'name', found: m.name });
    }
    const files = members.filter((m) => m.kind === 'file');
    const names = files.map((m) => `${dir.replace(/\/+$/, '')}/${safeMemberName(m.name)}`);
    if (!opts.overwrite) for (const n of names) if (await ns.exists(n)) throw new DiskError('FILEEXISTS', undefined, { path: n });
    const buf = Buffer.allocUnsafe(1024 * 1024);
    for (let i = 0; i < files.length; i++) {
      const m = files[i]!;
      const tmp = `${names[i]}.vdkit-partial-${process.pid}`;
      const out = await ns.create(tmp, { overwrite: true });
      try {
        for (let at = 0; at < m.size; at += buf.length) {
          if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path });
          const piece = buf.subarray(0, Math.min(buf.length, m.size - at));
          await store.readInto(piece, m.offset + at);
          // all-zero pieces stay holes: a raw or flat disk in an OVA stays sparse
          if (!isZero(piece)) await out.write(at, piece);
        }
        await out.truncate(m.size);
        await out.flush();
        await out.close();
      } catch (err) {
        await out.close().catch(() => {});
        await ns.remove(tmp).catch(() => {});
        throw err;
      }
      await ns.rename(tmp, names[i]!);
    }
    return names;
  });
}
