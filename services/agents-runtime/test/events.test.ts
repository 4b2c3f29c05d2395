import { lockWaits, waitFor } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evictIdle } from '../src/domain/agents.js';
import { idleCheck } from '../src/domain/idle.js';
import { client, handled, outbox, publish, startAgents, task, type Api, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startAgents({ env: { DERIVATION_MAX_DEPTH: '2', IDLE_CACHE_TTL_SEC: '600' } }); });
afterAll(() => svc?.close());

const requests = async (orgId: string) => (await outbox(svc, 'agents.task.derivation_requested')).filter((e) => e.orgId === orgId);
/** Publishes a task event and waits until both task handlers have taken it. */
async function taskEvent(api: Api, type: string, data: Record<string, unknown>, opts: { occurredAt?: string; id?: string; msgId?: string } = {}) {
  const env = await publish(svc, type, api.principal.orgId!, task(data), opts);
  await waitFor(async () => (await handled(svc, env.id, 'agent-queues')) && (type === 'tasks.task.created' || type === 'tasks.task.updated' ? handled(svc, env.id, 'derivation-rules') : true), { message: `${type} handled` });
  return env;
}
const idle = async (api: Api, name: string, mode = '') => (await api.call('GET', `/agent-runs/idle-check?agent_name=${name}${mode ? `&run_mode=${mode}` : ''}`)).json().data;
const health = async (api: Api, name: string) => (await api.call('GET', '/agent-metrics/queue-health')).json().data.find((h: { agent: string }) => h.agent === name);

describe('derivation rules', () => {
  it('emit exactly one request per (task, rule), whatever the redeliveries and later updates', async () => {
    const api = client(svc);
    await api.agent({ name: 'deriver', interval_sec: 3600, derivation_rules: [
      { id: 'qa', when: { type: 'feature' }, create: { title: 'QA: {title}', type: 'research', description: 'Check #{id}' } },
      { id: 'docs', when: { title_matches: '^landing', on: 'updated' }, create: { title: 'Docs for {title}', priority: 'P3', assignee: 'writer' } },
      { id: 'never', when: { type: 'bug' }, create: { title: 'nope' } },
    ] });
    const data = { taskId: 77, title: 'Landing page', priority: 'P1', type: 'feature', assignee: 'deriver' };
    const created = await taskEvent(api, 'tasks.task.created', data);
    // JetStream redelivers the same envelope (a new msgID gets past the broker's de-duplication: only the inbox stops it).
    await publish(svc, 'tasks.task.created', api.principal.orgId!, task(data), { id: created.id, msgId: `${created.id}-again` });
    // A different event about the same task: the rule has fired for it already.
    await taskEvent(api, 'tasks.task.updated', { ...data, status: 'in_progress', changes: ['status'], previousStatus: 'todo', previousAssignee: null });
    await taskEvent(api, 'tasks.task.updated', { ...data, status: 'review', changes: ['status'], previousStatus: 'in_progress', previousAssignee: null });
    const got = await requests(api.principal.orgId!);
    expect(got.map((e) => e.data.ruleId).sort()).toEqual(['docs', 'qa']);
    expect(got.find((e) => e.data.ruleId === 'qa').data).toMatchObject({ parentTaskId: 77, agentName: 'deriver', title: 'QA: Landing page', description: 'Check #77', type: 'research', priority: 'P1', assignee: null });
    expect(got.find((e) => e.data.ruleId === 'docs').data).toMatchObject({ title: 'Docs for Landing page', priority: 'P3', type: 'feature', assignee: 'writer' });
    expect(got[0].actor).toEqual({ type: 'agent', id: 'deriver' });
    // Tasks of someone else, or of nobody, derive nothing.
    await taskEvent(api, 'tasks.task.created', { taskId: 78, type: 'feature', assignee: 'stranger' });
    await taskEvent(api, 'tasks.task.created', { taskId: 79, type: 'feature', assignee: null });
    expect(await requests(api.principal.orgId!)).toHaveLength(2);
  });

  it('a catastrophic title_matches pattern cannot stall the consumer', async () => {
    const api = client(svc);
    await api.agent({ name: 'regexer', derivation_rules: [{ id: 'evil', when: { title_matches: '^(a+)+$' }, create: { title: 'x' } }, { id: 'plain', when: { type: 'ops' }, create: { title: 'Ops: {title}' } }] });
    const started = Date.now();
    await taskEvent(api, 'tasks.task.created', { taskId: 90, title: `${'a'.repeat(40)}!`, type: 'feature', assignee: 'regexer' });
    await taskEvent(api, 'tasks.task.created', { taskId: 91, title: 'Rotate keys', type: 'ops', assignee: 'regexer' });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect((await requests(api.principal.orgId!)).map((e) => e.data.parentTaskId)).toEqual([91]);
  });

  it('derived tasks stop deriving at DERIVATION_MAX_DEPTH (no runaway chains)', async () => {
    const api = client(svc);
    await api.agent({ name: 'looper', derivation_rules: [{ id: 'again', create: { title: 'Follow-up: {title}', assignee: 'looper' } }] });
    await taskEvent(api, 'tasks.task.created', { taskId: 100, title: 'Root', assignee: 'looper' });
    await taskEvent(api, 'tasks.task.created', { taskId: 101, title: 'Follow-up: Root', assignee: 'looper', parentTaskId: 100 });
    await taskEvent(api, 'tasks.task.created', { taskId: 102, title: 'Follow-up: Follow-up: Root', assignee: 'looper', parentTaskId: 101 });
    expect((await requests(api.principal.orgId!)).map((e) => e.data.parentTaskId)).toEqual([100, 101]);
  });
});

describe('task projection: queue health and the idle check', () => {
  it('queued count and oldest wait follow task events; a late older event changes nothing', async () => {
    const api = client(svc);
    await api.agent({ name: 'worker' });
    await api.agent({ name: 'helper' });
    const early = new Date(Date.now() - 120_000).toISOString();
    await taskEvent(api, 'tasks.task.created', { taskId: 200, assignee: 'worker' }, { occurredAt: early });
    await taskEvent(api, 'tasks.task.created', { taskId: 201, assignee: 'worker' });
    await taskEvent(api, 'tasks.task.created', { taskId: 202, assignee: 'worker', status: 'blocked' });
    const h = await health(api, 'worker');
    expect(h).toMatchObject({ queued: 2, in_progress: 0, blocked: 1, runs_queued: 0, runs_running: 0 });
    expect(h.oldest_wait_seconds).toBeGreaterThanOrEqual(119);

    await taskEvent(api, 'tasks.task.updated', { taskId: 200, assignee: 'worker', status: 'in_progress', changes: ['status'], previousStatus: 'todo', previousAssignee: null });
    await taskEvent(api, 'tasks.task.completed', { taskId: 201, assignee: 'worker', status: 'done', completedAt: new Date().toISOString(), resolution: null });
    // The creation of 201 arrives again, late (older occurredAt): it must not resurrect the task.
    await taskEvent(api, 'tasks.task.created', { taskId: 201, assignee: 'worker' }, { occurredAt: early });
    expect(await health(api, 'worker')).toMatchObject({ queued: 0, in_progress: 1, blocked: 1, oldest_wait_seconds: null });

    // Reassigned: leaves one queue, joins the other with a fresh wait.
    await taskEvent(api, 'tasks.task.updated', { taskId: 200, assignee: 'helper', status: 'todo', changes: ['assignee', 'status'], previousStatus: 'in_progress', previousAssignee: 'worker' });
    expect(await health(api, 'worker')).toMatchObject({ in_progress: 0 });
    const helper = await health(api, 'helper');
    expect(helper.queued).toBe(1);
    expect(helper.oldest_wait_seconds).toBeLessThan(60);
    const page = (await api.call('GET', '/agent-metrics/queue-health?limit=1')).json();
    expect(page.meta).toEqual({ total: 2, limit: 1, offset: 0 });
    expect(page.data[0].agent).toBe('helper');
    expect((await client(svc).call('GET', '/agent-metrics/queue-health')).json().data).toEqual([]);
  });

  it('a deleted task leaves the agent\'s ready list for good (a late older event does not bring it back) and cannot be run', async () => {
    const api = client(svc);
    await api.agent({ name: 'tidy' });
    const created = await taskEvent(api, 'tasks.task.created', { taskId: 310, assignee: 'tidy' });
    await waitFor(async () => !(await idle(api, 'tidy')).should_skip, { message: 'ready task' });
    await taskEvent(api, 'tasks.task.deleted', { taskId: 310, assignee: 'tidy' });
    const gone = await waitFor(async () => { const r = await idle(api, 'tidy'); return r.should_skip ? r : null; }, { message: 'deleted task off the ready list' });
    expect(gone).toMatchObject({ reason: 'no ready tasks', ready_tasks: 0 });
    await taskEvent(api, 'tasks.task.updated', { taskId: 310, assignee: 'tidy', status: 'todo', changes: ['title'], previousStatus: 'todo', previousAssignee: 'tidy' },
      { occurredAt: new Date(Date.parse(created.occurredAt) + 1).toISOString() });
    expect(await idle(api, 'tidy')).toMatchObject({ should_skip: true, ready_tasks: 0 });
    const run = await api.call('POST', '/agents/tidy/runs', { task_id: 310 });
    expect(run.statusCode).toBe(404);
    expect(run.json().error).toMatchObject({ code: 'NOT_FOUND', details: [{ field: 'task_id' }] });
  });

  it('idle check: an answer read across an eviction is not cached (the change that landed meanwhile is seen next time)', async () => {
    const api = client(svc);
    const agent = await api.agent({ name: 'racer' });
    const orgId = api.principal.orgId!;
    const held = await svc.ctx.pool.connect();
    try {
      // The check reads the agent row, then waits on the task projection held here.
      await held.query('BEGIN; LOCK TABLE assigned_tasks IN ACCESS EXCLUSIVE MODE');
      const inFlight = idleCheck(svc.ctx, orgId, 'racer');
      await waitFor(async () => (await lockWaits(svc.ctx.pool)) > 0, { message: 'check waiting' });
      // Meanwhile the agent is paused and its answer evicted, as the stop route does.
      await svc.ctx.pool.query("UPDATE agents SET status = 'paused' WHERE id = $1", [agent.id]);
      await evictIdle(svc.ctx, orgId, ['racer']);
      await held.query('COMMIT');
      expect(await inFlight).toMatchObject({ reason: 'no ready tasks', cached: false });
    } finally {
      held.release();
    }
    expect(await idle(api, 'racer')).toMatchObject({ should_skip: true, reason: 'agent is paused', cached: false });
    expect(await idle(api, 'racer')).toMatchObject({ reason: 'agent is paused', cached: true });
  });

  it('idle check: answered from the cache, evicted by the events that change the answer', async () => {
    const api = client(svc);
    await api.agent({ name: 'sleepy' });
    expect(await idle(api, 'sleepy')).toMatchObject({ should_skip: true, reason: 'no ready tasks', ready_tasks: 0, cached: false });
    expect(await idle(api, 'sleepy')).toMatchObject({ should_skip: true, cached: true });
    // The run mode is applied to the cached facts, not part of the cache.
    expect(await idle(api, 'sleepy', 'discovery')).toMatchObject({ should_skip: false, reason: 'discovery run', cached: true });

    await taskEvent(api, 'tasks.task.created', { taskId: 300, assignee: 'sleepy' });
    const woke = await waitFor(async () => { const r = await idle(api, 'sleepy'); return r.should_skip ? null : r; }, { message: 'cache evicted by the task event' });
    expect(woke).toMatchObject({ reason: '1 ready task(s)', ready_tasks: 1, over_budget: false, cached: false });
    // Its only task blocked: nothing to do, and the answer says why (the agent's status stays the clients').
    await taskEvent(api, 'tasks.task.updated', { taskId: 300, assignee: 'sleepy', status: 'blocked', changes: ['status'], previousStatus: 'todo', previousAssignee: null });
    const stuck = await waitFor(async () => { const r = await idle(api, 'sleepy'); return r.should_skip ? r : null; }, { message: 'task blocked' });
    expect(stuck).toMatchObject({ reason: 'no ready tasks (1 blocked)', ready_tasks: 0, blocked_tasks: 1 });
    expect((await api.call('GET', '/agents/sleepy')).json().data.status).toBe('active');
    await taskEvent(api, 'tasks.task.updated', { taskId: 300, assignee: 'sleepy', status: 'todo', changes: ['status'], previousStatus: 'blocked', previousAssignee: null });
    await waitFor(async () => !(await idle(api, 'sleepy')).should_skip, { message: 'unblocked' });

    await api.call('POST', '/agents/sleepy/stop');
    expect(await idle(api, 'sleepy')).toMatchObject({ should_skip: true, reason: 'agent is paused', cached: false });
    await api.call('POST', '/agents/sleepy/start');
    expect(await idle(api, 'sleepy')).toMatchObject({ should_skip: false });
    expect(await idle(api, 'nobody')).toMatchObject({ should_skip: true, reason: 'unknown agent' });
    // Another organization's caller learns nothing about this agent; anonymous callers learn nothing at all.
    expect(await idle(client(svc), 'sleepy')).toMatchObject({ should_skip: true, reason: 'unknown agent' });
    const anonymous = { kind: 'anonymous' as const, userId: null, apiKeyId: null, tenantId: null, orgId: null, orgRole: null, platformRoles: [], scopes: [] };
    expect((await svc.inject(anonymous, { method: 'GET', url: '/agent-runs/idle-check?agent_name=sleepy' })).json().data).toMatchObject({ should_skip: true, reason: 'no organization context' });
    expect((await api.call('GET', '/agent-runs/idle-check')).statusCode).toBe(400);
  });

  it('over budget: the org token balance from billing events, and the agent daily token budget', async () => {
    const api = client(svc);
    const orgId = api.principal.orgId!;
    await api.agent({ name: 'spender' });
    await taskEvent(api, 'tasks.task.created', { taskId: 400, assignee: 'spender' });
    expect(await idle(api, 'spender')).toMatchObject({ should_skip: false, over_budget: false });

    const consumed = await publish(svc, 'billing.tokens.consumed', orgId, { amount: 500, balance: 0, action: 'agent_run', referenceId: 'run:1', userId: null });
    await waitFor(() => handled(svc, consumed.id, 'org-budgets'), { message: 'balance projected' });
    expect(await waitFor(async () => { const r = await idle(api, 'spender'); return r.over_budget ? r : null; })).toMatchObject({ should_skip: true, reason: 'organization token balance exhausted' });
    // A credit that happened before the consumption, delivered late, changes nothing.
    const late = await publish(svc, 'billing.tokens.credited', orgId, { amount: 1000, balance: 1000, kind: 'purchase', userId: null }, { occurredAt: new Date(Date.now() - 60_000).toISOString() });
    await waitFor(() => handled(svc, late.id, 'org-budgets'));
    expect(await idle(api, 'spender')).toMatchObject({ over_budget: true });
    const topup = await publish(svc, 'billing.tokens.credited', orgId, { amount: 5000, balance: 5000, kind: 'purchase', userId: null });
    await waitFor(() => handled(svc, topup.id, 'org-budgets'));
    expect(await waitFor(async () => { const r = await idle(api, 'spender'); return r.over_budget ? null : r; })).toMatchObject({ should_skip: false });

    // The agent's own budget: tokens of its runs in the last 24 h.
    await api.call('PATCH', '/agents/spender', { daily_token_budget: 10 });
    const { id } = (await api.call('POST', '/agents/spender/runs', { input: 'spend some tokens on this sentence please' })).json().data;
    const run = await api.finished(id);
    expect(run.total_tokens).toBeGreaterThan(10);
    await api.call('PATCH', '/agents/spender', { display_name: 'Spender' });
    expect(await idle(api, 'spender')).toMatchObject({ should_skip: true, over_budget: true, reason: `daily token budget spent (${run.total_tokens}/10)` });
    await api.call('PATCH', '/agents/spender', { daily_token_budget: null });
    expect(await idle(api, 'spender')).toMatchObject({ over_budget: false });
  });
});

describe('agent metrics', () => {
  it('efficiency: tokens, cost and tasks per 1k tokens from runs and completed-task events', async () => {
    const api = client(svc);
    await api.agent({ name: 'closer' });
    await api.agent({ name: 'talker' });
    const runA = await api.finished((await api.call('POST', '/agents/closer/runs', { input: 'close the tickets' })).json().data.id);
    await api.finished((await api.call('POST', '/agents/talker/runs', { input: 'talk a lot about nothing at all today' })).json().data.id);
    for (const taskId of [500, 501]) {
      await taskEvent(api, 'tasks.task.completed', { taskId, assignee: 'closer', status: 'done', completedAt: new Date().toISOString(), resolution: null });
    }
    const rows = (await api.call('GET', '/agent-metrics/efficiency')).json();
    expect(rows.meta.total).toBe(2);
    expect(rows.data[0]).toMatchObject({
      agent: 'closer', runs: 1, total_tokens: runA.total_tokens, tasks_completed: 2,
      tasks_per_1k_tokens: Math.round((2 * 1000 / runA.total_tokens) * 1000) / 1000,
    });
    expect(rows.data[0].cost_per_task_usd).toBeCloseTo(runA.cost_usd / 2, 10);
    expect(rows.data[1]).toMatchObject({ agent: 'talker', tasks_completed: 0, tasks_per_1k_tokens: 0, cost_per_task_usd: null });
    expect((await api.call('GET', '/agent-metrics/efficiency?limit=1&offset=1')).json()).toMatchObject({ data: [{ agent: 'talker' }], meta: { total: 2, limit: 1, offset: 1 } });
    expect((await api.call('GET', '/agent-metrics/efficiency?offset=10')).json()).toMatchObject({ data: [], meta: { total: 2, offset: 10 } });
    expect((await api.call('GET', '/agent-metrics/efficiency?days=1')).json().data[0].runs).toBe(1);
    expect((await api.call('GET', '/agent-metrics/efficiency?days=0')).statusCode).toBe(400);
  });
});

describe('scheduled cycles', () => {
  it('a cycle runs the oldest ready task once, then skips it until it is back in todo', async () => {
    const api = client(svc);
    await taskEvent(api, 'tasks.task.created', { taskId: 600, title: 'Write the changelog', assignee: 'cycler' }, { occurredAt: new Date(Date.now() - 60_000).toISOString() });
    await taskEvent(api, 'tasks.task.created', { taskId: 601, title: 'Second in line', assignee: 'cycler' });
    await api.agent({ name: 'cycler', interval_sec: 1 });
    const first = await waitFor(async () => (await api.call('GET', '/agents/cycler/runs?task_id=600')).json().data[0], { message: 'cycle queued a run' });
    expect(first.input).toBe('Work on task #600: Write the changelog');
    await api.finished(first.id);
    const second = await waitFor(async () => (await api.call('GET', '/agents/cycler/runs?task_id=601')).json().data[0], { message: 'next task' });
    await api.finished(second.id);
    await waitFor(async () => (await api.call('GET', '/agents/cycler')).json().data.last_cycle_result === 'skipped: no ready tasks', { message: 'nothing left' });
    expect((await api.call('GET', '/agents/cycler/runs')).json().meta.total).toBe(2);
    // The agent's own log tells the story: each cycle that queued work, each run started and finished; skipped cycles write nothing.
    const story = (await api.call('GET', '/logs?agent=cycler&source=file&q=task')).json().data.map((l: { message: string }) => l.message).reverse();
    expect(story).toEqual([
      `run ${first.id} queued by a cycle for task #600`, `run ${first.id} started on task #600 with offline/offline-1`,
      `run ${second.id} queued by a cycle for task #601`, `run ${second.id} started on task #601 with offline/offline-1`,
    ]);
    expect((await api.call('GET', '/logs?agent=cycler&source=file&q=skipped')).json().meta.total).toBe(0);
    // Back in todo: ready again.
    await taskEvent(api, 'tasks.task.updated', { taskId: 600, title: 'Write the changelog', assignee: 'cycler', status: 'in_progress', changes: ['status'], previousStatus: 'todo', previousAssignee: null });
    await taskEvent(api, 'tasks.task.updated', { taskId: 600, title: 'Write the changelog', assignee: 'cycler', status: 'todo', changes: ['status'], previousStatus: 'in_progress', previousAssignee: null });
    await waitFor(async () => (await api.call('GET', '/agents/cycler/runs?task_id=600')).json().meta.total === 2, { message: 'task re-run' });
    await api.call('POST', '/agents/cycler/stop');
  });
});
