/**
 * VDMerge on the files of a container's images (the container has closed them). Both
 * directions reuse the chain operations, so the crash-safe order is theirs:
 *
 * - child into parent (from > to): ops/commit.ts copies images to+1..from into `to` (journaled,
 *   resumable) and leaves `from` an empty child of `to`; the image above `from`, if any, is then
 *   re-pointed at `to` (an unsafe rebase: `from` is empty, so nothing it reads changes); only
 *   then are `from`'s files deleted. Killed between those steps, the chain still reads the same.
 * - parents into child (from < to): ops/commit.ts mergeIntoTop copies images from..to-1 into `to`
 *   where `to` holds nothing, re-points `to` at image from-1 (or makes it a base), and deletes
 *   the merged images.
 *
 * The container decides what the chain is, as VD does, so the operations are forced past their
 * "another child in the folder depends on this" checks.
 */
import type { Namespace } from '../storage/namespace.js';
import { commit, mergeIntoTop } from '../ops/commit.js';
import { rebase } from '../ops/rebase.js';
import { openLinkIn } from '../disk.js';
import type { Progress } from '../ops/convert.js';

export interface VdMergeOptions {
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

/** Merge image `from` into `to` (indices into `paths`, base first); returns the indices that remain. */
export async function mergeFiles(ns: Namespace, paths: readonly string[], from: number, to: number, opts: VdMergeOptions): Promise<number[]> {
  const all = paths.map((_, i) => i);
  if (from > to) {
    await commit(paths[from]!, { base: paths[to], namespace: ns, force: true, signal: opts.signal, onProgress: opts.onProgress });
    if (from + 1 < paths.length) await rebase(paths[from + 1]!, paths[to], { unsafe: true, namespace: ns });
    for (const f of await filesOf(ns, paths[from]!)) await ns.remove(f);
    return all.filter((i) => i <= to || i > from);
  }
  await mergeIntoTop(paths[to]!, { base: from > 0 ? paths[from - 1] : undefined, all: from === 0, namespace: ns, force: true, signal: opts.signal, onProgress: opts.onProgress });
  return all.filter((i) => i < from || i >= to);
}

/** the files of the image at `path`, `path` itself last */
async function filesOf(ns: Namespace, path: string): Promise<string[]> {
  const img = await openLinkIn(ns, path, { readOnly: true });
  try {
    const head = ns.absolute(path);
    return [...(await img.info()).files.map((f) => ns.absolute(f)).filter((f) => f !== head), head];
  } finally {
    await img.close();
  }
}
