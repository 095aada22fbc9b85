// C struct layouts for the kernel uAPI, computed with the C rules (natural alignment,
// trailing padding, flexible array members, unions), encoded to and decoded from Buffers.
// Every definition registers itself so the layout test can compare it with the C compiler's.

export type ScalarKind = 'u8' | 's8' | 'u16' | 's16' | 'u32' | 's32' | 'u64' | 's64';

export interface ScalarType<V> {
  readonly kind: 'scalar';
  readonly scalar: ScalarKind;
  readonly size: number;
  readonly align: number;
  readonly __v?: V;
}
export interface ArrayType<V> {
  readonly kind: 'array';
  readonly elem: LayoutType;
  readonly length: number;
  readonly size: number;
  readonly align: number;
  readonly __v?: V;
}
export interface FlexType {
  readonly kind: 'flex';
  readonly elem: LayoutType;
  readonly size: 0;
  readonly align: number;
}

export interface Field {
  readonly name: string;
  readonly offset: number;
  readonly type: LayoutType;
  readonly cPath: string;
}

export interface StructType<V> {
  readonly kind: 'struct';
  /** C type name ("struct vfio_region_info"), or '' for an inline anonymous struct/union. */
  readonly cName: string;
  readonly union: boolean;
  /** Anonymous in C (members reached without a name, like an unnamed union). */
  readonly anonymous: boolean;
  readonly size: number;
  readonly align: number;
  readonly fields: readonly Field[];
  readonly byName: ReadonlyMap<string, Field>;
  readonly __v?: V;
}

export type LayoutType = ScalarType<unknown> | ArrayType<unknown> | FlexType | StructType<unknown>;
type ValueOf<T> =
  T extends ScalarType<infer V>
    ? V
    : T extends ArrayType<infer V>
      ? V
      : T extends StructType<infer V>
        ? V
        : never;
type Members = Record<string, LayoutType>;
export type StructValue<M extends Members> = {
  [K in keyof M as M[K] extends FlexType ? never : K]: ValueOf<M[K]>;
};
export type Value<S> = S extends StructType<infer V> ? V : never;
/** What encode() accepts: any member may be left out (it stays zero). */
export type Init<T> = T extends number | bigint
  ? T
  : T extends readonly unknown[]
    ? T
    : { [K in keyof T]?: Init<T[K]> };

const scalar = <V>(s: ScalarKind, size: number): ScalarType<V> => ({
  kind: 'scalar',
  scalar: s,
  size,
  align: size,
});
export const u8 = scalar<number>('u8', 1);
export const s8 = scalar<number>('s8', 1);
export const u16 = scalar<number>('u16', 2);
export const s16 = scalar<number>('s16', 2);
export const u32 = scalar<number>('u32', 4);
export const s32 = scalar<number>('s32', 4);
export const u64 = scalar<bigint>('u64', 8);
export const s64 = scalar<bigint>('s64', 8);

export function array<T extends LayoutType>(elem: T, length: number): ArrayType<ValueOf<T>[]> {
  return { kind: 'array', elem, length, size: elem.size * length, align: elem.align };
}

/** A flexible array member (`__u8 data[]`): no size of its own, only an offset. */
export function flex(elem: LayoutType): FlexType {
  return { kind: 'flex', elem, size: 0, align: elem.align };
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/** Every named struct defined, for the layout test. */
export const structRegistry: StructType<unknown>[] = [];

function build<M extends Members>(
  cName: string,
  members: M,
  union: boolean,
  anonymous: boolean,
): StructType<StructValue<M>> {
  let offset = 0,
    align = 1,
    size = 0;
  const fields: Field[] = [];
  for (const [name, type] of Object.entries(members)) {
    align = Math.max(align, type.align);
    const at = union ? 0 : alignUp(offset, type.align);
    fields.push({ name, offset: at, type, cPath: name });
    if (union) size = Math.max(size, type.size);
    else offset = at + type.size;
  }
  if (!union) size = offset;
  size = alignUp(size, align);
  const t: StructType<StructValue<M>> = {
    kind: 'struct',
    cName,
    union,
    anonymous,
    size,
    align,
    fields,
    byName: new Map(fields.map((f) => [f.name, f])),
  };
  if (cName) structRegistry.push(t as StructType<unknown>);
  return t;
}

export const struct = <M extends Members>(cName: string, members: M) =>
  build(cName, members, false, false);
export const union = <M extends Members>(cName: string, members: M) =>
  build(cName, members, true, false);
/** An inline struct type with no C name of its own, reached by its member name. */
export const inlineStruct = <M extends Members>(members: M) => build('', members, false, false);
/** An inline union type with no C name of its own, reached by its member name. */
export const inlineUnion = <M extends Members>(members: M) => build('', members, true, false);
/** An unnamed union whose members are reached directly (C11 anonymous member). */
export const anonUnion = <M extends Members>(members: M) => build('', members, true, true);

/** Byte offset of a (possibly nested, dotted) member. */
export function offsetOf(t: StructType<unknown>, path: string): number {
  let type: LayoutType = t,
    off = 0;
  for (const part of path.split('.')) {
    if (type.kind !== 'struct')
      throw new Error(`offsetOf: '${path}' goes through a non-struct member`);
    const f = type.byName.get(part);
    if (!f) throw new Error(`offsetOf: ${t.cName || 'struct'} has no member '${part}'`);
    off += f.offset;
    type = f.type;
  }
  return off;
}

function readScalar(buf: Buffer, off: number, s: ScalarKind): number | bigint {
  switch (s) {
    case 'u8':
      return buf.readUInt8(off);
    case 's8':
      return buf.readInt8(off);
    case 'u16':
      return buf.readUInt16LE(off);
    case 's16':
      return buf.readInt16LE(off);
    case 'u32':
      return buf.readUInt32LE(off);
    case 's32':
      return buf.readInt32LE(off);
    case 'u64':
      return buf.readBigUInt64LE(off);
    case 's64':
      return buf.readBigInt64LE(off);
  }
}

function writeScalar(buf: Buffer, off: number, s: ScalarKind, v: number | bigint): void {
  switch (s) {
    case 'u8':
      buf.writeUInt8(Number(v) & 0xff, off);
      return;
    case 's8':
      buf.writeInt8(Number(v), off);
      return;
    case 'u16':
      buf.writeUInt16LE(Number(v) & 0xffff, off);
      return;
    case 's16':
      buf.writeInt16LE(Number(v), off);
      return;
    case 'u32':
      buf.writeUInt32LE(Number(v) >>> 0, off);
      return;
    case 's32':
      buf.writeInt32LE(Number(v), off);
      return;
    case 'u64':
      buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), off);
      return;
    case 's64':
      buf.writeBigInt64LE(BigInt.asIntN(64, BigInt(v)), off);
      return;
  }
}

function decodeType(buf: Buffer, off: number, type: LayoutType): unknown {
  switch (type.kind) {
    case 'scalar':
      return readScalar(buf, off, type.scalar);
    case 'array':
      return Array.from({ length: type.length }, (_, i) =>
        decodeType(buf, off + i * type.elem.size, type.elem),
      );
    case 'flex':
      return undefined;
    case 'struct': {
      const o: Record<string, unknown> = {};
      for (const f of type.fields)
        if (f.type.kind !== 'flex') o[f.name] = decodeType(buf, off + f.offset, f.type);
      return o;
    }
  }
}

function encodeType(buf: Buffer, off: number, type: LayoutType, v: unknown): void {
  if (v === undefined) return;
  switch (type.kind) {
    case 'scalar':
      writeScalar(buf, off, type.scalar, v as number | bigint);
      return;
    case 'array':
      (v as unknown[]).forEach((e, i) => encodeType(buf, off + i * type.elem.size, type.elem, e));
      return;
    case 'flex':
      return;
    case 'struct':
      for (const f of type.fields)
        encodeType(buf, off + f.offset, f.type, (v as Record<string, unknown>)[f.name]);
  }
}

/** Decode a struct at `off` in `buf`. u64 members come back as bigint. */
export function decode<V>(t: StructType<V>, buf: Buffer, off = 0): V {
  if (off + t.size > buf.length)
    throw new RangeError(
      `decode ${t.cName}: needs ${t.size} bytes at ${off}, buffer has ${buf.length}`,
    );
  return decodeType(buf, off, t) as V;
}

/** Encode into a new zeroed Buffer of sizeof(t) + `extra` bytes (room for a flexible array). */
export function encode<V>(t: StructType<V>, value: Init<V>, extra = 0): Buffer {
  const buf = Buffer.alloc(t.size + extra);
  encodeType(buf, 0, t, value);
  return buf;
}

/** Encode into an existing buffer at `off`. */
export function encodeInto<V>(t: StructType<V>, buf: Buffer, value: Init<V>, off = 0): void {
  encodeType(buf, off, t, value);
}

/** All leaf and nested member paths with their offsets, as C's offsetof would name them. */
export function memberPaths(t: StructType<unknown>): { cPath: string; offset: number }[] {
  const out: { cPath: string; offset: number }[] = [];
  const walk = (type: StructType<unknown>, prefix: string, base: number): void => {
    for (const f of type.fields) {
      const inner = f.type;
      if (inner.kind === 'struct' && !inner.cName && inner.anonymous) {
        walk(inner, prefix, base + f.offset);
        continue;
      }
      const p = prefix + f.name;
      out.push({ cPath: p, offset: base + f.offset });
      if (inner.kind === 'struct' && !inner.cName) walk(inner, `${p}.`, base + f.offset);
    }
  };
  walk(t, '', 0);
  return out;
}
