/**
 * Declarative binary structures: one field table per on-disk record, from which decode,
 * encode and offsetOf are derived. The table's total size is checked against the spec size
 * when the module that defines it loads, so a typo in a field width fails at import time.
 */
import { DiskError } from '../core/errors.js';

export type FieldType =
  | { kind: 'u8' }
  | { kind: 'u16' }
  | { kind: 'u32' }
  | { kind: 'u64' }
  | { kind: 'bytes'; size: number }
  | { kind: 'ascii'; size: number }
  | { kind: 'reserved'; size: number };

export const u8 = { kind: 'u8' } as const;
export const u16 = { kind: 'u16' } as const;
export const u32 = { kind: 'u32' } as const;
export const u64 = { kind: 'u64' } as const;
export const bytes = (size: number) => ({ kind: 'bytes', size }) as const;
export const ascii = (size: number) => ({ kind: 'ascii', size }) as const;
export const reserved = (size: number) => ({ kind: 'reserved', size }) as const;

export interface FieldSpec<N extends string = string> {
  readonly name: N;
  readonly type: FieldType;
  /** a constant the field must hold (magic numbers); checked by decode */
  readonly expect?: number | bigint | string;
}

type ValueOf<T extends FieldType> = T extends { kind: 'u64' }
  ? bigint
  : T extends { kind: 'bytes' }
    ? Buffer
    : T extends { kind: 'ascii' }
      ? string
      : T extends { kind: 'reserved' }
        ? undefined
        : number;

export type StructValue<F extends readonly FieldSpec[]> = {
  [K in F[number] as K['type'] extends { kind: 'reserved' } ? never : K['name']]: ValueOf<K['type']>;
};

function widthOf(t: FieldType): number {
  switch (t.kind) {
    case 'u8':
      return 1;
    case 'u16':
      return 2;
    case 'u32':
      return 4;
    case 'u64':
      return 8;
    default:
      return t.size;
  }
}

export class Struct<F extends readonly FieldSpec[]> {
  readonly size: number;
  private readonly offsets = new Map<string, number>();

  constructor(
    readonly name: string,
    readonly endian: 'le' | 'be',
    readonly fields: F,
    specSize: number,
  ) {
    let at = 0;
    for (const f of fields) {
      this.offsets.set(f.name, at);
      at += widthOf(f.type);
    }
    this.size = at;
    if (at !== specSize) throw new DiskError('INTERNAL', `struct ${name} is ${at} bytes, spec says ${specSize}`);
  }

  offsetOf(field: F[number]['name']): number {
    const o = this.offsets.get(field);
    if (o === undefined) throw new DiskError('INTERNAL', `struct ${this.name} has no field ${field}`);
    return o;
  }

  /** Decode from `buf` at `at`. `path` names the file for errors about expected constants. */
  decode(buf: Buffer, at = 0, path?: string): StructValue<F> {
    if (buf.length - at < this.size) {
      throw new DiskError('CORRUPT', `${this.name} is truncated`, { path, struct: this.name, expected: this.size, found: buf.length - at });
    }
    const le = this.endian === 'le';
    const out: Record<string, unknown> = {};
    let o = at;
    for (const f of this.fields) {
      const t = f.type;
      let v: unknown;
      switch (t.kind) {
        case 'u8':
          v = buf.readUInt8(o);
          break;
        case 'u16':
          v = le ? buf.readUInt16LE(o) : buf.readUInt16BE(o);
          break;
        case 'u32':
          v = le ? buf.readUInt32LE(o) : buf.readUInt32BE(o);
          break;
        case 'u64':
          v = le ? buf.readBigUInt64LE(o) : buf.readBigUInt64BE(o);
          break;
        case 'bytes':
          v = Buffer.from(buf.subarray(o, o + t.size));
          break;
        case 'ascii': {
          const raw = buf.subarray(o, o + t.size);
          const nul = raw.indexOf(0);
          v = raw.subarray(0, nul < 0 ? raw.length : nul).toString('latin1');
          break;
        }
        case 'reserved':
          v = undefined;
          break;
      }
      if (f.expect !== undefined && v !== f.expect) {
        throw new DiskError('INVALIDDISK', `bad ${f.name}`, { path, struct: this.name, field: f.name, expected: f.expect, found: v });
      }
      if (t.kind !== 'reserved') out[f.name] = v;
      o += widthOf(t);
    }
    return out as StructValue<F>;
  }

  /** Encode into a new buffer (or into `into` at `at`). Reserved bytes are zero. */
  encode(value: StructValue<F>, into?: Buffer, at = 0): Buffer {
    const buf = into ?? Buffer.alloc(this.size);
    if (into) buf.fill(0, at, at + this.size);
    const le = this.endian === 'le';
    const rec = value as Record<string, unknown>;
    let o = at;
    for (const f of this.fields) {
      const t = f.type;
      const v = rec[f.name] ?? f.expect;
      switch (t.kind) {
        case 'u8':
          buf.writeUInt8(Number(v ?? 0), o);
          break;
        case 'u16':
          le ? buf.writeUInt16LE(Number(v ?? 0), o) : buf.writeUInt16BE(Number(v ?? 0), o);
          break;
        case 'u32':
          le ? buf.writeUInt32LE(Number(v ?? 0), o) : buf.writeUInt32BE(Number(v ?? 0), o);
          break;
        case 'u64':
          le ? buf.writeBigUInt64LE(BigInt((v as bigint | number | undefined) ?? 0), o) : buf.writeBigUInt64BE(BigInt((v as bigint | number | undefined) ?? 0), o);
          break;
        case 'bytes':
          if (v) (v as Buffer).copy(buf, o, 0, t.size);
          break;
        case 'ascii':
          if (v) buf.write(String(v).slice(0, t.size), o, 'latin1');
          break;
        case 'reserved':
          break;
      }
      o += widthOf(t);
    }
    return buf;
  }
}

export function defineStruct<const F extends readonly FieldSpec[]>(name: string, endian: 'le' | 'be', fields: F, specSize: number): Struct<F> {
  return new Struct(name, endian, fields, specSize);
}
