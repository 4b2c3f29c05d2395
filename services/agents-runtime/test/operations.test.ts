import { Queues } from '@aos/contracts';
import { adminPrincipal, userPrincipal, waitFor } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, startAgents, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startAgents(); });
afterAll(() => svc?.close());

describe('factory workers', () => {
  it('lists workers, resizes the pool live and processes jobs', async () => {
    const admin = client(svc, adminPrincipal());
    expect((await admin.call('GET', '/factory-workers')).json().data).toHaveLength(2);
    const cfg = await admin.call('PATCH', '/factory-workers/config', { worker_count: 3, concurrency: 4 });
    expect(cfg.json().data).toEqual({ worker_count: 3, concurrency: 4 });
    const workers = (await admin.call('GET', '/factory-workers')).json().data;
    expect(workers).toHaveLength(3);
    expect(workers.every((w: { concurrency: number; state: string }) => w.concurrency === 4 && w.state === 'running')).toBe(true);
    for (let i = 0; i < 6; i++) expect((await admin.call('POST', '/bull-queue/submit', { queue: 'factory', name: 'echo', data: { n: i } })).statusCode).toBe(201);
    await waitFor(async () => (await admin.call('GET', '/factory-workers/stats')).json().data.processed === 6, { message: 'factory processed jobs' });
    expect((await admin.call('PATCH', '/factory-workers/config', { worker_count: 1 })).json().data.worker_count).toBe(1);
    expect((await admin.call('GET', '/factory-workers/health-summary')).json().data).toMatchObject({ healthy: true, running: 1 });
    expect((await client(svc).call('GET', '/factory-workers')).statusCode).toBe(403);
  });
});

describe('BullMQ admin', () => {
  it('is for platform admins and allow-listed queues only', async () => {
    const admin = client(svc, adminPrincipal());
    expect((await admin.call('POST', '/bull-queue/submit', { queue: 'not-a-queue', name: 'x', data: {} })).statusCode).toBe(400);
    expect((await client(svc, userPrincipal()).call('POST', '/bull-queue/submit', { queue: 'factory', name: 'x', data: {} })).statusCode).toBe(403);
    const delayed = await admin.call('POST', '/bull-queue/submit-scheduled', { queue: 'factory', name: 'later', data: { a: 1 }, delay: 60_000 });
    expect(delayed.statusCode).toBe(201);
    const jobs = (await admin.call('GET', '/bull-queue/factory/jobs?status=delayed')).json().data;
    expect(jobs.map((j: { id: string }) => j.id)).toContain(delayed.json().data.id);
    const sched = await admin.call('POST', '/bull-queue/submit-scheduled', { queue: 'factory', name: 'nightly', data: {}, repeat: '0 3 * * *' });
    expect(sched.json().data.scheduler).toBe('admin-nightly');
    expect((await admin.call('POST', '/bull-queue/submit-scheduled', { queue: 'factory', name: 'bad', data: {}, repeat: 'not cron' })).statusCode).toBe(400);
    const stats = (await admin.call('GET', '/bull-queue/stats?queue=factory')).json().data;
    expect(stats.factory.delayed).toBeGreaterThanOrEqual(1);
    expect((await admin.call('GET', '/bull-queue/secret-queue/jobs')).statusCode).toBe(400);
  });
});

describe('discovery engines', () => {
  it('CRUD with a repeatable job per engine, runs now, efficiency stats, org isolation', async () => {
    const api = client(svc);
    const created = await api.call('POST', '/discovery-engines', { name: 'Security Audit', layer: 'api', schedule_interval_ms: 60_000 });
    expect(created.statusCode).toBe(201);
    const engine = created.json().data;
    expect(engine.slug).toBe('security-audit');
    expect((await api.call('POST', '/discovery-engines', { name: 'Security Audit', layer: 'api' })).statusCode).toBe(409);
    expect((await svc.ctx.queues.queue(Queues.discovery).getJobScheduler(`discovery-${engine.id}`))?.every).toBe(60_000);
    expect((await api.call('POST', '/discovery-engines/security-audit/run')).statusCode).toBe(200);
    // The repeatable job fires once at creation; the manual run comes on top.
    await waitFor(async () => (await api.call('GET', '/discovery-engines/security-audit')).json().data.recent_runs.some((r: { trigger: string }) => r.trigger === 'manual'));
    const detail = (await api.call('GET', '/discovery-engines/security-audit')).json().data;
    expect(detail.stats.runs).toBeGreaterThanOrEqual(1);
    expect(detail.recent_runs.find((r: { trigger: string }) => r.trigger === 'manual')).toMatchObject({ status: 'succeeded', findings: 3 });
    const eff = (await api.call('GET', '/discovery-engines/efficiency')).json().data[0];
    expect(eff).toMatchObject({ slug: 'security-audit', runs: detail.stats.runs, wasted_runs: 0 });
    await api.call('PATCH', '/discovery-engines/security-audit', { enabled: false });
    expect(await svc.ctx.queues.queue(Queues.discovery).getJobScheduler(`discovery-${engine.id}`)).toBeFalsy();
    const other = client(svc);
    expect((await other.call('GET', '/discovery-engines/security-audit')).statusCode).toBe(404);
    expect((await other.call('POST', '/discovery-engines/security-audit/run')).statusCode).toBe(404);
    expect((await api.call('DELETE', '/discovery-engines/security-audit')).statusCode).toBe(200);
    expect((await api.call('GET', '/discovery-engines')).json().data).toEqual([]);
  });
});
