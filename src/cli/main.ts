/**
 * The `vdkit` command. Exit status: 0 success, 1 failure (the DiskError's code and text on
 * stderr), 2 wrong usage, 130 / 143 a long command cancelled by SIGINT / SIGTERM (128 + the
 * signal's number, as a shell reports a process the signal killed).
 *
 * Start-up cost matters (`vdkit --version`, scripts calling `vdkit info` in a loop), so nothing is
 * loaded before it is needed: this module imports commander and a few small helpers, loads the
 * module of the command named on the command line (commands/*.ts, each a small descriptor), and
 * that command imports Disk, the drivers and its ops inside its action. bench/startup.ts measures
 * it; BENCHMARKS.md has the figures.
 */
import { Command, CommanderError } from 'commander';
import { DiskError, stockTextBelow } from '../core/errors.js';
import { cancelledBySignal, clearCancelled, getExitStatus, register, setExitStatus, type CliCommand } from './command.js';
import { UsageError, formatArg } from './options.js';

/** a command's names (the first is its name, the rest its aliases) and how to load its module */
export interface CommandEntry {
  readonly names: readonly string[];
  load(): Promise<CliCommand>;
}

/** the export of a command's module (commands/<name>.ts) where it is not the command's name */
const EXPORTED: Readonly<Record<string, string>> = { delete: 'deleteCommand', serve: 'serveCommand', 'copy-out': 'copyOut' };

async function loadCommand(name: string): Promise<CliCommand> {
  const module = (await import(`./commands/${name}.js`)) as Record<string, CliCommand>;
  return module[EXPORTED[name] ?? name]!;
}

/**
 * Every command, in the order `vdkit --help` lists them. A run that names a command loads that
 * command's module alone; --version loads none; --help, `help` and unknown names load them all.
 * test/unit/cli-commands.test.ts checks these names against the modules' descriptors.
 */
export const COMMANDS: readonly CommandEntry[] = (
  [
    ['create'], ['info'], ['read'], ['write'], ['fill'], ['meta'], ['set'], ['map'], ['convert', 'clone'], ['measure'], ['lint'], ['check'],
    ['compare'], ['checksum'], ['partitions'], ['mkimg'], ['ova'], ['dd'], ['bench'], ['formats'], ['child', 'redo'], ['attach'], ['commit'], ['rebase'], ['resize'], ['compact'], ['defrag', 'defragment'],
    ['discard'], ['snapshot'], ['bitmap'], ['changed'], ['backup'], ['restore'], ['amend'], ['rename'], ['delete'], ['chain'], ['vdiskmanager'], ['serve', 'nbd'], ['ls'], ['cat'], ['copy-out'], ['stat'], ['web'],
  ] as const
).map((names) => ({ names, load: () => loadCommand(names[0]) }));

/**
 * The commands a command line needs. Only the top-level help and "unknown command" (with its
 * suggestions) list the others; a command's own help, errors and run do not.
 */
function commandsFor(argv: readonly string[]): readonly CommandEntry[] {
  const first = argv[0];
  if (first === '--version' || first === '-V') return [];
  const named = COMMANDS.find((e) => e.names.includes(first ?? ''));
  return named ? [named] : COMMANDS;
}

/** the options that name a format, in every command that has them */
const FORMAT_OPTIONS: readonly (readonly [key: string, flag: string])[] = [
  ['format', '-f'],
  ['outputFormat', '-O'],
  ['backingFormat', '-F'],
  ['secondFormat', '-F'],
  ['sourceFormat', '-F'],
];

/** The program with `commands` (default: all of them). */
export async function buildProgram(commands: readonly CommandEntry[] = COMMANDS): Promise<Command> {
  const program = new Command();
  program
    .name('vdkit')
    .description('Virtual disk development kit: create, inspect, read, write and convert VMDK, VDI, VHD, VHDX, qcow2 and raw disk images')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  for (const c of await Promise.all(commands.map((e) => e.load()))) register(program, c);
  // a format named on the command line, checked before the command runs: unknown is wrong usage
  // (exit 2), and qemu's names become vdkit's for every command alike
  program.hook('preAction', async (_program, action) => {
    for (const [key, flag] of FORMAT_OPTIONS) {
      const value: unknown = action.getOptionValue(key);
      if (typeof value === 'string') action.setOptionValueWithSource(key, await formatArg(value, flag), action.getOptionValueSource(key)!);
    }
  });
  return program;
}

/**
 * `resize IMAGE -1G` as qemu-img takes it: a last argument that is a negative size is the size,
 * not an unknown option (qemu-img takes the size out of argv before parsing the options; here a
 * `--` goes in front of it, unless one is there already).
 */
export function negativeSizeLast(argv: readonly string[]): string[] {
  const last = argv[argv.length - 1];
  if (argv[0] !== 'resize' || argv.length < 3 || last === undefined || !/^-\d/.test(last) || argv.includes('--')) return [...argv];
  return [...argv.slice(0, -1), '--', last];
}

/**
 * `convert -#disk1.vmdk DST` (a disk of an OVA on stdin): `-#...` is the source, not an unknown
 * option. As with negativeSizeLast a `--` goes in front of it, when only DST (or `-`) follows.
 */
export function archiveStdinSource(argv: readonly string[]): string[] {
  if (argv[0] !== 'convert' && argv[0] !== 'clone') return [...argv];
  const i = argv.findIndex((a) => /^-#./.test(a));
  if (i < 0 || argv.includes('--') || argv.slice(i + 1).some((a) => a.startsWith('-') && a !== '-')) return [...argv];
  return [...argv.slice(0, i), '--', ...argv.slice(i)];
}

/** Run the CLI; resolves to the exit status. */
export async function main(argv: string[]): Promise<number> {
  // vmware-vdiskmanager's single-letter options are parsed by its own parser, not commander's
  if (argv[0] === 'vdiskmanager') {
    const { vdiskmanager } = await import('./vdiskmanager.js');
    return vdiskmanager(argv.slice(1));
  }
  try {
    const program = await buildProgram(commandsFor(argv));
    setExitStatus(0);
    clearCancelled();
    await program.parseAsync(archiveStdinSource(negativeSizeLast(argv)), { from: 'user' });
    return getExitStatus();
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      return 2;
    }
    const signal = cancelledBySignal();
    if (signal) {
      // whatever the op threw on its way out (CANCELLED, or a pipe closed under it), the user stopped it
      process.stderr.write('vdkit: cancelled\n');
      return signal === 'SIGINT' ? 130 : 143;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`vdkit: ${err.message}\n`);
      return 2;
    }
    if (err instanceof DiskError) {
      process.stderr.write(`vdkit: ${err.code} (${err.number}): ${err.message}\n`);
      const stock = stockTextBelow(err);
      if (stock !== undefined) process.stderr.write(`  ${stock}\n`);
      return 1;
    }
    process.stderr.write(`vdkit: INTERNAL: ${(err as Error)?.stack ?? String(err)}\n`);
    return 1;
  }
}
