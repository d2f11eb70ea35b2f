/**
 * Child process for the VHDX crash test: opens a disk (its chain) read-write and writes the
 * deterministic chunks of crash-pattern.ts forever, printing "start <i>" before each write and,
 * every `every` writes, "ack <i>" once a flush has completed (every write up to i is durable).
 * The parent kills it with SIGKILL at a random moment. Pipes are synchronous on Linux, so every
 * line printed before the kill reaches the parent.
 */
import { lineSync } from './ack.js';
import { Disk } from '../../src/index.js';
import { chunkFor } from './crash-pattern.js';

const [path, everyArg] = process.argv.slice(2);
const every = Math.max(1, Number(everyArg ?? 3));
const d = await Disk.open(path!);
for (let i = 0; ; i++) {
  const { offset, data } = chunkFor(i, d.capacity);
  lineSync(`start ${i}\n`);
  await d.write(offset, data);
  if (i % every === every - 1) {
    await d.flush();
    lineSync(`ack ${i}\n`);
  }
}
