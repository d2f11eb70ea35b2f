/**
 * `vdkit partitions`: the partition table, LVM logical volumes and what each volume holds
 * (virt-filesystems --all --long, mmls and blkid in one listing), read from the disk's bytes in
 * any format and chain.
 */
import { diskCommand } from '../command.js';
import { json, readingOptions } from '../options.js';
import { out } from '../output.js';

export const partitions = diskCommand({
  name: 'partitions',
  summary: 'list partitions, LVM volumes and their filesystems (type, label, UUID)',
  options: [...readingOptions(), json()],
  readOnly: true,
  async run(d, { o, file }) {
    const { listVolumes } = await import('../../inside/volumes.js');
    const layout = await listVolumes(d, { path: file });
    for (const w of layout.warnings) process.stderr.write(`warning: ${w.text}\n`);
    const rows = layout.volumes.map((v) => ({
      id: v.id,
      kind: v.kind,
      start: v.ranges[0]?.offset ?? null,
      length: v.length,
      type: v.partition?.type ?? (v.lv ? `lvm-${v.lv.layout}` : null),
      typeName: v.partition?.typeName ?? null,
      name: v.partition?.name ?? null,
      partUuid: v.partition?.uuid ?? v.lv?.uuid ?? null,
      bootable: v.partition?.bootable ?? null,
      ranges: v.ranges,
      complete: v.lv ? v.lv.complete : true,
      filesystem: v.content ?? null,
    }));
    if (o.json) {
      const t = layout.table;
      const table = t ? { scheme: t.scheme, sectorSize: t.sectorSize, diskId: t.diskId, mbr: t.mbr ?? null, header: t.header ?? null, firstUsable: t.firstUsable ?? null, lastUsable: t.lastUsable ?? null } : null;
      await out(JSON.stringify({ path: file, capacity: layout.capacity, table, volumes: rows, volumeGroups: layout.volumeGroups, warnings: layout.warnings.map((w) => w.text) }, null, 2) + '\n');
      return;
    }
    const t = layout.table;
    const head = t
      ? `${t.scheme.toUpperCase()}, ${t.sectorSize}-byte sectors, disk id ${t.diskId}${t.scheme === 'gpt' ? `, ${t.mbr} MBR, ${t.header} header` : ''}`
      : 'no partition table';
    const cells = [['NAME', 'START', 'SIZE', 'TYPE', 'FS', 'LABEL', 'UUID']];
    for (const r of rows) {
      const fs = r.filesystem;
      cells.push([
        r.id || '(disk)',
        r.start === null ? '-' : String(r.start),
        String(r.length),
        r.typeName ?? r.type ?? '-',
        fs ? fs.type + (fs.version && fs.type === 'vfat' ? ` (${fs.version})` : '') : '-',
        fs?.label ?? '-',
        fs?.uuid ?? '-',
      ]);
    }
    const widths = cells[0]!.map((_, i) => Math.max(...cells.map((c) => c[i]!.length)));
    const lines = cells.map((c) => c.map((s, i) => (i === c.length - 1 ? s : s.padEnd(widths[i]! + 2))).join('').trimEnd());
    await out(`${head}\n${lines.join('\n')}\n`);
  },
});
