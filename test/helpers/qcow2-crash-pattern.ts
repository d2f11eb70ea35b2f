/**
 * The deterministic write sequence of the qcow2 crash test (writer and test share it): partial
 * clusters, runs of whole clusters, rewrites of earlier places, and whole clusters of zeros
 * (which become zero-flag entries and free clusters), spread over the disk.
 */
export function qcow2ChunkFor(i: number, capacity: number, clusterSize: number): { offset: number; data: Buffer } {
  const slots = Math.floor(capacity / 65536) - 4;
  const slot = (i * 2654435761) % slots;
  if (i % 6 === 5) {
    // zeros over one to four whole clusters (at least 4 KiB)
    const unit = Math.max(clusterSize, 4096);
    const offset = Math.floor((slot * 65536) / unit) * unit;
    return { offset, data: Buffer.alloc(unit * (1 + (i % 4))) };
  }
  const offset = slot * 65536 + ((i * 977) % 3) * 12345;
  const length = 4 + ((i * 7919) % (150 * 1024));
  const data = Buffer.alloc(length, (i % 251) + 1);
  data.writeUInt32LE(i, 0);
  return { offset, data };
}
