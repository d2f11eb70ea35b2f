/**
 * Child process for the compact and defragment kill tests (test/helpers/in-place-kill.ts):
 * `compact PATH` or `defragment PATH` opens the image alone read-write (a differencing link
 * too: the chain layer's copy-on-write is not needed, nothing is written through it), prints
 * `ready`, runs the operation and prints `done <steps>`. Every write, flush and truncate of a
 * file prints `step <n>` first and yields for a moment, so the test can kill it between any two
 * steps (it kills when it sees a random step number; the kill lands just before or after it).
 */
import { Disk } from '../../src/index.js';
import { numberFileSteps } from './file-steps.js';

const [op, path] = process.argv.slice(2) as [string, string];
const d = await Disk.open(path, { singleLink: true, cowByCaller: true });
const steps = numberFileSteps();
console.log('ready');
if (op === 'compact') await d.image.maintenance().compact!({});
else if (op === 'defragment') await d.image.maintenance().defragment!({});
else throw new Error(`unknown op ${op}`);
await d.close();
console.log(`done ${steps()}`);
