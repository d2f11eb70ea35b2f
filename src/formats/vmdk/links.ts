/**
 * The link of a VMDK: its parent (parentCID + parentFileNameHint) and its identity (CID, and the
 * low 32 bits of ddb.longContentID kept equal to it). The chain layer resolves parents; a link
 * only records them. Functions of a LinkState (state.ts); VmdkImage (image.ts) calls them.
 */
import { DiskError } from '../../core/errors.js';
import type { BackingLink } from '../types.js';
import { hex8, parseCid } from './descriptor.js';
import { NO_PARENT } from './layout.js';
import type { LinkState } from './state.js';

export function backingLink(this: LinkState): BackingLink | undefined {
  if (this.parentCid === NO_PARENT) return undefined;
  const hint = this.descriptor.get('parentFileNameHint');
  if (hint === undefined) throw new DiskError('OPENPARENT', 'child disk has a parentCID but no parentFileNameHint', { path: this.path, field: 'parentFileNameHint' });
  return { hint, format: 'vmdk', parentId: hex8(this.parentCid) };
}

export function identityOf(this: LinkState): string | undefined {
  const cid = parseCid(this.descriptor.get('CID'), this.path);
  return cid === undefined ? undefined : hex8(cid);
}

/** Point this link at another parent (rebase / repair a broken link), or make it a base. */
export async function setBackingLink(this: LinkState, link: { hint: string; parentId: string } | undefined): Promise<void> {
  if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
  if (!this.descriptorWritable) throw new DiskError('NOTSUPPORTED', 'this extent has no descriptor to record a parent in', { path: this.path });
  await this.changeDescriptor((d) => {
    d.set('parentCID', link ? hex8(parseCid(link.parentId, this.path, 'parentCID')!) : hex8(NO_PARENT));
    if (link) d.set('parentFileNameHint', link.hint);
    else d.remove('parentFileNameHint');
  });
}

export async function setIdentityOf(this: LinkState, id: string): Promise<void> {
  if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
  const cid = parseCid(id, this.path, 'CID')!;
  await this.changeDescriptor((d) => {
    d.set('CID', hex8(cid));
    const long = d.ddb('longContentID');
    if (long !== undefined && /^[0-9a-fA-F]{32}$/.test(long)) d.setDdb('longContentID', long.slice(0, 24).toLowerCase() + hex8(cid));
  });
  this.cidRenewed = true;
}

/** Drop every grain of every sparse extent (the link then holds nothing). */
export async function makeEmptyLink(this: LinkState): Promise<void> {
  if (this.readOnly) throw new DiskError('RDONLY', undefined, { path: this.path });
  if (this.extents.some((e) => !e.sparse)) throw new DiskError('NOTSUPPORTED', 'only sparse links can be emptied', { path: this.path });
  for (const s of this.writableSparse) await s.clear();
}
