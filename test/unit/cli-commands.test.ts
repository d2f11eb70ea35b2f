import { test } from 'node:test';
import assert from 'node:assert/strict';
import { COMMANDS, buildProgram } from '../../src/cli/main.js';

// main.ts names the commands without loading their modules (so one run loads one command); the
// names there must be the ones each module's descriptor registers, or a command would be
// unreachable by one of its names, or reachable only through `vdkit --help`.
test('cli: the command table names each command module by its name and aliases', async () => {
  const seen = new Set<string>();
  for (const e of COMMANDS) {
    const c = await e.load();
    assert.deepEqual([c.name, ...(c.aliases ?? [])], [...e.names], `table entry ${e.names.join('|')}`);
    for (const n of e.names) {
      assert.ok(!seen.has(n), `${n} is named twice`);
      seen.add(n);
    }
  }
  const program = await buildProgram();
  assert.deepEqual(
    program.commands.map((c) => [c.name(), ...c.aliases()]),
    COMMANDS.map((e) => [...e.names]),
  );
});
