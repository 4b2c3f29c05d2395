import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { adminPrincipal, apiKeyPrincipal, createTestDatabase, startTestService, userPrincipal, waitFor, type TestService } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backups } from '../src/db/schema.js';
import { backupEnv } from '../src/domain/backup.js';
import { tryLease } from '../src/domain/lease.js';
import { recoverInterrupted } from '../src/domain/recovery.js';
import { scratchPrefix } from '../src/domain/restore.js';
import { service } from '../src/service.js';
import { missingDatabaseUrl, pgRestoreList, rowCounts, seededDatabase, sql, tempDir } from './helpers.js';

type Svc = TestService<typeof service.schema, typeof service.config>;
interface BackupJson { id: number; created_at: string; filename: string; database: string; status: string; sha256: string | null; size_bytes: number | null; error: string | null; table_counts: Record<string, number> | null; verification: { status: string; tables: { table: string; ok: boolean }[] } | null }

const admin = adminPrincipal();
let svc: Svc;
let seed: Awaited<ReturnType<typeof seededDatabase>>;
let dir: string;
let outside: string;
let canary: string;
const cleanup: (() => Promise<void>)[] = [];

async function trigger(body: object) {
  const res = await svc.inject(admin, { method: 'POST', url: '/backups/trigger', payload: body });
  expect(res.statusCode, res.body).toBe(200);
  return res.json().data as { job_id: string; databases: string[] };
}

async function listAll(query = 'status=all&limit=200'): Promise<BackupJson[]> {
  const res = await svc.inject(admin, { method: 'GET', url: `/backups?${query}` });
  expect(res.statusCode, res.body).toBe(200);
  return res.json().data;
}

/** Waits until every backup row of the job is finished. */
async function finished(jobId: string, n = 1): Promise<BackupJson[]> {
  return waitFor(async () => {
    const rows = await sql<{ id: number; status: string }>(svc.databaseUrl, `SELECT id, status FROM backups WHERE job_id = '${jobId}'`);
    if (rows.length < n || rows.some((r) => r.status === 'running')) return null;
    const all = await listAll();
    return all.filter((b) => rows.some((r) => r.id === b.id));
  }, { timeoutMs: 60_000, message: `job ${jobId}` });
}

beforeAll(async () => {
  seed = await seededDatabase();
  cleanup.push(seed.drop);
  dir = tempDir('backups');
  outside = tempDir('outside');
  canary = join(outside, 'canary.txt');
  writeFileSync(canary, 'do not touch');
  const badRole = new URL(seed.url);
  badRole.username = 'no_such_role_x';
  badRole.password = 's3cretPassw0rd';
  svc = await startTestService(service, {
    env: {
      BACKUP_DIR: dir,
      BACKUP_DATABASE_URLS: JSON.stringify({ seed: seed.url, ghost: missingDatabaseUrl(seed.url), badrole: badRole.toString() }),
      BACKUP_KEEP_LAST: '50',
    },
  });
}, 60_000);

afterAll(async () => {
  await svc?.close();
  for (const c of cleanup) await c().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
  rmSync(outside, { recursive: true, force: true });
});

describe('access', () => {
  it('401 without a principal, 403 for non-admins on writes, 403 for keys without backups:read', async () => {
    expect((await svc.inject(null, { method: 'GET', url: '/backups' })).statusCode).toBe(401);
    const member = userPrincipal({ orgRole: 'owner' });
    for (const [method, url, payload] of [['POST', '/backups/trigger', {}], ['DELETE', '/backups/seed-2026-01-01T00-00-00-000Z.dump', undefined],
      ['GET', '/backups/seed-2026-01-01T00-00-00-000Z.dump/download', undefined], ['POST', '/backups/seed-2026-01-01T00-00-00-000Z.dump/restore', { confirm: 'x' }],
      ['POST', '/backups/seed-2026-01-01T00-00-00-000Z.dump/verify', undefined]] as const) {
      const res = await svc.inject(member, { method, url, payload });
      expect(res.statusCode, `${method} ${url}`).toBe(403);
    }
    const key = apiKeyPrincipal(['tasks:read']);
    const res = await svc.inject(key, { method: 'GET', url: '/backups/stats' });
    expect(res.statusCode).toBe(403);
    expect(res.json().error.code).toBe('SCOPE_REQUIRED');
    expect((await svc.inject(apiKeyPrincipal(['backups:read']), { method: 'GET', url: '/backups' })).statusCode).toBe(200);
  });

  it('rejects unknown databases and unknown body fields with 400', async () => {
    const res = await svc.inject(admin, { method: 'POST', url: '/backups/trigger', payload: { database: 'aos_nope' } });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.code).toBe('VALIDATION_ERROR');
  });
});

describe('backup, verify, restore', () => {
  let done: BackupJson;

  it('dumps a seeded database atomically with size, sha256, counts and a completed event', async () => {
    const job = await trigger({ database: 'seed' });
    expect(job.databases).toEqual(['seed']);
    [done] = (await finished(job.job_id)) as [BackupJson];
    expect(done.status, done.error ?? '').toBe('completed');
    expect(done.filename).toMatch(/^seed-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z\.dump$/);
    const file = join(dir, done.filename);
    const bytes = readFileSync(file);
    expect(done.size_bytes).toBe(bytes.length);
    expect(done.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    expect(bytes.subarray(0, 5).toString()).toBe('PGDMP'); // custom format
    expect(statSync(file).mode & 0o777).toBe(0o600); // dumps hold every service's data
    expect(statSync(join(dir, 'offsite_backup.log')).mode & 0o777).toBe(0o600);
    expect(done.table_counts).toMatchObject({ 'public.customers': 25, 'public.orders': 130, 'public.empty_one': 0, 'extra.events': 7 });
    expect(readdirSync(dir).filter((f) => f.startsWith('.tmp'))).toEqual([]);
    const events = await sql<{ envelope: { data: { filename: string; sha256: string } } }>(svc.databaseUrl,
      `SELECT envelope FROM aos_outbox WHERE type = 'backups.backup.completed'`);
    expect(events.map((e) => e.envelope.data)).toContainEqual(expect.objectContaining({ filename: done.filename, sha256: done.sha256 }));
  });

  it('restores into a fresh database with identical row counts', async () => {
    const fresh = await createTestDatabase('bkfresh');
    cleanup.push(fresh.drop);
    const u = new URL(fresh.url);
    execFileSync('pg_restore', ['--no-owner', '--exit-on-error', '-h', u.hostname, '-p', u.port || '5432', '-U', u.username || 'postgres', '-d', u.pathname.slice(1), join(dir, done.filename)]);
    expect(await rowCounts(fresh.url)).toEqual(await rowCounts(seed.url));
    expect(await rowCounts(fresh.url)).toEqual(done.table_counts);
  });

  it('verify restores into a scratch database, compares counts, drops it and shows the result in the list', async () => {
    const res = await svc.inject(admin, { method: 'POST', url: `/backups/${done.filename}/verify` });
    expect(res.statusCode, res.body).toBe(200);
    const v = res.json().data.verification;
    expect(v.status).toBe('ok');
    expect(v.tables.length).toBeGreaterThanOrEqual(4);
    expect(v.tables.every((t: { ok: boolean }) => t.ok)).toBe(true);
    const scratch = await sql(seed.url, `SELECT datname FROM pg_database WHERE datname LIKE 'aos_verify_${done.id}_%'`);
    expect(scratch).toEqual([]);
    const listed = (await listAll()).find((b) => b.id === done.id)!;
    expect(listed.verification?.status).toBe('ok');
  });

  it('a verify slower than BACKUP_VERIFY_WAIT_MS answers 202 and the result shows in the listing', async () => {
    Object.assign(svc.ctx.config, { BACKUP_VERIFY_WAIT_MS: 0 });
    try {
      const res = await svc.inject(admin, { method: 'POST', url: `/backups/${done.filename}/verify` });
      expect(res.statusCode, res.body).toBe(202);
      expect(res.json().data.verification.status).toBe('running');
      await waitFor(async () => (await listAll()).find((b) => b.id === done.id)?.verification?.status === 'ok', { timeoutMs: 30_000 });
    } finally {
      Object.assign(svc.ctx.config, { BACKUP_VERIFY_WAIT_MS: 20_000 });
    }
  });

  it('verify reports a mismatch when the recorded counts differ from the dump', async () => {
    await sql(svc.databaseUrl, `UPDATE backups SET table_counts = table_counts || '{"public.orders": 131}' WHERE id = ${done.id}`);
    const res = await svc.inject(admin, { method: 'POST', url: `/backups/${done.filename}/verify` });
    expect(res.json().data.verification.status).toBe('mismatch');
    expect(res.json().data.verification.tables.find((t: { table: string }) => t.table === 'public.orders')).toMatchObject({ expected: 131, actual: 130, ok: false });
    await sql(svc.databaseUrl, `UPDATE backups SET table_counts = table_counts || '{"public.orders": 130}' WHERE id = ${done.id}`);
  });

  it('a file changed since the dump fails verification on its checksum and is refused for restore', async () => {
    const file = join(dir, done.filename);
    const original = readFileSync(file);
    const tampered = Buffer.from(original);
    tampered.writeUInt8(tampered.readUInt8(tampered.length - 1) ^ 0xff, tampered.length - 1);
    writeFileSync(file, tampered);
    try {
      const v = await svc.inject(admin, { method: 'POST', url: `/backups/${done.filename}/verify` });
      expect(v.statusCode, v.body).toBe(200);
      expect(v.json().data.verification).toMatchObject({ status: 'error', checksum_ok: false });
      expect(v.json().data.verification.error).toMatch(/checksum mismatch/);
      const before = await rowCounts(seed.url);
      const r = await svc.inject(admin, { method: 'POST', url: `/backups/${done.filename}/restore`, payload: { confirm: done.filename } });
      expect(r.statusCode, r.body).toBe(422);
      expect(r.body).toMatch(/checksum mismatch/);
      expect(await rowCounts(seed.url)).toEqual(before);
    } finally {
      writeFileSync(file, original);
    }
    const again = await svc.inject(admin, { method: 'POST', url: `/backups/${done.filename}/verify` });
    expect(again.json().data.verification).toMatchObject({ status: 'ok', checksum_ok: true });
  });

  it('a second verification of the same backup while one runs → 409', async () => {
    const lease = (await tryLease(svc.ctx, 'verify', done.id))!;
    try {
      const res = await svc.inject(admin, { method: 'POST', url: `/backups/${done.filename}/verify` });
      expect(res.statusCode, res.body).toBe(409);
    } finally {
      await lease.release();
    }
  });

  it('recovery drops scratch databases and ends verifications of dead processes, not of live ones', async () => {
    const prefix = scratchPrefix(backupEnv(svc.ctx));
    const deadScratch = `${prefix}${done.id}_0000dead`;
    const liveScratch = `${prefix}${done.id + 100000}_0000a11e`;
    const foreign = `aos_verify_ffffffff_${done.id}_0000f00d`; // another deployment's, same server
    for (const name of [deadScratch, liveScratch, foreign]) await sql(seed.url, `CREATE DATABASE ${name}`);
    await sql(svc.databaseUrl, `UPDATE backups SET verify_status = 'running' WHERE id = ${done.id}`);
    const live = (await tryLease(svc.ctx, 'verify', done.id + 100000))!;
    try {
      expect(await recoverInterrupted(svc.ctx)).toMatchObject({ verifications: 1, scratchDatabases: 1 });
      const left = (await sql<{ datname: string }>(seed.url, `SELECT datname FROM pg_database WHERE datname IN ('${deadScratch}', '${liveScratch}', '${foreign}')`)).map((r) => r.datname);
      expect(left.sort()).toEqual([foreign, liveScratch].sort());
      const listed = (await listAll()).find((b) => b.id === done.id)!;
      expect(listed.verification).toMatchObject({ status: 'error' });
    } finally {
      await live.release();
      for (const name of [liveScratch, foreign]) await sql(seed.url, `DROP DATABASE IF EXISTS ${name}`);
    }
  });

  it('restore needs the exact filename as confirmation; the queued job brings the database back', async () => {
    await sql(seed.url, `DELETE FROM orders WHERE id > 10; INSERT INTO customers (name) VALUES ('late')`);
    const bad = await svc.inject(admin, { method: 'POST', url: `/backups/${done.filename}/restore`, payload: { confirm: 'yes' } });
    expect(bad.statusCode).toBe(400);
    expect((await rowCounts(seed.url))['public.orders']).toBe(10);
    const res = await svc.inject(admin, { method: 'POST', url: `/backups/${done.filename}/restore`, payload: { confirm: done.filename } });
    expect(res.statusCode, res.body).toBe(202);
    const id = res.json().data.id as number;
    await waitFor(async () => (await svc.inject(admin, { method: 'GET', url: `/backups/restores/${id}` })).json().data.status === 'succeeded', { timeoutMs: 30_000 });
    expect(await rowCounts(seed.url)).toEqual({ 'public.customers': 25, 'public.orders': 130, 'public.empty_one': 0, 'extra.events': 7 });
    const ev = await sql(svc.databaseUrl, `SELECT 1 FROM aos_outbox WHERE type = 'backups.backup.restored'`);
    expect(ev.length).toBe(1);
  });

  it('downloads the file streamed with checksum and content-disposition headers', async () => {
    const res = await svc.inject(admin, { method: 'GET', url: `/backups/${done.filename}/download` });
    expect(res.statusCode).toBe(200);
    expect(res.headers['x-checksum-sha256']).toBe(done.sha256);
    expect(res.headers['content-disposition']).toBe(`attachment; filename="${done.filename}"`);
    expect(createHash('sha256').update(res.rawPayload).digest('hex')).toBe(done.sha256);
  });

  it('stats and logs', async () => {
    const stats = (await svc.inject(apiKeyPrincipal(['backups:read']), { method: 'GET', url: '/backups/stats' })).json().data;
    expect(stats.count).toBeGreaterThanOrEqual(1);
    expect(stats.total_size_bytes).toBeGreaterThanOrEqual(done.size_bytes!);
    expect(stats.newest_age_seconds).toBeGreaterThanOrEqual(0);
    const seedStats = stats.databases.find((d: { database: string }) => d.database === 'seed');
    expect(seedStats.configured).toBe(true);
    expect(seedStats.last_backup.filename).toMatch(/^seed-/);
    expect(stats.databases.map((d: { database: string }) => d.database)).toEqual(expect.arrayContaining(['ghost', 'badrole', 'seed']));
    const logs = (await svc.inject(admin, { method: 'GET', url: '/backups/logs' })).json().data.lines as string[];
    expect(logs.some((l) => l.includes(`OK ${done.filename}`))).toBe(true);
    expect(logs.length).toBeLessThanOrEqual(100);
    // A long log: exactly the last 100 lines, in order.
    appendFileSync(join(dir, 'offsite_backup.log'), Array.from({ length: 150 }, (_, i) => `2026-01-01T00:00:00.000Z filler ${i}\n`).join(''));
    const tail = (await svc.inject(admin, { method: 'GET', url: '/backups/logs' })).json().data.lines as string[];
    expect(tail.length).toBe(100);
    expect(tail[0]).toMatch(/filler 50$/);
    expect(tail[99]).toMatch(/filler 149$/);
  });
});

describe('failures', () => {
  it('a pg_dump of a nonexistent database or role gives failed records and events, no file, secrets redacted', async () => {
    const before = new Set(readdirSync(dir));
    const job = await trigger({ databases: ['ghost', 'badrole'] });
    const rows = await finished(job.job_id, 2);
    expect(rows.map((r) => r.status)).toEqual(['failed', 'failed']);
    for (const r of rows) expect(r.error).toBeTruthy();
    expect(rows.map((r) => r.error).join(' ')).not.toContain('s3cretPassw0rd');
    expect(readdirSync(dir).filter((f) => !before.has(f) && f !== 'offsite_backup.log')).toEqual([]);
    const listed = await listAll('status=completed');
    expect(listed.some((b) => b.database === 'ghost' || b.database === 'badrole')).toBe(false);
    const failedEvents = await sql<{ envelope: { data: { database: string } } }>(svc.databaseUrl, `SELECT envelope FROM aos_outbox WHERE type = 'backups.backup.failed'`);
    expect(failedEvents.map((e) => e.envelope.data.database).sort()).toEqual(['badrole', 'ghost']);
    for (const r of rows) {
      expect((await svc.inject(admin, { method: 'GET', url: `/backups/${r.filename}/download` })).statusCode).toBe(404);
    }
    expect(readFileSync(join(dir, 'offsite_backup.log'), 'utf8')).not.toContain('s3cretPassw0rd');
  });
});

describe('filename safety', () => {
  it('traversal, absolute, encoded separators, NUL and unknown names → 400/404; nothing outside is touched', async () => {
    const rel = `..%2F${encodeURIComponent(outside.split('/').pop()!)}%2Fcanary.txt`;
    const attempts = [
      rel,
      `%2e%2e%2F%2e%2e%2Fetc%2Fpasswd`,
      `%2e%2e`,
      '..',
      encodeURIComponent(canary),
      `%2F${canary.slice(1).split('/').join('%2F')}`,
      'seed-2026-01-01T00-00-00-000Z.dump%00',
      '%00',
      'seed-2026-01-01T00-00-00-000Z.dump',
      `..%5C..%5Cwindows`,
      `seed-2026-01-01T00-00-00-000Z.dump%2F..%2F..%2Fcanary.txt`,
    ];
    for (const name of attempts) {
      for (const [method, url] of [['GET', `/backups/${name}/download`], ['DELETE', `/backups/${name}`], ['POST', `/backups/${name}/verify`]] as const) {
        const res = await svc.inject(admin, { method, url });
        expect([400, 404], `${method} ${url} → ${res.statusCode}`).toContain(res.statusCode);
        expect(res.body).not.toContain('do not touch');
      }
    }
    // Unencoded traversal never reaches a handler either.
    for (const url of ['/backups/../../etc/passwd/download', `/backups/${canary}/download`]) {
      const res = await svc.inject(admin, { method: 'GET', url });
      expect([400, 404]).toContain(res.statusCode);
    }
    expect(readFileSync(canary, 'utf8')).toBe('do not touch');
    expect(existsSync(dirname(canary))).toBe(true);
  });

  it('a symlink or FIFO under a recorded name is never followed: no read, verify or restore of the target; delete removes only the link', async () => {
    const canarySha = createHash('sha256').update('do not touch').digest('hex');
    const linked = 'seed-2030-01-01T00-00-00-000Z.dump';
    const fifo = 'seed-2030-01-01T00-00-00-001Z.dump';
    symlinkSync(canary, join(dir, linked));
    execFileSync('mkfifo', [join(dir, fifo)]);
    for (const filename of [linked, fifo]) {
      await svc.ctx.db.insert(backups).values({ filename, database: 'seed', status: 'completed', trigger: 'manual', sizeBytes: 12, sha256: canarySha, completedAt: new Date(0), tableCounts: {} });
    }
    for (const filename of [linked, fifo]) {
      const dl = await svc.inject(admin, { method: 'GET', url: `/backups/${filename}/download` });
      expect(dl.statusCode, filename).toBe(404);
      expect(dl.body).not.toContain('do not touch');
      const v = await svc.inject(admin, { method: 'POST', url: `/backups/${filename}/verify` });
      expect(v.statusCode, v.body).toBe(200);
      expect(v.json().data.verification).toMatchObject({ status: 'error', checksum_ok: null });
      expect(v.json().data.verification.error).toMatch(/unavailable|not a regular file/);
      const r = await svc.inject(admin, { method: 'POST', url: `/backups/${filename}/restore`, payload: { confirm: filename } });
      expect(r.statusCode, r.body).toBe(404);
      const del = await svc.inject(admin, { method: 'DELETE', url: `/backups/${filename}` });
      expect(del.statusCode, del.body).toBe(200);
      expect(existsSync(join(dir, filename))).toBe(false);
    }
    expect(readFileSync(canary, 'utf8')).toBe('do not touch');
  });

  it('a symlink in place of the backup log is neither read nor written through', async () => {
    const log = join(dir, 'offsite_backup.log');
    const saved = readFileSync(log);
    rmSync(log);
    symlinkSync(canary, log);
    try {
      const res = await svc.inject(admin, { method: 'GET', url: '/backups/logs' });
      expect(res.statusCode).toBe(200);
      expect(res.json().data.lines).toEqual([]);
      const job = await trigger({ database: 'seed' });
      expect((await finished(job.job_id))[0]!.status).toBe('completed');
      expect(readFileSync(canary, 'utf8')).toBe('do not touch');
    } finally {
      rmSync(log);
      writeFileSync(log, saved, { mode: 0o600 });
    }
  });

  it('a file in BACKUP_DIR that was never recorded is not served', async () => {
    const stray = 'seed-2020-01-01T00-00-00-000Z.dump';
    writeFileSync(join(dir, stray), 'stray');
    expect((await svc.inject(admin, { method: 'GET', url: `/backups/${stray}/download` })).statusCode).toBe(404);
    expect((await svc.inject(admin, { method: 'DELETE', url: `/backups/${stray}` })).statusCode).toBe(404);
    expect(existsSync(join(dir, stray))).toBe(true);
  });
});

describe('concurrency and delete', () => {
  it('concurrent triggers produce distinct, valid dumps', async () => {
    const jobs = await Promise.all([1, 2, 3, 4].map(() => trigger({ database: 'seed' })));
    const rows = (await Promise.all(jobs.map((j) => finished(j.job_id)))).flat();
    expect(rows.map((r) => r.status)).toEqual(['completed', 'completed', 'completed', 'completed']);
    expect(new Set(rows.map((r) => r.filename)).size).toBe(4);
    for (const r of rows) {
      const file = join(dir, r.filename);
      expect(pgRestoreList(file)).toContain('TABLE DATA public orders');
      expect(createHash('sha256').update(readFileSync(file)).digest('hex')).toBe(r.sha256);
    }
    expect(readdirSync(dir).filter((f) => f.startsWith('.tmp'))).toEqual([]);
  });

  it('DELETE removes the file and hides it from the default listing', async () => {
    const [latest] = await listAll('status=completed&database=seed&limit=1');
    const res = await svc.inject(admin, { method: 'DELETE', url: `/backups/${latest!.filename}` });
    expect(res.statusCode).toBe(200);
    expect(res.json().data.status).toBe('deleted');
    expect(existsSync(join(dir, latest!.filename))).toBe(false);
    expect((await listAll('limit=200')).some((b) => b.id === latest!.id)).toBe(false);
    expect((await svc.inject(admin, { method: 'DELETE', url: `/backups/${latest!.filename}` })).statusCode).toBe(404);
  });

  it('lists newest first with pagination', async () => {
    const res = await svc.inject(admin, { method: 'GET', url: '/backups?limit=2&offset=1&status=all' });
    const body = res.json();
    expect(body.meta).toMatchObject({ limit: 2, offset: 1 });
    expect(body.meta.total).toBeGreaterThanOrEqual(5);
    const all = await listAll();
    expect(body.data.map((b: BackupJson) => b.id)).toEqual(all.slice(1, 3).map((b) => b.id));
    // Newest first by created_at (then id), as documented: concurrent triggers can take ids out of that order.
    const created = all.map((b) => Date.parse(b.created_at));
    expect([...created].sort((a, b) => b - a)).toEqual(created);
    expect(new Set(all.map((b) => b.id)).size).toBe(all.length);
  });
});

describe('retries and crashes', () => {
  it('the same Idempotency-Key queues one job', async () => {
    const headers = { 'idempotency-key': `k-${Date.now()}` };
    const a = await svc.inject(admin, { method: 'POST', url: '/backups/trigger', payload: { database: 'seed' }, headers });
    const b = await svc.inject(admin, { method: 'POST', url: '/backups/trigger', payload: { database: 'seed' }, headers });
    expect(a.statusCode).toBe(200);
    expect(b.json().data.job_id).toBe(a.json().data.job_id);
    await finished(a.json().data.job_id);
    const rows = await sql(svc.databaseUrl, `SELECT id FROM backups WHERE job_id = '${a.json().data.job_id}'`);
    expect(rows.length).toBe(1);
  });

  it('a file whose row was already marked deleted (crash between the two steps) is removed by recovery', async () => {
    const filename = 'seed-2002-02-02T00-00-00-000Z.dump';
    writeFileSync(join(dir, filename), 'left behind');
    await svc.ctx.db.insert(backups).values({ filename, database: 'seed', status: 'deleted', trigger: 'manual', deletedAt: new Date(), deletedReason: 'manual' });
    expect(await recoverInterrupted(svc.ctx)).toMatchObject({ deletedFiles: 1 });
    expect(existsSync(join(dir, filename))).toBe(false);
  });

  it('recovery fails dumps nobody holds the lease of and removes their temp files; live work of another process is untouched', async () => {
    const [dead] = await svc.ctx.db.insert(backups).values({ filename: 'seed-2001-01-01T00-00-00-000Z.dump', database: 'seed', status: 'running', trigger: 'manual' }).returning();
    const [alive] = await svc.ctx.db.insert(backups).values({ filename: 'seed-2001-01-01T00-00-00-001Z.dump', database: 'seed', status: 'running', trigger: 'manual' }).returning();
    // Another replica's dump in progress: it holds the lease of its row.
    const lease = (await tryLease(svc.ctx, 'dump', alive!.id))!;
    const deadTmp = join(dir, `.tmp-${dead!.id}-abcdef.dump`);
    const aliveTmp = join(dir, `.tmp-${alive!.id}-abcdef.dump`);
    const strayTmp = join(dir, '.tmp-999999-abcdef.dump');
    for (const f of [deadTmp, aliveTmp, strayTmp]) writeFileSync(f, 'partial');
    try {
      expect(await recoverInterrupted(svc.ctx)).toMatchObject({ dumps: 1, tempFiles: 2 });
      const rows = await sql<{ id: number; status: string; error: string }>(svc.databaseUrl, `SELECT id, status, error FROM backups WHERE id IN (${dead!.id}, ${alive!.id}) ORDER BY id`);
      expect(rows.map((r) => r.status)).toEqual(['failed', 'running']);
      expect(rows[0]!.error).toMatch(/interrupted/);
      expect(existsSync(deadTmp)).toBe(false);
      expect(existsSync(strayTmp)).toBe(false);
      expect(existsSync(aliveTmp)).toBe(true);
      const ev = await sql(svc.databaseUrl, `SELECT 1 FROM aos_outbox WHERE type = 'backups.backup.failed' AND envelope->'data'->>'backupId' = '${dead!.id}'`);
      expect(ev.length).toBe(1);
      // A second pass changes nothing (no duplicate event).
      expect(await recoverInterrupted(svc.ctx)).toMatchObject({ dumps: 0, tempFiles: 0 });
    } finally {
      await lease.release();
      rmSync(aliveTmp, { force: true });
      await sql(svc.databaseUrl, `DELETE FROM backups WHERE id = ${alive!.id}`);
    }
  });

});
