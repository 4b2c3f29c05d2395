import type pg from 'pg';
import type { Ctx } from '../service.js';
import { connect } from './pg.js';

/**
 * Liveness of long work (a dump, a verification) across processes and replicas: the worker
 * holds a session advisory lock keyed by the backup row on a dedicated connection to the
 * service database for as long as the work runs. The lock disappears with the connection,
 * so after a crash (or a kill) the next start sees at once which `running` rows are dead.
 */
export type LeaseKind = 'dump' | 'verify' | 'restore';

const KEY = `hashtext('aos-backups:' || $1::text), $2::int`;

export interface Lease {
  release(): Promise<void>;
}

const leaseOf = (client: pg.Client): Lease => ({ release: () => client.end().catch(() => {}) });

/** Takes the lease of (kind, id) on a new connection, or null when another live process holds it. */
export async function tryLease(ctx: Ctx, kind: LeaseKind, id: number): Promise<Lease | null> {
  const client = await connect(ctx.config.DATABASE_URL);
  try {
    const { rows } = await client.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock(${KEY}) AS ok`, [kind, id]);
    if (rows[0]?.ok) return leaseOf(client);
  } catch (err) {
    await client.end().catch(() => {});
    throw err;
  }
  await client.end().catch(() => {});
  return null;
}

/**
 * Takes the lease of (kind, id), waiting up to `timeoutMs` for its holder to let go (the request
 * that queued a restore holds it until the job is enqueued); null when it stays held.
 */
export async function waitLease(ctx: Ctx, kind: LeaseKind, id: number, timeoutMs: number): Promise<Lease | null> {
  const client = await connect(ctx.config.DATABASE_URL);
  try {
    await client.query(`SET lock_timeout = ${Math.max(1, Math.floor(timeoutMs))}`);
    await client.query(`SELECT pg_advisory_lock(${KEY})`, [kind, id]);
    await client.query('SET lock_timeout = 0');
    return leaseOf(client);
  } catch (err) {
    await client.end().catch(() => {});
    if ((err as { code?: string }).code === '55P03') return null; // lock_not_available
    throw err;
  }
}

/**
 * Runs `insert` (a statement returning the new row's `id`) and takes that row's lease in the
 * same statement: the row is never visible to other sessions without its lease held.
 */
export async function insertLeased(ctx: Ctx, kind: LeaseKind, insert: { text: string; values: unknown[] }): Promise<{ id: number; lease: Lease }> {
  const client = await connect(ctx.config.DATABASE_URL);
  try {
    const n = insert.values.length;
    const { rows } = await client.query<{ id: number }>(
      `WITH r AS (${insert.text}) SELECT r.id, pg_advisory_lock(hashtext('aos-backups:' || $${n + 1}::text), r.id) FROM r`,
      [...insert.values, kind],
    );
    return { id: rows[0]!.id, lease: leaseOf(client) };
  } catch (err) {
    await client.end().catch(() => {});
    throw err;
  }
}

/**
 * Runs `fn` only when no live process holds the lease of (kind, id), holding it meanwhile so
 * no new work on that row can start. Returns whether `fn` ran.
 */
export async function ifAbandoned(ctx: Ctx, kind: LeaseKind, id: number, fn: () => Promise<void>): Promise<boolean> {
  const client = await ctx.pool.connect();
  try {
    const { rows } = await client.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock(${KEY}) AS ok`, [kind, id]);
    if (!rows[0]?.ok) return false;
    try {
      await fn();
    } finally {
      await client.query(`SELECT pg_advisory_unlock(${KEY})`, [kind, id]).catch(() => {});
    }
    return true;
  } finally {
    client.release();
  }
}
