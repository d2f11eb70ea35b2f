/**
 * Describe a chain link by link (top to bottom) without requiring it to be whole: where a
 * link is broken (parent missing, CID mismatch, cycle, ...) the listing stops there and says why.
 */
import { DiskError } from '../core/errors.js';
import { hostFiles } from '../storage/file.js';
import { locate } from '../storage/locations.js';
import type { Namespace } from '../storage/namespace.js';
import { locateParent, DEFAULT_MAX_DEPTH } from '../chain/chain.js';
import { chainFormats, openLinkIn } from '../disk.js';

export interface ChainLink {
  path: string;
  format: string;
  type: string;
  capacity: number;
  /** this link's identity (VMDK CID) */
  cid?: string;
  /** the parent identity this link was made against */
  parentCid?: string;
  /** parent hint as stored ('' when the format records none, e.g. VDI) */
  parentHint?: string;
  /** whether this link has a parent at all */
  hasParent: boolean;
  fileSize: number;
  allocatedBytes: number;
}

export interface ChainBreak {
  /** the link whose parent could not be used */
  at: string;
  code: string;
  reason: string;
}

export async function describeChain(path: string, opts: { untrusted?: boolean; maxDepth?: number; namespace?: Namespace } = {}): Promise<{ links: ChainLink[]; break?: ChainBreak }> {
  if (!opts.namespace) {
    // a URL (http://, nbd://) names its own namespace
    const loc = await locate(path);
    if (loc) return describeChain(loc.name, { ...opts, namespace: loc.namespace });
  }
  const ns = opts.namespace ?? hostFiles();
  const links: ChainLink[] = [];
  const seen = new Set<string>();
  let at = path;
  let expectedId: string | undefined;
  for (;;) {
    let img;
    try {
      img = await openLinkIn(ns, at, { readOnly: true });
    } catch (err) {
      if (links.length === 0 || !(err instanceof DiskError)) throw err;
      return { links, break: { at: links[links.length - 1]!.path, code: err.code === 'FILENOTFOUND' ? 'OPENPARENT' : err.code, reason: err.message } };
    }
    try {
      const info = await img.info();
      const link = img.backing();
      links.push({
        path: at,
        format: img.format,
        type: img.type,
        capacity: img.capacity,
        cid: img.identity(),
        parentCid: link?.parentId,
        parentHint: link?.hint,
        hasParent: link !== undefined,
        fileSize: info.fileSize,
        allocatedBytes: info.allocatedBytes,
      });
      seen.add(await ns.realName(at));
      if (expectedId !== undefined && img.identity()?.toLowerCase() !== expectedId.toLowerCase()) {
        return { links, break: { at: links[links.length - 2]!.path, code: 'CID_MISMATCH', reason: `child expects parent content ${expectedId}, parent has ${img.identity() ?? 'none'}` } };
      }
      if (!link) return { links };
      if (links.length >= (opts.maxDepth ?? DEFAULT_MAX_DEPTH)) return { links, break: { at, code: 'TOOMANYREDO', reason: 'chain is deeper than the limit' } };
      let parent: string;
      try {
        parent = await locateParent(ns, at, link, { untrusted: opts.untrusted }, chainFormats);
      } catch (err) {
        const e = err as DiskError;
        return { links, break: { at, code: e.code ?? 'OPENPARENT', reason: e.message } };
      }
      if (seen.has(await ns.realName(parent))) return { links, break: { at, code: 'INVALIDCHAIN', reason: `parent ${parent} is already in the chain (a cycle)` } };
      expectedId = link.parentId;
      at = parent;
    } catch (err) {
      if (links.length === 0 || !(err instanceof DiskError)) throw err;
      return { links, break: { at: links[links.length - 1]!.path, code: err.code, reason: err.message } };
    } finally {
      await img.close().catch(() => {});
    }
  }
}
