/**
 * Child process for the qcow2 crash test: opens a disk (its whole chain) read-write and, forever,
 * writes chunk i of the shared pattern, flushes, and prints "ack <i>" once the flush completed.
 * The parent kills it with SIGKILL at a random moment.
 */
import { lineSync } from './ack.js';
import { Disk } from '../../src/index.js';
import { qcow2ChunkFor } from './qcow2-crash-pattern.js';

const [path] = process.argv.slice(2);
const d = await Disk.open(path!);
lineSync('ready\n');
for (let i = 0; ; i++) {
  const { offset, data } = qcow2ChunkFor(i, d.capacity, d.image.clusterSize);
  await d.write(offset, data);
  await d.flush();
  lineSync(`ack ${i}\n`);
}
