/**
 * Rebase (qemu-img rebase) and link repair.
 *
 * safe: every cluster the child does not hold, and where the old chain and the new parent read
 *   differently, is copied into the child first (from the old chain), keeping the child's CID
 *   because what the child reads does not change; then the child is re-pointed with one atomic
 *   descriptor write. Killed before that, the child still reads as before through its old parent.
 * unsafe: only the link is rewritten (new hint and parent CID). This is how a broken link is
 *   repaired after the parent moved or its CID changed, once the caller has made sure the
 *   content still matches.
 */
import { DiskError } from '../core/errors.js';
import { hintFor, parentFacts } from '../chain/chain.js';
import { hostFiles } from '../storage/file.js';
import { refuseUnsafe, type Namespace } from '../storage/namespace.js';
import { Disk, openLinkIn } from '../disk.js';
import { driverByName } from '../formats/registry.js';
import type { Progress } from './convert.js';
import { throttleProgress } from '../core/progress.js';

export interface RebaseOptions {
  /** only rewrite the link; copy nothing (repair) */
  unsafe?: boolean;
  untrusted?: boolean;
  /** where the files are named (default: host files); an 'unsafe' cache mode is refused */
  namespace?: Namespace;
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

const CHUNK = 1024 * 1024;

/** Re-point `childPath` at `newParent` (undefined: make it a standalone base). */
export async function rebase(childPath: string, newParent: string | undefined, opts: RebaseOptions = {}): Promise<{ bytesCopied: number }> {
  opts = { ...opts, onProgress: throttleProgress(opts.onProgress) };
  const ns = opts.namespace ?? hostFiles();
  refuseUnsafe(ns, 'rebase', childPath);
  const child = ns.absolute(childPath);
  let parentId: string | undefined;
  let parentCapacity: number | undefined;
  let parentFormat: string | undefined;
  let np: Disk | undefined;
  if (newParent !== undefined) {
    np = await Disk.open(newParent, { namespace: ns, readOnly: true, untrusted: opts.untrusted });
    parentId = np.image.identity();
    parentCapacity = np.capacity;
    parentFormat = np.format;
  }
  let copied = 0;
  try {
    const link = await openLinkIn(ns, child, { cowByCaller: true, preserveIdentity: true });
    try {
      const caps = driverByName(link.format).capabilities;
      if (newParent !== undefined && caps.parentLink === 'identity' && (parentId === undefined || parentFormat !== link.format)) {
        throw new DiskError('NOTSUPPORTED', `a ${link.format} child needs a ${link.format} parent with an identity to record`, { path: newParent, field: 'format', found: parentFormat });
      }
      if (parentCapacity !== undefined && caps.differencingSameSize && parentFormat === link.format && parentCapacity !== link.capacity) {
        throw new DiskError('INVALIDCHAIN', `the new parent ${newParent} is ${parentCapacity} bytes and this child ${link.capacity}: a ${link.format} child must be its parent's size`, { path: child, field: 'capacity', expected: link.capacity, found: parentCapacity });
      }
      if (!opts.unsafe) {
        const old = await Disk.open(child, { namespace: ns, readOnly: true, untrusted: opts.untrusted });
        try {
          const g = link.clusterSize;
          // whole clusters per step: the link does no copy-on-write (cowByCaller), so a write
          // into part of an unallocated cluster zero-fills the rest of it; with clusters over
          // 1 MiB (qcow2 cluster_size=2M) a 1 MiB step would leave half a cluster zeros
          const step = Math.ceil(CHUNK / g) * g;
          const lacking = (await link.blockStatus(0, link.capacity)).filter((r) => r.state === 'unallocated');
          const total = lacking.reduce((a, r) => a + r.length, 0);
          let done = 0;
          for (const r of lacking) {
            for (let at = r.offset; at < r.offset + r.length; at += step) {
              if (opts.signal?.aborted) throw new DiskError('CANCELLED', undefined, { path: child }, { cause: opts.signal.reason });
              const n = Math.min(step, r.offset + r.length - at);
              const before = await old.read(at, n);
              const after = np ? await np.read(at, Math.max(0, Math.min(n, np.capacity - at))) : Buffer.alloc(0);
              // clusters whose bytes differ between the old and new parent go into the child whole
              for (let c = 0; c < n; c += g) {
                const len = Math.min(g, n - c);
                const a = before.subarray(c, c + len);
                const b = after.subarray(c, c + len);
                const same = b.length === len ? a.equals(b) : a.subarray(0, b.length).equals(b) && a.subarray(b.length).every((x) => x === 0);
                if (!same) {
                  await link.write(Buffer.from(a), at + c);
                  copied += len;
                }
              }
              done += n;
              opts.onProgress?.({ done, total, written: copied });
            }
          }
          await link.flush();
        } finally {
          await old.close();
        }
      }
      await link.setBacking(np && newParent !== undefined ? { hint: hintFor(ns, child, newParent), parentId: parentId ?? '', parentName: ns.absolute(newParent), parent: parentFacts(np.image) } : undefined);
      await link.flush();
    } finally {
      await link.close();
    }
  } finally {
    await np?.close();
  }
  return { bytesCopied: copied };
}
