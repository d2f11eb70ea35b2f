/**
 * The backup folder: its points (`NNNN-full|incr|diff.qcow2`, each with a manifest
 * `NNNN-<kind>.json` and its block sums `NNNN-<kind>.sums`), which of them are committed, and the
 * removal of what a killed run left (NOTES.md "Commit order").
 */
import { join } from '../../core/names.js';
import { DiskError } from '../../core/errors.js';
import type { ByteRange } from '../../formats/types.js';
import { readText, writeAtomic, type Namespace } from '../../storage/namespace.js';
import { processRuns } from '../partials.js';

export type PointKind = 'full' | 'incr' | 'diff';
export type ChangeSource = 'full' | 'content' | 'bitmap' | 'chain';

export interface SourceIdentity {
  /** the path or URL named, without credentials */
  name: string;
  format: string;
  size: number;
  /** the image's own UUID where its format has one (VMDK ddb.uuid, VHDX/VDI/VHD ids) */
  uuid?: string;
  /** --chain: the chain's link names, top first, as the point saw them */
  chain?: string[];
}

export interface Manifest {
  /** the manifest's version */
  vdkitBackup: 1;
  point: number;
  kind: PointKind;
  /** the point's qcow2 file, in the backup folder */
  file: string;
  /** the point below (its backing file); absent for the full point */
  parent?: number;
  /** ISO 8601, when the source was read */
  time: string;
  source: SourceIdentity;
  changedBy: ChangeSource;
  bitmap?: string;
  /** the byte ranges taken from the source (relative to the parent point); the full point: its data ranges */
  ranges: ByteRange[];
  bytes: { changed: number; copied: number; written: number };
  /** `vdkit checksum` of the disk as of this point */
  checksum: string;
}

const MAX_MANIFEST = 64 * 1024 * 1024;
const KINDS: readonly PointKind[] = ['full', 'incr', 'diff'];
const POINT_NAME = /^(\d{4,})-(full|incr|diff)\.(qcow2|json|sums)$/;
/** a hidden temporary of a point (convert's partial) or of a manifest/sums (writeAtomic) */
const TEMP_NAME = /^\.?(\d{4,})-(?:full|incr|diff)(?:\.vdkit-partial-(\d+)\.qcow2|\.(?:json|sums)\.vdkit-tmp-(\d+))$/;
const LOCK = '.vdkit-backup.lock';

export function pointStem(n: number, kind: PointKind): string {
  return `${String(n).padStart(4, '0')}-${kind}`;
}

function checkManifest(m: unknown, path: string): Manifest {
  const bad = (field: string, found?: unknown): never => {
    throw new DiskError('CORRUPT', 'backup manifest field missing or wrong', { path, field, found });
  };
  if (typeof m !== 'object' || m === null) return bad('(root)');
  const x = m as Record<string, unknown>;
  if (x.vdkitBackup !== 1) bad('vdkitBackup', x.vdkitBackup);
  if (!Number.isSafeInteger(x.point) || (x.point as number) < 0) bad('point', x.point);
  if (!KINDS.includes(x.kind as PointKind)) bad('kind', x.kind);
  if (typeof x.file !== 'string' || x.file !== `${pointStem(x.point as number, x.kind as PointKind)}.qcow2`) bad('file', x.file);
  if (x.kind !== 'full' && (!Number.isSafeInteger(x.parent) || (x.parent as number) >= (x.point as number))) bad('parent', x.parent);
  if (typeof x.time !== 'string' || Number.isNaN(Date.parse(x.time))) bad('time', x.time);
  const s = x.source as Record<string, unknown> | undefined;
  if (typeof s !== 'object' || s === null || typeof s.name !== 'string' || typeof s.format !== 'string') bad('source', s);
  if (!Number.isSafeInteger(s!.size)) bad('source.size', s!.size);
  if (!Array.isArray(x.ranges) || !x.ranges.every((r: { offset?: unknown; length?: unknown }) => Number.isSafeInteger(r?.offset) && Number.isSafeInteger(r?.length))) bad('ranges');
  if (typeof x.checksum !== 'string' || !x.checksum.startsWith('sha256-1m:')) bad('checksum', x.checksum);
  return m as Manifest;
}

/** The committed points of `dir` (those with a manifest), by number. */
export async function listPoints(ns: Namespace, dir: string): Promise<Manifest[]> {
  const names = (await ns.exists(dir)) ? await ns.list(dir) : [];
  const out: Manifest[] = [];
  for (const name of names.sort()) {
    const m = POINT_NAME.exec(name);
    if (!m || m[3] !== 'json') continue;
    const path = join(dir, name);
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readText(ns, path, MAX_MANIFEST));
    } catch (err) {
      throw new DiskError('CORRUPT', 'backup manifest is not JSON', { path, field: 'manifest' }, { cause: err });
    }
    const man = checkManifest(parsed, path);
    if (man.point !== Number(m[1]) || man.kind !== m[2]) throw new DiskError('CORRUPT', 'backup manifest does not match its name', { path, field: 'point', found: man.point });
    out.push(man);
  }
  out.sort((a, b) => a.point - b.point);
  for (let i = 0; i < out.length; i++) {
    if (out[i]!.point !== i) throw new DiskError('CORRUPT', `backup point ${i} has no manifest (points are numbered from 0 without gaps)`, { path: dir, field: 'point', expected: i, found: out[i]!.point });
    if (i === 0 && out[0]!.kind !== 'full') throw new DiskError('CORRUPT', 'backup point 0 is not a full backup', { path: dir, field: 'kind', found: out[0]!.kind });
  }
  return out;
}

/**
 * Remove what a killed run left above the last committed point: a point file renamed into place
 * without its manifest, its sums, hidden partials and manifest temporaries of processes that no
 * longer run. Committed points are never touched.
 */
export async function removeUncommitted(ns: Namespace, dir: string, committed: number): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await ns.list(dir)) {
    const m = POINT_NAME.exec(name);
    const t = m ? undefined : TEMP_NAME.exec(name);
    const n = Number((m ?? t)?.[1]);
    if (!(m || t) || n < committed) continue;
    const pid = t ? Number(t[2] ?? t[3]) : undefined;
    if (pid !== undefined && pid !== process.pid && processRuns(pid)) continue;
    await ns.remove(join(dir, name));
    removed.push(name);
  }
  return removed;
}

export async function writeJson(ns: Namespace, path: string, value: unknown): Promise<void> {
  await writeAtomic(ns, path, Buffer.from(JSON.stringify(value, null, 1) + '\n'));
}

/**
 * One backup run at a time per folder: a lock file holding the pid; a lock whose process no
 * longer runs (a killed backup) is taken over.
 */
export async function lockFolder(ns: Namespace, dir: string): Promise<() => Promise<void>> {
  const path = join(dir, LOCK);
  if (await ns.exists(path)) {
    const pid = Number((await readText(ns, path, 64).catch(() => '')).trim());
    if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && processRuns(pid)) {
      throw new DiskError('INVAL', `another backup (process ${pid}) is writing this folder`, { path, field: 'lock', found: pid });
    }
  }
  // a run killed while it wrote its lock left the lock's temporary
  for (const name of await ns.list(dir)) {
    const pid = Number(/^\.vdkit-backup\.lock\.vdkit-tmp-(\d+)$/.exec(name)?.[1]);
    if (Number.isSafeInteger(pid) && pid !== process.pid && !processRuns(pid)) await ns.remove(join(dir, name)).catch(() => {});
  }
  await writeAtomic(ns, path, Buffer.from(`${process.pid}\n`));
  return () => ns.remove(path).catch(() => {});
}
