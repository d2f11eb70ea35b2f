/**
 * Child process for the resize/rename kill tests: `resize PATH STEP COUNT` grows the disk by
 * STEP bytes COUNT times (a negative STEP shrinks it, with `shrink` and without `force`: the
 * part cut off must read as zeros); `rename DIR A B COUNT` renames the disk between the names A
 * and B (and back) COUNT times. After each finished operation it prints `done <size|name>`, so
 * the test knows the last state that must have survived; it is killed at a random moment.
 * With `--steps` as the first argument every file write, flush and truncate prints `step <n>`
 * first and yields for a moment (as repair-runner.ts does), so the test can kill it next to any
 * one of them; it prints `steps <n>` at the end.
 */
import { rename, resize } from '../../src/index.js';
import { numberFileSteps } from './file-steps.js';

const argv = process.argv.slice(2);
let steps = () => 0;
if (argv[0] === '--steps') {
  argv.shift();
  steps = numberFileSteps((l) => console.log(l));
}

const [op, ...args] = argv;
console.log('ready');
if (op === 'resize') {
  const [path, step, count] = args as [string, string, string];
  for (let i = 0; i < Number(count); i++) {
    const r = await resize(path, Number(step), { relative: true, shrink: Number(step) < 0 });
    console.log(`done ${r.newCapacity}`);
  }
} else if (op === 'rename') {
  const [a, b, count] = args as [string, string, string];
  for (let i = 0; i < Number(count); i++) {
    const [from, to] = i % 2 === 0 ? [a, b] : [b, a];
    await rename(from, to);
    console.log(`done ${to}`);
  }
} else {
  throw new Error(`unknown op ${op}`);
}
console.log(`steps ${steps()}`);
