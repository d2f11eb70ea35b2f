/** `vdkit lint`: what an image lacks for a target (docs/targets.md). */
import { DiskError } from '../../core/errors.js';
import type { LintFinding, TargetProfile } from '../../ops/targets.js';
import { setExitStatus, withDisk, type CliCommand } from '../command.js';
import { TARGET_NAMES, external, formatOpt, openOpts, untrusted, withOptions } from '../options.js';
import { out } from '../output.js';

export const lint: CliCommand = {
  name: 'lint',
  summary: 'explain what an image lacks for a target (docs/targets.md): exit 0 nothing blocks, 1 the target would refuse it, 2 error',
  define: (cmd) =>
    withOptions(cmd, [formatOpt(), untrusted(), external()])
      .requiredOption('--target <t>', TARGET_NAMES.join(', '))
      .option('--json', 'machine-readable findings')
      .argument('<file>')
      .action(async (file: string, o) => {
        const { accepted, lint, targetByName } = await import('../../ops/targets.js');
        let profile: TargetProfile;
        let findings: LintFinding[];
        try {
          profile = targetByName(o.target);
          // the image's own structure is what a target sees; a parent is reported, not opened
          findings = await withDisk(file, { readOnly: true, ...openOpts(o), singleLink: true }, (d) => lint(d, profile));
        } catch (err) {
          if (!(err instanceof DiskError)) throw err;
          process.stderr.write(`vdkit: ${err.code} (${err.number}): ${err.message}\n`);
          setExitStatus(2); // 1 means "the target would refuse it"
          return;
        }
        const ok = accepted(findings);
        if (o.json) await out(JSON.stringify({ target: profile.name, accepted: ok, findings }, null, 2) + '\n');
        else {
          for (const f of findings) await out(`${f.severity}: ${f.field}: ${f.message}${f.fix ? `\n  fix: ${f.fix}` : ''}\n`);
          await out(ok ? `${file}: nothing blocks ${profile.name} (${profile.title})\n` : `${file}: ${profile.name} would refuse it\n`);
        }
        if (!ok) setExitStatus(1);
      }),
};
