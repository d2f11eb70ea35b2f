/**
 * A cache image (VDCreateCache/VDCacheOpen): a writable local sparse image of any format, as big
 * as the disk, in front of a slow stack (a remote base). vd/NOTES.md "Cache images" has the rules.
 *
 * - What is cached is what the cache image holds: a range its block status calls data or zero
 *   is cached, an unallocated one is not. The cache is a base (no parent), so "unallocated"
 *   can only mean "never filled".
 * - Fills are whole clusters of the cache image, so a cluster is never allocated with bytes
 *   that were not copied into it (a partial write to a sparse image zero-fills the rest of the
 *   cluster, which would then be served as cached zeros).
 * - Zeros must be stored: qcow2 and VDI leave a written all-zero cluster unallocated in a base,
 *   which would make zero ranges of the disk misses forever; the image is told `storeZeros`.
 * - A write to the disk updates the cache: clusters it covers whole are written into the cache
 *   (now cached, with the new bytes), parts of clusters already cached are written in place,
 *   parts of clusters not cached are left out (they stay uncached).
 */
import { DiskError } from '../core/errors.js';
import { openLinkIn } from '../disk.js';
import type { BlockExtent, Image } from '../formats/types.js';
import type { Namespace } from '../storage/namespace.js';
import { VD_IMAGE_FLAGS_FIXED, VD_OPEN_FLAGS_READONLY, imageFlagsOf, openFlagNames } from './flags.js';

export class CacheImage {
  /** reads (or parts of reads) answered from the cache */
  hits = 0;
  /** reads (or parts) that went to the disk and filled the cache */
  misses = 0;

  private constructor(
    readonly image: Image,
    readonly path: string,
    readonly ns: Namespace,
    readonly flags: number,
  ) {
    if ('storeZeros' in image) image.storeZeros = true;
  }

  static async open(ns: Namespace, path: string, format: string | undefined, flags: number): Promise<CacheImage> {
    const image = await openLinkIn(ns, path, { format, readOnly: (flags & VD_OPEN_FLAGS_READONLY) !== 0 });
    const link = image.backing();
    if (link) {
      await image.close().catch(() => {});
      throw new DiskError('INVALIDDISK', 'a cache image must not have a parent (what it does not hold means "not cached")', { path, field: 'parent', found: link.hint });
    }
    // only a sparse image of a format with children says "unallocated" (raw and fixed images never do)
    if (!image.capabilities.differencing || imageFlagsOf(image) & VD_IMAGE_FLAGS_FIXED) {
      await image.close().catch(() => {});
      throw new DiskError('NOTSUPPORTED', `a cache image must be a sparse image of a format that tells unallocated ranges from zeros (this is ${image.format} ${image.type})`, { path, field: 'format', found: image.format });
    }
    return new CacheImage(image, ns.absolute(path), ns, flags);
  }

  describe(): string {
    return `${this.image.format} ${this.path} size=${this.image.capacity} open=${openFlagNames(this.flags)} hits=${this.hits} misses=${this.misses}`;
  }

  /** whole clusters around [offset, end), within `limit` */
  private widen(offset: number, end: number, limit: number): [number, number] {
    const g = this.image.clusterSize;
    return [Math.floor(offset / g) * g, Math.min(Math.ceil(end / g) * g, limit)];
  }

  /**
   * Read [offset, offset+into.length) of a disk of `capacity` bytes: cached ranges from the cache,
   * the others from `fromDisk`, which are then stored in the cache (whole clusters).
   */
  async read(into: Buffer, offset: number, capacity: number, fromDisk: (into: Buffer, offset: number) => Promise<void>): Promise<void> {
    const limit = Math.min(this.image.capacity, capacity);
    const inside = Math.max(0, Math.min(into.length, limit - offset));
    if (inside < into.length) await fromDisk(into.subarray(inside), offset + inside);
    if (inside === 0) return;
    for (const r of await this.image.blockStatus(offset, inside)) {
      const sub = into.subarray(r.offset - offset, r.offset - offset + r.length);
      if (r.state !== 'unallocated') {
        await this.image.read(sub, r.offset);
        this.hits++;
        continue;
      }
      this.misses++;
      if (this.image.readOnly) {
        await fromDisk(sub, r.offset);
        continue;
      }
      const [start, stop] = this.widen(r.offset, r.offset + r.length, limit);
      const fill = Buffer.allocUnsafe(stop - start);
      await fromDisk(fill, start);
      await this.image.write(fill, start);
      fill.copy(sub, 0, r.offset - start, r.offset - start + r.length);
    }
  }

  /** The disk now reads `data` at `offset`: bring the cache along (see the notes at the top). */
  async update(data: Buffer, offset: number): Promise<void> {
    if (this.image.readOnly) return;
    const limit = this.image.capacity;
    const end = Math.min(offset + data.length, limit);
    if (end <= offset) return;
    const [start, stop] = this.widen(offset, end, limit);
    const status = await this.image.blockStatus(start, stop - start);
    const g = this.image.clusterSize;
    for (let c = start; c < stop; c += g) {
      const from = Math.max(c, offset);
      const to = Math.min(c + g, end);
      const whole = from === c && to === Math.min(c + g, limit);
      if (whole || holds(status, c, Math.min(c + g, limit))) await this.image.write(data.subarray(from - offset, to - offset), from);
    }
  }

  /**
   * Refuse a change of the disk in [offset, offset+length) (all of it when undefined) that a
   * read-only cache could not follow: it would go on serving the old bytes. Called before the
   * change is made.
   */
  async refuseStale(offset = 0, length = this.image.capacity): Promise<void> {
    if (!this.image.readOnly) return;
    const end = Math.min(offset + length, this.image.capacity);
    if (end > offset && (await this.image.blockStatus(offset, end - offset)).some((r) => r.state !== 'unallocated')) {
      throw new DiskError('RDONLY', 'this would change what the disk reads where the read-only cache image holds data, and the cache would serve stale bytes: close the cache (VDCacheClose) or open it writable', { path: this.path, field: 'cache', offset, length });
    }
  }

  /** the disk's content changed under the cache (an image opened or closed): forget everything */
  async invalidate(): Promise<void> {
    if (!this.image.readOnly) await this.image.makeEmpty();
  }

  flush(): Promise<void> {
    return this.image.readOnly ? Promise.resolve() : this.image.flush();
  }

  async close(deleteFile: boolean): Promise<void> {
    const files = deleteFile ? (await this.image.info()).files.map((f) => this.ns.absolute(f)) : [];
    await this.image.close();
    for (const f of [...files.filter((f) => f !== this.path), ...(deleteFile ? [this.path] : [])]) await this.ns.remove(f);
  }
}

function holds(status: readonly BlockExtent[], start: number, end: number): boolean {
  return status.some((r) => r.state !== 'unallocated' && r.offset < end && r.offset + r.length > start);
}
