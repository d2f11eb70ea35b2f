/**
 * Child process for the repair kill test: prints "ready", repairs the image named on the
 * command line (its own structures only, no chain), prints "done <ms>". The parent SIGKILLs it
 * at a random moment.
 */
import { checkDisk } from '../../src/index.js';

const [path] = process.argv.slice(2);
process.stdout.write('ready\n');
const t0 = performance.now();
await checkDisk(path!, { repair: true, chain: false });
process.stdout.write(`done ${(performance.now() - t0).toFixed(2)}\n`);
