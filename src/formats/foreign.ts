/**
 * Image formats vdkit does not read but must recognise: without this table their files fall to
 * the raw driver (score 1) and would be shown and converted as raw disks, encrypted headers and
 * all. Detection refuses them with NOTSUPPORTED naming the format; `-f raw` (format: 'raw') is
 * still the explicit way to treat the bytes as a disk.
 *
 * Signatures are the ones QEMU's probes look for (block/*.c bdrv_probe), checked on the first
 * 4 KiB and the last 512 bytes that detection already reads. Not here, as in QEMU: ISO images
 * (QEMU's raw too: the CD001 volume descriptor is data, not a container) and vvfat (a folder,
 * never a file's content).
 */

export interface ForeignFormat {
  /** QEMU's name for the format */
  readonly name: string;
  /** what it is, with QEMU's name in parentheses */
  readonly description: string;
  /** what a user can do instead */
  readonly hint: string;
  matches(head: Buffer, tail: Buffer): boolean;
}

const ascii = (s: string) => Buffer.from(s, 'latin1');
const startsWith = (head: Buffer, sig: Buffer, at = 0) => head.length >= at + sig.length && head.subarray(at, at + sig.length).equals(sig);

const LUKS = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]); // "LUKS\xba\xbe", LUKS1 and LUKS2
const QED = ascii('QED\0');
const QCOW = Buffer.from([0x51, 0x46, 0x49, 0xfb]);
const CONVERT = 'qemu-img convert (or a tool that reads it) makes a qcow2, VMDK or VHDX of it';

export const FOREIGN_FORMATS: readonly ForeignFormat[] = Object.freeze([
  {
    name: 'luks',
    description: 'LUKS encrypted image (luks)',
    hint: 'vdkit has no LUKS decryption; open it with cryptsetup or qemu (key-secret) and convert the plain disk',
    matches: (head: Buffer) => startsWith(head, LUKS),
  },
  {
    name: 'qed',
    description: 'QEMU enhanced disk (qed)',
    hint: CONVERT,
    matches: (head: Buffer) => startsWith(head, QED),
  },
  {
    // version 1 only: the qcow2 driver claims versions 2 and 3 and names any other itself
    name: 'qcow',
    description: 'QEMU copy-on-write version 1 image (qcow)',
    hint: CONVERT,
    matches: (head: Buffer) => startsWith(head, QCOW) && head.length >= 8 && head.readUInt32BE(4) === 1,
  },
  {
    name: 'parallels',
    description: 'Parallels disk image (parallels)',
    hint: CONVERT,
    matches: (head: Buffer) => (startsWith(head, ascii('WithoutFreeSpace')) || startsWith(head, ascii('WithouFreSpacExt'))) && head.length >= 20 && head.readUInt32LE(16) === 2,
  },
  {
    name: 'dmg',
    description: 'Apple disk image (dmg)',
    hint: CONVERT,
    matches: (_head: Buffer, tail: Buffer) => tail.length === 512 && startsWith(tail, ascii('koly')),
  },
  {
    name: 'cloop',
    description: 'compressed loop image (cloop)',
    hint: CONVERT,
    matches: (head: Buffer) => startsWith(head, ascii('#!/bin/sh\n#V2.0 Format\n')),
  },
  {
    name: 'bochs',
    description: 'Bochs disk image (bochs)',
    hint: CONVERT,
    matches: (head: Buffer) => startsWith(head, ascii('Bochs Virtual HD Image\0')),
  },
]);

/** The foreign format whose signature `head`/`tail` carry, if any. */
export function foreignFormat(head: Buffer, tail: Buffer): ForeignFormat | undefined {
  return FOREIGN_FORMATS.find((f) => f.matches(head, tail));
}
