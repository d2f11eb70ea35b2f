/** Helpers of the VixDiskLib interop tests (vixdisklib.test.ts, vixdisklib-maintenance.test.ts). */
import assert from 'node:assert/strict';
import * as V from '../../src/compat/vixdisklib.js';
import { describeRun, run } from '../helpers/tools.js';

export const S = V.VIXDISKLIB_SECTOR_SIZE;

export async function qemu(args: string[]): Promise<string> {
  const r = await run('qemu-img', args);
  assert.equal(r.code, 0, describeRun('qemu-img', args, r));
  return r.stdout;
}
export async function qemuIo(path: string, cmd: string): Promise<void> {
  const r = await run('qemu-io', ['-f', 'vmdk', '-c', cmd, path]);
  assert.equal(r.code, 0, describeRun('qemu-io', [cmd, path], r));
}
export const qinfo = async (p: string) => JSON.parse(await qemu(['info', '--output=json', p]));

/** assert that `p` rejects with this VIX name (and its number) */
export async function rejectsVix(p: Promise<unknown>, vixCode: string, label: string): Promise<V.VixDiskLibError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof V.VixDiskLibError, `${label}: a VixDiskLibError, got ${String(err)}`);
    assert.equal(err.vixCode, vixCode, `${label}: ${err.message}`);
    assert.equal(err.vixError, V.VIX_ERRORS[vixCode]!.number, `${label}: number of ${vixCode}`);
    assert.equal(V.vixErrorOf(err), err.vixError);
    return err;
  }
  assert.fail(`${label}: expected ${vixCode}, but it resolved`);
}

export const params = (capacity: number, diskType = V.VIXDISKLIB_DISK_MONOLITHIC_SPARSE, adapterType = V.VIXDISKLIB_ADAPTER_SCSI_LSILOGIC): V.VixDiskLibCreateParams => ({
  diskType,
  adapterType,
  hwVersion: V.VIXDISKLIB_HWVERSION_WORKSTATION_5,
  capacity,
});

export async function session<T>(fn: (cnx: V.VixDiskLibConnection) => Promise<T>): Promise<T> {
  await V.VixDiskLib_Init(1, 0, null, null, null, null);
  const cnx = await V.VixDiskLib_Connect(null);
  try {
    return await fn(cnx);
  } finally {
    await V.VixDiskLib_Disconnect(cnx);
    V.VixDiskLib_Exit();
  }
}
