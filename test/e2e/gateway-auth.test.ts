import { subjectFor } from '@aos/bus';
import { sleep, waitFor } from '@aos/testkit';
import { exportSPKI, importJWK, SignJWT, UnsecuredJWT } from 'jose';
import { createSecretKey, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack } from './stack.js';

let stack: Awaited<ReturnType<typeof startStack>>;
beforeAll(async () => { stack = await startStack({ AUTH_RATE_LIMIT_PER_MINUTE: '30' }); });
afterAll(() => stack?.close());

const api = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, opts: { token?: string; body?: unknown; headers?: Record<string, string>; ip?: string } = {}) =>
  stack.gateway.inject({
    method, url, ...(opts.body !== undefined ? { payload: opts.body as object } : {}), ...(opts.ip ? { remoteAddress: opts.ip } : {}),
    headers: { ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}), ...opts.headers },
  });

async function signup() {
  const id = randomUUID().slice(0, 8);
  const res = await api('POST', '/api/auth/register', { body: { username: `u_${id}`, email: `${id}@example.com`, password: 'correct horse battery', terms_accepted: true, privacy_accepted: true } });
  expect(res.statusCode).toBe(201);
  return res.json().data as { token: string; refresh_token: string; org_id: string; user: { id: string } };
}

describe('through the gateway', () => {
  it('a registered user calls services with the bearer token or the cookie; anonymous gets 401', async () => {
    const u = await signup();
    expect((await api('GET', '/api/auth/me', { token: u.token })).json().data.user.id).toBe(u.user.id);
    expect((await api('GET', '/api/v1/auth/me', { headers: { cookie: `assimetria_jwt=${u.token}` } })).statusCode).toBe(200);
    const created = await api('POST', '/api/tasks', { token: u.token, body: { title: 'Through the gateway' } });
    expect(created.statusCode).toBe(201);
    expect(created.json().data.created_by).toBe(u.user.id);
    const anon = await api('GET', '/api/tasks');
    expect(anon.statusCode).toBe(401);
    expect(anon.json().error.code).toBe('UNAUTHORIZED');
    expect(anon.headers['x-trace-id']).toMatch(/^[0-9a-f]{32}$/);
  });

  it('rejects forged, expired, none and confused-algorithm tokens', async () => {
    const u = await signup();
    const jwks = (await stack.identity.inject(null, { method: 'GET', url: '/internal/jwks' })).json().keys;
    const publicKey = await importJWK(jwks[0], 'EdDSA');
    const claims = { tid: 't', org: u.org_id, org_role: 'owner', roles: ['admin'] };
    const base = (jwt: SignJWT) => jwt.setIssuer('aos-identity').setAudience('aos-api').setSubject(u.user.id).setJti(randomUUID()).setIssuedAt();
    const none = new UnsecuredJWT(claims).setIssuer('aos-identity').setAudience('aos-api').setSubject(u.user.id).setJti('x').setIssuedAt().setExpirationTime('5m').encode();
    const hs = await base(new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' })).setExpirationTime('5m')
      .sign(createSecretKey(Buffer.from(await exportSPKI(publicKey as never))));
    const [h, p, s] = u.token.split('.');
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), roles: ['admin'] })).toString('base64url')}.${s}`;
    const otherKey = (await import('jose')).generateKeyPair('EdDSA', { crv: 'Ed25519' });
    const foreign = await base(new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: jwks[0].kid })).setExpirationTime('5m').sign((await otherKey).privateKey);
    for (const token of [none, hs, tampered, foreign, 'not.a.jwt', `${u.token}x`]) {
      const res = await api('GET', '/api/auth/me', { token });
      expect(res.statusCode, token.slice(0, 20)).toBe(401);
    }
  });

  it('logout revokes the token at the gateway', async () => {
    const u = await signup();
    expect((await api('POST', '/api/auth/logout', { token: u.token, body: {} })).statusCode).toBe(200);
    await waitFor(async () => (await api('GET', '/api/auth/me', { token: u.token })).statusCode === 401, { timeoutMs: 5_000, message: 'revoked token refused' });
  });

  it('X-Org-Id selects an org the user belongs to; another org is 403', async () => {
    const a = await signup();
    const b = await signup();
    const org = (await api('POST', '/api/organizations', { token: a.token, body: { name: `Team ${randomUUID().slice(0, 6)}` } })).json().data;
    const inOrg = await api('POST', '/api/tasks', { token: a.token, headers: { 'x-org-id': org.id }, body: { title: 'Org task' } });
    expect(inOrg.statusCode).toBe(201);
    expect((await api('GET', '/api/tasks', { token: a.token })).json().data.some((t: { title: string }) => t.title === 'Org task')).toBe(false);
    expect((await api('GET', '/api/tasks', { token: a.token, headers: { 'x-org-id': org.id } })).json().data.map((t: { title: string }) => t.title)).toEqual(['Org task']);
    expect((await api('GET', '/api/tasks', { token: b.token, headers: { 'x-org-id': org.id } })).statusCode).toBe(403);
  });

  it('API keys: scopes enforced (403 SCOPE_REQUIRED), usage logged, revocation effective in under a second', async () => {
    const u = await signup();
    const key = (await api('POST', `/api/organizations/${u.org_id}/api-keys`, { token: u.token, body: { name: 'reader', scopes: ['tasks:read'] } })).json().data;
    const list = await api('GET', '/api/tasks', { token: key.key });
    expect(list.statusCode).toBe(200);
    const write = await api('POST', '/api/tasks', { token: key.key, body: { title: 'nope' } });
    expect(write.statusCode).toBe(403);
    expect(write.json().error).toMatchObject({ code: 'SCOPE_REQUIRED', details: [{ scope: 'tasks:write' }] });
    await waitFor(async () => (await api('GET', `/api/organizations/${u.org_id}/api-keys/${key.id}/usage`, { token: u.token })).json().meta.total >= 2, { message: 'usage recorded' });

    const revoke = await api('POST', `/api/organizations/${u.org_id}/api-keys/${key.id}/revoke`, { token: u.token });
    expect(revoke.statusCode).toBe(200);
    const t0 = performance.now();
    let latency = -1;
    while (performance.now() - t0 < 3_000) {
      if ((await api('GET', '/api/tasks', { token: key.key })).statusCode === 401) { latency = performance.now() - t0; break; }
      await sleep(10);
    }
    expect(latency).toBeGreaterThanOrEqual(0);
    expect(latency).toBeLessThan(1_000);
    expect((await api('GET', '/api/tasks', { token: 'osk_live_definitelynotavalidkey' })).statusCode).toBe(401);
  });

  it('rate limits per principal with headers and Retry-After', async () => {
    const u = await signup();
    const key = (await api('POST', `/api/organizations/${u.org_id}/api-keys`, { token: u.token, body: { name: 'burst' } })).json().data;
    // Windows are per calendar minute: start the burst well inside one.
    const second = new Date().getSeconds();
    if (second > 45) await sleep((61 - second) * 1000);
    let last;
    for (let i = 0; i < 100; i++) {
      last = await api('GET', '/api/tasks?limit=1', { token: key.key });
      expect(last.statusCode).toBe(200);
    }
    expect(last!.headers['x-ratelimit-limit']).toBe('100');
    expect(last!.headers['x-ratelimit-remaining']).toBe('0');
    expect(Number(last!.headers['x-ratelimit-reset'])).toBeGreaterThan(Date.now() / 1000);
    const limited = await api('GET', '/api/tasks?limit=1', { token: key.key });
    expect(limited.statusCode).toBe(429);
    expect(limited.json().error.code).toBe('RATE_LIMITED');
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    // Another principal is not affected.
    expect((await api('GET', '/api/tasks?limit=1', { token: u.token })).statusCode).toBe(200);
  });

  it('follows the subscription tier from billing events', async () => {
    const u = await signup();
    expect((await api('GET', '/api/tasks', { token: u.token })).headers['x-ratelimit-limit']).toBe('100');
    const bus = await stack.tasks.ctx.bus;
    const envelope = {
      id: randomUUID(), type: 'billing.subscription.changed', version: 1, source: 'billing', occurredAt: new Date().toISOString(), tenantId: null, orgId: u.org_id,
      actor: { type: 'system', id: null }, data: { subscriptionId: 'sub_1', tier: 'pro', previousTier: 'free', status: 'active', userId: u.user.id, effectiveAt: new Date().toISOString() },
    };
    await bus.js.publish(subjectFor(bus.names, 'billing.subscription.changed'), JSON.stringify(envelope), { msgID: envelope.id });
    await waitFor(async () => (await api('GET', '/api/tasks', { token: u.token })).headers['x-ratelimit-limit'] === '600', { message: 'pro tier limit' });

    // A late (redelivered) older change never overwrites the newer tier. The consumer handles one
    // subject in stream order, so once a later marker event is applied the stale one has been too.
    const stale = { ...envelope, id: randomUUID(), occurredAt: new Date(Date.now() - 3_600_000).toISOString(), data: { ...envelope.data, tier: 'free', previousTier: 'pro' } };
    await bus.js.publish(subjectFor(bus.names, 'billing.subscription.changed'), JSON.stringify(stale), { msgID: stale.id });
    const other = await signup();
    const marker = { ...envelope, id: randomUUID(), orgId: other.org_id, data: { ...envelope.data, tier: 'teams' } };
    await bus.js.publish(subjectFor(bus.names, 'billing.subscription.changed'), JSON.stringify(marker), { msgID: marker.id });
    await waitFor(async () => (await api('GET', '/api/tasks', { token: other.token })).headers['x-ratelimit-limit'] === '2000', { message: 'marker applied' });
    expect((await api('GET', '/api/tasks', { token: u.token })).headers['x-ratelimit-limit']).toBe('600');
  });

  it("applies an Enterprise organization's negotiated rate limits carried by the event, else the configured Enterprise defaults", async () => {
    const u = await signup();
    const bus = await stack.tasks.ctx.bus;
    const send = async (data: Record<string, unknown>, occurredAt = new Date().toISOString()) => {
      const envelope = {
        id: randomUUID(), type: 'billing.subscription.changed', version: 1, source: 'billing', occurredAt, tenantId: null, orgId: u.org_id,
        actor: { type: 'system', id: null }, data: { subscriptionId: null, previousTier: 'free', status: 'active', userId: null, effectiveAt: occurredAt, ...data },
      };
      await bus.js.publish(subjectFor(bus.names, 'billing.subscription.changed'), JSON.stringify(envelope), { msgID: envelope.id });
    };
    const limit = async () => (await api('GET', '/api/tasks', { token: u.token })).headers['x-ratelimit-limit'];
    const negotiated = { requestsPerMinute: 7, requestsPerHour: 70, agents: 100, seats: 10, tasksPerMonth: null, includedTokens: null };
    await send({ tier: 'enterprise', limits: negotiated });
    await waitFor(async () => (await limit()) === '7', { message: 'negotiated limit' });
    // The negotiated minute window holds: 7 requests, then 429 (another principal of a Pro org is not affected).
    let refused;
    for (let i = 0; i < 20 && !refused; i++) { // 20 > 2 × 7: a minute boundary mid-loop cannot hide the limit
      const res = await api('GET', '/api/tasks?limit=1', { token: u.token });
      if (res.statusCode === 429) refused = res;
    }
    expect(refused?.json().error.code).toBe('RATE_LIMITED');
    // An older event (other limits) never overwrites the newer ones; unlimited (null) means the configured default.
    await send({ tier: 'enterprise', limits: { ...negotiated, requestsPerMinute: 9_999 } }, new Date(Date.now() - 3_600_000).toISOString());
    await send({ tier: 'enterprise', limits: { ...negotiated, requestsPerMinute: null, requestsPerHour: null } });
    await waitFor(async () => (await limit()) === '10000', { message: 'enterprise default from RATE_LIMIT_ENTERPRISE_PER_MINUTE' });
    // Limits sent with another tier are not the gateway's to apply: the tier table rules.
    await send({ tier: 'pro', limits: { ...negotiated, requestsPerMinute: 3 } });
    await waitFor(async () => (await limit()) === '600', { message: 'pro table limit' });
  });

  it('recreates its event consumer when the broker loses it, replaying what it missed', async () => {
    const u = await signup();
    const key = (await api('POST', `/api/organizations/${u.org_id}/api-keys`, { token: u.token, body: { name: 'k', scopes: ['tasks:read'] } })).json().data;
    expect((await api('GET', '/api/tasks', { token: key.key })).statusCode).toBe(200); // now cached at the gateway
    const bus = await stack.tasks.ctx.bus;
    await bus.jsm.consumers.delete(bus.names.stream, 'gateway--identity');
    // Revoked while no consumer exists: the recreated one must still see it.
    expect((await api('POST', `/api/organizations/${u.org_id}/api-keys/${key.id}/revoke`, { token: u.token })).statusCode).toBe(200);
    await waitFor(async () => (await api('GET', '/api/tasks', { token: key.key })).statusCode === 401, { timeoutMs: 25_000, message: 'revocation applied by the recreated consumer' });
    await waitFor(async () => (await bus.jsm.consumers.info(bus.names.stream, 'gateway--identity').catch(() => null)) !== null, { message: 'consumer recreated' });
  });

  it('limits logins per IP more strictly', async () => {
    let res;
    for (let i = 0; i < 31; i++) res = await api('POST', '/api/auth/login', { body: { email: 'x@example.com', password: 'wrong password' }, ip: '10.9.9.9' });
    expect(res!.statusCode).toBe(429);
    expect(res!.headers['retry-after']).toBeDefined();
    // Another address is not affected; a spoofed X-Forwarded-For does not move the limit.
    expect((await api('POST', '/api/auth/login', { body: { email: 'y@example.com', password: 'wrong password' }, ip: '10.9.9.10' })).statusCode).toBe(401);
    expect((await api('POST', '/api/auth/login', { body: { email: 'x@example.com', password: 'wrong password' }, ip: '10.9.9.9', headers: { 'x-forwarded-for': '1.2.3.4' } })).statusCode).toBe(429);
  });

  it('serves one merged OpenAPI document with every reference path of the running services', async () => {
    const doc = (await api('GET', '/api/docs/openapi.json')).json();
    expect(doc.openapi).toBe('3.0.3');
    expect(doc.components.securitySchemes.bearerAuth).toBeDefined();
    const rows = readFileSync(new URL('../../../shared/reference/endpoints.tsv', import.meta.url), 'utf8').trim().split('\n').slice(1).map((l) => l.split('\t'));
    const up = new Set(['identity', 'tasks', 'gateway']);
    const missing = rows.filter(([, , , owner]) => up.has(owner!)).map(([method, path]) => [method!.toLowerCase(), `/api${path}`] as const)
      .filter(([method, path]) => !doc.paths[path]?.[method]);
    expect(missing, JSON.stringify(missing)).toEqual([]);
    expect(doc['x-unavailable-services']).toContain('billing');
    const ui = await api('GET', '/api/docs/');
    expect(ui.statusCode).toBe(200);
    expect(ui.body).toContain('swagger');
    const uiSpec = (await api('GET', '/api/docs/json')).json();
    expect(uiSpec.paths['/api/tasks']).toBeDefined();
  });

  it('serves the dashboard aggregates and search as the caller', async () => {
    const u = await signup();
    await api('POST', '/api/products', { token: u.token, body: { name: 'Searchable Widget' } });
    await api('POST', '/api/tasks', { token: u.token, body: { title: 'Polish the searchable widget' } });
    const stats = (await api('GET', '/api/dashboard/stats', { token: u.token })).json().data;
    expect(stats).toMatchObject({ tasks: 1, pending_tasks: 1, products: 1, agents: null });
    expect(stats.unavailable).toContain('agents-runtime');
    const found = (await api('GET', '/api/search?q=searchable', { token: u.token })).json().data;
    expect(found.tasks.map((t: { title: string }) => t.title)).toEqual(['Polish the searchable widget']);
    expect(found.products.map((p: { slug: string }) => p.slug)).toEqual(['searchable-widget']);
    const other = await signup();
    expect((await api('GET', '/api/search?q=searchable', { token: other.token })).json().data.tasks).toEqual([]);
    expect((await api('GET', '/api/dashboard/stats')).statusCode).toBe(401);
    // Credentials are checked before the query: without them it is 401 whatever the query says.
    for (const url of ['/api/search', '/api/search?q=', '/api/search?q=x&limit=abc', '/api/search?q=x&limit=1e309']) {
      expect((await api('GET', url)).statusCode, url).toBe(401);
      expect((await api('GET', url, { token: u.token })).statusCode, url).toBe(400);
    }
    const health = (await api('GET', '/api/system/health', { token: u.token })).json().data;
    expect(health.sections.services.ready).toMatchObject({ identity: true, tasks: true, billing: false });
    expect((await api('GET', '/api/arch-health')).statusCode).toBe(503);
    expect((await api('GET', '/api/dashboard')).json().data.endpoints).toContain('/api/search');
  });

  it('sets security headers', async () => {
    const res = await api('GET', '/api/health');
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['strict-transport-security']).toBeDefined();
  });
});
