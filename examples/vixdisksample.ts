/**
 * The VDDK sample program (vixDiskLibSample.cpp, VDDK guide chapter 4) on vdkit's VixDiskLib:
 * the same commands, options and output, against local disks.
 *
 *   node dist/examples/vixdisksample.js command [options] diskPath
 *
 * Design notes
 * - Each Do* function follows its namesake in the guide's walk-through, calling the same
 *   VixDiskLib functions in the same order; `VixDisk` is the sample's wrapper class that opens
 *   in its constructor and closes in its destructor (here: an explicit close in `finally`).
 * - Commands that only read (-info, -dump, -meta, -rmeta, -virus) open the disk
 *   VIXDISKLIB_FLAG_OPEN_READ_ONLY: the C sample opens everything read-write, which VDDK (and
 *   vdkit) refuse for a parent that has a redo log, so -info on a base after -redo would fail.
 * - -clone without -cap makes the clone the source's size (VixDiskLib_Clone with capacity 0);
 *   with -cap it is that many MB, which must hold the source.
 * - -host/-user/-password/-port/-vm are parsed as in the sample. With -host the disk is an NBD
 *   export of that server (`vdkit serve`, qemu-nbd, nbdkit), diskPath its export name, reached
 *   by VixDiskLib_Connect's default transports (nbdssl, then nbd); -port 0 (the default) is
 *   NBD's 10809. -create, -redo and -clone work on local files only.
 * - Errors print as the sample's error wrapper does ("Error: [where] code text") and exit 1.
 */
import {
  VIXDISKLIB_ADAPTER_IDE,
  VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC,
  VIXDISKLIB_ADAPTER_SCSI_LSILOGIC,
  VIXDISKLIB_DISK_MONOLITHIC_SPARSE,
  VIXDISKLIB_FLAG_OPEN_READ_ONLY,
  VIXDISKLIB_FLAG_OPEN_SINGLE_LINK,
  VIXDISKLIB_HWVERSION_WORKSTATION_5,
  VIXDISKLIB_SECTOR_SIZE,
  VixDiskLibError,
  VixDiskLib_Clone,
  VixDiskLib_Close,
  VixDiskLib_Connect,
  VixDiskLib_Create,
  VixDiskLib_CreateChild,
  VixDiskLib_Disconnect,
  VixDiskLib_Exit,
  VixDiskLib_FreeInfo,
  VixDiskLib_GetErrorText,
  VixDiskLib_GetInfo,
  VixDiskLib_GetMetadataKeys,
  VixDiskLib_Init,
  VixDiskLib_Open,
  VixDiskLib_Read,
  VixDiskLib_ReadMetadata,
  VixDiskLib_Write,
  VixDiskLib_WriteMetadata,
  type VixDiskLibConnectParams,
  type VixDiskLibConnection,
  type VixDiskLibCreateParams,
  type VixDiskLibHandle,
} from '../src/compat/vixdisklib.js';
import { doVirusScan, EICAR } from './virus-scan.js';

const COMMAND_CREATE = 1 << 0;
const COMMAND_DUMP = 1 << 1;
const COMMAND_FILL = 1 << 2;
const COMMAND_INFO = 1 << 3;
const COMMAND_DUMP_META = 1 << 4;
const COMMAND_READ_META = 1 << 5;
const COMMAND_WRITE_META = 1 << 6;
const COMMAND_REDO = 1 << 7;
const COMMAND_MULTITHREAD = 1 << 8;
const COMMAND_CLONE = 1 << 9;
const COMMAND_VIRUS_SCAN = 1 << 10;

const appGlobals = {
  command: 0,
  adapterType: 'scsi',
  diskPath: '',
  parentPath: '',
  srcPath: '',
  metaKey: '',
  metaVal: '',
  filler: 0xff,
  mbSize: 100,
  capGiven: false,
  numSectors: 1,
  startSector: 0,
  openFlags: 0,
  numThreads: 0,
  host: '',
  userName: '',
  password: '',
  port: 0,
  vmxSpec: '',
  connection: undefined as unknown as VixDiskLibConnection,
};

const out = (s: string) => process.stdout.write(s);

function printUsage(): number {
  out(`Usage: vixdisklibsample command [options] diskPath
commands:
  -create : creates a sparse virtual disk with capacity specified by -cap
  -redo parentPath : creates a redo log 'diskPath' for base disk 'parentPath'
  -info : displays information for specified virtual disk
  -dump : dumps the contents of specified range of sectors in hexadecimal
  -fill : fills specified range of sectors with byte value specified by -val
  -wmeta key value : writes (key,value) entry into disk's metadata table
  -rmeta key : displays the value of the specified metadata entry
  -meta : dumps all entries of the disk's metadata
  -clone sourcePath : clone source vmdk possibly to a remote site
  -virus : scan source vmdk for virus signature
options:
  -adapter [ide|scsi] : bus adapter type for 'create' option (default='scsi')
  -start sector : start sector for 'dump/fill' options (default=0)
  -count sectors : number of sectors for 'dump/fill options (default=1)
  -val byteValue : byte value to fill with for 'write' option (default=255)
  -cap megabytes : capacity in MB for -create option (default=100)
  -single : open file as single disk link (default=open entire chain)
  -multithread n: start n threads and copy the file to n new files
  -host hostname : hostname / IP addresss of ESX 3.x or VC 2.x
  -user userid : user name on host
  -password password : password on host
  -port port : port to use to connect to host (default = 902)
  -vm vmPath : inventory path to vm that owns the virtual disk
`);
  return 1;
}

/** a whole number argument, or undefined */
function int(text: string | undefined): number | undefined {
  if (text === undefined || !/^(0x[0-9a-f]+|\d+)$/i.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** ParseArguments: false on wrong usage */
function parseArguments(argv: string[]): boolean {
  if (argv.length < 2) return false;
  let i = 0;
  for (; i < argv.length - 1; i++) {
    const a = argv[i]!;
    const next = () => argv[++i];
    if (a === '-info') appGlobals.command |= COMMAND_INFO;
    else if (a === '-create') appGlobals.command |= COMMAND_CREATE;
    else if (a === '-dump') appGlobals.command |= COMMAND_DUMP;
    else if (a === '-fill') appGlobals.command |= COMMAND_FILL;
    else if (a === '-meta') appGlobals.command |= COMMAND_DUMP_META;
    else if (a === '-virus') appGlobals.command |= COMMAND_VIRUS_SCAN;
    else if (a === '-single') appGlobals.openFlags |= VIXDISKLIB_FLAG_OPEN_SINGLE_LINK;
    else if (i >= argv.length - 2) return false; // every option below takes a value before diskPath
    else if (a === '-redo') {
      appGlobals.command |= COMMAND_REDO;
      appGlobals.parentPath = next()!;
    } else if (a === '-clone') {
      appGlobals.command |= COMMAND_CLONE;
      appGlobals.srcPath = next()!;
    } else if (a === '-rmeta') {
      appGlobals.command |= COMMAND_READ_META;
      appGlobals.metaKey = next()!;
    } else if (a === '-wmeta') {
      if (i >= argv.length - 3) return false;
      appGlobals.command |= COMMAND_WRITE_META;
      appGlobals.metaKey = next()!;
      appGlobals.metaVal = next()!;
    } else if (a === '-adapter') {
      appGlobals.adapterType = next()!;
      if (appGlobals.adapterType !== 'ide' && appGlobals.adapterType !== 'scsi') return false;
    } else if (a === '-cap') {
      const n = int(next());
      if (n === undefined || n === 0) return false;
      appGlobals.mbSize = n;
      appGlobals.capGiven = true;
    } else if (a === '-val') {
      const n = int(next());
      if (n === undefined || n > 255) return false;
      appGlobals.filler = n;
    } else if (a === '-start') {
      const n = int(next());
      if (n === undefined) return false;
      appGlobals.startSector = n;
    } else if (a === '-count') {
      const n = int(next());
      if (n === undefined) return false;
      appGlobals.numSectors = n;
    } else if (a === '-multithread') {
      const n = int(next());
      if (n === undefined) return false;
      appGlobals.command |= COMMAND_MULTITHREAD;
      appGlobals.numThreads = n;
    } else if (a === '-host') appGlobals.host = next()!;
    else if (a === '-user') appGlobals.userName = next()!;
    else if (a === '-password') appGlobals.password = next()!;
    else if (a === '-vm') appGlobals.vmxSpec = next()!;
    else if (a === '-port') {
      const n = int(next());
      if (n === undefined) return false;
      appGlobals.port = n;
    } else return false;
  }
  appGlobals.diskPath = argv[i]!;
  if (appGlobals.diskPath.startsWith('-')) return false;
  // exactly one command
  const c = appGlobals.command;
  return c !== 0 && (c & (c - 1)) === 0;
}

/** the sample's VixDisk wrapper: open in the constructor, close in the destructor */
async function withDisk<T>(path: string, flags: number, fn: (handle: VixDiskLibHandle) => Promise<T>): Promise<T> {
  const handle = await VixDiskLib_Open(appGlobals.connection, path, flags);
  try {
    return await fn(handle);
  } finally {
    await VixDiskLib_Close(handle);
  }
}

const readOnly = () => appGlobals.openFlags | VIXDISKLIB_FLAG_OPEN_READ_ONLY;

function adapter(): number {
  return appGlobals.adapterType === 'scsi' ? VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC : VIXDISKLIB_ADAPTER_IDE;
}

function adapterText(type: number): string {
  switch (type) {
    case VIXDISKLIB_ADAPTER_IDE:
      return 'IDE';
    case VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC:
      return 'BusLogic SCSI';
    case VIXDISKLIB_ADAPTER_SCSI_LSILOGIC:
      return 'LsiLogic SCSI';
    default:
      return 'unknown';
  }
}

async function doInfo(): Promise<void> {
  await withDisk(appGlobals.diskPath, readOnly(), async (disk) => {
    const info = await VixDiskLib_GetInfo(disk);
    out(`capacity          = ${info.capacity} sectors\n`);
    out(`number of links   = ${info.numLinks}\n`);
    out(`adapter type      = ${adapterText(info.adapterType)}\n`);
    out(`BIOS geometry     = ${info.biosGeo.cylinders}/${info.biosGeo.heads}/${info.biosGeo.sectors}\n`);
    out(`physical geometry = ${info.physGeo.cylinders}/${info.physGeo.heads}/${info.physGeo.sectors}\n`);
    VixDiskLib_FreeInfo(info);
  });
}

async function doCreate(): Promise<void> {
  const createParams: VixDiskLibCreateParams = {
    adapterType: adapter(),
    capacity: appGlobals.mbSize * 2048,
    diskType: VIXDISKLIB_DISK_MONOLITHIC_SPARSE,
    hwVersion: VIXDISKLIB_HWVERSION_WORKSTATION_5,
  };
  await VixDiskLib_Create(appGlobals.connection, appGlobals.diskPath, createParams, null, null);
}

async function doRedo(): Promise<void> {
  await withDisk(appGlobals.parentPath, readOnly(), async (parent) => {
    await VixDiskLib_CreateChild(parent, appGlobals.diskPath, VIXDISKLIB_DISK_MONOLITHIC_SPARSE, null, null);
  });
}

async function doFill(): Promise<void> {
  await withDisk(appGlobals.diskPath, appGlobals.openFlags, async (disk) => {
    const buf = Buffer.alloc(VIXDISKLIB_SECTOR_SIZE, appGlobals.filler);
    for (let i = 0; i < appGlobals.numSectors; i++) {
      await VixDiskLib_Write(disk, appGlobals.startSector + i, 1, buf);
    }
  });
}

async function doReadMetadata(): Promise<void> {
  await withDisk(appGlobals.diskPath, readOnly(), async (disk) => {
    const val = await VixDiskLib_ReadMetadata(disk, appGlobals.metaKey);
    out(`${appGlobals.metaKey} = ${val}\n`);
  });
}

async function doWriteMetadata(): Promise<void> {
  await withDisk(appGlobals.diskPath, appGlobals.openFlags, async (disk) => {
    await VixDiskLib_WriteMetadata(disk, appGlobals.metaKey, appGlobals.metaVal);
  });
}

async function doDumpMetadata(): Promise<void> {
  await withDisk(appGlobals.diskPath, readOnly(), async (disk) => {
    for (const key of await VixDiskLib_GetMetadataKeys(disk)) {
      const val = await VixDiskLib_ReadMetadata(disk, key);
      out(`${key} = ${val}\n`);
    }
  });
}

/** DumpBytes: lines of `step` bytes, each headed by its offset in the buffer */
function dumpBytes(buf: Buffer, step: number): void {
  const lines: string[] = [];
  for (let k = 0; k + step <= buf.length; k += step) {
    const bytes = [...buf.subarray(k, k + step)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    lines.push(`${k.toString(16).padStart(4, '0')} : ${bytes} \n`);
  }
  out(lines.join('') + '\n');
}

async function doDump(): Promise<void> {
  await withDisk(appGlobals.diskPath, readOnly(), async (disk) => {
    const buf = Buffer.alloc(VIXDISKLIB_SECTOR_SIZE);
    for (let i = 0; i < appGlobals.numSectors; i++) {
      await VixDiskLib_Read(disk, appGlobals.startSector + i, 1, buf);
      dumpBytes(buf, 16);
    }
  });
}

async function doClone(): Promise<void> {
  const createParams: VixDiskLibCreateParams = {
    adapterType: adapter(),
    capacity: appGlobals.capGiven ? appGlobals.mbSize * 2048 : 0,
    diskType: VIXDISKLIB_DISK_MONOLITHIC_SPARSE,
    hwVersion: VIXDISKLIB_HWVERSION_WORKSTATION_5,
  };
  const cloneProgressFunc = (_data: unknown, percentCompleted: number) => {
    out(`Cloning : ${percentCompleted}% Done\r`);
    return true;
  };
  await VixDiskLib_Clone(appGlobals.connection, appGlobals.diskPath, appGlobals.connection, appGlobals.srcPath, createParams, cloneProgressFunc, null, true);
  out('\n');
}

async function doVirusScanCommand(): Promise<number> {
  const found = await doVirusScan(appGlobals.connection, appGlobals.diskPath, appGlobals.openFlags, EICAR, (l) => out(`${l}\n`));
  return found.length > 0 ? 3 : 0;
}

async function main(argv: string[]): Promise<number> {
  if (!parseArguments(argv)) return printUsage();
  if (appGlobals.command & COMMAND_MULTITHREAD) {
    out('-multithread is not implemented on Linux\n');
    return 1;
  }
  const cnxParams: VixDiskLibConnectParams = {};
  if (appGlobals.host) {
    cnxParams.vmxSpec = appGlobals.vmxSpec || null;
    cnxParams.serverName = appGlobals.host;
    cnxParams.credType = 1;
    cnxParams.creds = { uid: { userName: appGlobals.userName, password: appGlobals.password } };
    cnxParams.port = appGlobals.port;
  }
  let retval = 0;
  let connected = false;
  try {
    await VixDiskLib_Init(1, 0, null, null, null, null);
    appGlobals.connection = await VixDiskLib_Connect(cnxParams);
    connected = true;
    const c = appGlobals.command;
    if (c & COMMAND_INFO) await doInfo();
    else if (c & COMMAND_CREATE) await doCreate();
    else if (c & COMMAND_REDO) await doRedo();
    else if (c & COMMAND_FILL) await doFill();
    else if (c & COMMAND_DUMP) await doDump();
    else if (c & COMMAND_READ_META) await doReadMetadata();
    else if (c & COMMAND_WRITE_META) await doWriteMetadata();
    else if (c & COMMAND_DUMP_META) await doDumpMetadata();
    else if (c & COMMAND_CLONE) await doClone();
    else if (c & COMMAND_VIRUS_SCAN) retval = await doVirusScanCommand();
  } catch (err) {
    if (err instanceof VixDiskLibError) {
      process.stderr.write(`Error: [vixdisksample] ${err.vixError.toString(16)} ${err.vixCode} ${VixDiskLib_GetErrorText(err)}\n  ${err.message}\n`);
    } else {
      process.stderr.write(`Error: [vixdisksample] ${(err as Error)?.stack ?? String(err)}\n`);
    }
    retval = 1;
  }
  if (connected) await VixDiskLib_Disconnect(appGlobals.connection);
  VixDiskLib_Exit();
  return retval;
}

main(process.argv.slice(2)).then((code) => (process.exitCode = code));
