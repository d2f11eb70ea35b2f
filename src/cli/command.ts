/**
 * What every command module under cli/commands/ exports, and the little state they share.
 * main.ts loads a command module to parse a command line that names it, and all of them for
 * `vdkit --help`, so a command module imports only commander, core/errors and core/ints, options.ts,
 * output.ts, this file and types; what it runs (Disk, the drivers, ops/) is imported inside its
 * action, when it runs (test/conformance/cli-startup.test.ts checks this for --help).
 */
import type { Command } from 'commander';
import type { Disk, DiskOpenOptions } from '../disk.js';

export interface CliCommand {
  readonly name: string;
  readonly aliases?: readonly string[];
  /** one line for `vdkit --help` */
  readonly summary: string;
  /** the arguments and options of the command and its action, on `cmd` (already named, aliased and described) */
  define(cmd: Command): unknown;
}

/** Add `c` to `program`. */
export function register(program: Command, c: CliCommand): Command {
  const cmd = program.command(c.name).description(c.summary);
  for (const a of c.aliases ?? []) cmd.alias(a);
  c.define(cmd);
  return cmd;
}

/** a command's exit status when it finished but wants to say more than success (check: 2, 3) */
let exitStatus = 0;

export function setExitStatus(n: number): void {
  exitStatus = n;
}

export function getExitStatus(): number {
  return exitStatus;
}

export async function withDisk<T>(path: string, opts: DiskOpenOptions & { readOnly: boolean }, fn: (d: Disk) => Promise<T>): Promise<T> {
  const { Disk } = await import('../disk.js');
  const d = await Disk.open(path, opts);
  try {
    return await fn(d);
  } finally {
    await d.close();
  }
}
