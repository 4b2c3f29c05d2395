import { adminPrincipal, createNamespace, startTestService, waitFor } from '@aos/testkit';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service as billingService } from '../../services/billing/src/service.js';
import { startStack } from './stack.js';

// A platform admin puts an organization on Enterprise with negotiated limits in billing; the
// gateway's rate limit follows through billing.subscription.changed on the real bus.
const ns = createNamespace();
let billing: Awaited<ReturnType<typeof startTestService>>;
let stack: Awaited<ReturnType<typeof startStack>>;

beforeAll(async () => {
  billing = await startTestService(billingService, { namespace: ns });
  await billing.app.listen({ host: '127.0.0.1', port: 0 });
  stack = await startStack({ BILLING_URL: `http://127.0.0.1:${(billing.app.server.address() as AddressInfo).port}` }, ns);
});
afterAll(async () => {
  await billing?.close();
  await stack?.close();
});

describe('Enterprise plans set by a platform admin', () => {
  it('reach the gateway: negotiated requests per minute, then the Free table once handed back', async () => {
    const id = randomUUID().slice(0, 8);
    const reg = await stack.gateway.inject({ method: 'POST', url: '/api/auth/register', payload: { username: `ent_${id}`, email: `${id}@example.com`, password: 'correct horse battery', terms_accepted: true, privacy_accepted: true } });
    const { token, org_id: orgId } = reg.json().data as { token: string; org_id: string };
    const call = (url: string) => stack.gateway.inject({ method: 'GET', url, headers: { authorization: `Bearer ${token}` } });
    expect((await call('/api/tasks')).headers['x-ratelimit-limit']).toBe('100');

    const admin = adminPrincipal();
    const set = await billing.inject(admin, { method: 'PUT', url: `/billing/admin/orgs/${orgId}/plan`, payload: { tier: 'enterprise', limits: { requests_per_minute: 4_200, requests_per_hour: 420_000, seats: 25 } } });
    expect(set.statusCode, set.body).toBe(200);
    await waitFor(async () => (await call('/api/tasks')).headers['x-ratelimit-limit'] === '4200', { message: 'negotiated limit at the gateway' });
    const sub = await call('/api/billing/subscription');
    expect(sub.json().data).toMatchObject({ tier: 'enterprise', managed: true, limits: { requests_per_minute: 4_200, seats: 25 } });

    expect((await billing.inject(admin, { method: 'DELETE', url: `/billing/admin/orgs/${orgId}/plan` })).statusCode).toBe(200);
    await waitFor(async () => (await call('/api/tasks')).headers['x-ratelimit-limit'] === '100', { message: 'back on Free' });
  });
});
