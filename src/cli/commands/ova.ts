/**
 * `vdkit ova create|info|verify|extract`: package disks as an OVA (OVF descriptor first, each
 * disk converted on the fly to streamOptimized VMDK, a manifest last) and read OVAs back.
 * A disk inside an OVA is opened as `vm.ova#disk1.vmdk` or `vm.ova#1` by every command.
 */
import { Option } from 'commander';
import { cancellable, setExitStatus, type CliCommand } from '../command.js';
import { UsageError } from '../options.js';
import { humanBytes, out } from '../output.js';
import { progressFromOptions } from '../progress.js';

function whole(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text)) throw new UsageError(`${flag}: expected a whole number, got ${JSON.stringify(text)}`);
  return Number(text);
}

export const ova: CliCommand = {
  name: 'ova',
  summary: 'package disks as an OVA (OVF descriptor, streamOptimized VMDKs, manifest) and read, verify and extract OVAs; a disk inside one opens as vm.ova#disk1.vmdk or vm.ova#1',
  define: (cmd) => {
    cmd
      .command('create')
      .description('write OUT.ova: the OVF descriptor first, each --disk converted on the fly to streamOptimized VMDK (disk1.vmdk, ...), then the manifest')
      .argument('<out>')
      .option('-d, --disk <image>', 'a disk, in order (repeat): any image vdkit reads', (v: string, prev: string[] = []) => [...prev, v])
      .option('--name <name>', 'the VM\'s name (default: OUT\'s base name); also names the .ovf and .mf members')
      .option('--cpus <n>', 'virtual CPUs (default 1)')
      .option('--memory <MiB>', 'memory in MiB (default 1024)')
      .option('--os-type <id>', 'guest OS: N (CIM OperatingSystem id), NAME (VMware guest id, e.g. otherLinux64Guest) or N:NAME (default 1:otherGuest64)')
      .option('--network <name>', 'the logical network the NIC joins (default "VM Network")')
      .addOption(new Option('--firmware <fw>', 'firmware').choices(['bios', 'efi']).default('bios'))
      .option('--hw-version <n>', 'VMware virtual hardware version: System vmx-NN (default 10)')
      .addOption(new Option('--controller <c>', 'disk controller').choices(['scsi', 'ide']).default('scsi'))
      .addOption(new Option('--ovf <version>', 'OVF version of the descriptor').choices(['1.0', '2.0']).default('1.0'))
      .addOption(new Option('--manifest <digest>', 'manifest digest (sha1 for importers older than OVF 2.0)').choices(['sha256', 'sha1']).default('sha256'))
      .option('--compression-level <n>', 'zlib level 1 (default, as VMware writes) to 9')
      .option('--overwrite', 'replace an existing OUT')
      .option('-p, --progress', 'show progress on stderr')
      .option('--json', 'print what was written as JSON')
      .action(async (outPath: string, o) => {
        const disks = (o.disk as string[] | undefined) ?? [];
        if (disks.length === 0) throw new UsageError('--disk: give at least one disk');
        const { createOva } = await import('../../ops/ova/create.js');
        const progress = progressFromOptions(o);
        const r = await cancellable((signal) =>
          createOva(outPath, {
            disks,
            name: o.name,
            cpus: whole(o.cpus, '--cpus'),
            memory: whole(o.memory, '--memory'),
            osType: o.osType,
            network: o.network,
            firmware: o.firmware,
            hwVersion: whole(o.hwVersion, '--hw-version'),
            controller: o.controller,
            ovfVersion: o.ovf,
            digest: o.manifest,
            compressionLevel: whole(o.compressionLevel, '--compression-level'),
            overwrite: o.overwrite,
            signal,
            onProgress: progress?.update,
          }),
        ).finally(() => progress?.end());
        if (o.json) return out(JSON.stringify({ output: outPath, size: r.size, members: r.members }, null, 2) + '\n');
        const lines = [`created ${outPath}: ${r.size} bytes (${humanBytes(r.size)})`];
        for (const m of r.members) lines.push(`  ${m.name.padEnd(24)} ${String(m.size).padStart(14)}`);
        await out(lines.join('\n') + '\n');
      });

    cmd
      .command('info')
      .description('the members of an OVA, its disks with their capacities and the VM\'s settings')
      .argument('<ova>')
      .option('--json', 'as JSON')
      .action(async (path: string, o) => {
        const { readOva } = await import('../../ops/ova/archive.js');
        const r = await readOva(path);
        if (o.json) {
          const { descriptor: _d, ...rest } = r;
          return out(JSON.stringify({ ...rest, members: r.members.map((m) => ({ name: m.name, kind: m.kind, size: m.size, offset: m.offset })) }, null, 2) + '\n');
        }
        const L = [`${path}: ${r.members.length} member(s)`];
        for (const m of r.members) L.push(`  ${m.name.padEnd(32)} ${m.kind.padEnd(8)} ${String(m.size).padStart(14)}`);
        const v = r.ovf;
        if (!v) L.push('no OVF descriptor');
        else {
          L.push(`OVF ${v.ovfVersion}: ${v.name ?? '(no name)'}`);
          if (v.cpus !== undefined) L.push(`  cpus: ${v.cpus}`);
          if (v.memory !== undefined) L.push(`  memory: ${v.memory} MiB`);
          if (v.os) L.push(`  os: ${v.os.id ?? '?'}${v.os.vmwType ? ` (${v.os.vmwType})` : ''}`);
          if (v.hardware) L.push(`  hardware: ${v.hardware}`);
          if (v.firmware) L.push(`  firmware: ${v.firmware}`);
          if (v.networks.length) L.push(`  networks: ${v.networks.join(', ')}`);
          for (const d of v.disks) L.push(`  disk ${d.diskId}: ${d.href ?? '(no file)'}, capacity ${d.capacity} (${humanBytes(d.capacity)})${d.populatedSize !== undefined ? `, populated ${d.populatedSize}` : ''}`);
        }
        if (r.manifest) L.push(`manifest ${r.manifestName}: ${r.manifest.length} entr${r.manifest.length === 1 ? 'y' : 'ies'}`);
        await out(L.join('\n') + '\n');
      });

    cmd
      .command('verify')
      .description('check the manifest\'s digests (SHA1/SHA256/SHA512) against the members; exit status 1 when one differs or is missing')
      .argument('<ova>')
      .option('--json', 'as JSON')
      .action(async (path: string, o) => {
        const { verifyOva } = await import('../../ops/ova/archive.js');
        const r = await cancellable((signal) => verifyOva(path, { signal }));
        if (!r.ok) setExitStatus(1);
        if (o.json) return out(JSON.stringify(r, null, 2) + '\n');
        if (!r.manifest) return out(`${path}: no manifest (.mf) to verify against\n`);
        const L = r.checked.map((c) => `${c.ok ? 'ok  ' : 'FAIL'} ${c.algorithm}(${c.name})${c.ok ? '' : `: ${c.problem}${c.found ? ` (expected ${c.expected}, found ${c.found})` : ''}`}`);
        for (const u of r.unlisted) L.push(`note: ${u} is not in the manifest`);
        L.push(r.ok ? `${path}: manifest ${r.manifest} matches` : `${path}: manifest ${r.manifest} does NOT match`);
        await out(L.join('\n') + '\n');
      });

    cmd
      .command('extract')
      .description('write the members to DIR (created when missing); refuses absolute names, "..", links and special files before writing anything')
      .argument('<ova>')
      .argument('<dir>')
      .option('--overwrite', 'replace existing files in DIR')
      .action(async (path: string, dir: string, o) => {
        const [{ extractOva }, { makeHostFolder }] = await Promise.all([import('../../ops/ova/archive.js'), import('../../storage/file.js')]);
        await makeHostFolder(dir);
        const names = await cancellable((signal) => extractOva(path, dir, { overwrite: o.overwrite, signal }));
        await out(names.map((n) => `${n}\n`).join(''));
      });
    return cmd;
  },
};
