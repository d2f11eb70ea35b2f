/**
 * vdkit's own API in one program: open a disk of any format (and its chain), say what it is,
 * read its first sector, list where its data lies, convert it into another format with progress,
 * and prove the copy holds the same bytes.
 *
 *   node dist/examples/native-api.js SOURCE TARGET [FORMAT]
 *
 * FORMAT defaults to the one TARGET's extension names (vmdk, vdi, vhd, vhdx, qcow2, raw).
 * Exit status 0 when the copy is identical, 1 otherwise or on an error (the DiskError's code,
 * text and the file it names on stderr).
 */
import { pathToFileURL } from 'node:url';
import { Disk, DiskError, compare, convert, checksum } from '../src/index.js';

export async function main(argv: readonly string[], print: (line: string) => void = console.log): Promise<number> {
  const [source, target, format] = argv;
  if (!source || !target) {
    print('usage: native-api SOURCE TARGET [FORMAT]');
    return 1;
  }
  // 1. open read-only: the whole chain is opened, reads fall through to the parents
  const disk = await Disk.open(source, { readOnly: true });
  try {
    const info = await disk.info();
    print(`${source}: ${disk.format} ${disk.type}, ${disk.capacity} bytes, ${info.numLinks} link(s)`);

    // 2. read the first sector; a partitioned disk ends it with 55 AA
    const sector = await disk.read(0, Math.min(512, disk.capacity));
    const signature = sector.length === 512 && sector[510] === 0x55 && sector[511] === 0xaa;
    print(`first sector: ${sector.subarray(0, 16).toString('hex')}…${signature ? ' (boot signature 55 AA)' : ''}`);

    // 3. where the data lies: block status merges like ranges, holes are never read
    const extents = await disk.blockStatus();
    const data = extents.filter((e) => e.state === 'data');
    const bytes = data.reduce((n, e) => n + e.length, 0);
    print(`data: ${bytes} bytes in ${data.length} range(s)${data.length ? `, first at ${data[0]!.offset}` : ''}`);

    // 4. convert with progress (throttled here to whole tenths) and a cancel switch
    const abort = new AbortController();
    let shown = -1;
    const targetFormat = format ?? formatFromName(target);
    const result = await convert(disk, target, {
      format: targetFormat,
      signal: abort.signal,
      onProgress: (p) => {
        const tenth = p.total ? Math.floor((10 * p.done) / p.total) : 10;
        if (tenth !== shown) print(`progress: ${(shown = tenth) * 10}%`);
      },
    });
    print(`converted to ${target} (${targetFormat}): ${result.bytesWritten} bytes written, ${result.bytesSkipped} skipped as zeros`);
  } finally {
    await disk.close();
  }

  // 5. the proof: compare byte by byte, and the content digest, which is the same in every format
  const a = await Disk.open(source, { readOnly: true });
  const b = await Disk.open(target, { readOnly: true });
  try {
    const same = await compare(a, b);
    const [da, db] = [await checksum(a), await checksum(b)];
    print(same.identical ? `identical: ${db}` : `DIFFERENT at offset ${same.offset}: ${same.reason ?? ''}`);
    return same.identical && da === db ? 0 : 1;
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}

function formatFromName(name: string): string {
  const ext = /\.([a-z0-9]+)$/i.exec(name)?.[1]?.toLowerCase();
  return ext === 'img' || ext === undefined ? 'raw' : ext;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err: unknown) => {
      if (err instanceof DiskError) console.error(`${err.code}: ${err.message}`);
      else console.error(err);
      process.exitCode = 1;
    },
  );
}
