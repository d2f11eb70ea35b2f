/**
 * Child process for the resize/rename kill tests: `resize PATH STEP COUNT` grows the disk by
 * STEP bytes COUNT times; `rename DIR A B COUNT` renames the disk between the names A and B
 * (and back) COUNT times. After each finished operation it prints `done <size|name>`, so the
 * test knows the last state that must have survived; it is killed at a random moment.
 */
import { rename, resize } from '../../src/index.js';

const [op, ...args] = process.argv.slice(2);
console.log('ready');
if (op === 'resize') {
  const [path, step, count] = args as [string, string, string];
  for (let i = 0; i < Number(count); i++) {
    const r = await resize(path, Number(step), { relative: true });
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
