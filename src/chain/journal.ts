/**
 * The commit journal: a small JSON file beside the base of a commit (`<base>.vdkit-commit`),
 * written atomically before anything changes and removed when the commit is complete. It lets
 * an interrupted commit be resumed, and lets the chain be read in the one window where the
 * base already has its new identity but the child above it still names the old one.
 */
import { DiskError } from '../core/errors.js';
import { readText, writeAtomic, type Namespace } from '../storage/namespace.js';

export interface CommitJournal {
  version: 1;
  op: 'commit';
  /** the link the commit was started from (absolute path) */
  top: string;
  /** the link receiving the data (absolute path) */
  base: string;
  /** how many links above the base were committed (top = 1 above when committing into the parent) */
  depth: number;
  /** base identity before the commit, and the one it gets */
  oldId: string;
  newId: string;
  /** copy: data going into the base; switch: base complete, links being re-pointed and removed */
  phase: 'copy' | 'switch';
  /** remove the top too (else it stays as an empty child of the base) */
  drop: boolean;
  /** files of the links between top and base (and of top when dropping), removed at the end */
  removeFiles: string[];
}

const MAX_JOURNAL = 1024 * 1024;

export function journalPath(base: string): string {
  return `${base}.vdkit-commit`;
}

export async function readJournal(ns: Namespace, base: string): Promise<CommitJournal | undefined> {
  const p = journalPath(base);
  if (!(await ns.exists(p))) return undefined;
  const size = (await ns.stat(p)).size;
  if (size > MAX_JOURNAL) throw new DiskError('CORRUPT', 'commit journal is too large', { path: p, found: size });
  let j: CommitJournal;
  try {
    j = JSON.parse(await readText(ns, p, MAX_JOURNAL)) as CommitJournal;
  } catch (err) {
    throw new DiskError('CORRUPT', 'commit journal is not valid JSON', { path: p }, { cause: err });
  }
  if (j.version !== 1 || j.op !== 'commit' || typeof j.top !== 'string' || typeof j.newId !== 'string' || typeof j.oldId !== 'string' || !Array.isArray(j.removeFiles)) {
    throw new DiskError('CORRUPT', 'commit journal has unexpected fields', { path: p });
  }
  return j;
}

export async function writeJournal(ns: Namespace, j: CommitJournal): Promise<void> {
  await writeAtomic(ns, journalPath(j.base), Buffer.from(JSON.stringify(j, null, 2) + '\n'));
}

export async function removeJournal(ns: Namespace, base: string): Promise<void> {
  await ns.remove(journalPath(base));
}
