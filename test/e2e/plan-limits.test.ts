import { createNamespace, startTestService, waitFor } from '@aos/testkit';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service as agentsService } from '../../services/agents-runtime/src/service.js';
import { service as billingService } from '../../services/billing/src/service.js';
import { startStack } from './stack.js';

// Plan limits through the gateway: billing (changed by a platform admin) announces the plan on the
// real bus, and agents-runtime, tasks and identity each refuse what goes past it from their own data.
const ns = createNamespace();
let billing: Awaited<ReturnType<typeof startTestService>>;
let agents: Awaited<ReturnType<typeof startTestService>>;
let stack: Awaited<ReturnType<typeof startStack>>;

const listen = async (svc: { app: { listen: (o: object) => Promise<unknown>; server: { address: () => unknown } } }) => {
  await svc.app.listen({ host: '127.0.0.1', port: 0 });
  return `http://127.0.0.1:${(svc.app.server.address() as AddressInfo).port}`;
};

beforeAll(async () => {
  billing = await startTestService(billingService, { namespace: ns });
  agents = await startTestService(agentsService, { namespace: ns });
  stack = await startStack({ BILLING_URL: await listen(billing), AGENTS_RUNTIME_URL: await listen(agents) }, ns);
}, 90_000);
afterAll(async () => {
  await billing?.close();
  await agents?.close();
  await stack?.close();
});

async function signup() {
  const id = randomUUID().slice(0, 8);
  const res = await stack.gateway.inject({ method: 'POST', url: '/api/auth/register', payload: { username: `pl_${id}`, email: `${id}@example.com`, password: 'correct horse battery', terms_accepted: true, privacy_accepted: true } });
  expect(res.statusCode, res.body).toBe(201);
  return res.json().data as { token: string; org_id: string; user: { id: string } };
}
const api = (token: string, method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: object) =>
  stack.gateway.inject({ method, url, headers: { authorization: `Bearer ${token}` }, ...(payload ? { payload } : {}) });

/** Until each enforcing service has recorded the tier billing announced for the org. */
async function heard(orgId: string, tier: string) {
  for (const svc of [agents, stack.tasks, stack.identity]) {
    await waitFor(async () => (await svc.ctx.pool.query('SELECT 1 FROM plan_limits WHERE org_id = $1 AND tier = $2', [orgId, tier])).rowCount, { message: `${svc.ctx.name} on ${tier}` });
  }
}

describe('plan limits through the gateway, following billing', () => {
  it('Free refuses a 4th agent and a 2nd seat; a negotiated Enterprise plan lets them in and caps tasks; handed back to Free, it refuses again', async () => {
    const admin = await signup(); // the first account is a platform admin
    const owner = await signup();
    const colleague = await signup();
    const orgId = owner.org_id;

    for (const name of ['alpha', 'beta', 'gamma']) expect((await api(owner.token, 'POST', '/api/agents', { name })).statusCode).toBe(201);
    const fourth = await api(owner.token, 'POST', '/api/agents', { name: 'delta' });
    expect(fourth.statusCode).toBe(402);
    expect(fourth.json().error).toMatchObject({ code: 'PLAN_LIMIT_REACHED', details: [{ limit: 'agents', used: 3, max: 3, tier: 'free' }] });
    expect(fourth.headers['x-trace-id']).toBeTruthy();
    const seat = await api(owner.token, 'POST', `/api/organizations/${orgId}/members`, { user_id: colleague.user.id });
    expect(seat.json().error).toMatchObject({ code: 'PLAN_LIMIT_REACHED', details: [{ limit: 'seats', used: 1, max: 1, tier: 'free' }] });

    const set = await api(admin.token, 'PUT', `/api/billing/admin/orgs/${orgId}/plan`, { tier: 'enterprise', limits: { agents: 5, tasks_per_month: 2, seats: null } });
    expect(set.statusCode, set.body).toBe(200);
    await heard(orgId, 'enterprise');
    for (const name of ['delta', 'epsilon']) expect((await api(owner.token, 'POST', '/api/agents', { name })).statusCode).toBe(201);
    expect((await api(owner.token, 'POST', '/api/agents', { name: 'zeta' })).json().error.details).toEqual([{ limit: 'agents', used: 5, max: 5, tier: 'enterprise' }]);
    expect((await api(owner.token, 'POST', `/api/organizations/${orgId}/members`, { user_id: colleague.user.id })).statusCode).toBe(201);
    for (const title of ['First', 'Second']) expect((await api(owner.token, 'POST', '/api/tasks', { title })).statusCode).toBe(201);
    const third = await api(owner.token, 'POST', '/api/v1/public/tasks', { title: 'Third' });
    expect(third.json().error).toMatchObject({ code: 'PLAN_LIMIT_REACHED', details: [{ limit: 'tasks_per_month', used: 2, max: 2, tier: 'enterprise' }] });

    // Billing's own report, from the same services' events, agrees.
    await waitFor(async () => {
      const m = (await api(owner.token, 'GET', '/api/billing/plan-summary')).json().data.metrics;
      return m.agents.used === 5 && m.agents.limit === 5 && m.seats.used === 2 && m.tasks_per_month.used === 2;
    }, { message: 'billing usage', intervalMs: 500 });

    expect((await api(admin.token, 'DELETE', `/api/billing/admin/orgs/${orgId}/plan`)).statusCode).toBe(200);
    await heard(orgId, 'free');
    expect((await api(owner.token, 'POST', '/api/agents', { name: 'zeta' })).json().error.details).toEqual([{ limit: 'agents', used: 5, max: 3, tier: 'free' }]);
    // What exists stays: the agents over the limit are listed and keep running.
    expect((await api(owner.token, 'GET', '/api/agents')).json().meta.total).toBe(5);
  });
});
