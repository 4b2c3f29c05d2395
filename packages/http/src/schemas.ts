import { badRequest } from '@aos/core';
import { Type, type Static, type TNull, type TSchema, type TUnion } from '@sinclair/typebox';

export const MAX_LIMIT = 200;

/** `?limit=&offset=`; limits above 200 are capped (DESIGN.md), not rejected. */
export const PaginationQuery = {
  limit: Type.Optional(Type.Integer({ minimum: 1, default: 50, description: 'Max items (capped at 200)' })),
  offset: Type.Optional(Type.Integer({ minimum: 0, default: 0 })),
};

export const PageMeta = Type.Object({
  total: Type.Integer(),
  limit: Type.Integer(),
  offset: Type.Integer(),
});
export type PageMeta = Static<typeof PageMeta>;

export interface Page { limit: number; offset: number }

export function page(query: { limit?: number; offset?: number }): Page {
  if (query.offset !== undefined && !Number.isSafeInteger(query.offset)) throw badRequest('offset must be an integer below 2^53', [{ field: 'offset' }]);
  return { limit: Math.min(query.limit ?? 50, MAX_LIMIT), offset: query.offset ?? 0 };
}

export const Envelope = <S extends TSchema>(data: S) => Type.Object({ data });
export const ListEnvelope = <S extends TSchema>(item: S) => Type.Object({ data: Type.Array(item), meta: PageMeta });

export const ok = <T>(data: T) => ({ data });
export const list = <T>(data: T[], total: number, p: Page) => ({ data, meta: { total, limit: p.limit, offset: p.offset } });

/** Comma-separated query values (`?status=todo,done`), trimmed, empties dropped. */
export function csv(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const items = value.split(',').map((s) => s.trim()).filter(Boolean);
  return items.length ? items : undefined;
}

export const IdParam = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2 ** 53 - 1 }) });
/**
 * `s` or null. A schema of one JSON type becomes `type: [t, 'null']` rather than an `anyOf`: with the
 * type coercion Fastify's AJV applies, an `anyOf` whose first branch is a string turns `null` into ""
 * (and one whose first branch is a number turns an out-of-range 0 into null).
 */
export function Nullable<S extends TSchema>(s: S): TUnion<[S, TNull]> {
  if (typeof s.type === 'string' && s.type !== 'null') return { ...s, type: [s.type, 'null'] } as unknown as TUnion<[S, TNull]>;
  return Type.Union([s, Type.Null()]);
}
