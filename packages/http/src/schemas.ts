import { Type, type Static, type TSchema, type TUnsafe } from '@sinclair/typebox';

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
 * `S` or `null`. A typed schema gets `nullable: true` rather than a union: with Fastify's type
 * coercion a `[string, null]` union turns a `null` in a body into `""` (and `0` for numbers).
 */
export const Nullable = <S extends TSchema>(s: S): TUnsafe<Static<S> | null> =>
  typeof (s as { type?: unknown }).type === 'string' ? Type.Unsafe<Static<S> | null>({ ...s, nullable: true }) : Type.Unsafe<Static<S> | null>(Type.Union([Type.Null(), s]));
