/**
 * The `vdkit` command. Exit status: 0 success, 1 failure (the DiskError's code and text on
 * stderr), 2 wrong usage.
 *
 * Start-up cost matters (`vdkit --version`, scripts calling `vdkit info` in a loop): this module and
 * the command modules it lists import commander and a few small helpers only. Each command imports
 * Disk, the drivers and its ops inside its action, so a run loads the code of one command
 * (bench/startup.ts measures it; BENCHMARKS.md has the figures).
 */
import { Command, CommanderError } from 'commander';
import { DiskError, errorText } from '../core/errors.js';
import { getExitStatus, register, setExitStatus, type CliCommand } from './command.js';
import { UsageError } from './options.js';
import { attach } from './commands/attach.js';
import { chain } from './commands/chain.js';
import { check } from './commands/check.js';
import { checksum } from './commands/checksum.js';
import { child } from './commands/child.js';
import { commit } from './commands/commit.js';
import { compact } from './commands/compact.js';
import { compare } from './commands/compare.js';
import { convert } from './commands/convert.js';
import { create } from './commands/create.js';
import { defrag } from './commands/defrag.js';
import { deleteCommand } from './commands/delete.js';
import { discard } from './commands/discard.js';
import { fill } from './commands/fill.js';
import { formats } from './commands/formats.js';
import { info } from './commands/info.js';
import { lint } from './commands/lint.js';
import { map } from './commands/map.js';
import { measure } from './commands/measure.js';
import { meta } from './commands/meta.js';
import { read } from './commands/read.js';
import { rebase } from './commands/rebase.js';
import { rename } from './commands/rename.js';
import { resize } from './commands/resize.js';
import { set } from './commands/set.js';
import { vdiskmanager } from './commands/vdiskmanager.js';
import { write } from './commands/write.js';

/** every command, in the order `vdkit --help` lists them */
export const COMMANDS: readonly CliCommand[] = [
  create, info, read, write, fill, meta, set, map, convert, measure, lint, check, compare, checksum, formats,
  child, attach, commit, rebase, resize, compact, defrag, discard, rename, deleteCommand, chain, vdiskmanager,
];

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('vdkit')
    .description('Virtual disk development kit: create, inspect, read, write and convert VMDK, VDI, VHD, VHDX, qcow2 and raw disk images')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  for (const c of COMMANDS) register(program, c);
  return program;
}

/** Run the CLI; resolves to the exit status. */
export async function main(argv: string[]): Promise<number> {
  // vmware-vdiskmanager's single-letter options are parsed by its own parser, not commander's
  if (argv[0] === 'vdiskmanager') {
    const { vdiskmanager } = await import('./vdiskmanager.js');
    return vdiskmanager(argv.slice(1));
  }
  const program = buildProgram();
  try {
    setExitStatus(0);
    await program.parseAsync(argv, { from: 'user' });
    return getExitStatus();
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      return 2;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`vdkit: ${err.message}\n`);
      return 2;
    }
    if (err instanceof DiskError) {
      process.stderr.write(`vdkit: ${err.code} (${err.number}): ${err.message}\n`);
      if (!err.message.includes(errorText(err.code))) process.stderr.write(`  ${errorText(err.code)}\n`);
      return 1;
    }
    process.stderr.write(`vdkit: INTERNAL: ${(err as Error)?.stack ?? String(err)}\n`);
    return 1;
  }
}
