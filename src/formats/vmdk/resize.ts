/**
 * Growing a hosted sparse extent in place (NOTES.md "Resize (grow only) and rename"). A
 * function of a SparseState (map.ts); SparseExtent (sparse.ts) calls it, VmdkImage.maintenance().resize
 * (maintain.ts) rewrites the extent line afterwards.
 */
import { DiskError } from '../../core/errors.js';
import { SECTOR_SIZE, ceilDiv, roundUp } from '../../core/ints.js';
import { u32Bytes } from '../../binary/tables.js';
import { MAX_GD_ENTRIES, rewriteHeader } from './layout.js';
import type { SparseState } from './map.js';

/**
 * Grow the extent's capacity in place (resize). The grain directory usually has no room for
 * more entries (the first grain table follows it), so new zeroed grain tables (and redundant
 * ones), a new RGD and a new GD are written past the end of the file; then one write of the
 * header sector switches capacity, gdOffset and rgdOffset together. Killed before that write,
 * the extent is as it was plus unreferenced space at the end. The old directories become
 * unused metadata space before overHead. The caller then rewrites the extent line.
 */
export async function growExtent(this: SparseState, capacitySectors: number): Promise<void> {
  this.assertWritable();
  if (this.compressed) throw new DiskError('NOTSUPPORTED', 'a compressed (streamOptimized) extent cannot grow in place: convert it to monolithicSparse first', { path: this.path, field: 'flags' });
  const oldEntries = this.gd.length;
  const entries = ceilDiv(capacitySectors, this.numGTEs * this.grainSectors);
  if (entries > MAX_GD_ENTRIES) throw new DiskError('INVAL', 'grain directory would be too large', { path: this.path, field: 'capacity', expected: `<= ${MAX_GD_ENTRIES} entries`, found: entries });
  const gtSectors = this.gtBytes / SECTOR_SIZE;
  const gdSectors = ceilDiv(entries * 4, SECTOR_SIZE);
  const fresh = entries - oldEntries;
  if (fresh === 0) {
    // the directory already covers the new size: only the header's capacity changes
    await rewriteHeader(this.store, this.path, (h) => (h.capacity = BigInt(capacitySectors)));
    return;
  }
  let at = this.nextFree / SECTOR_SIZE;
  const gd = new Uint32Array(entries);
  gd.set(this.gd);
  for (let i = 0; i < fresh; i++) gd[oldEntries + i] = at + i * gtSectors;
  at += fresh * gtSectors;
  let rgd: Uint32Array | undefined;
  let rgdAt = 0;
  if (this.rgd) {
    rgd = new Uint32Array(entries);
    rgd.set(this.rgd);
    for (let i = 0; i < fresh; i++) rgd[oldEntries + i] = at + i * gtSectors;
    at += fresh * gtSectors;
    rgdAt = at;
    at += gdSectors;
  }
  const gdAt = at;
  at += gdSectors;
  const end = roundUp(at * SECTOR_SIZE, this.grainBytes);
  if (end / SECTOR_SIZE > 0xffffffff) throw new DiskError('NOSPACE', 'sparse extent would pass 2 TiB of sector numbers', { path: this.path, field: 'gdOffset' });
  // the new tables are zeros: extending the file writes them
  await this.store.truncate(end);
  if (rgd) await this.store.write(rgdAt * SECTOR_SIZE, u32Bytes(rgd, 0, entries));
  await this.store.write(gdAt * SECTOR_SIZE, u32Bytes(gd, 0, entries));
  await this.store.flush();
  await rewriteHeader(this.store, this.path, (h) => {
    h.capacity = BigInt(capacitySectors);
    h.gdOffset = BigInt(gdAt);
    if (rgd) h.rgdOffset = BigInt(rgdAt);
  });
}
