/**
 * Child process for the repair kill tests: prints "ready", repairs the image named on the
 * command line (its own structures only, no chain), prints "done <ms> <steps>". Every write,
 * flush and truncate of a file prints `step <n>` first and yields for a moment, so the parent
 * can SIGKILL it between any two steps (or at a random time).
 */
import { checkDisk } from '../../src/index.js';
import { numberFileSteps } from './file-steps.js';

const [path] = process.argv.slice(2);
const steps = numberFileSteps();
process.stdout.write('ready\n');
const t0 = performance.now();
await checkDisk(path!, { repair: true, chain: false });
process.stdout.write(`done ${(performance.now() - t0).toFixed(2)} ${steps()}\n`);
