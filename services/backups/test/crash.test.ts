import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { INTERNAL_TOKEN_HEADER } from '@aos/contracts';
import { adminPrincipal, createNamespace, createTestDatabase, infraUrls, internalKeys, removeNamespace, tokenFor, waitFor, type TestNamespace } from '@aos/testkit';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pgRestoreList, seededDatabase, sql, tempDir } from './helpers.js';

/**
 * A real service process is killed (SIGKILL) while pg_dump runs, then started again: the
 * interrupted backup is failed with its event, its temp file removed, its orphaned pg_dump
 * session stopped, and nothing partial is ever listed or served.
 */
const root = fileURLToPath(new URL('../../..', import.meta.url));
const PASSWORD = 'Cr4shTestSecretPw';

let seed: Awaited<ReturnType<typeof seededDatabase>>;
let own: { url: string; drop: () => Promise<void> };
let namespace: TestNamespace;
let dir: string;
let port: number;
let output = '';
const children: ChildProcess[] = [];

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port: p } = srv.address() as net.AddressInfo;
  await new Promise((r) => srv.close(r));
  return p;
}

async function startProcess(extraEnv: Record<string, string> = {}): Promise<ChildProcess> {
  const urls = infraUrls();
  const withPassword = new URL(seed.url);
  withPassword.password = PASSWORD; // the server trusts local connections; the password must still never show up
  const child = spawn(process.execPath, ['--import', 'tsx', 'services/backups/src/main.ts'], {
    cwd: root,
    env: {
      PATH: process.env.PATH, HOME: process.env.HOME, HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'info',
      DATABASE_URL: own.url, NATS_URL: urls.natsUrl, REDIS_URL: urls.redisUrl,
      REDIS_PREFIX: namespace.redisPrefix, BUS_SUBJECT_ROOT: namespace.bus.subjectRoot, BUS_STREAM: namespace.bus.stream, BUS_DLQ_STREAM: namespace.bus.deadLetterStream,
      INTERNAL_TOKEN_PUBLIC_JWK: (await internalKeys()).publicJwk, OUTBOX_POLL_MS: '200',
      BACKUP_DIR: dir, BACKUP_DATABASE_URLS: JSON.stringify({ seed: withPassword.toString() }),
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  child.stdout!.on('data', (c) => { output += c; });
  child.stderr!.on('data', (c) => { output += c; });
  await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/ready`).catch(() => null))?.ok, { timeoutMs: 30_000, message: 'backups process ready' });
  return child;
}

async function call(method: string, path: string, body?: object) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method,
    headers: { [INTERNAL_TOKEN_HEADER]: await tokenFor(adminPrincipal()), ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, json: (await res.json().catch(() => null)) as { data: unknown } | null };
}

async function killAll(): Promise<void> {
  for (const c of children) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await exited;
  }
}

const dumpSessions = () => sql<{ pid: number; wait: string | null }>(seed.url,
  `SELECT pid, wait_event_type AS wait FROM pg_stat_activity WHERE application_name LIKE 'aos-backups-dump-%' AND datname = current_database()`);
const tempFiles = () => readdirSync(dir).filter((f) => f.startsWith('.tmp-'));

beforeAll(async () => {
  seed = await seededDatabase('bkcrash');
  own = await createTestDatabase('bkcrashsvc');
  namespace = createNamespace();
  dir = tempDir('backups-crash');
  port = await freePort();
}, 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await seed?.drop().catch(() => {});
  await own?.drop().catch(() => {});
  await removeNamespace(namespace);
  rmSync(dir, { recursive: true, force: true });
});

describe('a backup process killed mid-dump', () => {
  it('leaves nothing listed; the next start fails the row with its event, removes the temp file and stops the orphaned pg_dump', async () => {
    // pg_dump reads pg_publication, the row counting before it does not: holding this lock
    // stops pg_dump itself, deterministically, after it has started writing its file.
    const holder = new pg.Client({ connectionString: seed.url });
    await holder.connect();
    await holder.query('BEGIN');
    await holder.query('LOCK TABLE pg_catalog.pg_publication IN ACCESS EXCLUSIVE MODE');
    try {
      const first = await startProcess();
      const trig = await call('POST', '/backups/trigger', { database: 'seed' });
      expect(trig.status).toBe(200);
      await waitFor(async () => (await dumpSessions()).some((s) => s.wait === 'Lock'), { timeoutMs: 20_000, message: 'pg_dump blocked mid-dump' });
      expect(tempFiles().length).toBe(1);
      const exited = new Promise((r) => first.once('exit', r));
      first.kill('SIGKILL');
      await exited;

      // Dead process: the row still says running, the temp file and the orphaned pg_dump are still there.
      const [before] = await sql<{ id: number; status: string }>(own.url, `SELECT id, status FROM backups`);
      expect(before!.status).toBe('running');
      expect(tempFiles().length).toBe(1);
      expect((await dumpSessions()).length).toBe(1);

      await startProcess();
      const [after] = await sql<{ status: string; error: string }>(own.url, `SELECT status, error FROM backups WHERE id = ${before!.id}`);
      expect(after).toMatchObject({ status: 'failed' });
      expect(after!.error).toMatch(/interrupted/);
      expect(tempFiles()).toEqual([]);
      await waitFor(async () => (await dumpSessions()).length === 0, { timeoutMs: 10_000, message: 'orphaned pg_dump stopped' });
      const events = await sql(own.url, `SELECT 1 FROM aos_outbox WHERE type = 'backups.backup.failed' AND envelope->'data'->>'backupId' = '${before!.id}'`);
      expect(events.length).toBe(1);
      const listed = await call('GET', '/backups?status=completed');
      expect(listed.json!.data).toEqual([]);
      const row = (await call('GET', '/backups')).json!.data as { filename: string; status: string }[];
      expect(row.map((r) => r.status)).toEqual(['failed']);
      expect((await call('GET', `/backups/${row[0]!.filename}/download`)).status).toBe(404);
      expect(readdirSync(dir).filter((f) => f.endsWith('.dump'))).toEqual([]);
    } finally {
      await holder.query('COMMIT').catch(() => {});
      await holder.end();
    }

    // The restarted process backs up normally.
    const trig = await call('POST', '/backups/trigger', { database: 'seed' });
    const jobId = (trig.json!.data as { job_id: string }).job_id;
    const done = await waitFor(async () => {
      const [r] = await sql<{ filename: string; status: string }>(own.url, `SELECT filename, status FROM backups WHERE job_id = '${jobId}' AND status <> 'running'`);
      return r;
    }, { timeoutMs: 30_000, message: 'backup after restart' });
    expect(done.status).toBe('completed');
    expect(existsSync(join(dir, done.filename))).toBe(true);
    expect(pgRestoreList(join(dir, done.filename))).toContain('TABLE DATA public orders');
    expect(output).not.toContain(PASSWORD);
  }, 120_000);
});

describe('a process killed while pg_restore runs', () => {
  // The watchdog would cancel a restore waiting on a lock; here the lock is what keeps pg_restore running until the kill.
  const noWatchdog = { BACKUP_RESTORE_LOCK_TIMEOUT_MS: '600000' };
  const restoreSessions = () => sql<{ pid: number }>(seed.url, `SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'aos-backups-restore-%'`);
  let filename: string;

  /** Starts a restore that writes (its transaction gets an id), then blocks on a lock of extra.events; kills the process. */
  async function killMidRestore(holder: pg.Client): Promise<number> {
    await killAll();
    await startProcess(noWatchdog);
    if (!filename) {
      const trig = await call('POST', '/backups/trigger', { database: 'seed' });
      const jobId = (trig.json!.data as { job_id: string }).job_id;
      filename = (await waitFor(async () => (await sql<{ filename: string }>(own.url, `SELECT filename FROM backups WHERE job_id = '${jobId}' AND status = 'completed'`))[0]?.filename, { timeoutMs: 30_000 }));
    }
    await sql(seed.url, `INSERT INTO customers (name) VALUES ('after the backup')`);
    await holder.query('BEGIN');
    await holder.query('LOCK TABLE extra.events IN ACCESS SHARE MODE'); // dropped after the constraints: pg_restore has written by then
    const res = await call('POST', `/backups/${filename}/restore`, { confirm: filename });
    expect(res.status).toBe(202);
    const id = (res.json!.data as { id: number }).id;
    await waitFor(async () => (await sql<{ xid: string | null }>(own.url, `SELECT xid FROM backup_restores WHERE id = ${id}`))[0]?.xid, { timeoutMs: 20_000, message: 'restore transaction id recorded' });
    await waitFor(async () => (await sql(seed.url, `SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'aos-backups-restore-%' AND wait_event_type = 'Lock'`)).length > 0, { timeoutMs: 20_000, message: 'pg_restore blocked' });
    await killAll();
    const [row] = await sql<{ status: string }>(own.url, `SELECT status FROM backup_restores WHERE id = ${id}`);
    expect(row!.status).toBe('running');
    expect((await restoreSessions()).length).toBe(1); // the orphaned pg_restore outlives its parent
    return id;
  }

  /** Only once pg_restore has ended: while it runs it holds the locks of what it dropped. */
  const customers = async () => Number((await sql<{ n: string }>(seed.url, 'SELECT count(*)::text AS n FROM customers'))[0]!.n);
  const settledRow = (id: number) => waitFor(async () => (await sql<{ status: string; error: string | null }>(own.url, `SELECT status, error FROM backup_restores WHERE id = ${id} AND status IN ('succeeded', 'failed')`))[0], { timeoutMs: 20_000 });

  it('the next start stops the orphaned pg_restore: its transaction rolls back, the record fails with its event, the database is unchanged', async () => {
    const holder = new pg.Client({ connectionString: seed.url });
    await holder.connect();
    try {
      const id = await killMidRestore(holder);
      await startProcess(noWatchdog);
      expect(await settledRow(id)).toEqual({ status: 'failed', error: 'interrupted: the process stopped during the restore; pg_restore was stopped and its transaction rolled back, the database is unchanged' });
      expect(await restoreSessions()).toEqual([]);
      await holder.query('COMMIT');
      expect(await customers()).toBe(26); // the row added after the backup is still there
      expect((await sql(own.url, `SELECT 1 FROM aos_outbox WHERE type = 'backups.restore.failed' AND envelope->'data'->>'restoreId' = '${id}'`)).length).toBe(1);
    } finally {
      await holder.end();
      await sql(seed.url, `DELETE FROM customers WHERE name = 'after the backup'`);
    }
  }, 120_000);

  it('an orphaned pg_restore that committed after its parent died is recorded as succeeded at the next start', async () => {
    const holder = new pg.Client({ connectionString: seed.url });
    await holder.connect();
    let id: number;
    try {
      id = await killMidRestore(holder);
    } finally {
      await holder.query('COMMIT').catch(() => {});
      await holder.end();
    }
    // Released: the orphan finishes and commits on its own.
    await waitFor(async () => (await restoreSessions()).length === 0, { timeoutMs: 20_000, message: 'orphaned pg_restore finished' });
    expect(await customers()).toBe(25);
    await startProcess(noWatchdog);
    expect(await settledRow(id)).toEqual({ status: 'succeeded', error: null });
    expect((await sql(own.url, `SELECT 1 FROM aos_outbox WHERE type = 'backups.restore.completed' AND envelope->'data'->>'restoreId' = '${id}'`)).length).toBe(1);
    const status = await call('GET', `/backups/restores/${id}`);
    expect(status.json!.data).toMatchObject({ status: 'succeeded' });
    expect(output).not.toContain(PASSWORD);
  }, 120_000);
});
