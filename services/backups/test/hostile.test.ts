import { Queues } from '@aos/contracts';
import { adminPrincipal, apiKeyPrincipal, userPrincipal, waitFor } from '@aos/testkit';
import type { InjectOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql, startBackups } from './helpers.js';

/** Hostile input on every route: always a 4xx in the error envelope, never a 500, a stack or SQL. */
let fx: Awaited<ReturnType<typeof startBackups>>;
let svc: typeof fx.svc;
let recorded: string;
const admin = adminPrincipal();

beforeAll(async () => {
  fx = await startBackups('bkhostile', (url) => ({ BACKUP_DATABASE_URLS: `seed=${url},copy=${url}` }));
  ({ svc } = fx);
  const res = await svc.inject(admin, { method: 'POST', url: '/backups/trigger', payload: { database: 'seed' } });
  const jobId = res.json().data.job_id as string;
  recorded = (await waitFor(async () => (await sql<{ filename: string }>(svc.databaseUrl, `SELECT filename FROM backups WHERE job_id = '${jobId}' AND status = 'completed'`))[0]?.filename, { timeoutMs: 30_000 }));
}, 60_000);

afterAll(() => fx?.close());

async function expect4xx(opts: InjectOptions, principal = admin) {
  const res = await svc.inject(principal, opts);
  const label = `${opts.method} ${String(opts.url).slice(0, 120)} ${JSON.stringify(opts.payload ?? null).slice(0, 80)} → ${res.statusCode} ${res.body.slice(0, 200)}`;
  expect(res.statusCode, label).toBeGreaterThanOrEqual(400);
  expect(res.statusCode, label).toBeLessThan(500);
  if (res.headers['content-type']?.toString().includes('json')) expect(res.json().error?.code, label).toBeTruthy();
  expect(res.body, label).not.toMatch(/\n\s+at |SELECT |INSERT |UPDATE |node_modules/);
  return res;
}

describe('query strings', () => {
  it('bad pagination and filters on the list → 400', async () => {
    for (const q of ['limit=-1', 'limit=0', 'limit=abc', 'offset=-5', 'offset=99999999999999999999', 'offset=1.5', 'limit=1.5',
      'status=bogus', 'status=completed&status=failed', 'database=../x', "database='%20OR%201=1--", `database=${'a'.repeat(64)}`, 'database=%00']) {
      const res = await expect4xx({ method: 'GET', url: `/backups?${q}` });
      expect(res.statusCode, q).toBe(400);
    }
  });

  it('limits above 200 are capped, huge but valid offsets answer an empty page', async () => {
    expect((await svc.inject(admin, { method: 'GET', url: '/backups?limit=100000' })).json().meta.limit).toBe(200);
    const res = await svc.inject(admin, { method: 'GET', url: '/backups?offset=1000000&limit=200' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ data: [], meta: { limit: 200, offset: 1000000, total: 1 } });
  });
});

describe('trigger bodies', () => {
  // Like every service, scalars are coerced ({ databases: "seed" } is ["seed"]) and unknown fields dropped.
  it('wrong types, duplicates, unknown databases and malformed JSON → 4xx', async () => {
    const payloads: unknown[] = [[], 'seed', 42, { database: 5 }, { databases: [] }, { databases: [1] }, { databases: ['seed', 'seed'] },
      { database: 'x'.repeat(10_000) }, { database: { name: 'seed' } }, { database: '' }, { database: '../../etc' }, { databases: Array.from({ length: 51 }, (_, i) => `d${i}`) },
      { database: "seed'; DROP TABLE backups; --" }];
    for (const payload of payloads) await expect4xx({ method: 'POST', url: '/backups/trigger', payload: payload as object });
    await expect4xx({ method: 'POST', url: '/backups/trigger', payload: '{"database":', headers: { 'content-type': 'application/json' } });
    await expect4xx({ method: 'POST', url: '/backups/trigger', payload: 'database=seed', headers: { 'content-type': 'text/plain' } });
    await expect4xx({ method: 'POST', url: '/backups/trigger', payload: JSON.stringify({ database: 'x'.repeat(2 * 1024 * 1024) }), headers: { 'content-type': 'application/json' } });
    const [n] = await sql<{ n: number }>(svc.databaseUrl, 'SELECT count(*)::int AS n FROM backups');
    expect(n!.n).toBe(1); // nothing was queued by any of them
    expect((await svc.ctx.queues.queue(Queues.backups).getJobCounts('waiting', 'active')).waiting).toBe(0);
  });

  it('Idempotency-Key: too long → 400; reused for a different request → 409; replay answers the first job', async () => {
    await expect4xx({ method: 'POST', url: '/backups/trigger', payload: { database: 'seed' }, headers: { 'idempotency-key': 'k'.repeat(201) } });
    const headers = { 'idempotency-key': `hostile-${Date.now()}` };
    const first = await svc.inject(admin, { method: 'POST', url: '/backups/trigger', payload: { databases: ['seed'] }, headers });
    expect(first.statusCode).toBe(200);
    const replay = await svc.inject(admin, { method: 'POST', url: '/backups/trigger', payload: { database: 'seed' }, headers });
    expect(replay.statusCode).toBe(200);
    expect(replay.json().data.job_id).toBe(first.json().data.job_id);
    const other = await svc.inject(admin, { method: 'POST', url: '/backups/trigger', payload: {}, headers });
    expect(other.statusCode, other.body).toBe(409);
    expect(other.json().error.code).toBe('CONFLICT');
  });
});

describe('filename routes', () => {
  it('odd names, encodings and lengths → 400/404 on download, delete, verify and restore', async () => {
    const names = ['%', '%ZZ', '%C0%AE%C0%AE%2F', '%E2%80%AE', 'seed-2026-01-01T00-00-00-000Z.DUMP', 'SEED-2026-01-01T00-00-00-000Z.dump',
      'seed-9999-99-99T99-99-99-999Z.dump.bak', `${'a'.repeat(64)}-2026-01-01T00-00-00-000Z.dump`, 'x'.repeat(400), "'%20OR%201=1--", '%252e%252e%252fetc%252fpasswd', '.tmp-1-abc.dump', 'offsite_backup.log', '.offsite'];
    for (const name of names) {
      await expect4xx({ method: 'GET', url: `/backups/${name}/download` });
      await expect4xx({ method: 'DELETE', url: `/backups/${name}` });
      await expect4xx({ method: 'POST', url: `/backups/${name}/verify` });
      await expect4xx({ method: 'POST', url: `/backups/${name}/restore`, payload: { confirm: name } });
    }
    const long = await svc.inject(admin, { method: 'GET', url: `/backups/${'x'.repeat(10_000)}/download` });
    expect(long.statusCode).toBeGreaterThanOrEqual(400);
    expect(long.statusCode).toBeLessThan(500);
  });

  it('restore bodies: missing, wrong type, empty, extra fields → 400, the database untouched', async () => {
    for (const payload of [undefined, {}, { confirm: 5 }, { confirm: '' }, { confirm: null }, { confirm: [recorded, recorded] }, [recorded], { confirm: recorded.toUpperCase() }, { confirm: `${recorded} ` }, { confirm: `${recorded}\u0000` }]) {
      const res = await expect4xx({ method: 'POST', url: `/backups/${recorded}/restore`, ...(payload === undefined ? {} : { payload: payload as object }) });
      expect(res.statusCode).toBe(400);
    }
    expect((await sql(svc.databaseUrl, `SELECT 1 FROM aos_outbox WHERE type = 'backups.backup.restored'`)).length).toBe(0);
  });
});

describe('who may do what', () => {
  const writes = () => [
    { method: 'POST', url: '/backups/trigger', payload: { database: 'seed' } },
    { method: 'GET', url: `/backups/${recorded}/download` },
    { method: 'DELETE', url: `/backups/${recorded}` },
    { method: 'POST', url: `/backups/${recorded}/verify` },
    { method: 'POST', url: `/backups/${recorded}/restore`, payload: { confirm: recorded } },
  ] as InjectOptions[];
  const reads = ['/backups', '/backups/stats', '/backups/logs', '/backups/github-status'];

  it('API keys never trigger, download, delete, verify or restore — whatever their scopes', async () => {
    for (const scopes of [['backups:read'], ['backups:write'], ['backups:read', 'backups:write'], ['*']]) {
      for (const opts of writes()) {
        const res = await svc.inject(apiKeyPrincipal(scopes), opts);
        expect(res.statusCode, `${scopes.join(',')} ${opts.method} ${opts.url}`).toBe(403);
      }
    }
    const readOnly = await svc.inject(apiKeyPrincipal(['backups:read']), { method: 'POST', url: '/backups/trigger', payload: {} });
    expect(readOnly.json().error.code).toBe('SCOPE_REQUIRED');
    const writeOnly = await svc.inject(apiKeyPrincipal(['backups:read', 'backups:write']), { method: 'POST', url: '/backups/trigger', payload: {} });
    expect(writeOnly.json().error.code).toBe('FORBIDDEN');
  });

  it('reads need backups:read for keys; members and admins read', async () => {
    for (const url of reads) {
      const noScope = await svc.inject(apiKeyPrincipal(['backups:write', 'tasks:read']), { method: 'GET', url });
      expect(noScope.statusCode, url).toBe(403);
      expect(noScope.json().error.code, url).toBe('SCOPE_REQUIRED');
      expect((await svc.inject(apiKeyPrincipal(['backups:read']), { method: 'GET', url })).statusCode, url).toBe(200);
      expect((await svc.inject(userPrincipal({ orgRole: 'member' }), { method: 'GET', url })).statusCode, url).toBe(200);
      expect((await svc.inject(null, { method: 'GET', url })).statusCode, url).toBe(401);
    }
  });

  it('non-admin users (even org owners) get 403 on every write; nothing changed', async () => {
    for (const opts of writes()) {
      const res = await svc.inject(userPrincipal({ orgRole: 'owner' }), opts);
      expect(res.statusCode, `${opts.method} ${opts.url}`).toBe(403);
    }
    const [row] = await sql<{ status: string }>(svc.databaseUrl, `SELECT status FROM backups WHERE filename = '${recorded}'`);
    expect(row!.status).toBe('completed');
  });
});
