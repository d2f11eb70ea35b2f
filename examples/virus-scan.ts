/**
 * The VDDK guide's "Scan VMDK for Virus Signatures" (Example 5-1) on vdkit's VixDiskLib:
 * open the disk, GetInfo for its capacity, read every sector (populated or not: a sparse disk
 * reads zeros where it holds nothing) and hand the bytes to a scanner.
 *
 *   node dist/examples/virus-scan.js [-single] [-pattern TEXT | -hex HEX] diskPath
 *
 * Output as in the guide: "capacity = N sectors", one "Virus detected in sector S" per hit,
 * "N sectors scanned". Exit status 0 clean, 3 when something was found, 1 on an error.
 *
 * Design notes
 * - SecureVirusScan is a vendor's routine in the guide; here it is a search for one signature
 *   (by default the EICAR anti-virus test string), which is enough to show the disk side.
 * - The guide reads one sector per call; this reads many sectors per VixDiskLib_Read and still
 *   reports per sector. The tail of each read is carried into the next search, so a signature
 *   that crosses a sector (or read) boundary is found too, reported at the sector it starts in.
 * - The disk is opened VIXDISKLIB_FLAG_OPEN_READ_ONLY: a scan never needs to write.
 */
import { pathToFileURL } from 'node:url';
import {
  VIXDISKLIB_FLAG_OPEN_READ_ONLY,
  VIXDISKLIB_FLAG_OPEN_SINGLE_LINK,
  VIXDISKLIB_SECTOR_SIZE,
  VixDiskLibError,
  VixDiskLib_Close,
  VixDiskLib_Connect,
  VixDiskLib_Disconnect,
  VixDiskLib_Exit,
  VixDiskLib_GetErrorText,
  VixDiskLib_GetInfo,
  VixDiskLib_Init,
  VixDiskLib_Open,
  VixDiskLib_Read,
  type VixDiskLibConnection,
} from '../src/compat/vixdisklib.js';

/** the EICAR anti-virus test file: harmless, and every scanner reports it */
export const EICAR = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*', 'latin1');

/** sectors per VixDiskLib_Read */
const BATCH = 2048;

/** the guide's SecureVirusScan: offsets in `buf` where the signature starts */
export function secureVirusScan(buf: Buffer, signature: Buffer): number[] {
  const hits: number[] = [];
  for (let at = buf.indexOf(signature); at >= 0; at = buf.indexOf(signature, at + 1)) hits.push(at);
  return hits;
}

/** DoVirusScan: scan every sector; returns the sectors where a signature starts */
export async function doVirusScan(
  connection: VixDiskLibConnection,
  diskPath: string,
  openFlags: number,
  signature: Buffer,
  print: (line: string) => void,
): Promise<number[]> {
  const disk = await VixDiskLib_Open(connection, diskPath, openFlags | VIXDISKLIB_FLAG_OPEN_READ_ONLY);
  const found: number[] = [];
  try {
    const info = await VixDiskLib_GetInfo(disk);
    print(`capacity = ${info.capacity} sectors`);
    const buf = Buffer.alloc(BATCH * VIXDISKLIB_SECTOR_SIZE);
    let carry = Buffer.alloc(0);
    // read all sectors even if not yet populated
    for (let sector = 0; sector < info.capacity; sector += BATCH) {
      const n = Math.min(BATCH, info.capacity - sector);
      await VixDiskLib_Read(disk, sector, n, buf);
      const window = Buffer.concat([carry, buf.subarray(0, n * VIXDISKLIB_SECTOR_SIZE)]);
      const windowStart = sector * VIXDISKLIB_SECTOR_SIZE - carry.length;
      for (const at of secureVirusScan(window, signature)) {
        const hit = Math.floor((windowStart + at) / VIXDISKLIB_SECTOR_SIZE);
        if (found[found.length - 1] === hit) continue;
        found.push(hit);
        print(`Virus detected in sector ${hit}`);
      }
      carry = Buffer.from(window.subarray(Math.max(0, window.length - (signature.length - 1))));
    }
    print(`${info.capacity} sectors scanned`);
  } finally {
    await VixDiskLib_Close(disk);
  }
  return found;
}

async function main(argv: string[]): Promise<number> {
  let signature = EICAR;
  let flags = 0;
  let diskPath: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-single') flags |= VIXDISKLIB_FLAG_OPEN_SINGLE_LINK;
    else if (a === '-pattern' && i + 1 < argv.length) signature = Buffer.from(argv[++i]!, 'latin1');
    else if (a === '-hex' && i + 1 < argv.length && /^([0-9a-f]{2})+$/i.test(argv[i + 1]!)) signature = Buffer.from(argv[++i]!, 'hex');
    else if (!a.startsWith('-') && diskPath === undefined) diskPath = a;
    else {
      diskPath = undefined;
      break;
    }
  }
  if (diskPath === undefined || signature.length === 0) {
    process.stdout.write('Usage: virus-scan [-single] [-pattern text | -hex bytes] diskPath\n -virus: scan source vmdk for virus signature (default: the EICAR test string)\n');
    return 1;
  }
  await VixDiskLib_Init(1, 0, null, null, null, null);
  const connection = await VixDiskLib_Connect(null);
  try {
    const found = await doVirusScan(connection, diskPath, flags, signature, (l) => process.stdout.write(`${l}\n`));
    return found.length > 0 ? 3 : 0;
  } finally {
    await VixDiskLib_Disconnect(connection);
    VixDiskLib_Exit();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err) => {
      if (err instanceof VixDiskLibError) process.stderr.write(`Error: [virus-scan] ${err.vixCode} (${err.vixError}) ${VixDiskLib_GetErrorText(err)}: ${err.message}\n`);
      else process.stderr.write(`Error: [virus-scan] ${(err as Error)?.stack ?? String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
