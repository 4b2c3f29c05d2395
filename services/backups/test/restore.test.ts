import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Queues } from '@aos/contracts';
import { adminPrincipal, apiKeyPrincipal, userPrincipal, waitFor } from '@aos/testkit';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backups, restores } from '../src/db/schema.js';
import { applyRetention, backupEnv } from '../src/domain/backup.js';
import { tryLease } from '../src/domain/lease.js';
import { recoverInterrupted } from '../src/domain/recovery.js';
import { restoreJobId } from '../src/domain/restores.js';
import { rowCounts, sql, startBackups } from './helpers.js';

/** POST restore answers 202 with a record; a BullMQ job restores; GET /backups/restores/{id} reports the outcome. */
interface RestoreJson { id: number; backup_id: number; filename: string; database: string; status: string; error: string | null; requested_by: { type: string; id: string | null }; started_at: string | null; completed_at: string | null; duration_ms: number | null }

const SEEDED = { 'public.customers': 25, 'public.orders': 130, 'public.empty_one': 0, 'extra.events': 7 };
const admin = adminPrincipal();
let fx: Awaited<ReturnType<typeof startBackups>>;
let svc: typeof fx.svc;
let backup: { id: number; filename: string };
let older: { id: number; filename: string };

async function backupNow(): Promise<{ id: number; filename: string }> {
  const res = await svc.inject(admin, { method: 'POST', url: '/backups/trigger', payload: { database: 'seed' } });
  const jobId = res.json().data.job_id as string;
  return waitFor(async () => (await sql<{ id: number; filename: string }>(svc.databaseUrl, `SELECT id, filename FROM backups WHERE job_id = '${jobId}' AND status = 'completed'`))[0], { timeoutMs: 30_000 });
}

const restore = (filename: string, headers: Record<string, string> = {}) =>
  svc.inject(admin, { method: 'POST', url: `/backups/${filename}/restore`, payload: { confirm: filename }, headers });

async function settled(id: number): Promise<RestoreJson> {
  return waitFor(async () => {
    const res = await svc.inject(admin, { method: 'GET', url: `/backups/restores/${id}` });
    const r = res.json().data as RestoreJson;
    return r.status === 'succeeded' || r.status === 'failed' ? r : null;
  }, { timeoutMs: 30_000, message: `restore ${id} settled` });
}

const events = (type: string, restoreId: number) => sql<{ envelope: { data: Record<string, unknown>; actor: { type: string; id: string } } }>(svc.databaseUrl,
  `SELECT envelope FROM aos_outbox WHERE type = '${type}' AND envelope->'data'->>'restoreId' = '${restoreId}'`);

/** An idle-in-transaction session of the restored service holding a lock on `table` until `release`. */
async function holdLock(table: string) {
  const c = new pg.Client({ connectionString: fx.seed.url });
  await c.connect();
  await c.query('BEGIN');
  await c.query(`LOCK TABLE ${table} IN ACCESS SHARE MODE`);
  return { release: async () => { await c.query('COMMIT'); await c.end(); } };
}

const restoreSessionWaiting = () => waitFor(async () => (await sql(fx.seed.url,
  `SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'aos-backups-restore-%' AND wait_event_type = 'Lock'`)).length > 0, { timeoutMs: 20_000, message: 'pg_restore waiting for a lock' });

beforeAll(async () => {
  fx = await startBackups('bkrestore', (url) => ({ BACKUP_DATABASE_URLS: `seed=${url}`, BACKUP_KEEP_LAST: '50' }));
  ({ svc } = fx);
  older = await backupNow();
  backup = await backupNow();
}, 60_000);

afterAll(() => fx?.close());

describe('asynchronous restore', () => {
  it('answers 202 with a queued record at once; the job restores the database and the record and events say so', async () => {
    await sql(fx.seed.url, `DELETE FROM orders WHERE id > 10; INSERT INTO customers (name) VALUES ('late')`);
    const res = await restore(backup.filename);
    expect(res.statusCode, res.body).toBe(202);
    const queued = res.json().data as RestoreJson;
    expect(queued).toMatchObject({ backup_id: backup.id, filename: backup.filename, database: 'seed', status: 'queued', error: null, requested_by: { type: 'user', id: admin.userId } });
    const done = await settled(queued.id);
    expect(done.status, done.error ?? '').toBe('succeeded');
    expect(done.duration_ms).toBeGreaterThanOrEqual(0);
    expect(await rowCounts(fx.seed.url)).toEqual(SEEDED);
    const [completed] = await events('backups.restore.completed', queued.id);
    expect(completed!.envelope.data).toEqual({ restoreId: queued.id, backupId: backup.id, filename: backup.filename, database: 'seed' });
    expect(completed!.envelope.actor).toEqual({ type: 'user', id: admin.userId });
    expect((await sql(svc.databaseUrl, `SELECT 1 FROM aos_outbox WHERE type = 'backups.backup.restored' AND envelope->'data'->>'backupId' = '${backup.id}'`)).length).toBe(1);
    const listed = (await svc.inject(admin, { method: 'GET', url: '/backups?database=seed' })).json().data.find((b: { id: number }) => b.id === backup.id);
    expect(listed.restored_at).toBe(done.completed_at);
    const all = (await svc.inject(admin, { method: 'GET', url: `/backups/restores?filename=${backup.filename}&status=succeeded` })).json();
    expect(all.data.map((r: RestoreJson) => r.id)).toEqual([queued.id]);
    expect(all.meta.total).toBe(1);
    const log = readFileSync(join(fx.dir, 'offsite_backup.log'), 'utf8');
    expect(log).toContain(`RESTORE QUEUED ${backup.filename} (restore ${queued.id})`);
    expect(log).toContain(`RESTORE OK ${backup.filename} (restore ${queued.id})`);
  });

  it('a restore blocked by a session still using a table fails after the lock timeout, the database unchanged', async () => {
    Object.assign(svc.ctx.config, { BACKUP_RESTORE_LOCK_TIMEOUT_MS: 300 });
    await sql(fx.seed.url, `INSERT INTO customers (name) VALUES ('after the backup')`);
    const holder = await holdLock('orders');
    try {
      const before = await rowCounts(fx.seed.url);
      const res = await restore(backup.filename);
      expect(res.statusCode, res.body).toBe(202);
      const done = await settled(res.json().data.id);
      expect(done.status).toBe('failed');
      expect(done.error).toMatch(/^lock timeout: .*rolled back, the database is unchanged$/);
      await holder.release();
      expect(await rowCounts(fx.seed.url)).toEqual(before);
      const [failed] = await events('backups.restore.failed', done.id);
      expect(failed!.envelope.data).toMatchObject({ restoreId: done.id, backupId: backup.id, database: 'seed', error: done.error });
    } finally {
      Object.assign(svc.ctx.config, { BACKUP_RESTORE_LOCK_TIMEOUT_MS: 10_000 });
      await sql(fx.seed.url, `DELETE FROM customers WHERE name = 'after the backup'`);
    }
  });

  it('a restore cut off at BACKUP_TIMEOUT_MS fails and its server session is ended at once (no locks left behind)', async () => {
    Object.assign(svc.ctx.config, { BACKUP_TIMEOUT_MS: 1_000, BACKUP_RESTORE_LOCK_TIMEOUT_MS: 600_000 });
    await sql(fx.seed.url, `INSERT INTO customers (name) VALUES ('after the backup')`);
    const holder = await holdLock('extra.events'); // pg_restore has written (dropped constraints) when it blocks here
    try {
      const res = await restore(backup.filename);
      expect(res.statusCode, res.body).toBe(202);
      const done = await settled(res.json().data.id);
      expect(done.status).toBe('failed');
      expect(done.error).toMatch(/timed out after 1000 ms.*rolled back, the database is unchanged$/s);
      // Killing pg_restore alone would leave its backend waiting on the lock, holding what it took.
      expect(await sql(fx.seed.url, `SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'aos-backups-restore-%'`)).toEqual([]);
    } finally {
      Object.assign(svc.ctx.config, { BACKUP_TIMEOUT_MS: 1_800_000, BACKUP_RESTORE_LOCK_TIMEOUT_MS: 10_000 });
      await holder.release();
    }
    expect((await rowCounts(fx.seed.url))['public.customers']).toBe(26);
    await sql(fx.seed.url, `DELETE FROM customers WHERE name = 'after the backup'`);
  });

  it('one restore per database: a second request while one runs → 409 naming it; the backup cannot be deleted or pruned meanwhile', async () => {
    const holder = await holdLock('orders');
    let first: RestoreJson;
    try {
      const res = await restore(older.filename);
      expect(res.statusCode, res.body).toBe(202);
      first = res.json().data;
      await restoreSessionWaiting();
      expect((await svc.inject(admin, { method: 'GET', url: `/backups/restores/${first.id}` })).json().data.status).toBe('running');
      for (const filename of [older.filename, backup.filename]) {
        const again = await restore(filename);
        expect(again.statusCode, again.body).toBe(409);
        expect(again.json().error.details).toEqual([{ restore_id: first.id, status: 'running' }]);
      }
      const del = await svc.inject(admin, { method: 'DELETE', url: `/backups/${older.filename}` });
      expect(del.statusCode, del.body).toBe(409);
      // Retention keeping only the newest backup still keeps the older one being restored.
      Object.assign(svc.ctx.config, { BACKUP_KEEP_LAST: 1 });
      try {
        expect(await applyRetention(svc.ctx, 'seed')).toEqual([]);
      } finally {
        Object.assign(svc.ctx.config, { BACKUP_KEEP_LAST: 50 });
      }
    } finally {
      await holder.release();
    }
    expect((await settled(first.id)).status).toBe('succeeded');
    expect(await rowCounts(fx.seed.url)).toEqual(SEEDED);
    const [row] = await sql<{ status: string }>(svc.databaseUrl, `SELECT status FROM backups WHERE id = ${older.id}`);
    expect(row!.status).toBe('completed');
  });

  it('Idempotency-Key: a retry answers the first record (no second restore); the key for another backup → 409; a bad key → 400', async () => {
    const headers = { 'idempotency-key': `restore-${Date.now()}` };
    const a = await restore(backup.filename, headers);
    expect(a.statusCode, a.body).toBe(202);
    const b = await restore(backup.filename, headers);
    expect(b.statusCode, b.body).toBe(202);
    expect(b.json().data.id).toBe(a.json().data.id);
    await settled(a.json().data.id);
    const c = await restore(backup.filename, headers);
    expect(c.json().data).toMatchObject({ id: a.json().data.id, status: 'succeeded' });
    const [n] = await sql<{ n: number }>(svc.databaseUrl, `SELECT count(*)::int AS n FROM backup_restores WHERE idempotency_key IS NOT NULL`);
    expect(n!.n).toBe(1);
    const third = await backupNow();
    const other = await restore(third.filename, headers);
    expect(other.statusCode, other.body).toBe(409);
    for (const bad of ['', 'k'.repeat(201)]) expect((await restore(backup.filename, { 'idempotency-key': bad })).statusCode).toBe(400);
  });

  it('concurrent requests: one restore per database, and one per Idempotency-Key (every retry answers it)', async () => {
    const queue = svc.ctx.queues.queue(Queues.backupRestores);
    await queue.pause(); // the first stays queued while the others arrive
    let ids: number[] = [];
    try {
      const burst = await Promise.all([backup.filename, backup.filename, older.filename, backup.filename].map((f) => restore(f)));
      expect(burst.map((r) => r.statusCode).sort()).toEqual([202, 409, 409, 409]);
      ids.push(burst.find((r) => r.statusCode === 202)!.json().data.id);
      await queue.resume();
      expect((await settled(ids[0]!)).status).toBe('succeeded');
      await queue.pause();
      const headers = { 'idempotency-key': `burst-${Date.now()}` };
      const same = await Promise.all([1, 2, 3, 4].map(() => restore(backup.filename, headers)));
      expect(same.map((r) => r.statusCode)).toEqual([202, 202, 202, 202]);
      ids = [...new Set(same.map((r) => r.json().data.id as number))];
      expect(ids.length).toBe(1);
    } finally {
      await queue.resume();
    }
    expect((await settled(ids[0]!)).status).toBe('succeeded');
  });

  it('a file changed since the dump: 422 at once and nothing recorded; when too large to hash in time, the job refuses it instead', async () => {
    const file = join(fx.dir, backup.filename);
    const original = readFileSync(file);
    const tampered = Buffer.from(original);
    tampered.writeUInt8(tampered.readUInt8(tampered.length - 1) ^ 0xff, tampered.length - 1);
    writeFileSync(file, tampered);
    const [{ n: before }] = await sql<{ n: number }>(svc.databaseUrl, `SELECT count(*)::int AS n FROM backup_restores`) as [{ n: number }];
    try {
      const now = await restore(backup.filename);
      expect(now.statusCode, now.body).toBe(422);
      expect(now.body).toMatch(/checksum mismatch/);
      const [{ n: after }] = await sql<{ n: number }>(svc.databaseUrl, `SELECT count(*)::int AS n FROM backup_restores`) as [{ n: number }];
      expect(after).toBe(before);
      writeFileSync(file, original.subarray(0, original.length - 1));
      expect((await restore(backup.filename)).body).toMatch(/size mismatch/);
      writeFileSync(file, tampered);

      Object.assign(svc.ctx.config, { BACKUP_RESTORE_CHECK_WAIT_MS: 0 });
      await sql(fx.seed.url, `INSERT INTO customers (name) VALUES ('kept')`);
      const later = await restore(backup.filename);
      expect(later.statusCode, later.body).toBe(202);
      const done = await settled(later.json().data.id);
      expect(done.status).toBe('failed');
      expect(done.error).toMatch(/^checksum mismatch: .*nothing was restored$/);
      expect((await rowCounts(fx.seed.url))['public.customers']).toBe(26);
    } finally {
      Object.assign(svc.ctx.config, { BACKUP_RESTORE_CHECK_WAIT_MS: 10_000 });
      writeFileSync(file, original);
      await sql(fx.seed.url, `DELETE FROM customers WHERE name = 'kept'`);
    }
  });

  it('a backup deleted between the request and the job, or a database busy with an older replica\'s restore, fails the record', async () => {
    const victim = await backupNow();
    // The job waits in the paused queue while the backup is deleted.
    await svc.ctx.queues.queue(Queues.backupRestores).pause();
    try {
      const res = await restore(victim.filename);
      expect(res.statusCode, res.body).toBe(202);
      await sql(svc.databaseUrl, `UPDATE backups SET status = 'deleted' WHERE id = ${victim.id}`);
      await svc.ctx.queues.queue(Queues.backupRestores).resume();
      const done = await settled(res.json().data.id);
      expect(done).toMatchObject({ status: 'failed', error: 'the backup was deleted before the restore started; nothing was restored' });
    } finally {
      await svc.ctx.queues.queue(Queues.backupRestores).resume();
    }
    const holder = await svc.ctx.pool.connect();
    try {
      await holder.query(`SELECT pg_advisory_lock(hashtext('aos-backups-restore'), hashtext('seed'))`);
      const res = await restore(backup.filename);
      expect(res.statusCode, res.body).toBe(202);
      expect(await settled(res.json().data.id)).toMatchObject({ status: 'failed', error: 'A restore of seed is already running; nothing was restored' });
    } finally {
      await holder.query(`SELECT pg_advisory_unlock(hashtext('aos-backups-restore'), hashtext('seed'))`);
      holder.release();
    }
  });

  it('refuses (409) the service\'s own database and a database no longer configured; nothing recorded', async () => {
    const env = backupEnv(svc.ctx);
    for (const [name, url] of [['self', svc.databaseUrl], ['gone', null]] as const) {
      const filename = `${name}-2026-01-01T00-00-00-000Z.dump`;
      writeFileSync(join(fx.dir, filename), 'x');
      await svc.ctx.db.insert(backups).values({ filename, database: name, status: 'completed', trigger: 'manual', sizeBytes: 1, sha256: 'a'.repeat(64), completedAt: new Date(0) });
      if (url) env.databases.set(name, url);
      try {
        const res = await restore(filename);
        expect(res.statusCode, res.body).toBe(409);
        expect(res.body).toMatch(name === 'self' ? /own database/ : /no longer configured/);
      } finally {
        env.databases.delete(name);
        rmSync(join(fx.dir, filename));
      }
    }
    expect((await sql(svc.databaseUrl, `SELECT 1 FROM backup_restores WHERE database IN ('self', 'gone')`)).length).toBe(0);
  });
});

describe('restore records', () => {
  it('list: paginated newest first, filters validated; one record: bad ids → 400, unknown → 404; reads need a platform admin', async () => {
    const page = (await svc.inject(admin, { method: 'GET', url: '/backups/restores?limit=2&offset=1' })).json();
    const all = (await svc.inject(admin, { method: 'GET', url: '/backups/restores?limit=200' })).json();
    expect(page.meta).toMatchObject({ limit: 2, offset: 1, total: all.meta.total });
    expect(page.data.map((r: RestoreJson) => r.id)).toEqual(all.data.slice(1, 3).map((r: RestoreJson) => r.id));
    expect(all.data.map((r: RestoreJson) => r.id)).toEqual([...all.data.map((r: RestoreJson) => r.id)].sort((x, y) => y - x));
    expect((await svc.inject(admin, { method: 'GET', url: '/backups/restores?status=failed' })).json().data.every((r: RestoreJson) => r.status === 'failed')).toBe(true);
    for (const q of ['status=done', 'limit=-1', 'database=..%2Fx', 'filename=..%2F..%2Fetc%2Fpasswd', "database='%20OR%201=1--"]) {
      const res = await svc.inject(admin, { method: 'GET', url: `/backups/restores?${q}` });
      expect(res.statusCode, q).toBe(400);
    }
    for (const id of ['abc', '0', '-1', '1.5', '99999999999', '%00', "1%20OR%201=1"]) {
      const res = await svc.inject(admin, { method: 'GET', url: `/backups/restores/${id}` });
      expect(res.statusCode, id).toBe(400);
      expect(res.json().error.code).toBe('VALIDATION_ERROR');
    }
    expect((await svc.inject(admin, { method: 'GET', url: '/backups/restores/2147483647' })).statusCode).toBe(404);
    const id = all.data[0].id as number;
    expect((await svc.inject(apiKeyPrincipal(['tasks:read']), { method: 'GET', url: `/backups/restores/${id}` })).statusCode).toBe(403);
    expect((await svc.inject(null, { method: 'GET', url: '/backups/restores' })).statusCode).toBe(401);
    // Records name who asked: platform admins only (an org owner and an API key with backups:read are refused).
    expect((await svc.inject(userPrincipal({ orgRole: 'owner' }), { method: 'GET', url: `/backups/restores/${id}` })).statusCode).toBe(403);
    expect((await svc.inject(apiKeyPrincipal(['backups:read']), { method: 'GET', url: '/backups/restores' })).statusCode).toBe(403);
    expect((await svc.inject(apiKeyPrincipal(['backups:read', 'backups:write']), { method: 'POST', url: `/backups/${backup.filename}/restore`, payload: { confirm: backup.filename } })).statusCode).toBe(403);
  });
});

describe('recovery of restores', () => {
  it('a queued record whose job is gone fails; a running one whose process died before pg_restore fails; live ones are left alone', async () => {
    const insert = (status: string) => svc.ctx.db.insert(restores).values({
      backupId: backup.id, filename: backup.filename, database: `dead_${status}_${Date.now()}`, status, requestedBy: { tenantId: null, orgId: null, actor: { type: 'system', id: null } }, startedAt: status === 'running' ? new Date() : null,
    }).returning().then((r) => r[0]!);
    const lostJob = await insert('queued');
    const diedEarly = await insert('running');
    const live = await insert('running');
    const waiting = await insert('queued');
    await svc.ctx.queues.queue(Queues.backupRestores).pause();
    await svc.ctx.queues.add(Queues.backupRestores, 'restore', { restoreId: waiting.id }, { jobId: restoreJobId(waiting.id) });
    const lease = (await tryLease(svc.ctx, 'restore', live.id))!;
    try {
      expect((await recoverInterrupted(svc.ctx)).restores).toBe(2);
      const rows = await sql<{ id: number; status: string; error: string | null }>(svc.databaseUrl,
        `SELECT id, status, error FROM backup_restores WHERE id IN (${lostJob.id}, ${diedEarly.id}, ${live.id}, ${waiting.id}) ORDER BY id`);
      expect(rows).toEqual([
        { id: lostJob.id, status: 'failed', error: 'the restore job was lost before it started; nothing was restored' },
        { id: diedEarly.id, status: 'failed', error: 'interrupted before pg_restore started; nothing was restored' },
        { id: live.id, status: 'running', error: null },
        { id: waiting.id, status: 'queued', error: null },
      ]);
      expect((await events('backups.restore.failed', lostJob.id)).length).toBe(1);
      expect((await recoverInterrupted(svc.ctx)).restores).toBe(0); // settled once, one event
    } finally {
      await lease.release();
      await (await svc.ctx.queues.queue(Queues.backupRestores).getJob(restoreJobId(waiting.id)))?.remove();
      await svc.ctx.queues.queue(Queues.backupRestores).resume();
      await sql(svc.databaseUrl, `UPDATE backup_restores SET status = 'failed' WHERE id IN (${live.id}, ${waiting.id})`);
    }
  });
});
