import { putOnPlan } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, outbox, publish, type Api, startAgents, type Svc } from './helpers.js';
import { scheduleOf } from '../src/domain/agents.js';

let svc: Svc;
beforeAll(async () => { svc = await startAgents(); });
afterAll(() => svc?.close());

const orgOf = (api: Api) => api.principal.orgId!;
const create = (api: Api, name: string, body: Record<string, unknown> = {}) => api.call('POST', '/agents', { name, ...body });
async function agents(api: Api, n: number, prefix = 'agent') {
  for (let i = 1; i <= n; i++) expect((await create(api, `${prefix}-${i}`)).statusCode).toBe(201);
}
const refusal = (limit: string, used: number, max: number, tier: string) =>
  ({ code: 'PLAN_LIMIT_REACHED', details: [{ limit, used, max, tier }] });

describe('agents per plan', () => {
  it('Free: a 4th agent is refused (402, both create routes) and leaves nothing behind', async () => {
    const api = client(svc);
    await agents(api, 3);
    const refused = await create(api, 'fourth');
    expect(refused.statusCode).toBe(402);
    expect(refused.json().error).toMatchObject(refusal('agents', 3, 3, 'free'));
    expect(refused.json().error.message).toMatch(/Free plan allows 3 agents/);
    const pub = await api.call('POST', '/v1/public/agents', { name: 'fifth', role: 'engineer' });
    expect(pub.statusCode).toBe(402);
    expect(pub.json().error).toMatchObject(refusal('agents', 3, 3, 'free'));
    // Nothing registered, nothing announced (billing would count it), and the name stays free.
    expect((await api.call('GET', '/agents')).json().meta.total).toBe(3);
    expect((await outbox(svc, 'agents.agent.created')).filter((e) => e.orgId === orgOf(api))).toHaveLength(3);
    // A deactivated agent does not count, so one created offline is let in.
    expect((await api.call('POST', '/v1/public/agents', { name: 'parked', role: 'engineer', status: 'offline' })).statusCode).toBe(201);
  });

  it('deactivating frees a place; reactivating an offline agent (start, restart, public PATCH) is refused while full', async () => {
    const api = client(svc);
    await agents(api, 3);
    const list = (await api.call('GET', '/agents')).json().data as { id: number; name: string }[];
    const first = list.find((a) => a.name === 'agent-1')!;
    expect((await api.call('DELETE', `/v1/public/agents/${first.id}`)).json().data.status).toBe('offline');
    expect(await scheduleOf(svc.ctx, first)).toBeUndefined();
    expect((await create(api, 'replacement')).statusCode).toBe(201);

    for (const action of ['start', 'restart']) {
      const res = await api.call('POST', `/agents/${first.name}/${action}`, {});
      expect(res.statusCode, action).toBe(402);
      expect(res.json().error).toMatchObject(refusal('agents', 3, 3, 'free'));
    }
    const patched = await api.call('PATCH', `/v1/public/agents/${first.id}`, { status: 'paused' });
    expect(patched.statusCode).toBe(402);
    // Still offline, and no schedule was put in place for it.
    expect((await api.call('GET', `/agents/${first.name}`)).json().data.status).toBe('offline');
    expect(await scheduleOf(svc.ctx, first)).toBeUndefined();
    // Other changes to an offline agent, and changes to counted agents, are not plan matters.
    expect((await api.call('PATCH', `/v1/public/agents/${first.id}`, { role: 'writer' })).statusCode).toBe(200);
    expect((await api.call('POST', '/agents/agent-2/stop', {})).statusCode).toBe(200);
    expect((await api.call('POST', '/agents/agent-2/start', {})).statusCode).toBe(200);

    // Once another is deactivated, the first may come back.
    const second = list.find((a) => a.name === 'agent-2')!;
    expect((await api.call('DELETE', `/v1/public/agents/${second.id}`)).statusCode).toBe(200);
    expect((await api.call('POST', `/agents/${first.name}/start`, {})).json().data.status).toBe('active');
    expect(await scheduleOf(svc.ctx, first)).toBeDefined();
  });

  it('follow billing.subscription.changed: an upgrade lets more in, a late older event changes nothing, a downgrade refuses again', async () => {
    const api = client(svc);
    await agents(api, 3);
    expect((await create(api, 'extra-1')).statusCode).toBe(402);
    const upgrade = await putOnPlan(svc, orgOf(api), 'pro');
    expect((await create(api, 'extra-1')).statusCode).toBe(201);
    // Out of order: a Free event decided before the upgrade arrives after it.
    await putOnPlan(svc, orgOf(api), 'free', { occurredAt: new Date(Date.parse(upgrade.occurredAt) - 60_000).toISOString() });
    expect((await create(api, 'extra-2')).statusCode).toBe(201);
    // A redelivery of the upgrade (same event id, new message id) is a no-op too.
    await publish(svc, 'billing.subscription.changed', orgOf(api), upgrade.data, { id: upgrade.id, occurredAt: upgrade.occurredAt, msgId: `${upgrade.id}-again` });
    await putOnPlan(svc, orgOf(api), 'free');
    const refused = await create(api, 'extra-3');
    expect(refused.json().error).toMatchObject(refusal('agents', 5, 3, 'free'));
    // Agents over the limit after a downgrade keep running; only new ones are refused.
    expect((await api.call('GET', '/agents')).json().meta.total).toBe(5);
    expect((await api.call('POST', '/agents/extra-1/restart', {})).statusCode).toBe(200);
  });

  it('Enterprise: null is unlimited, negotiated limits are honoured', async () => {
    const api = client(svc);
    await putOnPlan(svc, orgOf(api), 'enterprise', { limits: { agents: 4 } });
    await agents(api, 4);
    expect((await create(api, 'over')).json().error).toMatchObject(refusal('agents', 4, 4, 'enterprise'));
    await putOnPlan(svc, orgOf(api), 'enterprise');
    await agents(api, 12, 'many');
    expect((await api.call('GET', '/agents')).json().meta.total).toBe(16);
  });

  it('concurrent creations at the limit: exactly the free places are taken', async () => {
    const api = client(svc);
    await agents(api, 2);
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => create(api, `racer-${i}`)));
    expect(results.map((r) => r.statusCode).sort()).toEqual([201, 402, 402, 402, 402, 402, 402, 402]);
    expect((await api.call('GET', '/agents')).json().meta.total).toBe(3);

    // Reactivations race too: two offline agents started at once with one place free.
    const other = client(svc);
    await agents(other, 2);
    for (const name of ['sleeper-1', 'sleeper-2']) expect((await other.call('POST', '/v1/public/agents', { name, role: 'ops', status: 'offline' })).statusCode).toBe(201);
    const starts = await Promise.all(['sleeper-1', 'sleeper-2'].map((n) => other.call('POST', `/agents/${n}/start`, {})));
    expect(starts.map((r) => r.statusCode).sort()).toEqual([200, 402]);
    expect((await other.call('GET', '/agents?status=active,idle,working,paused,blocked,error')).json().meta.total).toBe(3);
  });
});
