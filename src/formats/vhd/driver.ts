import { randomUUID } from '../../core/platform.js';
import { VHD_CAPABILITIES } from './layout.js';
import { FOOTER_CHECKSUM_AT, FOOTER_COOKIE, Footer, vhdChecksum } from './structs.js';
import { VHD_PROPERTIES } from './properties.js';
import { DYNAMIC_SPELLINGS, PREALLOCATE_FIXED, defineDriver } from '../common/driver.js';

/**
 * Ours when the footer cookie is at offset 0 (the footer copy of a dynamic or differencing
 * image) or in the last 512 bytes (a fixed image, whose only footer is there) and that footer
 * is a plausible one: a raw disk that merely contains the word elsewhere is not claimed.
 */
function probe(head: Buffer, tail: Buffer): number {
  if (head.length >= 8 && head.toString('latin1', 0, 8) === FOOTER_COOKIE) return 100;
  if (tail.length === 512 && tail.toString('latin1', 0, 8) === FOOTER_COOKIE) {
    const checksumOk = vhdChecksum(tail, FOOTER_CHECKSUM_AT) === tail.readUInt32BE(FOOTER_CHECKSUM_AT);
    const looksFixed = tail.readUInt32BE(Footer.offsetOf('fileFormatVersion')) >>> 16 === 1 && tail.readUInt32BE(Footer.offsetOf('diskType')) === 2;
    if (checksumOk || looksFixed) return 100;
  }
  return 0;
}

export const vhdDriver = defineDriver({
  name: 'vhd',
  description: 'Microsoft Virtual Hard Disk (Virtual PC, Hyper-V, Azure; qemu "vpc"): fixed, dynamic, differencing',
  extensions: ['vhd', 'avhd'],
  qemu: { name: 'vpc', noBacking: true },
  newIdentity: () => randomUUID(),
  createOptions: [
    { name: 'type', description: 'dynamic (default, 2 MiB blocks) or fixed; a child is always differencing' },
    { name: 'chsRounding', description: 'round the size up to a CHS geometry (Virtual PC, qemu-img without force_size); default: exact size' },
    PREALLOCATE_FIXED,
  ],
  capabilities: VHD_CAPABILITIES,
  properties: VHD_PROPERTIES,
  parentField: 'diskType',
  typeSpellings: DYNAMIC_SPELLINGS,
  probe,
  // the code is imported when first run (see qcow2/driver.ts)
  open: async (ns, path, opts) => (await import('./image.js')).VhdImage.open(ns, path, opts),
  create: async (ns, path, opts) => (await import('./create.js')).createVhd(ns, path, opts),
  checkFile: async (ns, path, opts) => (await import('./check.js')).checkVhdFile(ns, path, opts),
});
