import type { ExtractTablesWithRelations } from 'drizzle-orm';
import { drizzle, type NodePgDatabase, type NodePgQueryResultHKT } from 'drizzle-orm/node-postgres';
import type { PgDatabase, PgTransaction } from 'drizzle-orm/pg-core';
import type pg from 'pg';

export type Db<S extends Record<string, unknown> = Record<string, never>> = NodePgDatabase<S> & { $client: pg.Pool };

/** Anything queries can run on: the database or a transaction of it. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Executor = PgDatabase<NodePgQueryResultHKT, any, any>;

export type Tx<S extends Record<string, unknown> = Record<string, never>> =
  PgTransaction<NodePgQueryResultHKT, S, ExtractTablesWithRelations<S>>;

export function createDb<S extends Record<string, unknown>>(pool: pg.Pool, schema: S): Db<S> {
  return drizzle(pool, { schema }) as Db<S>;
}

/** Postgres error code of a failed query, if any (e.g. 23505 unique_violation). */
export function pgErrorCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let i = 0; i < 3 && e && typeof e === 'object'; i++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

export const isUniqueViolation = (err: unknown) => pgErrorCode(err) === '23505';
