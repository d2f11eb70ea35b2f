/**
 * READ reply buffers, reused once the socket has written them. A buffer per READ made the
 * server's garbage collector the largest CPU item of an `nbdcopy` run (about an eighth of the
 * server's time: every 256 KiB reply buffer is external memory the collector must track and
 * free). Buffers are kept in power-of-two classes (from 4 KiB) since clients split reads at
 * extent boundaries, so lengths vary; a READ gets a view of its class's length. Buffers come
 * back only from the socket's write callback, so one is never refilled while the kernel may
 * still be copying it; what is not given back is simply collected.
 */
const MIN_CLASS = 4096;

export class BufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private pooled = 0;

  constructor(
    /** bytes kept across all classes; beyond that returned buffers are dropped */
    private readonly maxBytes: number,
    /** larger buffers are never kept (one-off huge reads should not pin memory) */
    private readonly maxSize: number,
  ) {}

  /** a buffer of exactly `n` bytes, contents undefined */
  take(n: number): Buffer {
    if (n > this.maxSize) return Buffer.allocUnsafeSlow(n);
    const size = sizeClass(n);
    const ab = this.free.get(size)?.pop();
    if (ab) {
      this.pooled -= size;
      return Buffer.from(ab, 0, n);
    }
    // not from Node's shared 8 KiB slab: a pooled buffer must own its memory alone
    return Buffer.from(Buffer.allocUnsafeSlow(size).buffer, 0, n);
  }

  /** hand back a buffer from `take` once nothing uses it any more */
  give(b: Buffer): void {
    const ab = b.buffer;
    const size = ab.byteLength;
    if (b.byteOffset !== 0 || size > this.maxSize || size !== sizeClass(size) || this.pooled + size > this.maxBytes) return;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(ab as ArrayBuffer);
    this.pooled += size;
  }

  /** bytes held for reuse */
  get bytes(): number {
    return this.pooled;
  }
}

function sizeClass(n: number): number {
  let c = MIN_CLASS;
  while (c < n) c *= 2;
  return c;
}
