/**
 * Child process for the compact kill tests: `compact PATH` opens the image alone read-write,
 * prints `ready`, compacts it and prints `done <steps>`. Every write, flush and truncate of a
 * file prints `step <n>` first and yields for a moment, so the test can kill it between any two
 * steps (it kills when it sees a random step number; the kill lands just before or after it).
 */
import { Disk, FileStore } from '../../src/index.js';

const [op, path] = process.argv.slice(2) as [string, string];
const d = await Disk.open(path, { singleLink: true });
let steps = 0;
const proto = FileStore.prototype as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
for (const name of ['write', 'writev', 'flush', 'truncate']) {
  const orig = proto[name]!;
  proto[name] = async function (this: unknown, ...args: unknown[]) {
    process.stdout.write(`step ${++steps}\n`);
    await new Promise((r) => setTimeout(r, 1));
    return orig.apply(this, args);
  };
}
console.log('ready');
if (op === 'compact') await d.image.compact!({});
else if (op === 'defragment') await d.image.defragment!({});
else throw new Error(`unknown op ${op}`);
await d.close();
console.log(`done ${steps}`);
