/**
 * Child process for the crash test: opens a disk read-write and writes deterministic chunks
 * forever, printing "ack <i>" after each write has resolved. The parent kills it with SIGKILL.
 */
import { lineSync } from './ack.js';
import { Disk } from '../../src/index.js';
import { chunkFor } from './crash-pattern.js';

const [path] = process.argv.slice(2);
const d = await Disk.open(path!);
for (let i = 0; ; i++) {
  const { offset, data } = chunkFor(i, d.capacity);
  await d.write(offset, data);
  lineSync(`ack ${i}\n`);
}
