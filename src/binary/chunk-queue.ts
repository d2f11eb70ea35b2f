/**
 * Bytes that arrive in pieces of any size (socket 'data' events, a stream's chunks) and leave in
 * pieces of the sizes a parser asks for: a piece that lies inside one arrived buffer is a view of
 * it, and only a piece that spans several is copied.
 */
export class ChunkQueue {
  private readonly chunks: Buffer[] = [];
  private bytes = 0;

  /** bytes held */
  get length(): number {
    return this.bytes;
  }

  push(b: Buffer): void {
    this.chunks.push(b);
    this.bytes += b.length;
  }

  /** the next `n` bytes; the caller has checked that `n` <= length */
  take(n: number): Buffer {
    let out: Buffer;
    const first = this.chunks[0];
    if (first && first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0]!;
        const k = Math.min(c.length, n - at);
        c.copy(out, at, 0, k);
        at += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.bytes -= n;
    return out;
  }
}
