/**
 * Values generated from a JSON schema (as the merged OpenAPI document declares it): a valid
 * sample, and a fixed list of hostile variants per type. Deterministic: the same document
 * gives the same cases.
 */

export interface Schema {
  type?: string | string[];
  format?: string;
  pattern?: string;
  enum?: unknown[];
  anyOf?: Schema[];
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  items?: Schema;
  properties?: Record<string, Schema>;
  required?: string[];
  $ref?: string;
  default?: unknown;
  nullable?: boolean;
}

/** A JSON number written as is into the body (`1e309`, `99999999999999999999`): JSON.stringify cannot. */
export class RawNumber {
  constructor(readonly text: string) {}
}

const RAW_TAG = '~rawnumber~';

/** JSON text of a value that may hold RawNumbers. */
export function toJson(value: unknown): string {
  const raws: string[] = [];
  const text = JSON.stringify(value, (_k, v: unknown) => {
    if (v instanceof RawNumber) {
      raws.push(v.text);
      return `${RAW_TAG}${raws.length - 1}${RAW_TAG}`;
    }
    return v;
  });
  return text.replace(new RegExp(`"${RAW_TAG}(\\d+)${RAW_TAG}"`, 'g'), (_m, i: string) => raws[Number(i)]!);
}

export const LONG = 'x'.repeat(100_000);
export const NUL = 'a\u0000b';
export const SQLISH = "' OR 1=1 --";
export const TRAVERSAL = '../../etc/passwd';
export const ENCODED_TRAVERSAL = '%2e%2e%2f%2e%2e%2fetc%2fpasswd';

/** Deeply nested JSON text: `[[[…]]]` or `{"a":{"a":…}}`, `depth` levels. */
export const deepArray = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`;
export const deepObject = (depth: number) => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
/** A value nested `depth` levels (built, not parsed: JSON.stringify handles it iteratively enough for 1k). */
export function nested(depth: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = { a: v };
  return v;
}

/** Resolves `$ref` and collapses `anyOf` of single enums (TypeBox literal unions) into one `enum`. */
export function normalise(schema: Schema, components: Record<string, Schema> = {}): Schema {
  let s = schema;
  for (let i = 0; s.$ref && i < 5; i++) s = components[s.$ref.split('/').pop()!] ?? {};
  if (s.anyOf && s.anyOf.every((b) => b.enum && b.enum.length >= 1)) {
    return { ...s, anyOf: undefined, type: 'string', enum: s.anyOf.flatMap((b) => b.enum!) };
  }
  return s;
}

/** The JSON type a schema accepts first (`['string', 'null']` → string). */
export function typeOf(s: Schema): string | undefined {
  if (s.enum) return typeof s.enum[0] === 'number' ? 'number' : 'string';
  if (Array.isArray(s.type)) return s.type.find((t) => t !== 'null');
  if (s.type) return s.type;
  if (s.properties) return 'object';
  if (s.anyOf) return typeOf(s.anyOf.find((b) => b.type !== 'null') ?? {});
  return undefined;
}

/** Whether `null` is a value of `s` (`nullable: true` is how OpenAPI 3.0 writes `type: [t, 'null']`). */
export const nullable = (s: Schema) => s.nullable === true || (Array.isArray(s.type) && s.type.includes('null')) || !!s.anyOf?.some((b) => b.type === 'null' || b.nullable === true);

const STRING_CANDIDATES = [
  'fuzz', 'fuzz-1', 'fuzz_1', 'fuzz.key-1', 'Fuzz value', 'docs/readme.md', 'readme.md', 'tasks.task.created', '#336699', '#369',
  'pm_fuzz', '/tasks', 'https://example.com/fuzz', 'example.com', 'md', 'admin-fuzz', 'aaaaaaaaaaaa', '1',
];

let unique = 0;

/** A valid value for `s`: of objects, the required properties and the first `optional` others. */
export function sample(s: Schema, components: Record<string, Schema> = {}, optional = 0): unknown {
  s = normalise(s, components);
  if (s.enum) return s.enum[0];
  switch (typeOf(s)) {
    case 'string': {
      unique += 1;
      if (s.format === 'email') return `fuzz${unique}@example.com`;
      if (s.format === 'uuid') return '00000000-0000-4000-8000-000000000001';
      if (s.format === 'date-time') return '2030-01-01T00:00:00.000Z';
      if (s.format === 'date') return '2030-01-01';
      if (s.format === 'uri') return 'https://example.com/fuzz';
      const min = s.minLength ?? 0;
      const max = s.maxLength ?? Infinity;
      const re = s.pattern ? new RegExp(s.pattern, 'u') : null;
      const found = STRING_CANDIDATES.find((c) => c.length >= min && c.length <= max && (!re || re.test(c)));
      return found ?? 'f'.repeat(Math.max(1, min));
    }
    case 'integer':
    case 'number': {
      const min = s.minimum ?? 1;
      return Math.min(Math.max(min, 1), s.maximum ?? Infinity);
    }
    case 'boolean':
      return true;
    case 'array':
      return [sample(s.items ?? {}, components)];
    case 'object': {
      const out: Record<string, unknown> = {};
      const others = Object.keys(s.properties ?? {}).filter((k) => !s.required?.includes(k)).slice(0, optional);
      for (const k of [...(s.required ?? []), ...others]) out[k] = sample(s.properties?.[k] ?? {}, components);
      return out;
    }
    default:
      return 'fuzz';
  }
}

export interface Variant {
  label: string;
  value: unknown;
}

/** Hostile values for a JSON body field of schema `s`. */
export function hostileBodyValues(s: Schema, components: Record<string, Schema> = {}): Variant[] {
  s = normalise(s, components);
  const common: Variant[] = [
    { label: 'null', value: null },
    { label: 'object', value: { $gt: '' } },
  ];
  switch (typeOf(s)) {
    case 'string': {
      const v: Variant[] = [
        ...common,
        { label: 'number', value: 12345 },
        { label: 'array', value: ['a', 'b'] },
        { label: '100k chars', value: LONG },
        { label: 'NUL', value: NUL },
        { label: 'SQL', value: SQLISH },
        { label: 'traversal', value: TRAVERSAL },
        { label: 'encoded traversal', value: ENCODED_TRAVERSAL },
        { label: 'empty', value: '' },
        { label: 'lone surrogate', value: '\ud800x' },
      ];
      if (s.enum) v.push({ label: 'unknown enum', value: 'not_a_member_of_the_enum' });
      if (s.format === 'date-time' || s.format === 'date') v.push({ label: 'bad date', value: '2024-13-45T99:99:99Z' }, { label: 'far date', value: '+275760-09-13T00:00:00.001Z' });
      if (s.format === 'uri') v.push({ label: 'javascript uri', value: 'javascript:alert(1)' }, { label: 'file uri', value: 'file:///etc/passwd' });
      if (s.format === 'email') v.push({ label: 'bad email', value: 'not-an-email' });
      if (s.format === 'uuid') v.push({ label: 'bad uuid', value: 'not-a-uuid' });
      return v;
    }
    case 'integer':
    case 'number':
      return [
        ...common,
        { label: 'string', value: 'abc' },
        { label: '1e309', value: new RawNumber('1e309') },
        { label: '-1e309', value: new RawNumber('-1e309') },
        { label: '20 digits', value: new RawNumber('99999999999999999999') },
        { label: '-1', value: -1 },
        { label: '0', value: 0 },
        { label: '1.5', value: 1.5 },
        { label: '2^31', value: 2 ** 31 },
        { label: '2^53+2', value: new RawNumber('9007199254740994') },
        { label: 'boolean', value: true },
      ];
    case 'boolean':
      return [...common, { label: 'string', value: 'yes' }, { label: 'number', value: 2 }];
    case 'array':
      return [
        ...common,
        { label: 'string', value: 'x' },
        { label: 'wrong item', value: [{ $ne: 1 }] },
        { label: 'null item', value: [null] },
        { label: '10k items', value: Array.from({ length: 10_000 }, () => sample(s.items ?? {}, components)) },
        { label: 'nested arrays', value: JSON.parse(deepArray(500)) as unknown },
      ];
    case 'object':
      return [
        { label: 'null', value: null },
        { label: 'string', value: 'x' },
        { label: 'array', value: [1] },
        { label: 'nested 500', value: nested(500) },
        { label: 'NUL key', value: { 'a\u0000': 1 } },
        { label: 'NUL value', value: { a: NUL } },
        { label: '1e309 inside', value: { a: new RawNumber('1e309') } },
        { label: '__proto__', value: JSON.parse('{"__proto__":{"polluted":true}}') as unknown },
      ];
    default:
      return [...common, { label: 'string', value: LONG }, { label: 'NUL', value: NUL }];
  }
}

/** Hostile values for a query or path parameter of schema `s`, as raw (already encoded) URL text. */
export function hostileParamValues(s: Schema, components: Record<string, Schema> = {}): Variant[] {
  s = normalise(s, components);
  const strings: Variant[] = [
    { label: 'SQL', value: encodeURIComponent(SQLISH) },
    { label: 'traversal', value: encodeURIComponent(TRAVERSAL) },
    { label: 'encoded traversal', value: '%2e%2e%2f%2e%2e%2fetc%2fpasswd' },
    { label: 'NUL', value: 'a%00b' },
    { label: 'bad encoding', value: '%E0%A4%A' },
    { label: 'lone surrogate', value: '%ED%A0%80' },
    { label: 'unicode', value: encodeURIComponent('ünï©ødé ✓ \u202e') },
  ];
  switch (typeOf(s)) {
    case 'integer':
    case 'number':
      return [
        { label: 'abc', value: 'abc' },
        { label: '-1', value: '-1' },
        { label: '0', value: '0' },
        { label: '1e309', value: '1e309' },
        { label: '20 digits', value: '99999999999999999999' },
        { label: '1.5', value: '1.5' },
        { label: 'hex', value: '0x10' },
        { label: 'empty', value: '' },
        ...strings.slice(0, 4),
      ];
    case 'boolean':
      return [{ label: 'maybe', value: 'maybe' }, { label: 'empty', value: '' }, { label: '2', value: '2' }, strings[0]!];
    default: {
      const v: Variant[] = [...strings, { label: 'empty', value: '' }, { label: '-1', value: '-1' }, { label: '1e309', value: '1e309' }];
      if (s.enum) v.push({ label: 'unknown enum', value: 'not_a_member' });
      if (s.format === 'date-time') v.push({ label: 'bad date', value: '2024-13-45T99%3A99%3A99Z' }, { label: 'far date', value: '%2B275760-09-13T00%3A00%3A00.001Z' });
      if (s.format === 'uuid') v.push({ label: 'bad uuid', value: 'not-a-uuid' });
      return v;
    }
  }
}
