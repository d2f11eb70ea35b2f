/**
 * For the child processes of the kill tests: every file write, writev, flush and truncate prints
 * `step <n>` first and yields for a moment, so the parent can SIGKILL the child next to any one
 * of them (the kill lands just before or after it).
 */
import { FileStore } from '../../src/index.js';

/** patch FileStore for the whole process; returns a reader of the steps taken so far */
export function numberFileSteps(print: (line: string) => void = (l) => process.stdout.write(`${l}\n`)): () => number {
  let steps = 0;
  const proto = FileStore.prototype as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  for (const name of ['write', 'writev', 'flush', 'truncate']) {
    const orig = proto[name]!;
    proto[name] = async function (this: unknown, ...args: unknown[]) {
      print(`step ${++steps}`);
      await new Promise((r) => setTimeout(r, 1));
      return orig.apply(this, args);
    };
  }
  return () => steps;
}
