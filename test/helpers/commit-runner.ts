/**
 * Child process for the commit kill test: runs a commit and prints "step <name>" after every
 * step, pausing a moment so the parent can SIGKILL it right there.
 */
import { commit } from '../../src/ops/commit.js';

const [top, base] = process.argv.slice(2);
await commit(top!, {
  base,
  onStep: async (step) => {
    process.stdout.write(`step ${step}\n`);
    await new Promise((r) => setTimeout(r, 3));
  },
});
process.stdout.write('done\n');
