import { putOnPlan, sleep, waitFor } from '@aos/testkit';
import { exportSPKI, importJWK, SignJWT, UnsecuredJWT, type JWK } from 'jose';
import { createSecretKey, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signingKey, startAuthStack } from './helpers.js';

let stack: Awaited<ReturnType<typeof startAuthStack>>;
let root: Awaited<ReturnType<typeof stack.signup>>;
beforeAll(async () => {
  stack = await startAuthStack({ AUTH_FAILURES_PER_MINUTE: '1000', CORS_ORIGINS: 'https://app.example.com', BODY_LIMIT_BYTES: '4096' });
  root = await stack.signup(); // the first user of the installation: platform admin
});
afterAll(() => stack?.close());

const me = (token: string, ip?: string) => stack.api('GET', '/api/auth/me', { token, ip });

describe('JWT verification at the gateway', () => {
  it('accepts the bearer token and the cookie; refuses none, HS256 with the public key, expired, wrong iss/aud/typ, tampered, foreign-key and claim-less tokens', async () => {
    const u = await stack.signup();
    expect((await me(u.token)).json().data.user.id).toBe(u.user.id);
    expect((await stack.api('GET', '/api/auth/me', { headers: { cookie: `other=1; assimetria_jwt=${u.token}` } })).statusCode).toBe(200);

    const jwk = (await stack.identity.inject(null, { method: 'GET', url: '/internal/jwks' })).json().keys[0] as JWK;
    const claims = { tid: u.user.tenant_id, org: u.org_id, org_role: 'owner', roles: ['admin'] };
    const now = Math.floor(Date.now() / 1000);
    const signed = (header: Record<string, unknown>, build: (j: SignJWT) => SignJWT = (j) => j) =>
      build(new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: jwk.kid, ...header } as never)
        .setIssuer('aos-identity').setAudience('aos-api').setSubject(u.user.id).setJti(randomUUID()).setIssuedAt(now).setExpirationTime(now + 300));
    const key = stack.identity.key.privateKey;
    const foreign = (await signingKey()).privateKey;
    const [h, p, s] = u.token.split('.');
    const payload = JSON.parse(Buffer.from(p!, 'base64url').toString());
    const bad: Record<string, string> = {
      none: new UnsecuredJWT(claims).setIssuer('aos-identity').setAudience('aos-api').setSubject(u.user.id).setJti('x').setIssuedAt().setExpirationTime('5m').encode(),
      hs256WithPublicKey: await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: jwk.kid }).setIssuer('aos-identity').setAudience('aos-api')
        .setSubject(u.user.id).setJti('x').setIssuedAt().setExpirationTime('5m').sign(createSecretKey(Buffer.from(await exportSPKI(await importJWK(jwk, 'EdDSA') as never)))),
      expired: await signed({}, (j) => j.setIssuedAt(now - 3_600).setExpirationTime(now - 60)).sign(key),
      wrongAudience: await signed({}, (j) => j.setAudience('another-api')).sign(key),
      wrongIssuer: await signed({}, (j) => j.setIssuer('evil')).sign(key),
      wrongType: await signed({ typ: 'JWT' }).sign(key),
      foreignKeySameKid: await signed({}).sign(foreign),
      unknownKid: await signed({ kid: 'nope' }).sign(foreign),
      noJti: await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: jwk.kid }).setIssuer('aos-identity').setAudience('aos-api').setSubject(u.user.id).setIssuedAt().setExpirationTime('5m').sign(key),
      noExp: await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: jwk.kid }).setIssuer('aos-identity').setAudience('aos-api').setSubject(u.user.id).setJti('x').setIssuedAt().sign(key),
      tamperedOrg: `${h}.${Buffer.from(JSON.stringify({ ...payload, org: randomUUID() })).toString('base64url')}.${s}`,
      tamperedRoles: `${h}.${Buffer.from(JSON.stringify({ ...payload, roles: ['admin'] })).toString('base64url')}.${s}`,
      tamperedSignature: `${h}.${p}.${s!.slice(0, -4)}AAAA`,
      garbage: 'not.a.jwt',
      trailing: `${u.token}x`,
    };
    for (const [name, token] of Object.entries(bad)) {
      const res = await me(token);
      expect(res.statusCode, name).toBe(401);
      expect(res.json().error.code, name).toBe('UNAUTHORIZED');
    }
    expect((await stack.api('GET', '/api/auth/me', { headers: { cookie: 'assimetria_jwt=forged' } })).statusCode).toBe(401);
    const badlyEncoded = await stack.api('GET', '/api/auth/me', { headers: { cookie: 'assimetria_jwt=%E0%A4%A' } });
    expect(badlyEncoded.statusCode).toBe(401); // malformed percent-encoding is a bad token, not a server error
    expect(badlyEncoded.json().error.code).toBe('UNAUTHORIZED');
    expect((await stack.api('GET', '/api/auth/me', { headers: { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` } })).statusCode).toBe(401);
    expect((await stack.api('GET', '/api/users', { token: u.token })).statusCode).toBe(403); // not an admin, whatever a forged claim says
  });

  it('denies a logged-out token (its jti) and, after logout everywhere, every older token, while a new login works at once', async () => {
    const u = await stack.signup();
    const second = (await stack.api('POST', '/api/auth/login', { body: { email: u.body.email, password: u.body.password }, ip: '10.2.0.1' })).json().data;
    expect((await stack.api('POST', '/api/auth/logout', { token: u.token, body: {} })).statusCode).toBe(200);
    await waitFor(async () => (await me(u.token)).statusCode === 401, { timeoutMs: 5_000, message: 'revoked jti refused' });
    expect((await me(second.token)).statusCode).toBe(200); // another session lives on
    // The logged-out session's refresh token ended with it.
    expect((await stack.api('POST', '/api/auth/refresh', { body: { refresh_token: u.refresh_token } })).statusCode).toBe(401);

    expect((await stack.api('POST', '/api/auth/logout', { token: second.token, body: { all_devices: true } })).statusCode).toBe(200);
    const fresh = (await stack.api('POST', '/api/auth/login', { body: { email: u.body.email, password: u.body.password }, ip: '10.2.0.2' })).json().data;
    await waitFor(async () => (await me(second.token)).statusCode === 401, { timeoutMs: 5_000, message: 'older tokens refused' });
    expect((await me(fresh.token)).statusCode).toBe(200);
  });

  it('a platform admin demoted loses the admin claim at once; refreshing gives a token with the new role', async () => {
    const admin = root;
    expect((await stack.api('GET', '/api/users', { token: admin.token })).statusCode).toBe(200);
    const other = await stack.signup({ email: `boss-${randomUUID().slice(0, 6)}@example.com` });
    expect((await stack.api('PATCH', `/api/users/${other.user.id}`, { token: admin.token, body: { role: 'admin' } })).statusCode).toBe(200);
    const promoted = (await stack.api('POST', '/api/auth/refresh', { body: { refresh_token: other.refresh_token } })).json().data;
    expect((await stack.api('GET', '/api/users', { token: promoted.token })).statusCode).toBe(200);
    expect((await stack.api('PATCH', `/api/users/${other.user.id}`, { token: admin.token, body: { role: 'member' } })).statusCode).toBe(200);
    await waitFor(async () => (await stack.api('GET', '/api/users', { token: promoted.token })).statusCode === 401, { timeoutMs: 5_000, message: 'stale admin token refused' });
    const demoted = (await stack.api('POST', '/api/auth/refresh', { body: { refresh_token: promoted.refresh_token } })).json().data;
    expect((await stack.api('GET', '/api/users', { token: demoted.token })).statusCode).toBe(403);
  });
});

describe('X-Org-Id', () => {
  it('selects another organization the user belongs to; 403 for one they do not (or no longer) belong to; 400 when malformed', async () => {
    const a = await stack.signup();
    const b = await stack.signup();
    const org = (await stack.api('POST', '/api/organizations', { token: a.token, body: { name: `Shared ${randomUUID().slice(0, 6)}` } })).json().data;
    await putOnPlan(stack.identity, org.id, 'pro'); // Free has a single seat
    const team = await stack.api('POST', '/api/teams', { token: a.token, headers: { 'x-org-id': org.id }, body: { name: 'In shared org' } });
    expect(team.statusCode).toBe(201);
    const names = async (token: string, orgId?: string) => (await stack.api('GET', '/api/teams', { token, headers: orgId ? { 'x-org-id': orgId } : {} })).json().data.map((t: { name: string }) => t.name);
    expect(await names(a.token)).toEqual([]); // the personal org by default
    expect(await names(a.token, org.id)).toEqual(['In shared org']);
    expect((await stack.api('GET', '/api/auth/me', { token: a.token, headers: { 'x-org-id': org.id } })).json().data).toMatchObject({ org_id: org.id, org_role: 'owner' });

    const denied = await stack.api('GET', '/api/teams', { token: b.token, headers: { 'x-org-id': org.id } });
    expect(denied.statusCode).toBe(403);
    expect(denied.json().error.code).toBe('FORBIDDEN');
    expect((await stack.api('GET', '/api/teams', { token: b.token, headers: { 'x-org-id': randomUUID() } })).statusCode).toBe(403);
    expect((await stack.api('GET', '/api/teams', { token: b.token, headers: { 'x-org-id': "1' OR '1'='1" } })).statusCode).toBe(400);

    // b joins as viewer: reads, cannot write; removed again: refused once the event evicted the cached membership.
    expect((await stack.api('POST', `/api/organizations/${org.id}/members`, { token: a.token, body: { user_id: b.user.id, role: 'viewer' } })).statusCode).toBe(201);
    await waitFor(async () => (await stack.api('GET', '/api/teams', { token: b.token, headers: { 'x-org-id': org.id } })).statusCode === 200, { message: 'membership visible' });
    expect((await stack.api('POST', '/api/teams', { token: b.token, headers: { 'x-org-id': org.id }, body: { name: 'nope' } })).statusCode).toBe(403);
    expect((await stack.api('DELETE', `/api/organizations/${org.id}/members/${b.user.id}`, { token: a.token })).statusCode).toBe(200);
    await waitFor(async () => (await stack.api('GET', '/api/teams', { token: b.token, headers: { 'x-org-id': org.id } })).statusCode === 403, { timeoutMs: 5_000, message: 'membership evicted' });
  });
});

describe('API keys at the gateway', () => {
  const measure = async (token: string) => {
    const t0 = performance.now();
    for (;;) {
      if ((await stack.api('GET', '/api/organizations', { token })).statusCode === 401) return performance.now() - t0;
      if (performance.now() - t0 > 3_000) return Infinity;
      await sleep(5);
    }
  };

  it('act in their own org only, need the route scope (403 SCOPE_REQUIRED naming it), and stop within a second of revoke, delete, roll, deactivation or org deletion', async () => {
    const u = await stack.signup();
    const mk = async (orgId: string, body: Record<string, unknown>) => {
      const res = await stack.api('POST', `/api/organizations/${orgId}/api-keys`, { token: u.token, body });
      expect(res.statusCode, res.body).toBe(201);
      return res.json().data as { id: string; key: string };
    };
    const reader = await mk(u.org_id, { name: 'reader', scopes: ['org:read'] });
    const orgs = (await stack.api('GET', '/api/organizations', { token: reader.key })).json();
    expect(orgs.data.map((o: { id: string }) => o.id)).toEqual([u.org_id]);
    const refused = await stack.api('POST', '/api/teams', { token: reader.key, body: { name: 'x' } });
    expect(refused.statusCode).toBe(403);
    expect(refused.json().error).toMatchObject({ code: 'SCOPE_REQUIRED', details: [{ scope: 'org:write' }] });
    expect((await stack.api('GET', '/api/teams', { token: reader.key, headers: { 'x-org-id': randomUUID() } })).statusCode).toBe(200); // X-Org-Id cannot move a key

    const latencies: Record<string, number> = {};
    const revoked = await mk(u.org_id, { name: 'r', scopes: ['org:read'] });
    expect((await stack.api('GET', '/api/organizations', { token: revoked.key })).statusCode).toBe(200); // now cached
    expect((await stack.api('POST', `/api/organizations/${u.org_id}/api-keys/${revoked.id}/revoke`, { token: u.token })).statusCode).toBe(200);
    latencies.revoke = await measure(revoked.key);

    const deleted = await mk(u.org_id, { name: 'd', scopes: ['org:read'] });
    await stack.api('GET', '/api/organizations', { token: deleted.key });
    expect((await stack.api('DELETE', `/api/organizations/${u.org_id}/api-keys/${deleted.id}`, { token: u.token })).statusCode).toBe(200);
    latencies.delete = await measure(deleted.key);

    const rolled = await mk(u.org_id, { name: 'roll', scopes: ['org:read'] });
    await stack.api('GET', '/api/organizations', { token: rolled.key });
    const replacement = (await stack.api('POST', `/api/organizations/${u.org_id}/api-keys/${rolled.id}/roll`, { token: u.token })).json().data;
    latencies.roll = await measure(rolled.key);
    expect((await stack.api('GET', '/api/organizations', { token: replacement.key })).statusCode).toBe(200);

    const paused = await mk(u.org_id, { name: 'pause', scopes: ['org:read'] });
    await stack.api('GET', '/api/organizations', { token: paused.key });
    expect((await stack.api('PATCH', `/api/organizations/${u.org_id}/api-keys/${paused.id}`, { token: u.token, body: { is_active: false } })).statusCode).toBe(200);
    latencies.deactivate = await measure(paused.key);

    const org = (await stack.api('POST', '/api/organizations', { token: u.token, body: { name: `Doomed ${randomUUID().slice(0, 6)}` } })).json().data;
    const orgKey = await mk(org.id, { name: 'o', scopes: ['org:read'] });
    await stack.api('GET', '/api/organizations', { token: orgKey.key });
    expect((await stack.api('DELETE', `/api/organizations/${org.id}`, { token: u.token })).statusCode).toBe(200);
    latencies.orgDeleted = await measure(orgKey.key);

    for (const [what, ms] of Object.entries(latencies)) expect(ms, what).toBeLessThan(1_000);
  });

  it('a rotated key keeps working for the grace period alongside the new one; an expired key is refused', async () => {
    const u = await stack.signup();
    const k = (await stack.api('POST', `/api/organizations/${u.org_id}/api-keys`, { token: u.token, body: { name: 'rot', scopes: ['org:read'] } })).json().data;
    await stack.api('GET', '/api/organizations', { token: k.key });
    const rotated = (await stack.api('POST', `/api/organizations/${u.org_id}/api-keys/${k.id}/rotate`, { token: u.token, body: {} })).json().data;
    expect(new Date(rotated.previous_key_valid_until).getTime() - Date.now()).toBeGreaterThan(23.9 * 3_600_000); // 24 h by default
    await sleep(300); // the rotation event has evicted the cached entry by now; the old key must still verify
    expect((await stack.api('GET', '/api/organizations', { token: k.key })).statusCode).toBe(200);
    expect((await stack.api('GET', '/api/organizations', { token: rotated.key })).statusCode).toBe(200);

    const soon = (await stack.api('POST', `/api/organizations/${u.org_id}/api-keys`, { token: u.token, body: { name: 'short', scopes: ['org:read'], expires_at: new Date(Date.now() + 1_500).toISOString() } })).json().data;
    expect((await stack.api('GET', '/api/organizations', { token: soon.key })).statusCode).toBe(200);
    await waitFor(async () => (await stack.api('GET', '/api/organizations', { token: soon.key })).statusCode === 401, { timeoutMs: 5_000, message: 'expired key refused' });
    expect((await stack.api('GET', '/api/organizations', { token: 'osk_live_notarealkeyatall' })).statusCode).toBe(401);
  });
});

describe('edge protections', () => {
  it('413 over the body limit, in the envelope', async () => {
    const res = await stack.api('POST', '/api/auth/login', { body: { email: 'a@example.com', password: 'x'.repeat(5_000) } });
    expect(res.statusCode).toBe(413);
    expect(res.json().error.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('CORS answers allowed origins only, with credentials', async () => {
    const preflight = (origin: string) => stack.api('OPTIONS', '/api/auth/login', { headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } });
    const ok = await preflight('https://app.example.com');
    expect(ok.statusCode).toBeLessThan(300);
    expect(ok.headers['access-control-allow-origin']).toBe('https://app.example.com');
    expect(ok.headers['access-control-allow-credentials']).toBe('true');
    const evil = await preflight('https://evil.example.com');
    expect(evil.headers['access-control-allow-origin']).toBeUndefined();
    const simple = await stack.api('GET', '/api/health', { headers: { origin: 'https://evil.example.com' } });
    expect(simple.headers['access-control-allow-origin']).toBeUndefined();
    const exposed = await stack.api('GET', '/api/health', { headers: { origin: 'https://app.example.com' } });
    expect(exposed.headers['access-control-expose-headers']).toContain('x-ratelimit-remaining');
  });

  it('sets security headers and hides the server stack', async () => {
    const res = await stack.api('GET', '/api/auth/me');
    expect(res.headers).toMatchObject({ 'x-content-type-options': 'nosniff', 'x-frame-options': 'SAMEORIGIN', 'referrer-policy': 'no-referrer' });
    expect(res.headers['strict-transport-security']).toContain('max-age=');
    expect(res.headers['x-powered-by']).toBeUndefined();
    expect(res.headers['x-trace-id']).toMatch(/^[0-9a-f]{32}$/);
  });

  it('rate-limit headers on proxied responses', async () => {
    const u = await stack.signup();
    const res = await stack.api('GET', '/api/organizations', { token: u.token });
    expect(Number(res.headers['x-ratelimit-limit'])).toBe(100);
    expect(Number(res.headers['x-ratelimit-remaining'])).toBeLessThan(100);
    expect(Number(res.headers['x-ratelimit-reset'])).toBeGreaterThan(Date.now() / 1000);
  });

  it('services refuse calls that do not come through the gateway', async () => {
    const direct = await fetch(`${stack.identity.url}/auth/me`);
    expect(direct.status).toBe(401);
    const forged = await fetch(`${stack.identity.url}/users`, { headers: { 'x-aos-internal-token': 'forged' } });
    expect(forged.status).toBe(401);
  });
});
