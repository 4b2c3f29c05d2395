import { ANONYMOUS } from '@aos/contracts';
import { createLogger } from '@aos/core';
import { createNamespace, createTcpProxy, removeNamespace, waitFor } from '@aos/testkit';
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { signingKey, startAuthStack, startGateway, startIdentity } from './helpers.js';

const closers: (() => Promise<unknown>)[] = [];
afterAll(async () => { for (const c of closers.reverse()) await c().catch(() => {}); });

/** A namespace and an identity of this test alone, closed after the file. */
async function ownIdentity() {
  const ns = createNamespace();
  closers.push(() => removeNamespace(ns));
  const id = await startIdentity(ns);
  closers.push(id.close);
  return { ns, id };
}

const body = () => {
  const id = randomUUID().slice(0, 8);
  return { username: `u_${id}`, email: `${id}@example.com`, password: 'correct horse battery', terms_accepted: true, privacy_accepted: true };
};

describe('per-IP limits', () => {
  it('login, register and forgot-password share a strict per-address budget (429 with Retry-After and headers); other addresses are unaffected', async () => {
    const stack = await startAuthStack({ AUTH_RATE_LIMIT_PER_MINUTE: '3' });
    closers.push(stack.close);
    // Start inside one calendar minute (fixed windows).
    if (new Date().getSeconds() > 50) await waitFor(() => new Date().getSeconds() < 5, { timeoutMs: 15_000, intervalMs: 200 });
    const ip = '10.7.0.1';
    const first = await stack.api('POST', '/api/auth/register', { body: body(), ip });
    expect(first.statusCode).toBe(201);
    expect(first.headers['x-ratelimit-limit']).toBe('3');
    expect(first.headers['x-ratelimit-remaining']).toBe('2');
    expect((await stack.api('POST', '/api/auth/forgot-password', { body: { email: 'x@example.com' }, ip })).statusCode).toBe(200);
    expect((await stack.api('POST', '/api/auth/login', { body: { email: 'x@example.com', password: 'wrong password' }, ip })).statusCode).toBe(401);
    for (const [url, payload] of [['/api/auth/register', body()], ['/api/auth/forgot-password', { email: 'x@example.com' }], ['/api/auth/login', { email: 'x@example.com', password: 'p' }]] as const) {
      const limited = await stack.api('POST', url, { body: payload, ip });
      expect(limited.statusCode, url).toBe(429);
      expect(limited.json().error.code).toBe('RATE_LIMITED');
      expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
      expect(limited.headers['x-ratelimit-remaining']).toBe('0');
    }
    expect((await stack.api('POST', '/api/auth/register', { body: body(), ip: '10.7.0.2' })).statusCode).toBe(201);
  });

  it('login throttling counts the socket address: a forged X-Forwarded-For buys no extra guesses', async () => {
    const stack = await startAuthStack({}, { LOGIN_FAILURE_WINDOW_MINUTES: '1440' });
    closers.push(stack.close);
    const u = await stack.signup();
    const attempt = (password: string, ip: string, forged?: string) =>
      stack.api('POST', '/api/auth/login', { body: { email: u.body.email, password }, ip, headers: forged ? { 'x-forwarded-for': forged } : {} });
    for (let i = 0; i < 5; i++) expect((await attempt('wrong password!', '10.9.0.1', `203.0.113.${i}`)).statusCode).toBe(401);
    expect((await attempt(u.body.password, '10.9.0.1', '198.51.100.77')).statusCode).toBe(429);
    expect((await attempt(u.body.password, '10.9.0.2')).statusCode).toBe(200);
  });

  it('failed authentications are throttled per address: guessing tokens or keys ends in 429', async () => {
    const stack = await startAuthStack({ AUTH_FAILURES_PER_MINUTE: '5' });
    closers.push(stack.close);
    if (new Date().getSeconds() > 50) await waitFor(() => new Date().getSeconds() < 5, { timeoutMs: 15_000, intervalMs: 200 });
    const ip = '10.8.0.1';
    const statuses: number[] = [];
    for (let i = 0; i < 7; i++) {
      const token = i % 2 ? `osk_live_${'A'.repeat(49)}` : 'eyJhbGciOiJFZERTQSJ9.e30.sig';
      statuses.push((await stack.api('GET', '/api/organizations', { token, ip })).statusCode);
    }
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429]);
    const u = await stack.signup();
    expect((await stack.api('GET', '/api/organizations', { token: u.token, ip })).statusCode).toBe(200); // valid credentials still pass
    expect((await stack.api('GET', '/api/organizations', { token: 'bad', ip: '10.8.0.2' })).statusCode).toBe(401);
  });
});

describe('outages', () => {
  it('without Redis, JWTs are refused with 503 (revocations cannot be checked) while API keys are verified by identity and not rate limited', async () => {
    const { ns, id } = await ownIdentity();
    const redis = await createTcpProxy(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
    closers.push(redis.close);
    const gateway = await startGateway(ns, id.url, { REDIS_URL: redis.url('redis:') });
    closers.push(() => gateway.close());
    const api = (url: string, token: string, method: 'GET' | 'POST' = 'GET', payload?: object) =>
      gateway.inject({ method, url, headers: { authorization: `Bearer ${token}` }, ...(payload ? { payload } : {}) });
    const reg = (await gateway.inject({ method: 'POST', url: '/api/auth/register', payload: body() })).json().data;
    const key = (await api(`/api/organizations/${reg.org_id}/api-keys`, reg.token, 'POST', { name: 'k', scopes: ['org:read'] })).json().data;

    redis.down();
    const jwt = await api('/api/organizations', reg.token);
    expect(jwt.statusCode).toBe(503);
    expect(jwt.json().error.code).toBe('SERVICE_UNAVAILABLE');
    const viaKey = await api('/api/organizations', key.key);
    expect(viaKey.statusCode).toBe(200);
    expect(viaKey.headers['x-ratelimit-limit']).toBeUndefined();

    redis.up();
    await waitFor(async () => (await api('/api/organizations', reg.token)).statusCode === 200, { timeoutMs: 10_000, message: 'JWTs accepted again' });
  });

  it('when identity cannot be reached for its keys, a token gets 503, not 401 (clients must not drop a good session)', async () => {
    const { ns, id } = await ownIdentity();
    const reg = (await id.inject(ANONYMOUS, { method: 'POST', url: '/auth/register', payload: body() })).json().data;
    const gateway = await startGateway(ns, 'http://127.0.0.1:9');
    closers.push(() => gateway.close());
    const res = await gateway.inject({ method: 'GET', url: '/api/auth/me', headers: { authorization: `Bearer ${reg.token}` } });
    expect(res.statusCode).toBe(503);
  });
});

describe('signing key rotation', () => {
  it('tokens of the previous key keep verifying while the new key signs; logging such a token out still revokes it', async () => {
    const { ns, id: before } = await ownIdentity();
    const old = (await before.inject(ANONYMOUS, { method: 'POST', url: '/auth/register', payload: body() })).json().data;
    expect(old.token).toBeDefined();

    // The same database, now signing with a new key and still publishing the old public key.
    const next = await signingKey();
    const after = await startIdentity(ns, {
      DATABASE_URL: before.databaseUrl, IDENTITY_JWT_PRIVATE_JWK: next.privateJwk, IDENTITY_JWT_PREVIOUS_PUBLIC_JWKS: JSON.stringify([before.key.publicJwk]),
    });
    closers.push(after.close);
    const gateway = await startGateway(ns, after.url);
    closers.push(() => gateway.close());
    const me = (token: string) => gateway.inject({ method: 'GET', url: '/api/auth/me', headers: { authorization: `Bearer ${token}` } });

    const jwks = (await fetch(`${after.url}/internal/jwks`)).json() as Promise<{ keys: { kid: string; d?: string }[] }>;
    expect((await jwks).keys.map((k) => k.kid)).toEqual([next.kid, before.key.kid]);
    expect((await jwks).keys.every((k) => k.d === undefined)).toBe(true);
    expect((await me(old.token)).statusCode).toBe(200);
    const fresh = (await gateway.inject({ method: 'POST', url: '/api/auth/refresh', payload: { refresh_token: old.refresh_token } })).json().data;
    expect(JSON.parse(Buffer.from(fresh.token.split('.')[0], 'base64url').toString()).kid).toBe(next.kid);
    expect((await me(fresh.token)).statusCode).toBe(200);

    expect((await gateway.inject({ method: 'POST', url: '/api/auth/logout', headers: { authorization: `Bearer ${old.token}` }, payload: {} })).statusCode).toBe(200);
    await waitFor(async () => (await me(old.token)).statusCode === 401, { timeoutMs: 5_000, message: 'old-key token revoked' });
  });
});

describe('logs', () => {
  it('never contain invitation tokens, bearer tokens, cookies or secret query parameters', async () => {
    const { ns, id } = await ownIdentity();
    const lines: string[] = [];
    const log = createLogger('gateway', 'info', { hooks: { streamWrite: (line) => { lines.push(line); return ''; } } });
    const gateway = await startGateway(ns, id.url, {}, log);
    closers.push(() => gateway.close());
    const reg = (await gateway.inject({ method: 'POST', url: '/api/auth/register', payload: body() })).json().data;
    const secrets = ['INVITETOKEN0123456789abcdef', reg.token, 'SECRETQUERYVALUE'];
    await gateway.inject({ method: 'POST', url: `/api/organizations/invites/${secrets[0]}/accept`, headers: { authorization: `Bearer ${reg.token}`, cookie: `assimetria_jwt=${reg.token}` } });
    await gateway.inject({ method: 'GET', url: `/api/auth/me?token=${secrets[2]}`, headers: { authorization: `Bearer ${reg.token}` } });
    expect(lines.some((l) => l.includes('/api/organizations/invites/[redacted]/accept'))).toBe(true);
    for (const s of secrets) expect(lines.filter((l) => l.includes(s))).toEqual([]);
  });
});

describe('documentation', () => {
  it('serves one OpenAPI document with security schemes, public operations marked public and the scope of each operation', async () => {
    const stack = await startAuthStack();
    closers.push(stack.close);
    const doc = (await stack.api('GET', '/api/docs/openapi.json')).json();
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.components.securitySchemes).sort()).toEqual(['apiKey', 'bearerAuth', 'cookieAuth']);
    expect(doc.security).toEqual([{ bearerAuth: [] }, { apiKey: [] }, { cookieAuth: [] }]);
    for (const path of ['/api/auth/login', '/api/auth/register', '/api/auth/forgot-password']) expect(doc.paths[path].post.security, path).toEqual([]);
    expect(doc.paths['/api/auth/me'].get.security).toBeUndefined();
    expect(doc.paths['/api/organizations/{orgId}/api-keys'].post['x-required-scope']).toBe('org:write');
    expect(doc.paths['/api/users'].get['x-platform-admin']).toBe(true);
    expect(Object.keys(doc.paths).some((p) => p.startsWith('/api/internal'))).toBe(false);
    const ui = await stack.api('GET', '/api/docs/');
    expect(ui.statusCode).toBe(200);
    expect(ui.body).toContain('swagger');
  });
});
