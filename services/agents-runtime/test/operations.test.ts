import { Queues } from '@aos/contracts';
import { adminPrincipal, apiKeyPrincipal, userPrincipal, waitFor } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FactoryPool } from '../src/jobs/factory.js';
import { client, startAgents, type Svc } from './helpers.js';

let svc: Svc;
// Discovery engines with the openai provider fail: nothing listens on port 9.
beforeAll(async () => { svc = await startAgents({ env: { OPENAI_BASE_URL: 'http://127.0.0.1:9/v1', LLM_MAX_ATTEMPTS: '1', LLM_TIMEOUT_MS: '500' } }); });
afterAll(() => svc?.close());

describe('factory workers', () => {
  it('lists workers, resizes the pool live in every process, processes jobs, reports metrics and health', async () => {
    const admin = client(svc, adminPrincipal());
    // A second pool on the same queue and Redis stands in for another replica of the service.
    const replica = new FactoryPool(svc.ctx);
    await replica.init();
    const listed = (await admin.call('GET', '/factory-workers')).json();
    expect(listed.meta.total).toBe(4);
    expect(listed.data.filter((w: { local: boolean }) => w.local)).toHaveLength(2);

    const cfg = await admin.call('PATCH', '/factory-workers/config', { worker_count: 3, max_concurrent: 4 });
    expect(cfg.json().data).toEqual({ worker_count: 3, concurrency: 4 });
    const local = (await admin.call('GET', '/factory-workers')).json().data.filter((w: { local: boolean }) => w.local);
    expect(local).toHaveLength(3);
    expect(local.every((w: { concurrency: number; state: string }) => w.concurrency === 4 && w.state === 'running')).toBe(true);
    // The replica applied the change it received over Redis.
    await waitFor(() => replica.local().length === 3 && replica.local().every((w) => w.concurrency === 4), { message: 'replica resized' });
    await waitFor(async () => (await admin.call('GET', '/factory-workers')).json().meta.total === 6, { message: 'six workers connected' });

    for (let i = 0; i < 6; i++) expect((await admin.call('POST', '/bull-queue/submit', { queue: 'factory', name: 'echo', data: { n: i } })).statusCode).toBe(201);
    await waitFor(async () => (await admin.call('GET', '/factory-workers/stats')).json().data.metrics.completed_total === 6, { message: 'factory processed jobs' });
    const stats = (await admin.call('GET', '/factory-workers/stats')).json().data;
    expect(stats).toMatchObject({ worker_count: 3, concurrency: 4, connected_workers: 6, local_workers: 3, capacity: 24, metrics: { completed_total: 6, failed_total: 0 } });
    expect(stats.processed + replica.local().reduce((n, w) => n + w.processed, 0)).toBe(6);

    expect((await admin.call('PATCH', '/factory-workers/config', { worker_count: 1 })).json().data).toEqual({ worker_count: 1, concurrency: 4 });
    await waitFor(() => replica.local().length === 1, { message: 'replica shrunk' });
    expect((await admin.call('GET', '/factory-workers/health-summary')).json().data).toMatchObject({ healthy: true, running: 1, stopped: 0, redis: 'connected', alerts: [] });
    // No workers: submitted jobs pile up and the backlog raises an alert.
    expect((await admin.call('PATCH', '/factory-workers/config', { worker_count: 0 })).statusCode).toBe(200);
    await waitFor(() => replica.local().length === 0, { message: 'replica emptied' });
    for (let i = 0; i < 11; i++) await admin.call('POST', '/bull-queue/submit', { queue: 'factory', name: 'echo', data: { n: i } });
    expect((await admin.call('GET', '/factory-workers/health-summary')).json().data).toMatchObject({ healthy: false, waiting: 11, connected_workers: 0, alerts: ['backlog: 11 waiting jobs for a capacity of 1'] });
    await admin.call('PATCH', '/factory-workers/config', { worker_count: 2, concurrency: 2 });
    await waitFor(async () => (await admin.call('GET', '/factory-workers/health-summary')).json().data.healthy, { message: 'backlog drained' });

    for (const body of [{}, { worker_count: 33 }, { worker_count: -1 }, { concurrency: 0 }, { concurrency: 2, max_concurrent: 3 }]) {
      expect((await admin.call('PATCH', '/factory-workers/config', body)).statusCode, JSON.stringify(body)).toBe(400);
    }
    for (const p of [userPrincipal(), userPrincipal({ orgRole: 'owner' }), apiKeyPrincipal(['*'])]) {
      const someone = client(svc, p);
      expect((await someone.call('GET', '/factory-workers')).statusCode).toBe(403);
      expect((await someone.call('PATCH', '/factory-workers/config', { worker_count: 5 })).statusCode).toBe(403);
    }
  });
});

describe('BullMQ admin', () => {
  it('is for platform admins; submit only to allow-listed queues; every queue readable', async () => {
    const admin = client(svc, adminPrincipal());
    expect((await admin.call('POST', '/bull-queue/submit', { queue: 'not-a-queue', name: 'x', data: {} })).statusCode).toBe(400);
    // Known queues whose jobs have side effects elsewhere (mail, payments, runs) take no hand-made jobs.
    for (const queue of [Queues.email, Queues.autoTopup, Queues.agentRuns, Queues.backups]) {
      const res = await admin.call('POST', '/bull-queue/submit', { queue, name: 'x', data: {} });
      expect(res.statusCode, queue).toBe(400);
      expect(res.json().error.details[0].allowed).toEqual(['factory', 'discovery-engines']);
    }
    expect((await client(svc, userPrincipal()).call('POST', '/bull-queue/submit', { queue: 'factory', name: 'x', data: {} })).statusCode).toBe(403);
    expect((await client(svc, userPrincipal()).call('GET', '/bull-queue/stats')).statusCode).toBe(403);
    const queued = await admin.call('POST', '/bull-queue/submit', { queue: 'factory', name: 'sleepy', data: { type: 'sleep', delay_ms: 10 }, job_id: 'my-job-1', attempts: 2, priority: 3, backoff: { type: 'fixed', delay: 10 } });
    expect(queued.json().data).toEqual({ id: 'my-job-1', queue: 'factory', name: 'sleepy' });
    for (const body of [{ queue: 'factory', name: 'x' }, { queue: 'factory', name: 'x', data: [] }, { queue: 'factory', name: 'bad name!', data: {} }, { queue: 'factory', name: 'x', data: {}, job_id: '../x' }, { queue: 'factory', name: 'x', data: {}, job_id: '123' }, { queue: 'factory', name: 'x', data: {}, job_id: '-7' }, { queue: 'factory', name: 'x', data: { blob: 'x'.repeat(300_000) } }]) {
      expect((await admin.call('POST', '/bull-queue/submit', body)).statusCode, JSON.stringify(body).slice(0, 80)).toBe(400);
    }

    const delayed = await admin.call('POST', '/bull-queue/submit-scheduled', { queue: 'factory', name: 'later', data: { a: 1 }, delay: 60_000 });
    expect(delayed.statusCode).toBe(201);
    expect(delayed.json().data.scheduler).toBeNull();
    const jobs = (await admin.call('GET', '/bull-queue/factory/jobs?status=delayed')).json();
    expect(jobs.data.map((j: { id: string }) => j.id)).toContain(delayed.json().data.id);
    expect(jobs.data.find((j: { id: string }) => j.id === delayed.json().data.id).data).toEqual({ a: 1 });
    expect(jobs.meta.total).toBeGreaterThanOrEqual(1);
    expect((await admin.call('GET', '/bull-queue/factory/jobs?status=delayed&start=5&end=2')).statusCode).toBe(400);
    expect((await admin.call('GET', '/bull-queue/factory/jobs?status=zombie')).statusCode).toBe(400);
    expect((await admin.call('GET', '/bull-queue/agent-runs/jobs?status=completed')).statusCode).toBe(200);

    const cron = await admin.call('POST', '/bull-queue/submit-scheduled', { queue: 'factory', name: 'nightly', data: {}, repeat: '0 3 * * *' });
    expect(cron.json().data).toMatchObject({ scheduler: 'admin-nightly', next: expect.stringMatching(/T03:00:00/) });
    const every = await admin.call('POST', '/bull-queue/submit-scheduled', { queue: 'factory', name: 'pulse', data: { p: 1 }, every: 3_600_000 });
    expect(every.json().data.scheduler).toBe('admin-pulse');
    const schedulers = (await admin.call('GET', '/bull-queue/factory/schedulers')).json();
    expect(schedulers.data.map((s: { id: string; pattern: string | null; every: number | null }) => [s.id, s.pattern, s.every]).sort()).toEqual([['admin-nightly', '0 3 * * *', null], ['admin-pulse', null, 3_600_000]]);
    expect((await admin.call('DELETE', '/bull-queue/factory/schedulers/admin-pulse')).json().data).toEqual({ id: 'admin-pulse', removed: true });
    expect((await admin.call('GET', '/bull-queue/factory/schedulers')).json().meta.total).toBe(1);
    // The service's own schedulers are not the admin's to remove.
    expect((await admin.call('DELETE', '/bull-queue/agent-runs/schedulers/runs-reconciler')).statusCode).toBe(400);
    for (const body of [{ queue: 'factory', name: 'bad', data: {}, repeat: 'not cron' }, { queue: 'factory', name: 'both', data: {}, repeat: '* * * * *', every: 5_000 }, { queue: 'factory', name: 'none', data: {} }, { queue: 'factory', name: 'fast', data: {}, every: 10 }]) {
      expect((await admin.call('POST', '/bull-queue/submit-scheduled', body)).statusCode, body.name).toBe(400);
    }
    const stats = (await admin.call('GET', '/bull-queue/stats?queue=factory')).json().data;
    expect(Object.keys(stats)).toEqual(['factory']);
    expect(stats.factory.delayed).toBeGreaterThanOrEqual(1);
    expect(Object.keys((await admin.call('GET', '/bull-queue/stats')).json().data).sort()).toEqual(Object.values(Queues).sort());
    expect((await admin.call('GET', '/bull-queue/secret-queue/jobs')).statusCode).toBe(400);
    expect((await admin.call('GET', '/bull-queue/stats?queue=secret')).statusCode).toBe(400);
  });
});

describe('discovery engines', () => {
  it('CRUD with a repeatable job per engine, runs now, efficiency stats, org isolation', async () => {
    const api = client(svc);
    const created = await api.call('POST', '/discovery-engines', { name: 'Security Audit', layer: 'api', schedule_interval_ms: 60_000 });
    expect(created.statusCode).toBe(201);
    const engine = created.json().data;
    expect(engine).toMatchObject({ slug: 'security-audit', enabled: true, scheduled: true, provider: 'offline', stats: { runs: 0 } });
    expect((await api.call('POST', '/discovery-engines', { name: 'Security Audit', layer: 'api' })).statusCode).toBe(409);
    expect((await svc.ctx.queues.queue(Queues.discovery).getJobScheduler(`discovery-${engine.id}`))?.every).toBe(60_000);
    expect((await api.call('POST', '/discovery-engines/security-audit/run')).json().data.queued).toBe(true);
    // The repeatable job fires once at creation; the manual run comes on top.
    await waitFor(async () => (await api.call('GET', '/discovery-engines/security-audit')).json().data.recent_runs.some((r: { trigger: string }) => r.trigger === 'manual'), { message: 'manual run' });
    const detail = (await api.call('GET', '/discovery-engines/security-audit')).json().data;
    expect(detail.stats.runs).toBeGreaterThanOrEqual(1);
    expect(detail.recent_runs.find((r: { trigger: string }) => r.trigger === 'manual')).toMatchObject({ status: 'succeeded', findings: 3 });
    expect(detail.last_run_at).not.toBeNull();

    // An engine whose provider is down: its run is recorded as failed (wasted compute, no findings).
    await api.call('POST', '/discovery-engines', { name: 'Broken Probe', slug: 'broken', layer: 'db', provider: 'openai', enabled: false });
    await api.call('POST', '/discovery-engines/broken/run');
    await waitFor(async () => (await api.call('GET', '/discovery-engines/broken')).json().data.recent_runs.some((r: { status: string }) => r.status === 'failed'), { message: 'failed run recorded' });
    const eff = (await api.call('GET', '/discovery-engines/efficiency')).json();
    expect(eff.meta.total).toBe(2);
    expect(eff.data.find((e: { slug: string }) => e.slug === 'broken')).toMatchObject({ runs: 1, failed_runs: 1, findings: 0, wasted_runs: 1, waste_ratio: 1, cost_per_finding_usd: null });
    expect(eff.data.find((e: { slug: string }) => e.slug === 'security-audit')).toMatchObject({ runs: detail.stats.runs, wasted_runs: 0, failed_runs: 0 });
    expect((await api.call('GET', '/discovery-engines?enabled=false')).json().data.map((e: { slug: string; scheduled: boolean }) => [e.slug, e.scheduled])).toEqual([['broken', false]]);
    expect((await api.call('GET', '/discovery-engines?limit=1')).json().meta).toEqual({ total: 2, limit: 1, offset: 0 });

    expect((await api.call('PATCH', '/discovery-engines/security-audit', { enabled: false })).json().data.scheduled).toBe(false);
    expect(await svc.ctx.queues.queue(Queues.discovery).getJobScheduler(`discovery-${engine.id}`)).toBeFalsy();
    expect((await api.call('PATCH', '/discovery-engines/security-audit', { enabled: true, schedule_interval_ms: 120_000 })).json().data.schedule_interval_ms).toBe(120_000);
    expect((await svc.ctx.queues.queue(Queues.discovery).getJobScheduler(`discovery-${engine.id}`))?.every).toBe(120_000);
    for (const body of [{ schedule_interval_ms: 10 }, { provider: 'gpt' }, {}]) expect((await api.call('PATCH', '/discovery-engines/security-audit', body)).statusCode).toBe(400);
    expect((await api.call('GET', '/discovery-engines/Not_A_Slug')).statusCode).toBe(400);

    const other = client(svc);
    for (const [method, url, body] of [['GET', '/discovery-engines/security-audit'], ['POST', '/discovery-engines/security-audit/run'], ['PATCH', '/discovery-engines/security-audit', { name: 'x' }], ['DELETE', '/discovery-engines/security-audit']] as const) {
      expect((await other.call(method, url, body)).statusCode, `${method} ${url}`).toBe(404);
    }
    expect((await other.call('GET', '/discovery-engines/efficiency')).json().data).toEqual([]);
    expect((await api.call('DELETE', '/discovery-engines/security-audit')).statusCode).toBe(200);
    expect(await svc.ctx.queues.queue(Queues.discovery).getJobScheduler(`discovery-${engine.id}`)).toBeFalsy();
    expect((await api.call('GET', '/discovery-engines')).json().data.map((e: { slug: string }) => e.slug)).toEqual(['broken']);
  });
});
