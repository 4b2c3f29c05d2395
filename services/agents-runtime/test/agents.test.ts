import { Queues } from '@aos/contracts';
import { apiKeyPrincipal, sleep, waitFor } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, outbox, startAgents, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startAgents(); });
afterAll(() => svc?.close());

const scheduler = (id: number) => svc.ctx.queues.queue(Queues.agentSchedules).getJobScheduler(`agent-${id}`);

describe('agents registry', () => {
  it('creates an agent through recorded bootstrap steps; 409 on a second one with the name', async () => {
    const api = client(svc);
    const res = await api.call('POST', '/agents', {
      name: 'felix', display_name: 'Felix', role: 'engineer', model: 'offline-1', interval_sec: 3600, emoji: '📦', color: '#3b82f6',
      derivation_rules: [{ id: 'qa', when: { type: 'feature' }, create: { title: 'QA: {title}' } }],
    });
    expect(res.statusCode).toBe(201);
    const { agent, steps, complete, resumed } = res.json().data;
    expect({ complete, resumed }).toEqual({ complete: true, resumed: false });
    expect(agent).toMatchObject({
      name: 'felix', display_name: 'Felix', role: 'engineer', emoji: '📦', color: '#3b82f6', interval_sec: 3600, status: 'active', provider: 'offline',
      workspace_path: 'workspaces/felix', bootstrapped: true, derivation_rules: [{ id: 'qa' }],
    });
    expect(Date.parse(agent.last_heartbeat)).toBeGreaterThan(Date.now() - 60_000);
    expect(steps.map((s: { step: string }) => s.step)).toEqual(['registration', 'workspace', 'identity_document', 'schedule', 'heartbeat', 'log']);
    expect(steps.every((s: { ok: boolean; state: string }) => s.ok && s.state === 'done')).toBe(true);
    const soul = (await api.call('GET', '/files/search?q=SOUL')).json().data;
    expect(soul.map((f: { path: string }) => f.path)).toEqual(['workspaces/felix/SOUL.md']);
    expect((await api.call('GET', `/files/${soul[0].id}`)).json().data.content).toContain('# Felix 📦');
    expect((await api.call('GET', '/logs?agent=felix')).json().data.map((l: { message: string }) => l.message)).toEqual(['agent felix bootstrapped']);
    expect((await scheduler(agent.id))?.every).toBe(3_600_000);

    const again = await api.call('POST', '/agents', { name: 'felix' });
    expect(again.statusCode).toBe(409);
    expect(again.json().error.code).toBe('CONFLICT');
    expect((await outbox(svc, 'agents.agent.created')).filter((e) => e.data.name === 'felix')).toHaveLength(1);
    const detail = (await api.call('GET', '/agents/felix')).json().data;
    expect(detail.bootstrap.map((s: { state: string }) => s.state)).toEqual(Array(6).fill('done'));
    expect((await api.call('GET', `/agents/${agent.id}`)).json().data.name).toBe('felix');
    // The same name in another organization is another agent.
    expect((await client(svc).call('POST', '/agents', { name: 'felix' })).statusCode).toBe(201);
  });

  it('creates an agent from a template', async () => {
    const api = client(svc);
    await api.call('POST', '/v1/public/templates', { name: 'Researcher', slug: 'researcher', model: 'offline-2', interval_sec: 900, icon: '🔎', category: 'research', identity: '# Researcher\nFinds sources.' });
    const res = await api.call('POST', '/agents', { name: 'nova', template: 'researcher' });
    expect(res.statusCode).toBe(201);
    expect(res.json().data.agent).toMatchObject({ model: 'offline-2', interval_sec: 900, emoji: '🔎', role: 'research', template: 'researcher' });
    const [soul] = (await api.call('GET', '/files/search?q=SOUL&workspace=workspaces/nova')).json().data;
    expect((await api.call('GET', `/files/${soul.id}`)).json().data.content).toBe('# Researcher\nFinds sources.');
    expect((await api.call('POST', '/agents', { name: 'other', template: 'missing' })).statusCode).toBe(404);
    expect((await client(svc).call('POST', '/agents', { name: 'other', template: 'researcher' })).statusCode).toBe(404);
  });

  it('rejects bad names and path traversal with 400 before anything touches a path', async () => {
    const api = client(svc);
    for (const name of ['../etc', 'Felix', '-dash', 'a'.repeat(64), 'with space', 'x/y', '', '..', 'a\u0000b', 'é']) {
      const res = await api.call('POST', '/agents', { name });
      expect(res.statusCode, name).toBe(400);
      expect(res.json().error.code).toBe('VALIDATION_ERROR');
    }
    for (const name of ['..%2F..%2Fetc', 'UPPER', '%2e%2e.x', 'a%00b', '..%5C..%5Cwin']) {
      for (const [method, path] of [['POST', 'stop'], ['POST', 'start'], ['GET', 'runs'], ['POST', 'runs'], ['GET', 'messages?conversation_id=x'], ['PATCH', '']] as const) {
        const url = `/agents/${name}${path ? `/${path}` : ''}`;
        const res = await api.call(method, url, method === 'GET' ? undefined : method === 'PATCH' ? { role: 'x' } : { input: 'x' });
        expect(res.statusCode, `${method} ${url}`).toBe(400);
      }
    }
    // A bare `..` segment is resolved by the router before any handler: no such route.
    expect((await api.call('POST', '/agents/%2e%2e/stop')).statusCode).toBe(404);
    for (const workspace_path of ['../../root', '/abs', 'a/../../b', './x', 'a//b', 'a/./b', '..']) {
      expect((await api.call('POST', '/v1/public/agents', { name: 'okname', role: 'x', workspace_path })).statusCode, workspace_path).toBe(400);
    }
    expect((await api.call('GET', '/agent-runs/idle-check?agent_name=../../etc')).statusCode).toBe(400);
    expect((await api.call('GET', '/agents?limit=200')).json().data.map((a: { name: string }) => a.name)).not.toContain('okname');
  });

  it('validates derivation rules: bad regex and duplicate ids are 400', async () => {
    const api = client(svc);
    const bad = await api.call('POST', '/agents', { name: 'ruler', derivation_rules: [{ id: 'r', when: { title_matches: '(unclosed' }, create: { title: 'x' } }] });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.details[0].field).toBe('derivation_rules/0/when/title_matches');
    const dup = await api.call('POST', '/agents', { name: 'ruler', derivation_rules: [{ id: 'r', create: { title: 'x' } }, { id: 'r', create: { title: 'y' } }] });
    expect(dup.statusCode).toBe(400);
    expect((await api.call('POST', '/agents', { name: 'ruler', derivation_rules: [{ id: 'r', create: { title: 'x', assignee: '../x' } }] })).statusCode).toBe(400);
    expect((await api.call('GET', '/agents/ruler')).statusCode).toBe(404);
  });

  it('PATCH updates an agent; a new interval reschedules the cycle', async () => {
    const api = client(svc);
    const a = await api.agent({ name: 'patchy', interval_sec: 3600 });
    const res = await api.call('PATCH', '/agents/patchy', { interval_sec: 120, display_name: 'Patchy', daily_token_budget: 5000, derivation_rules: [{ id: 'd1', create: { title: 'Docs for {title}' } }] });
    expect(res.statusCode).toBe(200);
    expect(res.json().data).toMatchObject({ interval_sec: 120, display_name: 'Patchy', daily_token_budget: 5000, derivation_rules: [{ id: 'd1' }] });
    expect((await scheduler(a.id))?.every).toBe(120_000);
    expect((await outbox(svc, 'agents.agent.updated')).at(-1).data).toMatchObject({ name: 'patchy', changes: ['interval_sec', 'display_name', 'daily_token_budget', 'derivation_rules'] });
    expect((await api.call('PATCH', '/agents/patchy', {})).statusCode).toBe(400);
    expect((await api.call('PATCH', '/agents/patchy', { derivation_rules: [{ id: 'x', when: { title_matches: '[' }, create: { title: 'x' } }] })).statusCode).toBe(400);
    expect((await api.call('PATCH', '/agents/patchy', { status: 'active' })).statusCode).toBe(400);
    // A stopped agent keeps no schedule, whatever its interval.
    await api.call('POST', '/agents/patchy/stop');
    await api.call('PATCH', '/agents/patchy', { interval_sec: 60 });
    expect(await scheduler(a.id)).toBeFalsy();
    expect((await client(svc).call('PATCH', '/agents/patchy', { role: 'x' })).statusCode).toBe(404);
  });

  it('lists with filters and pagination; other orgs see nothing; scopes enforced', async () => {
    const api = client(svc);
    await api.agent({ name: 'alpha', role: 'engineer' });
    await api.agent({ name: 'beta', role: 'designer' });
    await api.agent({ name: 'gamma', role: 'designer' });
    await api.call('POST', '/agents/beta/stop');
    expect((await api.call('GET', '/agents?status=paused')).json().data.map((a: { name: string }) => a.name)).toEqual(['beta']);
    expect((await api.call('GET', '/agents?status=paused,active')).json().meta.total).toBe(3);
    const unknown = await api.call('GET', '/agents?status=sleeping');
    expect(unknown.statusCode).toBe(400);
    expect(unknown.json().error.message).toContain('sleeping');
    expect((await api.call('GET', '/agents?role=designer')).json().meta.total).toBe(2);
    expect((await api.call('GET', '/agents?q=alp')).json().data.map((a: { name: string }) => a.name)).toEqual(['alpha']);
    expect((await api.call('GET', '/agents?q=%25')).json().meta.total).toBe(0);
    expect((await api.call('GET', '/agents?bootstrapped=true')).json().meta.total).toBe(3);
    const first = (await api.call('GET', '/agents?limit=2')).json();
    expect(first.meta).toEqual({ total: 3, limit: 2, offset: 0 });
    const second = (await api.call('GET', '/agents?limit=2&offset=2')).json();
    expect([...first.data, ...second.data].map((a: { name: string }) => a.name).sort()).toEqual(['alpha', 'beta', 'gamma']);
    expect((await api.call('GET', '/agents?limit=5000')).json().meta.limit).toBe(200);
    const other = client(svc);
    expect((await other.call('GET', '/agents')).json().meta.total).toBe(0);
    for (const url of ['/agents/alpha', '/agents/alpha/runs']) expect((await other.call('GET', url)).statusCode, url).toBe(404);
    for (const action of ['stop', 'start', 'restart']) expect((await other.call('POST', `/agents/alpha/${action}`)).statusCode).toBe(404);
    const reader = client(svc, apiKeyPrincipal(['agents:read'], { orgId: api.principal.orgId }));
    expect((await reader.call('GET', '/agents')).statusCode).toBe(200);
    expect((await reader.call('POST', '/agents', { name: 'nope' })).json().error.code).toBe('SCOPE_REQUIRED');
    expect((await reader.call('POST', '/agents/alpha/stop')).json().error.code).toBe('SCOPE_REQUIRED');
  });
});

describe('lifecycle', () => {
  it('stop removes the BullMQ schedule (no more cycles); start restores it; restart re-creates it; each emits its event', async () => {
    const api = client(svc);
    const a = await api.agent({ name: 'ticker', interval_sec: 1 });
    const cycleAt = async () => (await api.call('GET', '/agents/ticker')).json().data.last_cycle_at as string | null;
    const first = await waitFor(cycleAt, { message: 'first cycle' });
    await waitFor(async () => Date.parse((await cycleAt())!) > Date.parse(first), { message: 'scheduled cycle' });
    const stopped = await api.call('POST', '/agents/ticker/stop', { note: 'maintenance' });
    expect(stopped.json().data.status).toBe('paused');
    expect(await scheduler(a.id)).toBeFalsy();
    // No next cycle is waiting in BullMQ either (removing the scheduler removes its delayed job).
    const pending = await svc.ctx.queues.queue(Queues.agentSchedules).getJobs(['delayed', 'waiting', 'prioritized']);
    expect(pending.filter((j) => (j.data as { payload: { agentId: number } }).payload.agentId === a.id)).toEqual([]);
    // A cycle already taken by the worker may still finish: let it, then nothing more may come.
    await sleep(300);
    const frozen = await cycleAt();
    await sleep(2_200);
    expect(await cycleAt()).toBe(frozen);
    expect((await outbox(svc, 'agents.agent.stopped')).at(-1).data).toMatchObject({ name: 'ticker', status: 'paused', note: 'maintenance' });

    expect((await api.call('POST', '/agents/ticker/start')).json().data.status).toBe('active');
    expect((await scheduler(a.id))?.every).toBe(1_000);
    await waitFor(async () => Date.parse((await cycleAt()) ?? '0') > Date.parse(frozen!), { message: 'cycles resume' });
    expect((await outbox(svc, 'agents.agent.started')).at(-1).data).toMatchObject({ name: 'ticker', status: 'active' });

    expect((await api.call('POST', '/agents/ticker/restart', { note: 'new config' })).json().data.status).toBe('active');
    expect((await scheduler(a.id))?.every).toBe(1_000);
    expect((await outbox(svc, 'agents.agent.restarted')).at(-1).data).toMatchObject({ name: 'ticker' });
    await api.call('POST', '/agents/ticker/stop');
  });
});

describe('public agents API', () => {
  it('create (same bootstrap), get, patch (status drives the schedule), deactivate', async () => {
    const api = client(svc);
    const res = await api.call('POST', '/v1/public/agents', { name: 'pub-one', role: 'ops', emoji: '🤖', status: 'idle', workspace_path: 'teams/ops/pub-one' });
    expect(res.statusCode).toBe(201);
    const created = res.json().data;
    expect(created).toMatchObject({ name: 'pub-one', role: 'ops', emoji: '🤖', status: 'idle', workspace_path: 'teams/ops/pub-one' });
    expect((await api.call('GET', '/files/search?workspace=teams/ops/pub-one')).json().data.map((f: { name: string }) => f.name)).toEqual(['SOUL.md']);
    expect(await scheduler(created.id)).toBeTruthy();
    expect((await api.call('POST', '/v1/public/agents', { name: 'pub-one', role: 'ops' })).statusCode).toBe(409);

    const paused = await api.call('POST', '/v1/public/agents', { name: 'pub-two', role: 'ops', status: 'paused' });
    expect(await scheduler(paused.json().data.id)).toBeFalsy();
    expect((await api.call('PATCH', `/v1/public/agents/${paused.json().data.id}`, { status: 'idle' })).statusCode).toBe(200);
    expect(await scheduler(paused.json().data.id)).toBeTruthy();

    const id = created.id;
    expect((await api.call('PATCH', `/v1/public/agents/${id}`, { current_task: 'T-1', status: 'working' })).json().data).toMatchObject({ current_task: 'T-1', status: 'working' });
    expect((await api.call('PATCH', `/v1/public/agents/${id}`, { status: 'error' })).statusCode).toBe(400);
    expect((await api.call('PATCH', `/v1/public/agents/${id}`, { status: 'paused' })).json().data.status).toBe('paused');
    expect(await scheduler(id)).toBeFalsy();
    expect((await api.call('DELETE', `/v1/public/agents/${id}`)).json().data.status).toBe('offline');
    expect((await api.call('DELETE', `/v1/public/agents/${id}`)).json().data.status).toBe('offline');
    expect((await outbox(svc, 'agents.agent.stopped')).filter((e) => e.data.name === 'pub-one')).toHaveLength(1);
    for (const [method, body] of [['GET', undefined], ['PATCH', { role: 'x' }], ['DELETE', undefined]] as const) {
      expect((await client(svc).call(method, `/v1/public/agents/${id}`, body)).statusCode).toBe(404);
    }
    expect((await api.call('GET', '/v1/public/agents?role=ops')).json().meta.total).toBe(2);
    expect((await api.call('GET', '/v1/public/agents?status=offline')).json().data.map((a: { id: number }) => a.id)).toEqual([id]);
    expect((await api.call('GET', '/v1/public/agents?status=nope')).statusCode).toBe(400);
  });
});
