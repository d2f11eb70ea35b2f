/** The deterministic write sequence shared by the crash writer and the crash test. */
export function chunkFor(i: number, capacity: number): { offset: number; data: Buffer } {
  // spread over the disk, mixing whole grains, partial grains and rewrites of earlier places
  const slots = Math.floor(capacity / 65536) - 4;
  const slot = (i * 2654435761) % slots;
  const offset = slot * 65536 + ((i * 977) % 3) * 12345;
  const length = 4 + ((i * 7919) % (150 * 1024));
  const data = Buffer.alloc(length, (i % 251) + 1);
  data.writeUInt32LE(i, 0);
  return { offset, data };
}
