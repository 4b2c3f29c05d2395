import type { Principal } from '@aos/contracts';
import { adminPrincipal, createNamespace, removeNamespace, startTestService, userPrincipal, waitFor, type TestNamespace } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service as agentsService } from '../../services/agents-runtime/src/service.js';
import { service as billingService } from '../../services/billing/src/service.js';
import { service as tasksService } from '../../services/tasks/src/service.js';

/**
 * The idle check's inputs come from other services' events only: tasks (ready work) and
 * billing (the token balance a run consumed). No call crosses into another database.
 */
let ns: TestNamespace;
let tasks: Awaited<ReturnType<typeof startTestService<typeof tasksService.schema, typeof tasksService.config>>>;
let agents: Awaited<ReturnType<typeof startTestService<typeof agentsService.schema, typeof agentsService.config>>>;
let billing: Awaited<ReturnType<typeof startTestService<typeof billingService.schema, typeof billingService.config>>>;
const owner: Principal = userPrincipal();

beforeAll(async () => {
  ns = createNamespace();
  [tasks, agents, billing] = await Promise.all([
    startTestService(tasksService, { namespace: ns }),
    startTestService(agentsService, { namespace: ns, env: { IDLE_CACHE_TTL_SEC: '600', OFFLINE_TOKEN_DELAY_MS: '20' } }),
    startTestService(billingService, { namespace: ns }),
  ]);
});
afterAll(async () => {
  await Promise.all([tasks?.close(), agents?.close(), billing?.close()]);
  await removeNamespace(ns);
});

const idle = async () => (await agents.inject(owner, { method: 'GET', url: '/agent-runs/idle-check?agent_name=thrifty' })).json().data;

describe('idle check across services', () => {
  it('ready work comes from task events; a run that drains the token balance puts the agent over budget until a top-up', async () => {
    expect((await billing.inject(adminPrincipal(), { method: 'POST', url: '/tokens/grant', payload: { org_id: owner.orgId, amount: 30 } })).statusCode).toBe(200);
    expect((await agents.inject(owner, { method: 'POST', url: '/agents', payload: { name: 'thrifty' } })).statusCode).toBe(201);
    expect(await idle()).toMatchObject({ should_skip: true, reason: 'no ready tasks' });

    const task = (await tasks.inject(owner, { method: 'POST', url: '/tasks', payload: { title: 'Write the onboarding guide', assignee: 'thrifty' } })).json().data;
    expect(await waitFor(async () => { const r = await idle(); return r.should_skip ? null : r; }, { message: 'task projected' })).toMatchObject({ ready_tasks: 1, over_budget: false });

    const run = (await agents.inject(owner, { method: 'POST', url: '/agents/thrifty/runs', payload: { input: 'a deliberately long request that costs more tokens than the thirty this organization holds' } })).json().data;
    await waitFor(async () => (await agents.inject(owner, { method: 'GET', url: `/agent-runs/${run.id}` })).json().data.status === 'succeeded', { message: 'run done' });
    await waitFor(async () => (await billing.inject(owner, { method: 'GET', url: '/tokens/balance' })).json().data.balance === 0, { message: 'balance drained' });
    expect(await waitFor(async () => { const r = await idle(); return r.over_budget ? r : null; }, { message: 'balance projected' })).toMatchObject({ should_skip: true, reason: 'organization token balance exhausted' });

    await billing.inject(adminPrincipal(), { method: 'POST', url: '/tokens/grant', payload: { org_id: owner.orgId, amount: 1_000 } });
    expect(await waitFor(async () => { const r = await idle(); return r.over_budget ? null : r; }, { message: 'top-up projected' })).toMatchObject({ should_skip: false, ready_tasks: 1 });

    await tasks.inject(owner, { method: 'PATCH', url: `/tasks/${task.id}`, payload: { status: 'in_progress' } });
    expect(await waitFor(async () => { const r = await idle(); return r.should_skip ? r : null; }, { message: 'task taken' })).toMatchObject({ reason: 'no ready tasks' });
  });
});

describe('billing of runs that end early', () => {
  it('a run cancelled while running is billed once for the tokens it used; its retry is a new run, billed apart', async () => {
    const org: Principal = userPrincipal();
    const call = (method: 'GET' | 'POST', url: string, payload?: object) => agents.inject(org, { method, url, ...(payload ? { payload } : {}) });
    const balance = async () => (await billing.inject(org, { method: 'GET', url: '/tokens/balance' })).json().data.balance as number;
    const charges = async (runId: number) => (await billing.inject(org, { method: 'GET', url: `/tokens/transactions?reference_id=aos:run:${runId}` })).json().data as { amount: number }[];
    expect((await billing.inject(adminPrincipal(), { method: 'POST', url: '/tokens/grant', payload: { org_id: org.orgId, amount: 10_000 } })).statusCode).toBe(200);
    await waitFor(async () => (await balance()) === 10_000, { message: 'grant booked' });
    expect((await call('POST', '/agents', { name: 'quitter' })).statusCode).toBe(201);

    const run = (await call('POST', '/agents/quitter/runs', { input: 'write a very long essay about '.repeat(10) })).json().data;
    const streamed = async () => (await agents.ctx.queues.connection.xlen(`${agents.ctx.config.REDIS_PREFIX}:run:${run.id}:events`));
    await waitFor(async () => (await streamed()) >= 3, { message: 'tokens streamed' });
    const cancelled = (await call('POST', `/agent-runs/${run.id}/cancel`)).json().data;
    expect(cancelled).toMatchObject({ status: 'cancelled' });
    expect(cancelled.output_tokens).toBeGreaterThan(0);
    await waitFor(async () => (await balance()) === 10_000 - cancelled.total_tokens, { message: 'partial usage billed' });
    expect((await charges(run.id)).map((e) => e.amount)).toEqual([-cancelled.total_tokens]);

    const retry = (await call('POST', `/agent-runs/${run.id}/retry`)).json().data;
    const done = await waitFor(async () => { const r = (await call('GET', `/agent-runs/${retry.id}`)).json().data; return r.status === 'succeeded' ? r : null; }, { message: 'retry done' });
    await waitFor(async () => (await balance()) === 10_000 - cancelled.total_tokens - done.total_tokens, { message: 'retry billed' });
    expect((await charges(retry.id)).map((e) => e.amount)).toEqual([-done.total_tokens]);
    expect((await charges(run.id))).toHaveLength(1);
  });
});
