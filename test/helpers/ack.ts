/**
 * Print a progress line from a child process that the parent may SIGKILL at any moment.
 * process.stdout on a pipe queues the text inside the process once the pipe is full, so a kill
 * can drop lines for writes that were done: the parent then believes fewer writes happened than
 * did. A blocking write of fd 1 puts the line in the pipe before the child goes on.
 */
import { writeSync } from 'node:fs';

const pause = new Int32Array(new SharedArrayBuffer(4));

export function lineSync(text: string): void {
  const b = Buffer.from(text.endsWith('\n') ? text : `${text}\n`);
  let off = 0;
  while (off < b.length) {
    try {
      off += writeSync(1, b, off);
    } catch (err) {
      // fd 1 is non-blocking if anything touched process.stdout: wait for the reader
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}
