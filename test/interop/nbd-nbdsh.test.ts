/**
 * Edge cases through libnbd's Python binding (nbdsh), with libnbd's client-side checks turned
 * off so the server sees what a careless client sends: out-of-range reads and writes, unknown
 * flags, unadvertised writes on a read-only export, zero-length requests, block status with
 * REQ_ONE and the qemu:allocation-depth context, and export listing with descriptions.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describeRun, run, skipUnless, tmpDir } from '../helpers/tools.js';
import { makeFixture, startServer, unixUri } from './nbd-support.js';

/** nbdsh runs `python3` from PATH; a pyenv shim may hide Debian's python3-libnbd */
const env = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` };

const SCRIPT = String.raw`
import errno, os, nbd
uri, ro_uri = os.environ['URI'], os.environ['RO_URI']

def fails(errnum, fn, *a, **k):
    try:
        fn(*a, **k)
    except nbd.Error as e:
        assert e.errnum == errnum, (fn.__name__, e.errnum, e.string)
        return
    raise AssertionError('%s did not fail' % fn.__name__)

h = nbd.NBD()
h.set_strict_mode(0)
h.add_meta_context('base:allocation')
h.add_meta_context('qemu:allocation-depth')
h.connect_uri(uri)
size = h.get_size()
assert h.can_meta_context('base:allocation') and h.can_meta_context('qemu:allocation-depth')
fails(errno.EINVAL, h.pread, 512, size)                # starts at the end
fails(errno.EINVAL, h.pread, 1024, size - 512)         # runs past it
fails(errno.ENOSPC, h.pwrite, b'x' * 512, size - 256)  # write past the end
fails(errno.EINVAL, h.pread, 512, 0, 0x100)            # unknown flag
fails(errno.EINVAL, h.zero, 512, 0, nbd.CMD_FLAG_REQ_ONE)   # a flag of another command
assert h.pread(512, 0) == b'\x61' * 512                # the connection is still fine
assert h.pread(0, 0) == b''                            # zero-length read
h.pwrite(b'', 0)                                       # zero-length write
fails(errno.EINVAL, h.block_status, 0, 0, lambda *a: 0)    # zero-length block status

seen = {}
def cb(ctx, offset, entries, err):
    seen.setdefault(ctx, []).append(list(entries))
    return 0
h.block_status(size, 0, cb, nbd.CMD_FLAG_REQ_ONE)
assert all(len(e) == 2 for lists in seen.values() for e in lists), seen   # one extent per context
assert seen['base:allocation'][0] == [65536, 0], seen
assert seen['qemu:allocation-depth'][0][0] >= 65536 and seen['qemu:allocation-depth'][0][1] == 1, seen
seen.clear()
h.block_status(size, 0, cb)
assert sum(seen['base:allocation'][0][0::2]) <= size and len(seen['base:allocation'][0]) > 2, seen
h.flush()
h.shutdown()

# a read-only export: writes are EPERM even when the client ignores the flags
r = nbd.NBD()
r.set_strict_mode(0)
r.connect_uri(ro_uri)
assert r.is_read_only() and r.can_multi_conn()
fails(errno.EPERM, r.pwrite, b'x' * 512, 0)
fails(errno.EPERM, r.trim, 512, 0)
fails(errno.EPERM, r.zero, 512, 0)
r.shutdown()

# listing with descriptions
l = nbd.NBD()
l.set_opt_mode(True)
l.connect_uri(ro_uri)
found = []
l.opt_list(lambda name, desc: found.append((name, desc)) or 0)
assert found == [('ro', 'a read-only view')], found
l.opt_abort()
print('ok')
`;

test('nbdsh: out-of-range and malformed requests get the spec errors and the connection stays; REQ_ONE; zero-length; listing', async (t) => {
  if (!skipUnless(t, 'nbdsh', 'qemu-img', 'qemu-io')) return;
  const dir = (await tmpDir(t)).path;
  const fx = await makeFixture(dir, 'qcow2');
  const rw = await startServer(t, { images: [{ path: fx.path }], listen: { socket: join(dir, 'rw.sock') } });
  const ro = await startServer(t, { images: [{ path: fx.model, name: 'ro', description: 'a read-only view' }], listen: { socket: join(dir, 'ro.sock') }, readOnly: true });
  const args = ['-c', SCRIPT];
  const r = await run('nbdsh', args, { env: { ...env, URI: unixUri(rw), RO_URI: unixUri(ro, 'ro') } });
  assert.equal(r.code, 0, describeRun('nbdsh', ['-c', '<script>'], r));
  assert.match(r.stdout, /ok/);
});
