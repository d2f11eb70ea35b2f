/** Geometry the VMDK writer puts in the DDB (vmdk.md §6; src/formats/vmdk/create.ts vmwareGeometry). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { vmwareGeometry } from '../../src/index.js';

const GiB = 2 ** 30;
const sectors = (bytes: number) => Math.floor(bytes / 512);

test('IDE: 16 heads, 63 sectors, cylinders = floor(sectors / 1008)', () => {
  // the technote example: 5 GiB IDE -> 10402/16/63
  assert.deepEqual(vmwareGeometry(sectors(5 * GiB), 'ide'), { cylinders: 10402, heads: 16, sectors: 63 });
  assert.deepEqual(vmwareGeometry(sectors(GiB), 'ide'), { cylinders: 2080, heads: 16, sectors: 63 });
});

test('IDE: hosted disks clamp cylinders at 16383, ESX ones do not', () => {
  assert.deepEqual(vmwareGeometry(sectors(100 * GiB), 'ide'), { cylinders: 16383, heads: 16, sectors: 63 });
  assert.deepEqual(vmwareGeometry(sectors(100 * GiB), 'ide', true), { cylinders: 208050, heads: 16, sectors: 63 });
});

test('SCSI follows VMware KB 1026266: 64/32 below 1 GiB, 128/32 below 2 GiB, else 255/63', () => {
  // the VMware 16 GiB stream sample: 2088/255/63
  assert.deepEqual(vmwareGeometry(sectors(16 * GiB), 'lsilogic'), { cylinders: 2088, heads: 255, sectors: 63 });
  // 1 GiB minus one sector -> still 64/32
  assert.deepEqual(vmwareGeometry(sectors(GiB) - 1, 'lsilogic'), { cylinders: 1023, heads: 64, sectors: 32 });
  assert.deepEqual(vmwareGeometry(sectors(GiB) - 1, 'buslogic'), { cylinders: 1023, heads: 64, sectors: 32 });
  // 1.5 GiB -> 128/32
  assert.deepEqual(vmwareGeometry(sectors(1.5 * GiB), 'lsilogic'), { cylinders: 768, heads: 128, sectors: 32 });
  // exactly 1 GiB -> 128/32 (the third-party 1 GiB lsilogic template uses 512/128/32)
  assert.deepEqual(vmwareGeometry(sectors(GiB), 'lsilogic'), { cylinders: 512, heads: 128, sectors: 32 });
  // exactly 2 GiB -> 255/63
  assert.deepEqual(vmwareGeometry(sectors(2 * GiB), 'lsilogic'), { cylinders: 261, heads: 255, sectors: 63 });
  // 10 GiB, the descriptor of vmdk.md §2.6
  assert.deepEqual(vmwareGeometry(20971520, 'lsilogic'), { cylinders: 1305, heads: 255, sectors: 63 });
  // no clamp for SCSI
  assert.equal(vmwareGeometry(sectors(8 * 2 ** 40), 'lsilogic').cylinders, Math.floor(sectors(8 * 2 ** 40) / 16065));
});

test('tiny disks get at least one cylinder', () => {
  assert.deepEqual(vmwareGeometry(1, 'ide'), { cylinders: 1, heads: 16, sectors: 63 });
  assert.deepEqual(vmwareGeometry(2048, 'lsilogic'), { cylinders: 1, heads: 64, sectors: 32 });
});
