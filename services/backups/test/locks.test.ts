import { adminPrincipal, waitFor } from '@aos/testkit';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { rowCounts, sql, startBackups } from './helpers.js';

let fx: Awaited<ReturnType<typeof startBackups>>;
let svc: typeof fx.svc;
let seed: typeof fx.seed;

beforeAll(async () => {
  fx = await startBackups('bklocks', (url) => ({ BACKUP_DATABASE_URLS: `seed=${url}` }));
  ({ svc, seed } = fx);
}, 60_000);

afterAll(() => fx?.close());

it('DDL of the backed-up service during a dump is not deadlocked: the counting transaction holds no table locks while pg_dump runs', async () => {
  // pg_dump reads pg_extension before it locks any table: holding this lock parks it there.
  const holder = new pg.Client({ connectionString: seed.url });
  await holder.connect();
  await holder.query('BEGIN');
  await holder.query('LOCK TABLE pg_catalog.pg_extension IN ACCESS EXCLUSIVE MODE');
  let released = false;
  try {
    const res = await svc.inject(adminPrincipal(), { method: 'POST', url: '/backups/trigger', payload: { database: 'seed' } });
    const jobId = res.json().data.job_id as string;
    await waitFor(async () => (await sql(seed.url, `SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'aos-backups-dump-%' AND wait_event_type = 'Lock'`)).length > 0,
      { timeoutMs: 20_000, message: 'pg_dump parked' });
    // A migration of the service arrives now. If anything of ours still held a lock on the
    // table, the ALTER would queue behind it and pg_dump's own lock behind the ALTER: a cycle
    // through our process that Postgres cannot see (both stuck until BACKUP_TIMEOUT_MS).
    await sql(seed.url, `SET lock_timeout = '5s'; ALTER TABLE customers ADD COLUMN note text`);
    await holder.query('COMMIT');
    released = true;
    const [row] = await waitFor(async () => {
      const r = await sql<{ status: string; table_counts: Record<string, number> }>(svc.databaseUrl, `SELECT status, table_counts FROM backups WHERE job_id = '${jobId}' AND status <> 'running'`);
      return r.length ? r : null;
    }, { timeoutMs: 20_000, message: 'backup finished' });
    expect(row!.status).toBe('completed');
    expect(row!.table_counts).toEqual(await rowCounts(seed.url));
  } finally {
    if (!released) await holder.query('ROLLBACK').catch(() => {});
    await holder.end();
  }
});

it('a pg_dump cut off at BACKUP_TIMEOUT_MS fails the backup and its server session is ended at once (it no longer waits in the lock queue)', async () => {
  const holder = new pg.Client({ connectionString: seed.url });
  await holder.connect();
  await holder.query('BEGIN');
  await holder.query('LOCK TABLE pg_catalog.pg_extension IN ACCESS EXCLUSIVE MODE');
  Object.assign(svc.ctx.config, { BACKUP_TIMEOUT_MS: 1_000 });
  try {
    const res = await svc.inject(adminPrincipal(), { method: 'POST', url: '/backups/trigger', payload: { database: 'seed' } });
    const jobId = res.json().data.job_id as string;
    const [row] = await waitFor(async () => {
      const r = await sql<{ status: string; error: string }>(svc.databaseUrl, `SELECT status, error FROM backups WHERE job_id = '${jobId}' AND status <> 'running'`);
      return r.length ? r : null;
    }, { timeoutMs: 20_000, message: 'backup finished' });
    expect(row!.status).toBe('failed');
    expect(row!.error).toMatch(/timed out after 1000 ms/);
    // Within seconds, while the lock is still held: a session left waiting in the lock queue would stay forever.
    // (Under load a pg_dump killed mid-connect can leave a backend that is still starting up for a moment.)
    await waitFor(async () => (await sql(seed.url, `SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'aos-backups-dump-%'`)).length === 0,
      { timeoutMs: 5_000, message: 'the cut-off pg_dump session ended' });
  } finally {
    Object.assign(svc.ctx.config, { BACKUP_TIMEOUT_MS: 1_800_000 });
    await holder.query('ROLLBACK').catch(() => {});
    await holder.end();
  }
});
