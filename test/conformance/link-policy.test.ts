/**
 * The policy above the drivers (issue 12 item 3): the PARTIALCHAIN rule is the chain layer's,
 * applied once (disk.ts openLinkIn) for every differencing format, before anything is
 * written; drivers open a child read-write when asked, and learn only the fact
 * `updateIdentityOnWrite`, never `singleLink`, `cowByCaller` or `preserveIdentity`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Disk, DiskError, MemoryNamespace, createChild } from '../../src/index.js';
import { openLink } from '../../src/disk.js';
import { driverByName } from '../../src/formats/registry.js';
import { xorshiftBytes } from '../helpers/prng.js';

const MiB = 2 ** 20;
const FORMATS = ['vmdk', 'vdi', 'vhd', 'vhdx', 'qcow2'];

/** every file of the namespace, byte for byte */
async function snapshot(ns: MemoryNamespace): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const n of ns.names()) {
    const s = await ns.open(n);
    try {
      out.set(n, await s.read(0, await s.size()));
    } finally {
      await s.close();
    }
  }
  return out;
}

async function chainOf(format: string): Promise<{ ns: MemoryNamespace; child: string }> {
  const ns = new MemoryNamespace();
  const base = `/base.${driverByName(format).extensions[0]}`;
  const b = await Disk.create(base, { namespace: ns, format, capacity: 8 * MiB });
  await b.write(MiB, xorshiftBytes(3 * 65536, 7));
  await b.close();
  const c = await createChild(base, undefined, { namespace: ns });
  const child = c.path;
  await c.write(3 * MiB, xorshiftBytes(4096, 8));
  await c.close();
  return { ns, child };
}

for (const format of FORMATS) {
  test(`${format}: a child opened alone read-write is refused once, above the driver, and nothing is written`, async () => {
    const { ns, child } = await chainOf(format);
    const before = await snapshot(ns);
    const partial = (e: unknown) => e instanceof DiskError && e.code === 'PARTIALCHAIN' && e.details.path === child && e.details.field === driverByName(format).parentField;
    await assert.rejects(Disk.open(child, { namespace: ns, singleLink: true }), partial, 'Disk.open singleLink');
    await assert.rejects(openLink(child, { namespace: ns }), partial, 'a link opened without cowByCaller');
    assert.deepEqual(await snapshot(ns), before, 'the refused opens wrote nothing');

    // the driver itself has no such rule: asked for a read-write open, it gives one
    const raw = await driverByName(format).open(ns, child, { readOnly: false });
    try {
      assert.equal(raw.readOnly, false);
      assert.ok(raw.backing(), 'it is a child');
    } finally {
      await raw.close();
    }
    // a caller that does the copy-on-write itself may open it read-write
    const cow = await openLink(child, { namespace: ns, cowByCaller: true });
    assert.equal(cow.readOnly, false);
    await cow.close();
    // read-only alone, and read-write with its chain, stay possible
    await (await Disk.open(child, { namespace: ns, singleLink: true, readOnly: true })).close();
    await (await Disk.open(child, { namespace: ns })).close();
  });
}

for (const format of ['vmdk', 'vhdx']) {
  test(`${format}: updateIdentityOnWrite is a driver fact: the first write renews the identity unless it is false; preserveIdentity maps onto it`, async () => {
    const ns = new MemoryNamespace();
    const name = `/d.${format}`;
    await (await Disk.create(name, { namespace: ns, format, capacity: 4 * MiB })).close();
    const driver = driverByName(format);
    const identityAfterWrite = async (open: () => Promise<{ identity(): string | undefined; write(b: Buffer, o: number): Promise<void>; close(): Promise<void> }>) => {
      const img = await open();
      const before = img.identity();
      await img.write(Buffer.alloc(512, 1), 0);
      const after = img.identity();
      await img.close();
      return { before, after };
    };
    const renewed = await identityAfterWrite(() => driver.open(ns, name, {}));
    assert.notEqual(renewed.after, renewed.before, 'default: renewed');
    const kept = await identityAfterWrite(() => driver.open(ns, name, { updateIdentityOnWrite: false }));
    assert.equal(kept.after, kept.before, 'updateIdentityOnWrite false: kept');
    const viaPolicy = await identityAfterWrite(() => openLink(name, { namespace: ns, preserveIdentity: true }));
    assert.equal(viaPolicy.after, viaPolicy.before, 'preserveIdentity reaches the driver as updateIdentityOnWrite false');
  });
}
