import { ANONYMOUS, type Principal } from '@aos/contracts';
import { adminPrincipal, createNamespace, removeNamespace, startTestService, userPrincipal, waitFor, type TestNamespace } from '@aos/testkit';
import { exportJWK, generateKeyPair } from 'jose';
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service as agentsService } from '../../services/agents-runtime/src/service.js';
import { service as billingService } from '../../services/billing/src/service.js';
import { service as identityService } from '../../services/identity/src/service.js';
import { service as tasksService } from '../../services/tasks/src/service.js';

// Billing's plan limits and signup bonus are fed only by the events the other services really
// publish: registration, organization membership, agents and tasks created through their APIs.
let ns: TestNamespace;
type Started = Awaited<ReturnType<typeof startTestService>>;
let identity: Started;
let agents: Started;
let tasks: Started;
let billing: Started;

beforeAll(async () => {
  ns = createNamespace();
  const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const jwk = JSON.stringify({ ...(await exportJWK(privateKey)), kid: randomUUID(), alg: 'EdDSA' });
  [identity, agents, tasks, billing] = await Promise.all([
    startTestService(identityService, { namespace: ns, env: { IDENTITY_JWT_PRIVATE_JWK: jwk, API_KEY_PEPPER: randomBytes(24).toString('hex'), PASSWORD_SCRYPT_LOG_N: '10' } }),
    startTestService(agentsService, { namespace: ns }),
    startTestService(tasksService, { namespace: ns }),
    startTestService(billingService, { namespace: ns, env: { SIGNUP_BONUS_TOKENS: '750' } }),
  ]) as [Started, Started, Started, Started];
});
afterAll(async () => {
  await Promise.all([identity?.close(), agents?.close(), tasks?.close(), billing?.close()]);
  await removeNamespace(ns);
});

async function register(name: string) {
  const res = await identity.inject(ANONYMOUS, {
    method: 'POST', url: '/auth/register',
    payload: { username: `${name}${randomBytes(3).toString('hex')}`, email: `${name}.${randomUUID()}@example.com`, password: 'correct horse battery staple 9', terms_accepted: true, privacy_accepted: true },
  });
  expect(res.statusCode, res.body).toBe(201);
  const d = res.json().data;
  const { rows } = await identity.ctx.pool.query('SELECT tenant_id FROM users WHERE id = $1', [d.user.id]);
  return { userId: d.user.id as string, personalOrgId: d.org_id as string, tenantId: rows[0].tenant_id as string };
}

describe('billing usage from the real event producers', () => {
  it('registration, members, agents and tasks show up in usage, limits and the signup bonus', async () => {
    const alice = await register('alice');
    const bob = await register('bob');
    const inPersonal: Principal = userPrincipal({ userId: alice.userId, tenantId: alice.tenantId, orgId: alice.personalOrgId, orgRole: 'owner' });
    await waitFor(async () => (await billing.inject(inPersonal, { method: 'GET', url: '/tokens/balance' })).json().data.balance === 750, { message: 'signup bonus' });

    const org = await identity.inject(userPrincipal({ userId: alice.userId, tenantId: alice.tenantId, orgId: alice.personalOrgId }), { method: 'POST', url: '/organizations', payload: { name: 'Acme' } });
    expect(org.statusCode, org.body).toBe(201);
    const orgId = org.json().data.id as string;
    const alicePrincipal: Principal = userPrincipal({ userId: alice.userId, tenantId: alice.tenantId, orgId, orgRole: 'owner' });
    // Free has a single seat: a platform admin puts Acme on Pro, and identity hears it from billing.
    expect((await billing.inject(adminPrincipal(), { method: 'PUT', url: `/billing/admin/orgs/${orgId}/plan`, payload: { tier: 'pro' } })).statusCode).toBe(200);
    await waitFor(async () => (await identity.ctx.pool.query("SELECT 1 FROM plan_limits WHERE org_id = $1 AND tier = 'pro'", [orgId])).rowCount, { message: 'identity on Pro' });
    const added = await identity.inject(alicePrincipal, { method: 'POST', url: `/organizations/${orgId}/members`, payload: { user_id: bob.userId, role: 'member' } });
    expect(added.statusCode, added.body).toBeLessThan(300);

    for (const name of ['writer', 'reviewer']) {
      const res = await agents.inject(alicePrincipal, { method: 'POST', url: '/agents', payload: { name } });
      expect(res.statusCode, res.body).toBe(201);
    }
    for (const title of ['Ship it', 'Write the docs']) {
      const res = await tasks.inject(alicePrincipal, { method: 'POST', url: '/tasks', payload: { title } });
      expect(res.statusCode, res.body).toBe(201);
    }

    const usage = await waitFor(async () => {
      const u = (await billing.inject(alicePrincipal, { method: 'GET', url: '/billing/usage' })).json().data.usage;
      return u.seats === 2 && u.agents === 2 && u.tasks_this_month === 2 ? u : null;
    }, { message: 'usage from identity, agents-runtime and tasks events' });
    expect(usage).toMatchObject({ seats: 2, agents: 2, tasks_this_month: 2 });
    const summary = (await billing.inject(alicePrincipal, { method: 'GET', url: '/billing/plan-summary' })).json().data;
    expect(summary.metrics.seats).toMatchObject({ used: 2, limit: 3, remaining: 1 });
    // Free allows one seat: a check against Free says so.
    const check = (await billing.inject(alicePrincipal, { method: 'POST', url: '/billing/validate-downgrade', payload: { tier: 'free' } })).json().data;
    expect(check.violations).toEqual([{ resource: 'seats', current: 2, limit: 1, excess: 1 }]);

    const removed = await identity.inject(alicePrincipal, { method: 'DELETE', url: `/organizations/${orgId}/members/${bob.userId}` });
    expect(removed.statusCode, removed.body).toBeLessThan(300);
    await waitFor(async () => (await billing.inject(alicePrincipal, { method: 'GET', url: '/billing/usage' })).json().data.usage.seats === 1, { message: 'seat freed' });
  });
});
