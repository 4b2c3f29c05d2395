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

async function startProcess(): Promise<ChildProcess> {
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
