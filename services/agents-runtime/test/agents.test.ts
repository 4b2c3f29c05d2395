import { Queues } from '@aos/contracts';
import { apiKeyPrincipal, sleep, userPrincipal, waitFor } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, outbox, startAgents, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startAgents(); });
afterAll(() => svc?.close());

describe('agents registry and lifecycle', () => {
  it('creates an agent through recorded bootstrap steps; 409 on a second one with the name', async () => {
    const api = client(svc);
    const res = await api.call('POST', '/agents', { name: 'felix', display_name: 'Felix', model: 'offline-1', interval_sec: 3600, emoji: '📦', color: '#3b82f6' });
    expect(res.statusCode).toBe(201);
    const { agent, steps } = res.json().data;
    expect(agent).toMatchObject({ name: 'felix', status: 'active', workspace_path: 'workspaces/felix' });
    expect(steps.map((s: { step: string }) => s.step)).toEqual(['registration', 'workspace', 'identity_document', 'schedule', 'heartbeat', 'log']);
    expect(steps.every((s: { ok: boolean }) => s.ok)).toBe(true);
    expect((await api.call('GET', '/files/search?q=SOUL')).json().data[0].path).toBe('workspaces/felix/SOUL.md');
    expect((await api.call('POST', '/agents', { name: 'felix' })).statusCode).toBe(409);
    expect((await outbox(svc, 'agents.agent.created')).length).toBe(1);
    const scheduler = await svc.ctx.queues.queue(Queues.agentSchedules).getJobScheduler(`agent-${agent.id}`);
    expect(scheduler?.every).toBe(3_600_000);
  });

  it('rejects bad names and path traversal with 400', async () => {
    const api = client(svc);
    for (const name of ['../etc', 'Felix', '-dash', 'a'.repeat(64), 'with space', 'x/y', '']) {
      expect((await api.call('POST', '/agents', { name })).statusCode, name).toBe(400);
    }
    for (const name of ['..%2F..%2Fetc', 'UPPER', '%2e%2e.x']) {
      expect((await api.call('POST', `/agents/${name}/stop`)).statusCode, name).toBe(400);
    }
    // A bare `..` segment is resolved by the router before any handler: no such route.
    expect((await api.call('POST', '/agents/%2e%2e/stop')).statusCode).toBe(404);
    expect((await api.call('POST', '/v1/public/agents', { name: 'okname', role: 'x', workspace_path: '../../root' })).statusCode).toBe(400);
  });

  it('a stopped agent no longer fires; start resumes it', async () => {
    const api = client(svc);
    const a = await api.agent({ name: 'ticker', interval_sec: 1 });
    const heartbeat = async () => (await api.call('GET', '/agents?q=ticker')).json().data[0].last_heartbeat as string;
    const first = await heartbeat();
    await waitFor(async () => new Date(await heartbeat()).getTime() > new Date(first).getTime(), { message: 'scheduled cycle' });
    const stopped = await api.call('POST', '/agents/ticker/stop', { note: 'maintenance' });
    expect(stopped.json().data.status).toBe('paused');
    expect(await svc.ctx.queues.queue(Queues.agentSchedules).getJobScheduler(`agent-${a.id}`)).toBeFalsy();
    await sleep(300);
    const frozen = await heartbeat();
    await sleep(2_000);
    expect(await heartbeat()).toBe(frozen);
    expect((await outbox(svc, 'agents.agent.stopped')).at(-1).data).toMatchObject({ name: 'ticker', note: 'maintenance' });
    expect((await api.call('POST', '/agents/ticker/start')).json().data.status).toBe('active');
    expect(await svc.ctx.queues.queue(Queues.agentSchedules).getJobScheduler(`agent-${a.id}`)).toBeTruthy();
    await api.call('POST', '/agents/ticker/stop');
  });

  it('lists with filters and pagination; other orgs see nothing; scopes enforced', async () => {
    const api = client(svc);
    await api.agent({ name: 'alpha', role: 'engineer' });
    await api.agent({ name: 'beta', role: 'designer' });
    await api.call('POST', '/agents/beta/stop');
    expect((await api.call('GET', '/agents?status=paused')).json().data.map((a: { name: string }) => a.name)).toEqual(['beta']);
    expect((await api.call('GET', '/agents?q=alp')).json().data.map((a: { name: string }) => a.name)).toEqual(['alpha']);
    expect((await api.call('GET', '/agents?limit=1')).json().meta).toMatchObject({ total: 2, limit: 1 });
    const other = client(svc);
    expect((await other.call('GET', '/agents')).json().meta.total).toBe(0);
    expect((await other.call('POST', '/agents/alpha/stop')).statusCode).toBe(404);
    expect((await other.call('GET', '/agents/alpha/runs')).statusCode).toBe(404);
    const reader = client(svc, apiKeyPrincipal(['agents:read'], { orgId: api.principal.orgId }));
    expect((await reader.call('GET', '/agents')).statusCode).toBe(200);
    expect((await reader.call('POST', '/agents', { name: 'nope' })).json().error.code).toBe('SCOPE_REQUIRED');
  });

  it('public agents API: create, get, patch, deactivate', async () => {
    const api = client(svc);
    const res = await api.call('POST', '/v1/public/agents', { name: 'pub-one', role: 'ops', emoji: '🤖', status: 'idle' });
    expect(res.statusCode).toBe(201);
    const id = res.json().data.id;
    expect((await api.call('PATCH', `/v1/public/agents/${id}`, { current_task: 'T-1', status: 'working' })).json().data).toMatchObject({ current_task: 'T-1', status: 'working' });
    expect((await api.call('DELETE', `/v1/public/agents/${id}`)).json().data.status).toBe('offline');
    expect((await client(svc).call('GET', `/v1/public/agents/${id}`)).statusCode).toBe(404);
    expect((await api.call('GET', '/v1/public/agents?role=ops')).json().meta.total).toBe(1);
    void userPrincipal;
  });
});
