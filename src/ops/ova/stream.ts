/**
 * One member of a tar archive read from a pipe (`vdkit convert -#disk1.vmdk out.qcow2` with the
 * OVA on stdin): the headers are parsed as they pass, other members skipped, and the chosen
 * member's bytes handed on as a stream, so a streamOptimized disk is converted while the archive
 * is still arriving. The same checks as the random-access reader apply (checksums, caps on
 * extended headers); a member cut short by the end of the input is CORRUPT naming it.
 */
import { DiskError } from '../../core/errors.js';
import { ChunkQueue } from '../../binary/chunk-queue.js';
import { TAR_BLOCK, decodeTarHeader, isZeroBlock, parsePaxRecords, safeMemberName } from '../../binary/tar.js';
import { TAR_LIMITS, tarPadded } from '../../storage/tar.js';

const DISK_MEMBER = /\.(vmdk|vhd|vhdx|vdi|qcow2|img|raw)$/i;

/**
 * The data of member `pick` (a name, or a 1-based number counting disk files) of the tar
 * archive arriving on `input`. `path` names the input in errors.
 */
export async function* tarMemberStream(input: AsyncIterable<Buffer | string>, pick: string, path = '-'): AsyncGenerator<Buffer> {
  const it = input[Symbol.asyncIterator]();
  const queue = new ChunkQueue();
  let ended = false;
  let position = 0;
  const fill = async (n: number) => {
    while (queue.length < n && !ended) {
      const r = await it.next();
      if (r.done) ended = true;
      else queue.push(typeof r.value === 'string' ? Buffer.from(r.value) : r.value);
    }
  };
  const exactly = async (n: number, member: string, field: string): Promise<Buffer> => {
    await fill(n);
    if (queue.length < n) throw new DiskError('CORRUPT', `the archive ended inside ${member}`, { path, member, field, offset: position, expected: n, found: queue.length });
    position += n;
    return queue.take(n);
  };
  const byNumber = /^\d+$/.test(pick) ? Number(pick) : undefined;
  const wanted = byNumber === undefined ? safeMemberName(pick) : undefined;
  let disks = 0;
  let pax = new Map<string, string>();
  let longName: string | undefined;
  for (let index = 0; ; index++) {
    await fill(TAR_BLOCK);
    if (queue.length === 0) break;
    const block = await exactly(TAR_BLOCK, `header #${index + 1}`, 'header');
    if (isZeroBlock(block)) break;
    if (index >= TAR_LIMITS.members) throw new DiskError('CORRUPT', `more than ${TAR_LIMITS.members} tar members`, { path, field: 'members' });
    const h = decodeTarHeader(block, { path, index, offset: position - TAR_BLOCK });
    const name = longName ?? pax.get('path') ?? h.name;
    const size = pax.has('size') && /^\d{1,16}$/.test(pax.get('size')!) ? Number(pax.get('size')) : h.size;
    if (h.kind === 'pax' || h.kind === 'gnu-longname' || h.kind === 'pax-global' || h.kind === 'gnu-longlink') {
      if (size > TAR_LIMITS.extendedHeader) throw new DiskError('CORRUPT', `tar ${h.kind} header of ${size} bytes (at most ${TAR_LIMITS.extendedHeader})`, { path, member: name, field: 'size', found: size });
      const data = await exactly(tarPadded(size), name, 'data');
      if (h.kind === 'pax') pax = parsePaxRecords(data.subarray(0, size), { path, member: name });
      if (h.kind === 'gnu-longname') longName = data.subarray(0, size).toString('utf8').replace(/\0+$/, '');
      continue;
    }
    pax = new Map();
    longName = undefined;
    const dataSize = h.kind === 'file' || h.kind === 'other' ? size : 0;
    const safe = safeMemberName(name);
    const isDisk = h.kind === 'file' && safe !== undefined && DISK_MEMBER.test(safe);
    if (isDisk) disks++;
    const chosen = h.kind === 'file' && safe !== undefined && (byNumber !== undefined ? isDisk && disks === byNumber : safe === wanted);
    if (!chosen) {
      for (let left = tarPadded(dataSize); left > 0; ) {
        const n = Math.min(left, 1024 * 1024);
        await exactly(n, name, 'data');
        left -= n;
      }
      continue;
    }
    for (let left = dataSize; left > 0; ) {
      await fill(1);
      const n = Math.min(left, queue.length, 1024 * 1024);
      if (n === 0) throw new DiskError('CORRUPT', `the archive ended inside ${name}`, { path, member: name, field: 'size', expected: dataSize, found: dataSize - left });
      position += n;
      left -= n;
      yield queue.take(n);
    }
    return;
  }
  throw new DiskError('FILENOTFOUND', byNumber !== undefined ? `the archive has ${disks} disk file(s); no disk #${byNumber}` : `no member ${JSON.stringify(pick)} in the archive`, { path: `${path}#${pick}`, field: 'member' });
}
