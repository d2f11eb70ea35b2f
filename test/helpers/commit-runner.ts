/**
 * Child process for the commit kill test: runs a commit and prints "step <name>" after every
 * step, pausing a moment so the parent can SIGKILL it right there.
 */
import { lineSync } from './ack.js';
import { commit } from '../../src/ops/commit.js';

const [top, base] = process.argv.slice(2);
await commit(top!, {
  base,
  onStep: async (step) => {
    lineSync(`step ${step}\n`);
    await new Promise((r) => setTimeout(r, 3));
  },
});
lineSync('done\n');
