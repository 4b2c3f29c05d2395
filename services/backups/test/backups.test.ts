import { adminPrincipal, createTestDatabase, startTestService, userPrincipal, waitFor } from '@aos/testkit';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service } from '../src/service.js';

type Svc = Awaited<ReturnType<typeof startTestService<typeof service.schema, typeof service.config>>>;
let svc: Svc;
let seeded: { url: string; drop: () => Promise<void> };
let restoreTarget: { url: string; drop: () => Promise<void> };
const dir = mkdtempSync(join(tmpdir(), 'aos-backups-'));
const outside = join(mkdtempSync(join(tmpdir(), 'aos-outside-')), 'canary.txt');
const remote = join(mkdtempSync(join(tmpdir(), 'aos-remote-')), 'offsite.git');
const admin = adminPrincipal();

async function sql(url: string, text: string) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try { return (await c.query(text)).rows; } finally { await c.end(); }
}

beforeAll(async () => {
  writeFileSync(outside, 'do not touch');
  execFileSync('git', ['init', '--bare', '--quiet', '-b', 'main', remote]);
  seeded = await createTestDatabase('seeded');
  restoreTarget = await createTestDatabase('restore');
  await sql(seeded.url, `CREATE TABLE widgets (id serial primary key, name text); INSERT INTO widgets (name) SELECT 'w' || g FROM generate_series(1, 250) g;
    CREATE SCHEMA extra; CREATE TABLE extra.gadgets (id int); INSERT INTO extra.gadgets SELECT generate_series(1, 42);`);
  const missing = new URL(seeded.url);
  missing.pathname = '/aos_does_not_exist_xyz';
  const badCreds = new URL(seeded.url);
  badCreds.username = 'nobody_here';
  badCreds.password = 'wrong-secret';
  svc = await startTestService(service, {
    env: {
      BACKUP_DIR: dir, BACKUP_GIT_REMOTE: remote, BACKUP_KEEP_LAST: '3', BACKUP_KEEP_DAILY_DAYS: '0',
      BACKUP_DATABASE_URLS: JSON.stringify({ seeded: seeded.url, missing_db: missing.toString(), bad_creds: badCreds.toString(), restore_target: restoreTarget.url }),
    },
  });
});
afterAll(async () => {
  await svc?.close();
  await seeded?.drop();
  await restoreTarget?.drop();
});

const call = (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: object, p = admin) => svc.inject(p, { method, url, ...(payload ? { payload } : {}) });
async function backupOf(database: string) {
  const before = (await call('GET', `/backups?database=${database}&limit=200`)).json().meta.total;
  expect((await call('POST', '/backups/trigger', { database })).statusCode).toBe(202);
  return waitFor(async () => {
    const list = (await call('GET', `/backups?database=${database}&limit=200`)).json();
    const done = list.data.filter((b: { status: string }) => b.status !== 'running');
    return list.meta.total > before && done.length > 0 && list.data[0].status !== 'running' ? list.data[0] : null;
  }, { timeoutMs: 60_000, message: `backup of ${database}` });
}

describe('backups', () => {
  let first: { filename: string; sha256: string; size_bytes: number };

  it('dumps a database atomically with size and SHA-256, and it restores with identical row counts', async () => {
    first = await backupOf('seeded');
    expect(first).toMatchObject({ status: 'completed', database: 'seeded' });
    expect(first.filename).toMatch(/^seeded-\d{8}T\d{9}Z\.dump$/);
    const files = readdirSync(dir);
    expect(files).toContain(first.filename);
    expect(files.some((f) => f.endsWith('.tmp'))).toBe(false);
    const bytes = readFileSync(join(dir, first.filename));
    expect(bytes.length).toBe(first.size_bytes);
    expect((await import('node:crypto')).createHash('sha256').update(bytes).digest('hex')).toBe(first.sha256);

    const verify = await call('POST', `/backups/${first.filename}/verify`);
    expect(verify.json().data).toMatchObject({ ok: true, tables: 2, mismatches: [] });
    const listed = (await call('GET', '/backups')).json().data.find((b: { filename: string }) => b.filename === first.filename);
    expect(listed.verify_ok).toBe(true);

    execFileSync('pg_restore', ['--no-owner', '--dbname', restoreTarget.url, join(dir, first.filename)]);
    expect(await sql(restoreTarget.url, 'SELECT (SELECT count(*) FROM widgets)::int AS w, (SELECT count(*) FROM extra.gadgets)::int AS g')).toEqual([{ w: 250, g: 42 }]);
    const events = (await svc.ctx.pool.query("SELECT type FROM aos_outbox WHERE type LIKE 'backups.%'")).rows.map((r) => r.type);
    expect(events).toEqual(expect.arrayContaining(['backups.backup.completed', 'backups.backup.verified']));
  });

  it('streams downloads with the checksum header', async () => {
    const res = await call('GET', `/backups/${first.filename}/download`);
    expect(res.statusCode).toBe(200);
    expect(res.headers['x-checksum-sha256']).toBe(first.sha256);
    expect(res.rawPayload.length).toBe(first.size_bytes);
  });

  it('refuses traversal, absolute, encoded and unknown names without touching anything outside', async () => {
    for (const name of ['..%2F..%2Fetc%2Fpasswd', '%2e%2e%2f%2e%2e%2fcanary.txt', '..', '%2Fetc%2Fpasswd', 'seeded-20260101T000000000Z.dump%00.txt', encodeURIComponent(outside), 'seeded-20990101T000000000Z.dump', 'backup.log']) {
      for (const [method, suffix] of [['GET', '/download'], ['DELETE', ''], ['POST', '/verify']] as const) {
        const res = await call(method, `/backups/${name}${suffix}`);
        expect([400, 404], `${method} ${name}${suffix} → ${res.statusCode}`).toContain(res.statusCode);
      }
    }
    expect(readFileSync(outside, 'utf8')).toBe('do not touch');
    expect(existsSync(join(dir, 'backup.log'))).toBe(true);
  });

  it('a failing pg_dump leaves a failed record and event, and no file', async () => {
    for (const database of ['missing_db', 'bad_creds']) {
      const b = await backupOf(database);
      expect(b.status).toBe('failed');
      expect(b.error).not.toContain('wrong-secret');
      expect(existsSync(join(dir, b.filename))).toBe(false);
    }
    expect(readdirSync(dir).some((f) => f.endsWith('.tmp'))).toBe(false);
    const failed = (await svc.ctx.pool.query("SELECT envelope FROM aos_outbox WHERE type = 'backups.backup.failed'")).rows.map((r) => r.envelope.data.database);
    expect(failed).toEqual(expect.arrayContaining(['missing_db', 'bad_creds']));
    expect((await call('GET', '/backups/logs')).json().data.lines.some((l: string) => l.includes('FAILED'))).toBe(true);
  });

  it('concurrent triggers produce distinct, valid dumps; retention keeps the newest', async () => {
    await Promise.all(Array.from({ length: 4 }, () => call('POST', '/backups/trigger', { database: 'seeded' })));
    await waitFor(async () => (await svc.ctx.pool.query("SELECT count(*)::int AS n FROM backups WHERE database = 'seeded' AND status <> 'running'")).rows[0].n >= 5, { timeoutMs: 90_000 });
    // Retention runs after each backup's offsite push: wait for the last one to settle.
    await waitFor(async () => (await svc.ctx.pool.query("SELECT count(*)::int AS n FROM backups WHERE database = 'seeded' AND status = 'completed'")).rows[0].n === 3, { timeoutMs: 30_000 });
    const rows = (await svc.ctx.pool.query("SELECT filename, status FROM backups WHERE database = 'seeded' ORDER BY id")).rows;
    expect(new Set(rows.map((r) => r.filename)).size).toBe(rows.length);
    const present = rows.filter((r) => r.status === 'completed');
    expect(present.length).toBe(3); // BACKUP_KEEP_LAST
    for (const r of present) execFileSync('pg_restore', ['--list', join(dir, r.filename)], { stdio: 'ignore' });
    for (const r of rows.filter((x) => x.status === 'deleted')) expect(existsSync(join(dir, r.filename))).toBe(false);
  });

  it('pushes each backup offsite and reports whether the newest matches', async () => {
    const status = (await call('GET', '/backups/github-status')).json().data;
    expect(status.configured).toBe(true);
    expect(status.in_sync).toBe(true);
    const log = execFileSync('git', ['--git-dir', remote, 'log', '--format=%s', 'main'], { encoding: 'utf8' });
    expect(log).toContain(status.latest.filename);
  });

  it('deletes and restores only for platform admins; restore needs the confirmation', async () => {
    const user = userPrincipal();
    const [newest] = (await call('GET', '/backups?database=seeded&status=completed')).json().data;
    for (const [method, url] of [['GET', '/backups'], ['POST', '/backups/trigger'], ['GET', `/backups/${newest.filename}/download`], ['DELETE', `/backups/${newest.filename}`]] as const) {
      expect((await call(method, url, method === 'POST' ? {} : undefined, user)).statusCode, url).toBe(403);
    }
    expect((await call('POST', `/backups/${newest.filename}/restore`, { confirm: 'nope' })).statusCode).toBe(400);
    await sql(seeded.url, "DELETE FROM widgets WHERE id > 10");
    const restored = await call('POST', `/backups/${newest.filename}/restore`, { confirm: newest.filename });
    expect(restored.statusCode).toBe(200);
    expect((await sql(seeded.url, 'SELECT count(*)::int AS n FROM widgets'))[0].n).toBe(250);
    expect((await call('DELETE', `/backups/${newest.filename}`)).statusCode).toBe(200);
    expect(existsSync(join(dir, newest.filename))).toBe(false);
    expect((await call('GET', `/backups/${newest.filename}/download`)).statusCode).toBe(404);
    const stats = (await call('GET', '/backups/stats')).json().data;
    expect(stats.count).toBeGreaterThanOrEqual(1);
  });
});
