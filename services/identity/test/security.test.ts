import type { Principal } from '@aos/contracts';
import { apiKeyPrincipal, putOnPlan } from '@aos/testkit';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anonymous, caller, gatewayService, register, startIdentity, type Svc } from './helpers.js';

/**
 * Walks every public route of identity (the catalogue below must name each route of the
 * OpenAPI document, so a new route cannot be left out): other orgs' ids, missing
 * credentials, API keys without the scope, hostile input.
 */
let svc: Svc;
let call: ReturnType<typeof caller>;
let root: Awaited<ReturnType<typeof register>>;
let a: Awaited<ReturnType<typeof register>>;
let b: Awaited<ReturnType<typeof register>>;
const fx = {} as { keyB: { id: string; key: string }; teamB: string; inviteB: { id: string; token: string }; teamInviteB: string; keyA: string };

beforeAll(async () => {
  svc = await startIdentity();
  call = caller(svc);
  root = await register(svc); // platform admin
  a = await register(svc);
  b = await register(svc);
  await putOnPlan(svc, b.org_id, 'teams');
  fx.keyB = (await call(b.principal, 'POST', `/organizations/${b.org_id}/api-keys`, { name: 'b key' })).json().data;
  fx.keyA = (await call(a.principal, 'POST', `/organizations/${a.org_id}/api-keys`, { name: 'a key' })).json().data.id;
  fx.teamB = (await call(b.principal, 'POST', '/teams', { name: 'B team' })).json().data.id;
  fx.inviteB = (await call(b.principal, 'POST', `/organizations/${b.org_id}/invites`, { email: 'someone-else@example.com' })).json().data;
  fx.teamInviteB = (await call(b.principal, 'POST', `/teams/${fx.teamB}/invites`, { email: 'teammate@example.com' })).json().data.id;
  await call(root.principal, 'POST', '/credentials', { key: 'platform.secret', value: 'v' });
});
afterAll(() => svc?.close());

type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';
interface Route {
  method: Method;
  path: string;
  /** URL (and body) aimed at organization B's resources. */
  url: () => string;
  body?: () => Record<string, unknown>;
  /** What user A (no platform role, acting in A's org) gets for it; `skip` when the route is not about another org's data. */
  cross: 404 | 403 | 'skip';
  /** Anonymous callers are let in (public auth routes). */
  public?: boolean;
}

const routes: Route[] = [
  { method: 'POST', path: '/auth/register', url: () => '/auth/register', cross: 'skip', public: true, body: () => ({ username: 'x', email: 'x' }) },
  { method: 'POST', path: '/auth/login', url: () => '/auth/login', cross: 'skip', public: true, body: () => ({ email: 'x@example.com', password: 'p' }) },
  { method: 'POST', path: '/auth/refresh', url: () => '/auth/refresh', cross: 'skip', public: true, body: () => ({ refresh_token: 'x' }) },
  { method: 'POST', path: '/auth/logout', url: () => '/auth/logout', cross: 'skip', body: () => ({}) },
  { method: 'GET', path: '/auth/me', url: () => '/auth/me', cross: 'skip' },
  { method: 'POST', path: '/auth/forgot-password', url: () => '/auth/forgot-password', cross: 'skip', public: true, body: () => ({ email: 'x@example.com' }) },
  { method: 'POST', path: '/auth/reset-password', url: () => '/auth/reset-password', cross: 'skip', public: true, body: () => ({ token: 'x'.repeat(20), password: 'long enough password' }) },

  { method: 'GET', path: '/organizations', url: () => '/organizations', cross: 'skip' },
  { method: 'POST', path: '/organizations', url: () => '/organizations', cross: 'skip', body: () => ({ name: 'Mine' }) },
  { method: 'GET', path: '/organizations/{id}', url: () => `/organizations/${b.org_id}`, cross: 404 },
  { method: 'PATCH', path: '/organizations/{id}', url: () => `/organizations/${b.org_id}`, cross: 404, body: () => ({ name: 'taken over' }) },
  { method: 'DELETE', path: '/organizations/{id}', url: () => `/organizations/${b.org_id}`, cross: 404 },
  { method: 'GET', path: '/organizations/{id}/members', url: () => `/organizations/${b.org_id}/members`, cross: 404 },
  { method: 'POST', path: '/organizations/{id}/members', url: () => `/organizations/${b.org_id}/members`, cross: 404, body: () => ({ user_id: a.user.id, role: 'owner' }) },
  { method: 'PATCH', path: '/organizations/{id}/members/{userId}', url: () => `/organizations/${b.org_id}/members/${b.user.id}`, cross: 404, body: () => ({ role: 'viewer' }) },
  { method: 'DELETE', path: '/organizations/{id}/members/{userId}', url: () => `/organizations/${b.org_id}/members/${b.user.id}`, cross: 404 },
  { method: 'GET', path: '/organizations/{id}/invites', url: () => `/organizations/${b.org_id}/invites`, cross: 404 },
  { method: 'POST', path: '/organizations/{id}/invites', url: () => `/organizations/${b.org_id}/invites`, cross: 404, body: () => ({ email: a.body.email, role: 'owner' }) },
  { method: 'DELETE', path: '/organizations/{id}/invites/{inviteId}', url: () => `/organizations/${b.org_id}/invites/${fx.inviteB.id}`, cross: 404 },
  { method: 'POST', path: '/organizations/invites/{token}/accept', url: () => `/organizations/invites/${fx.inviteB.token}/accept`, cross: 404 },

  { method: 'GET', path: '/organizations/{orgId}/api-keys', url: () => `/organizations/${b.org_id}/api-keys`, cross: 404 },
  { method: 'POST', path: '/organizations/{orgId}/api-keys', url: () => `/organizations/${b.org_id}/api-keys`, cross: 404, body: () => ({ name: 'mine now' }) },
  { method: 'GET', path: '/organizations/{orgId}/api-keys/{keyId}', url: () => `/organizations/${b.org_id}/api-keys/${fx.keyB.id}`, cross: 404 },
  { method: 'PATCH', path: '/organizations/{orgId}/api-keys/{keyId}', url: () => `/organizations/${b.org_id}/api-keys/${fx.keyB.id}`, cross: 404, body: () => ({ scopes: ['*'] }) },
  { method: 'DELETE', path: '/organizations/{orgId}/api-keys/{keyId}', url: () => `/organizations/${b.org_id}/api-keys/${fx.keyB.id}`, cross: 404 },
  { method: 'POST', path: '/organizations/{orgId}/api-keys/{keyId}/revoke', url: () => `/organizations/${b.org_id}/api-keys/${fx.keyB.id}/revoke`, cross: 404 },
  { method: 'POST', path: '/organizations/{orgId}/api-keys/{keyId}/rotate', url: () => `/organizations/${b.org_id}/api-keys/${fx.keyB.id}/rotate`, cross: 404, body: () => ({}) },
  { method: 'POST', path: '/organizations/{orgId}/api-keys/{keyId}/roll', url: () => `/organizations/${b.org_id}/api-keys/${fx.keyB.id}/roll`, cross: 404 },
  { method: 'GET', path: '/organizations/{orgId}/api-keys/{keyId}/usage', url: () => `/organizations/${b.org_id}/api-keys/${fx.keyB.id}/usage`, cross: 404 },

  { method: 'GET', path: '/teams', url: () => '/teams', cross: 'skip' },
  { method: 'POST', path: '/teams', url: () => '/teams', cross: 'skip', body: () => ({ name: 'A team' }) },
  { method: 'GET', path: '/teams/{id}', url: () => `/teams/${fx.teamB}`, cross: 404 },
  { method: 'PATCH', path: '/teams/{id}', url: () => `/teams/${fx.teamB}`, cross: 404, body: () => ({ name: 'renamed' }) },
  { method: 'DELETE', path: '/teams/{id}', url: () => `/teams/${fx.teamB}`, cross: 404 },
  { method: 'GET', path: '/teams/{id}/members', url: () => `/teams/${fx.teamB}/members`, cross: 404 },
  { method: 'POST', path: '/teams/{id}/members', url: () => `/teams/${fx.teamB}/members`, cross: 404, body: () => ({ user_id: a.user.id }) },
  { method: 'DELETE', path: '/teams/{id}/members/{userId}', url: () => `/teams/${fx.teamB}/members/${b.user.id}`, cross: 404 },
  { method: 'GET', path: '/teams/{id}/invites', url: () => `/teams/${fx.teamB}/invites`, cross: 404 },
  { method: 'POST', path: '/teams/{id}/invites', url: () => `/teams/${fx.teamB}/invites`, cross: 404, body: () => ({ email: a.body.email }) },

  { method: 'GET', path: '/users', url: () => '/users', cross: 403 },
  { method: 'GET', path: '/users/{id}', url: () => `/users/${b.user.id}`, cross: 404 },
  { method: 'PATCH', path: '/users/{id}', url: () => `/users/${b.user.id}`, cross: 403, body: () => ({ role: 'admin' }) },
  { method: 'DELETE', path: '/users/{id}', url: () => `/users/${b.user.id}`, cross: 403 },
  { method: 'DELETE', path: '/users/me', url: () => '/users/me', cross: 'skip' },

  { method: 'GET', path: '/credentials', url: () => '/credentials', cross: 403 },
  { method: 'POST', path: '/credentials', url: () => '/credentials', cross: 403, body: () => ({ key: 'platform.secret', value: 'overwritten' }) },
  { method: 'GET', path: '/credentials/{key}', url: () => '/credentials/platform.secret', cross: 403 },
  { method: 'DELETE', path: '/credentials/{key}', url: () => '/credentials/platform.secret', cross: 403 },
  { method: 'GET', path: '/integrations', url: () => '/integrations', cross: 'skip' },
  { method: 'GET', path: '/integrations/{id}/status', url: () => '/integrations/github/status', cross: 'skip' },
  { method: 'POST', path: '/integrations/{id}/configure', url: () => '/integrations/github/configure', cross: 403, body: () => ({ fields: { token: 'stolen' } }) },
];

const send = (p: Principal | null, r: Route, over: { url?: string; body?: unknown } = {}) => call(p, r.method, over.url ?? r.url(), 'body' in over ? over.body : r.body?.());
const documented = () => Object.entries((svc.app.swagger() as { paths: Record<string, Record<string, { 'x-required-scope'?: string; requestBody?: { content: Record<string, { schema: { properties?: Record<string, unknown> } }> } }>> }).paths)
  .flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ key: `${method.toUpperCase()} ${path}`, op })));

describe('the route catalogue', () => {
  it('names every documented route of the service', () => {
    const listed = new Set(routes.map((r) => `${r.method} ${r.path}`));
    expect(documented().map((d) => d.key).filter((k) => !listed.has(k))).toEqual([]);
    expect([...listed].filter((k) => !documented().some((d) => d.key === k))).toEqual([]);
  });
});

describe('organization isolation', () => {
  it("a user of org A gets 404 for every org-B resource (403 for platform-only routes) and changes nothing there", async () => {
    for (const r of routes.filter((x) => x.cross !== 'skip')) {
      const res = await send(a.principal, r);
      expect(res.statusCode, `${r.method} ${r.url()} ${res.body}`).toBe(r.cross);
    }
    // B's key through A's own org, B's team in A's org context, a forged org claim: still nothing.
    expect((await call(a.principal, 'GET', `/organizations/${a.org_id}/api-keys/${fx.keyB.id}`)).statusCode).toBe(404);
    const forged = { ...a.principal, orgId: b.org_id, tenantId: b.user.tenant_id };
    for (const [method, url, body] of [['GET', '/teams'], ['POST', '/teams', { name: 'planted' }], ['GET', `/teams/${fx.teamB}`], ['POST', `/teams/${fx.teamB}/members`, { user_id: a.user.id }]] as const) {
      expect((await call(forged, method, url, body)).statusCode, `${method} ${url}`).toBe(404);
    }
    // A's listings do not show B's things.
    expect((await call(a.principal, 'GET', '/organizations')).json().data.map((o: { id: string }) => o.id)).toEqual([a.org_id]);
    expect((await call(a.principal, 'GET', '/teams')).json().data).toEqual([]);
    // An API key of org A cannot reach org B either, whatever its scopes.
    const keyOfA = apiKeyPrincipal(['*'], { orgId: a.org_id, tenantId: a.user.tenant_id, userId: a.user.id });
    for (const r of routes.filter((x) => x.cross !== 'skip' && /^\/organizations\/\{(id|orgId)\}/.test(x.path))) {
      expect((await send(keyOfA, r)).statusCode, `${r.method} ${r.url()}`).toBe(404);
    }
    // B is untouched.
    expect((await call(gatewayService, 'POST', '/internal/api-keys/verify', { key: fx.keyB.key })).statusCode).toBe(200);
    expect((await call(b.principal, 'GET', `/organizations/${b.org_id}/members`)).json().data.map((m: { user_id: string; role: string }) => [m.user_id, m.role])).toEqual([[b.user.id, 'owner']]);
    expect((await call(b.principal, 'GET', `/teams/${fx.teamB}`)).json().data).toMatchObject({ name: 'B team', member_count: 1 });
    expect((await call(b.principal, 'GET', `/organizations/${b.org_id}/invites`)).json().data.map((i: { id: string }) => i.id).sort()).toEqual([fx.inviteB.id, fx.teamInviteB].sort());
    expect((await call(b.principal, 'GET', `/teams/${fx.teamB}/invites`)).json().data.map((i: { id: string }) => i.id)).toEqual([fx.teamInviteB]);
    expect((await call(root.principal, 'GET', '/credentials/platform.secret')).json().data.value).toBe('v');
  });
});

describe('authentication and scopes', () => {
  it('every non-public route answers 401 to anonymous callers', async () => {
    for (const r of routes.filter((x) => !x.public)) {
      const res = await send(anonymous, r);
      expect(res.statusCode, `${r.method} ${r.url()}`).toBe(401);
      expect(res.json().error.code).toBe('UNAUTHORIZED');
    }
  });

  it('every scoped route refuses an API key without its scope, naming the scope (403 SCOPE_REQUIRED)', async () => {
    const key = apiKeyPrincipal(['tasks:read'], { orgId: a.org_id, tenantId: a.user.tenant_id, userId: a.user.id });
    const scoped = documented().filter((d) => d.op['x-required-scope']);
    // Only the session and user-account routes have no scope: API keys have no session or account (and /users needs a platform admin).
    expect(documented().filter((d) => !d.op['x-required-scope']).map((d) => d.key).filter((k) => !/ \/(auth|users)(\/|$)/.test(k))).toEqual([]);
    for (const { key: name, op } of scoped) {
      const r = routes.find((x) => `${x.method} ${x.path}` === name)!;
      const url = r.url().replace(b.org_id, a.org_id).replace(fx.keyB.id, fx.keyA);
      const res = await send(key, r, { url });
      expect(res.statusCode, name).toBe(403);
      expect(res.json().error, name).toMatchObject({ code: 'SCOPE_REQUIRED', details: [{ scope: op['x-required-scope'] }] });
    }
  });
});

describe('hostile input', () => {
  const HOSTILE_STRINGS = ["' OR '1'='1' --", 'Robert\'); DROP TABLE users;--', '../../../etc/passwd', '\u0000nul', '%00', '<script>alert(1)</script>', 'x'.repeat(100_000), '😀'.repeat(300)];
  const HOSTILE_VALUES: unknown[] = [...HOSTILE_STRINGS, -1, 1e308, 2 ** 63, true, null, [], {}, [{ $gt: '' }], { $ne: null }];
  const leaks = /stack|at \w+ \(|SELECT|INSERT|postgres|drizzle|node_modules|syntax error/i;

  // Runs last: as a platform admin it may change or erase org B's fixtures.
  it('never answers 5xx, never leaks SQL or stack traces: hostile path params, bodies and queries as a platform admin', async () => {
    const seen: string[] = [];
    const check = async (what: string, res: Awaited<ReturnType<typeof call>>) => {
      seen.push(`${res.statusCode}`);
      expect(res.statusCode, `${what} → ${res.body.slice(0, 200)}`).toBeLessThan(500);
      expect(res.body, what).not.toMatch(leaks);
    };
    const admin = root.principal;
    for (const r of routes) {
      const params = r.path.match(/\{\w+\}/g) ?? [];
      for (const param of params) {
        for (const v of ["' OR 1=1--", '..%2F..%2Fetc', '%00', 'x'.repeat(600), '-1', '1e999', encodeURIComponent('😀')]) {
          const url = r.path.replace(/\{\w+\}/g, (m) => (m === param ? v : randomUUID())).replace(/\{token\}/, 'a'.repeat(40));
          await check(`${r.method} ${url}`, await send(admin, r, { url }));
        }
      }
      if (r.method === 'GET') {
        for (const q of ['limit=-1', 'limit=abc', 'limit=1e10', 'offset=-5', 'limit=999999', 'q=%27%20OR%201%3D1', 'name=%25%25', 'status=nope', 'role=superuser', 'prefix=%27']) {
          await check(`${r.method} ${r.url()}?${q}`, await send(admin, r, { url: `${r.url()}?${q}` }));
        }
        continue;
      }
      const base = r.body?.() ?? {};
      const fields = Object.keys(base).length ? Object.keys(base) : ['name'];
      for (const field of fields) {
        for (const v of HOSTILE_VALUES) await check(`${r.method} ${r.path} ${field}=${JSON.stringify(v).slice(0, 30)}`, await send(admin, r, { body: { ...base, [field]: v } }));
      }
      for (const body of ['not json', [1, 2], 42, 'null', { ...base, __proto__: { is_admin: true }, constructor: { prototype: { x: 1 } } }]) {
        await check(`${r.method} ${r.path} body=${JSON.stringify(body).slice(0, 30)}`, await send(admin, r, { body }));
      }
    }
    expect(seen.length).toBeGreaterThan(500);
  });

  it('list limits are capped at 200 and reported; negative or non-numeric ones are 400', async () => {
    const res = await call(root.principal, 'GET', '/users?limit=100000');
    expect(res.statusCode).toBe(200);
    expect(res.json().meta).toMatchObject({ limit: 200, offset: 0 });
    for (const q of ['limit=0', 'limit=-1', 'limit=abc', 'offset=-1']) {
      const bad = await call(root.principal, 'GET', `/organizations?${q}`);
      expect(bad.statusCode, q).toBe(400);
      expect(bad.json().error.code).toBe('VALIDATION_ERROR');
    }
  });

  it('SQL-ish and oversized values in constrained fields are 400 with the field named', async () => {
    const cases: [Method, string, Record<string, unknown>, string][] = [
      ['POST', '/auth/register', { username: "x' OR 1=1--", email: 'a@example.com', password: 'long enough password', terms_accepted: true, privacy_accepted: true }, 'username'],
      ['POST', '/auth/register', { username: 'okname', email: "a'--@", password: 'long enough password', terms_accepted: true, privacy_accepted: true }, 'email'],
      ['POST', '/auth/register', { username: 'okname', email: 'a@example.com', password: 'x'.repeat(201), terms_accepted: true, privacy_accepted: true }, 'password'],
      ['POST', '/organizations', { name: 'x'.repeat(101) }, 'name'],
      ['POST', '/organizations', { name: 'ok', slug: "'; DROP TABLE organizations;--" }, 'slug'],
      ['POST', `/organizations/${root.org_id}/api-keys`, { name: 'k', scopes: ["*' OR '1'='1"] }, 'scopes.0'],
      ['POST', `/organizations/${root.org_id}/api-keys`, { name: 'k', description: 'x'.repeat(501) }, 'description'],
      ['POST', '/teams', { name: 'x'.repeat(101) }, 'name'],
      ['POST', '/credentials', { key: "a' OR 1=1", value: 'v' }, 'key'],
      ['POST', '/credentials', { key: 'ok', value: 'x'.repeat(20_001) }, 'value'],
    ];
    for (const [method, url, body, field] of cases) {
      const res = await call(root.principal, method, url, body);
      expect(res.statusCode, `${url} ${field}`).toBe(400);
      expect(res.json().error.details.map((d: { field: string }) => d.field), `${url} ${field}`).toContain(field);
    }
  });
});
