/**
 * The OVF descriptor: written for `ova create` (OVF 1.0 by default, 2.0 on request) and read
 * back for `ova info` and `vm.ova#N`. What is written is what every importer needs and no more:
 * References (one File per disk), DiskSection (capacity in bytes, the streamOptimized format
 * URL, populatedSize), NetworkSection, and one VirtualSystem with OperatingSystemSection and
 * VirtualHardwareSection (System vmx-NN, CPU, memory, one disk controller, the disks, a NIC,
 * firmware as VMware's vmw:Config). RASD elements are written in the CIM schema's order
 * (alphabetical), which the DMTF XSD's xs:sequence requires.
 */
import { DiskError } from '../../core/errors.js';
import { attr, childNamed, childrenNamed, escapeXml, findAll, localName, parseXml, type XmlElement } from './xml.js';

export const OVF_NS = { '1.0': 'http://schemas.dmtf.org/ovf/envelope/1', '2.0': 'http://schemas.dmtf.org/ovf/envelope/2' } as const;
const CIM = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2';
export const STREAM_OPTIMIZED_URL = 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized';

export type OvfVersion = keyof typeof OVF_NS;

export interface OvfVmSettings {
  name: string;
  cpus: number;
  /** MiB */
  memory: number;
  /** CIM OperatingSystem id (ovf:id) and VMware guest id (vmw:osType) */
  os: { id: number; vmwType?: string };
  network: string;
  firmware: 'bios' | 'efi';
  /** VMware virtual hardware version: System's VirtualSystemType vmx-NN */
  hwVersion: number;
  controller: 'scsi' | 'ide';
  ovfVersion: OvfVersion;
}

export interface OvfDiskEntry {
  /** member name in the archive */
  href: string;
  capacity: number;
  /** bytes of the file (undefined while the descriptor's space is being reserved) */
  fileSize?: number;
  populatedSize?: number;
}

/** the number of disks a controller takes: SCSI 15 (unit 7 is the adapter's), one IDE controller 2 */
export const MAX_DISKS = { scsi: 15, ide: 2 } as const;

/** OVF descriptor text for `vm` with `disks` (file sizes as given; absent ones left out) */
export function ovfDescriptor(vm: OvfVmSettings, disks: readonly OvfDiskEntry[]): string {
  const v2 = vm.ovfVersion === '2.0';
  const e = escapeXml;
  const L: string[] = [];
  const ns = OVF_NS[vm.ovfVersion];
  L.push('<?xml version="1.0" encoding="UTF-8"?>');
  L.push(
    `<Envelope xmlns="${ns}" xmlns:ovf="${ns}" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common"` +
      ` xmlns:rasd="${CIM}/CIM_ResourceAllocationSettingData" xmlns:vssd="${CIM}/CIM_VirtualSystemSettingData"` +
      (v2 ? ` xmlns:epasd="${CIM}/CIM_EthernetPortAllocationSettingData" xmlns:sasd="${CIM}/CIM_StorageAllocationSettingData"` : '') +
      ` xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">`,
  );
  L.push('  <References>');
  disks.forEach((d, i) => L.push(`    <File ovf:href="${e(d.href)}" ovf:id="file${i + 1}"${d.fileSize !== undefined ? ` ovf:size="${d.fileSize}"` : ''}/>`));
  L.push('  </References>');
  L.push('  <DiskSection>', '    <Info>Virtual disk information</Info>');
  disks.forEach((d, i) =>
    L.push(
      `    <Disk ovf:capacity="${d.capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk${i + 1}" ovf:fileRef="file${i + 1}" ovf:format="${STREAM_OPTIMIZED_URL}"${d.populatedSize !== undefined ? ` ovf:populatedSize="${d.populatedSize}"` : ''}/>`,
    ),
  );
  L.push('  </DiskSection>');
  L.push('  <NetworkSection>', '    <Info>The list of logical networks</Info>');
  L.push(`    <Network ovf:name="${e(vm.network)}">`, `      <Description>The ${e(vm.network)} network</Description>`, '    </Network>');
  L.push('  </NetworkSection>');
  L.push(`  <VirtualSystem ovf:id="${e(vm.name)}">`, '    <Info>A virtual machine</Info>', `    <Name>${e(vm.name)}</Name>`);
  L.push(`    <OperatingSystemSection ovf:id="${vm.os.id}"${vm.os.vmwType ? ` vmw:osType="${e(vm.os.vmwType)}"` : ''}>`, '      <Info>The kind of installed guest operating system</Info>', '    </OperatingSystemSection>');
  L.push('    <VirtualHardwareSection>', '      <Info>Virtual hardware requirements</Info>');
  L.push('      <System>');
  L.push('        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>', '        <vssd:InstanceID>0</vssd:InstanceID>');
  L.push(`        <vssd:VirtualSystemIdentifier>${e(vm.name)}</vssd:VirtualSystemIdentifier>`, `        <vssd:VirtualSystemType>vmx-${String(vm.hwVersion).padStart(2, '0')}</vssd:VirtualSystemType>`);
  L.push('      </System>');
  let id = 0;
  // one Item: its fields sorted by name, as the CIM schema's sequence orders them
  const item = (tag: string, prefix: string, fields: Record<string, string | number>) => {
    L.push(`      <${tag}>`);
    for (const k of Object.keys(fields).sort()) L.push(`        <${prefix}:${k}>${e(String(fields[k]))}</${prefix}:${k}>`);
    L.push(`      </${tag}>`);
  };
  item('Item', 'rasd', { AllocationUnits: 'hertz * 10^6', Description: 'Number of Virtual CPUs', ElementName: `${vm.cpus} virtual CPU(s)`, InstanceID: ++id, ResourceType: 3, VirtualQuantity: vm.cpus });
  item('Item', 'rasd', { AllocationUnits: 'byte * 2^20', Description: 'Memory Size', ElementName: `${vm.memory}MB of memory`, InstanceID: ++id, ResourceType: 4, VirtualQuantity: vm.memory });
  const controller = ++id;
  if (vm.controller === 'scsi') item('Item', 'rasd', { Address: 0, Description: 'SCSI Controller', ElementName: 'SCSI Controller 0', InstanceID: controller, ResourceSubType: 'lsilogic', ResourceType: 6 });
  else item('Item', 'rasd', { Address: 0, Description: 'IDE Controller', ElementName: 'IDE Controller 0', InstanceID: controller, ResourceType: 5 });
  disks.forEach((_d, i) => {
    // SCSI unit 7 is the adapter's own
    const unit = vm.controller === 'scsi' && i >= 7 ? i + 1 : i;
    item('Item', 'rasd', { AddressOnParent: unit, ElementName: `Hard Disk ${i + 1}`, HostResource: `ovf:/disk/vmdisk${i + 1}`, InstanceID: ++id, Parent: controller, ResourceType: 17 });
  });
  const nic = { AutomaticAllocation: 'true', Connection: vm.network, Description: `E1000 ethernet adapter on "${vm.network}"`, ElementName: 'Network adapter 1', InstanceID: ++id, ResourceSubType: 'E1000', ResourceType: 10 };
  if (v2) item('EthernetPortItem', 'epasd', nic);
  else item('Item', 'rasd', nic);
  L.push(`      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="${vm.firmware}"/>`);
  L.push('    </VirtualHardwareSection>', '  </VirtualSystem>', '</Envelope>', '');
  return L.join('\n');
}

/** What `ova info` shows of a descriptor. */
export interface OvfSummary {
  ovfVersion: OvfVersion | 'unknown';
  name?: string;
  os?: { id?: number; vmwType?: string };
  cpus?: number;
  /** MiB */
  memory?: number;
  hardware?: string;
  firmware?: string;
  networks: string[];
  files: { id: string; href: string; size?: number }[];
  disks: { diskId: string; fileRef?: string; href?: string; capacity: number; populatedSize?: number; format?: string }[];
}

/** "byte * 2^20" and its kin, as a factor; undefined for units vdkit does not know */
export function allocationUnits(text: string | undefined): number | undefined {
  if (text === undefined || text.trim() === 'byte') return 1;
  const m = /^\s*byte\s*\*\s*2\s*\^\s*(\d{1,2})\s*$/.exec(text);
  if (m) return 2 ** Number(m[1]);
  const short: Record<string, number> = { KB: 2 ** 10, MB: 2 ** 20, GB: 2 ** 30, TB: 2 ** 40 };
  return short[text.trim()];
}

const int = (s: string | undefined): number | undefined => (s !== undefined && /^\s*\d{1,16}\s*$/.test(s) ? Number(s) : undefined);

/** Read the parts of a descriptor `ova info` reports; BADDESCRIPTOR when it is not an OVF Envelope. */
export function readOvf(text: string, path: string): OvfSummary {
  const root = parseXml(text, path);
  if (localName(root.name) !== 'Envelope') throw new DiskError('BADDESCRIPTOR', `the OVF descriptor's root is <${root.name}>, not <Envelope>`, { path, field: 'Envelope', found: root.name });
  const nsValues = Object.entries(root.attrs).filter(([k]) => k === 'xmlns' || k.startsWith('xmlns:')).map(([, v]) => v);
  const ovfVersion = (Object.keys(OVF_NS) as OvfVersion[]).find((k) => nsValues.includes(OVF_NS[k])) ?? 'unknown';
  const files = childrenNamed(childNamed(root, 'References'), 'File').map((f) => ({ id: attr(f, 'id') ?? '', href: attr(f, 'href') ?? '', size: int(attr(f, 'size')) }));
  const disks = childrenNamed(childNamed(root, 'DiskSection'), 'Disk').map((d) => {
    const factor = allocationUnits(attr(d, 'capacityAllocationUnits'));
    const cap = int(attr(d, 'capacity'));
    if (factor === undefined || cap === undefined || !Number.isSafeInteger(cap * factor)) {
      throw new DiskError('BADDESCRIPTOR', `disk ${attr(d, 'diskId') ?? '?'}: unreadable capacity`, { path, field: 'capacity', found: `${attr(d, 'capacity')} ${attr(d, 'capacityAllocationUnits') ?? ''}` });
    }
    const fileRef = attr(d, 'fileRef');
    return { diskId: attr(d, 'diskId') ?? '', fileRef, href: files.find((f) => f.id === fileRef)?.href, capacity: cap * factor, populatedSize: int(attr(d, 'populatedSize')), format: attr(d, 'format') };
  });
  const networks = childrenNamed(childNamed(root, 'NetworkSection'), 'Network').map((n) => attr(n, 'name') ?? '');
  const vs = childNamed(root, 'VirtualSystem') ?? findAll(root, 'VirtualSystem')[0];
  const out: OvfSummary = { ovfVersion, networks, files, disks };
  if (!vs) return out;
  out.name = childNamed(vs, 'Name')?.text.trim() ?? attr(vs, 'id');
  const os = childNamed(vs, 'OperatingSystemSection');
  if (os) out.os = { id: int(attr(os, 'id')), vmwType: attr(os, 'osType') };
  const hw = childNamed(vs, 'VirtualHardwareSection');
  out.hardware = findAll(hw ?? vs, 'VirtualSystemType')[0]?.text.trim();
  const field = (item: XmlElement, name: string) => childNamed(item, name)?.text.trim();
  for (const item of [...childrenNamed(hw, 'Item')]) {
    const type = int(field(item, 'ResourceType'));
    const qty = int(field(item, 'VirtualQuantity'));
    if (type === 3) out.cpus = qty;
    if (type === 4 && qty !== undefined) out.memory = Math.round((qty * (allocationUnits(field(item, 'AllocationUnits')) ?? 2 ** 20)) / 2 ** 20);
  }
  for (const c of childrenNamed(hw, 'Config')) if (attr(c, 'key') === 'firmware') out.firmware = attr(c, 'value');
  return out;
}
