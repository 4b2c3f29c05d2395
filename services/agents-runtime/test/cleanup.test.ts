import { Queues } from '@aos/contracts';
import { loadServiceConfig } from '@aos/runtime';
import { waitFor } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLEANUP_SCHEDULER_ID, runCleanup } from '../src/jobs/cleanup.js';
import { service } from '../src/service.js';
import { client, startAgents, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => {
  svc = await startAgents();
  // The scheduler's first run starts at once; let it finish so it cannot race the rows planted below.
  await waitFor(async () => (await svc.ctx.queues.queue(Queues.agentsCleanup).getJobCounts('completed')).completed! >= 1, { message: 'the first cleanup run' });
});
afterAll(() => svc?.close());

const q = (text: string, params: unknown[] = []) => svc.ctx.pool.query(text, params);
const DAY = 86_400_000;
const ago = (days: number) => new Date(Date.now() - days * DAY);
const ids = async (table: string) => new Set((await q(`SELECT id FROM ${table}`)).rows.map((r) => Number(r.id)));

describe('retention cleanup', () => {
  it('deletes log lines, finished runs, discovery runs and idle conversations past their retention; fresh and still-needed ones stay', async () => {
    const api = client(svc);
    const orgId = api.principal.orgId;
    const agent = await api.agent({ name: 'keeper' });
    await q('DELETE FROM agent_logs');

    const log = async (daysAgo: number, source: 'file' | 'db') =>
      Number((await q(`INSERT INTO agent_logs (org_id, agent, message, source, created_at) VALUES ($1, 'keeper', 'x', $2, $3) RETURNING id`, [orgId, source, ago(daysAgo)])).rows[0].id);
    const oldLogs = [await log(31, 'file'), await log(400, 'db')];
    const freshLogs = [await log(29, 'file'), await log(0, 'db')];

    const run = async (status: string, daysAgo: number, taskId: number | null = null, retryOf: number | null = null) => Number((await q(
      `INSERT INTO agent_runs (org_id, agent_id, task_id, input, status, provider, model, retry_of, created_at, finished_at)
       VALUES ($1, $2, $3, 'x', $4, 'offline', 'offline-1', $5, $6, CASE WHEN $4 IN ('queued', 'running') THEN NULL ELSE $6::timestamptz END) RETURNING id`,
      [orgId, agent.id, taskId, status, retryOf, ago(daysAgo)])).rows[0].id);
    const oldFailed = await run('failed', 181);
    const oldRuns = [await run('succeeded', 181), oldFailed, await run('cancelled', 365), await run('succeeded', 200, 78)];
    // Still queued after 200 days (a reconciler's job), on a task back in todo (it would look never worked on), and fresh: all stay.
    await q(`INSERT INTO assigned_tasks (org_id, task_id, assignee, status, queued_since) VALUES ($1, 77, 'keeper', 'todo', $2), ($1, 78, 'keeper', 'done', $2)`, [orgId, ago(300)]);
    const keptRuns = [await run('queued', 200), await run('succeeded', 200, 77), await run('succeeded', 179), await run('succeeded', 1, null, oldFailed)];

    const engine = (await api.call('POST', '/discovery-engines', { name: 'Sweeper', layer: 'ops', enabled: false })).json().data;
    const discoveryRun = async (daysAgo: number) =>
      Number((await q(`INSERT INTO discovery_runs (engine_id, trigger, status, created_at) VALUES ($1, 'manual', 'succeeded', $2) RETURNING id`, [engine.id, ago(daysAgo)])).rows[0].id);
    const oldDiscovery = await discoveryRun(181);
    const freshDiscovery = await discoveryRun(10);

    const message = async (conversation: string, daysAgo: number) =>
      Number((await q(`INSERT INTO agent_messages (org_id, agent_id, conversation_id, role, content, created_at) VALUES ($1, $2, $3, 'user', 'hi', $4) RETURNING id`, [orgId, agent.id, conversation, ago(daysAgo)])).rows[0].id);
    const idleTalk = [await message('idle', 120), await message('idle', 91)];
    const liveTalk = [await message('live', 300), await message('live', 2)];

    expect(await runCleanup(svc.ctx)).toEqual({ logs: 2, runs: 4, discovery_runs: 1, messages: 2 });

    const logsLeft = await ids('agent_logs');
    for (const id of oldLogs) expect(logsLeft.has(id)).toBe(false);
    for (const id of freshLogs) expect(logsLeft.has(id)).toBe(true);
    const runsLeft = await ids('agent_runs');
    for (const id of oldRuns) expect(runsLeft.has(id)).toBe(false);
    for (const id of keptRuns) expect(runsLeft.has(id)).toBe(true);
    // The retry outlives the run it retried.
    expect((await api.call('GET', `/agent-runs/${keptRuns[3]}`)).json().data).toMatchObject({ status: 'succeeded', retry_of: null });
    expect((await api.call('GET', `/agent-runs/${oldFailed}`)).statusCode).toBe(404);
    const discoveryLeft = await ids('discovery_runs');
    expect([discoveryLeft.has(oldDiscovery), discoveryLeft.has(freshDiscovery)]).toEqual([false, true]);
    const messagesLeft = await ids('agent_messages');
    for (const id of idleTalk) expect(messagesLeft.has(id)).toBe(false);
    // A conversation goes only as a whole: its first message stays while it goes on.
    for (const id of liveTalk) expect(messagesLeft.has(id)).toBe(true);
    expect((await api.call('GET', '/agents/keeper/messages?conversation_id=live')).json().meta.total).toBe(2);

    // A second run finds nothing more.
    expect(Object.values(await runCleanup(svc.ctx)).every((n) => n === 0)).toBe(true);
  });

  it('a retention of 0 keeps everything of its kind', async () => {
    const api = client(svc);
    await q(`INSERT INTO agent_logs (org_id, agent, message, created_at) VALUES ($1, 'ancient', 'x', $2)`, [api.principal.orgId, ago(5_000)]);
    const saved = svc.ctx.config.LOG_RETENTION_DAYS;
    Object.assign(svc.ctx.config, { LOG_RETENTION_DAYS: 0 });
    try {
      expect((await runCleanup(svc.ctx)).logs).toBe(0);
    } finally {
      Object.assign(svc.ctx.config, { LOG_RETENTION_DAYS: saved });
    }
    expect((await runCleanup(svc.ctx)).logs).toBe(1);
  });

  it('runs on its own every CLEANUP_INTERVAL_SECONDS through one BullMQ job scheduler', async () => {
    const fast = await startAgents({ env: { CLEANUP_INTERVAL_SECONDS: '1', LOG_RETENTION_DAYS: '1' } });
    try {
      const schedulers = await waitFor(async () => {
        const s = await fast.ctx.queues.queue(Queues.agentsCleanup).getJobSchedulers();
        return s.length > 0 ? s : null;
      }, { message: 'the cleanup scheduler' });
      expect(schedulers).toMatchObject([{ key: CLEANUP_SCHEDULER_ID, every: 1_000 }]);
      await fast.ctx.pool.query(`INSERT INTO agent_logs (org_id, agent, message, created_at) VALUES ('org', 'old', 'x', $1), ('org', 'new', 'x', now())`, [ago(2)]);
      await waitFor(async () => (await fast.ctx.pool.query(`SELECT 1 FROM agent_logs WHERE agent = 'old'`)).rowCount === 0, { timeoutMs: 10_000, message: 'the scheduled cleanup' });
      expect((await fast.ctx.pool.query(`SELECT 1 FROM agent_logs WHERE agent = 'new'`)).rowCount).toBe(1);
    } finally {
      await fast.close();
    }
  });

  it('its settings are checked at start, naming the setting', () => {
    const valid = { INTERNAL_TOKEN_PUBLIC_JWK: svc.ctx.config.INTERNAL_TOKEN_PUBLIC_JWK };
    expect(loadServiceConfig(service, valid)).toMatchObject({ LOG_RETENTION_DAYS: 30, RUN_RETENTION_DAYS: 180, MESSAGE_RETENTION_DAYS: 90, CLEANUP_INTERVAL_SECONDS: 3_600 });
    for (const [name, value] of [['CLEANUP_INTERVAL_SECONDS', '0'], ['LOG_RETENTION_DAYS', '-1'], ['RUN_RETENTION_DAYS', 'forever'], ['MESSAGE_RETENTION_DAYS', '1.5'], ['LOG_RETENTION_DAYS', '100000']]) {
      expect(() => loadServiceConfig(service, { ...valid, [name!]: value })).toThrow(new RegExp(`${name}: `));
    }
  });
});
