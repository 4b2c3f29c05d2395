import { escapeLike } from '@aos/db';
import { badRequest } from '@aos/core';
import { csv, Envelope } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { sql, type SQL } from 'drizzle-orm';
import type { PgTable } from 'drizzle-orm/pg-core';
import { AGENT_NAME, SAFE_RELATIVE_PATH } from '../domain/agents.js';
import type { Ctx } from '../service.js';

export const literals = <T extends string>(values: readonly T[]) => Type.Union(values.map((v) => Type.Literal(v)));

/** Serial ids are 32-bit: larger ones are a 400, not a database error. */
export const Id = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2_147_483_647 }) });
export const AgentName = Type.String({ minLength: 1, maxLength: 63, pattern: AGENT_NAME });
export const Slug = Type.String({ minLength: 1, maxLength: 80, pattern: '^[a-z0-9]+(?:-[a-z0-9]+)*$' });

/** ILIKE pattern matching `q` literally. */
export const like = (q: string) => `%${escapeLike(q)}%`;

/** Comma-separated enum filter (`?status=a,b`); an unknown value is a 400, not an empty page. */
export function enumList(value: string | undefined, allowed: readonly string[], field: string): string[] | undefined {
  const items = csv(value);
  const bad = items?.filter((v) => !allowed.includes(v)) ?? [];
  if (bad.length) throw badRequest(`Unknown ${field}: ${bad.join(', ')}`, [{ field, allowed }]);
  return items;
}

export const Deleted = Envelope(Type.Object({ id: Type.Integer(), deleted: Type.Boolean() }));
export const SafePath = Type.String({ minLength: 1, maxLength: 500, pattern: SAFE_RELATIVE_PATH, description: 'relative path of plain segments (no `.`/`..`, no leading `/`)' });

/** `count(*)` of a filtered table. */
export const countOf = async (ctx: Ctx, table: PgTable, cond: SQL | undefined) =>
  ((await ctx.db.select({ n: sql<number>`count(*)::int` }).from(table).where(cond)) as [{ n: number }])[0].n;


/**
 * `meta.total` of a page computed with `count(*) OVER ()` (each row carries `total`): a page
 * past the end has no row to carry it, so `countAll` answers then.
 */
export async function windowTotal(rows: { total?: number }[], p: { offset: number }, countAll: () => Promise<number>): Promise<number> {
  if (rows[0]?.total !== undefined) return rows[0].total;
  return p.offset > 0 ? countAll() : 0;
}
