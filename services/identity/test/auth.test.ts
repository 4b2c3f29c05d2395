import { sleep } from '@aos/testkit';
import { SignJWT, exportSPKI, UnsecuredJWT } from 'jose';
import { createSecretKey } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSigner, verifyAccessToken } from '../src/domain/tokens.js';
import { anonymous, register, startIdentity } from './helpers.js';

let svc: Awaited<ReturnType<typeof startIdentity>>;
beforeAll(async () => { svc = await startIdentity({ ADMIN_EMAILS: 'boss@example.com', LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_IP: '3' }); });
afterAll(() => svc?.close());

const post = (url: string, payload: unknown, principal = anonymous, headers: Record<string, string> = {}) => svc.inject(principal, { method: 'POST', url, payload: payload as object, headers });
const outbox = async (type: string) => (await svc.ctx.pool.query('SELECT envelope FROM aos_outbox WHERE type = $1 ORDER BY created_at', [type])).rows.map((r) => r.envelope);

describe('register', () => {
  it('creates user, tenant and personal org; the first user and ADMIN_EMAILS are platform admins', async () => {
    const first = await register(svc);
    expect(first.user.platform_roles).toEqual(['admin']);
    expect(first.org_id).toMatch(/^[0-9a-f-]{36}$/);
    const second = await register(svc);
    expect(second.user.platform_roles).toEqual([]);
    const boss = await register(svc, { email: 'boss@example.com' });
    expect(boss.user.platform_roles).toEqual(['admin']);
    const events = await outbox('identity.user.registered');
    expect(events.find((e) => e.data.userId === second.user.id).data.personalOrgId).toBe(second.org_id);
    expect(first.response.headers['set-cookie']).toContain('HttpOnly');
  });

  it('409 for an existing e-mail or username (any case); 400 without accepted terms, weak password, mass assignment ignored', async () => {
    const a = await register(svc);
    expect((await post('/auth/register', { ...a.body, username: 'different_name' })).statusCode).toBe(409);
    expect((await post('/auth/register', { ...a.body, email: 'other@example.com', username: a.body.username.toUpperCase() })).statusCode).toBe(409);
    expect((await post('/auth/register', { ...a.body, email: 'x1@example.com', username: 'x1user', terms_accepted: false })).statusCode).toBe(400);
    expect((await post('/auth/register', { ...a.body, email: 'x2@example.com', username: 'x2user', password: 'short' })).statusCode).toBe(400);
    expect((await post('/auth/register', { ...a.body, email: 'not-an-email', username: 'x3user' })).statusCode).toBe(400);
    const sneaky = await post('/auth/register', { username: 'sneaky1', email: 'sneaky@example.com', password: 'correct horse battery', terms_accepted: true, privacy_accepted: true, role: 'admin', is_admin: true, platform_roles: ['admin'], tenant_id: 'x' });
    expect(sneaky.statusCode).toBe(201);
    expect(sneaky.json().data.user.platform_roles).toEqual([]);
  });
});

describe('login, refresh, logout', () => {
  it('logs in with a cookie and tokens; same message for unknown e-mail and wrong password', async () => {
    const u = await register(svc);
    const res = await post('/auth/login', { email: u.body.email.toUpperCase(), password: u.body.password });
    expect(res.statusCode).toBe(200);
    const data = res.json().data;
    expect(data).toMatchObject({ success: true, token_type: 'Bearer', expires_in: 900, user: { id: u.user.id } });
    const cookie = res.headers['set-cookie'] as string;
    expect(cookie).toMatch(/^assimetria_jwt=[^;]+; Path=\/; HttpOnly; SameSite=Lax; Max-Age=900$/);
    const claims = await verifyAccessToken(await createSigner(svc.keys.privateJwk, '[]'), data.token);
    expect(claims.userId).toBe(u.user.id);
    const wrong = await post('/auth/login', { email: u.body.email, password: 'wrong password!' });
    const unknown = await post('/auth/login', { email: 'nobody@example.com', password: 'wrong password!' });
    expect(wrong.statusCode).toBe(401);
    expect(unknown.statusCode).toBe(401);
    expect(wrong.json()).toEqual(unknown.json());
  });

  it('throttles repeated failures for an account from one address', async () => {
    const u = await register(svc);
    for (let i = 0; i < 3; i++) expect((await post('/auth/login', { email: u.body.email, password: 'nope nope nope' })).statusCode).toBe(401);
    const blocked = await post('/auth/login', { email: u.body.email, password: u.body.password });
    expect(blocked.statusCode).toBe(429);
    expect(blocked.json().error.code).toBe('RATE_LIMITED');
    expect(Number(blocked.headers['retry-after'])).toBeGreaterThan(0);
  });

  it('rotates refresh tokens; reusing an old one revokes the whole family', async () => {
    const u = await register(svc);
    const first = u.refresh_token as string;
    const second = (await post('/auth/refresh', { refresh_token: first })).json().data.refresh_token;
    expect(second).not.toBe(first);
    const third = (await post('/auth/refresh', { refresh_token: second })).json().data.refresh_token;
    const reuse = await post('/auth/refresh', { refresh_token: first });
    expect(reuse.statusCode).toBe(401);
    expect(reuse.json().error.message).toContain('reuse');
    expect((await post('/auth/refresh', { refresh_token: third })).statusCode).toBe(401);
    expect((await post('/auth/refresh', { refresh_token: 'garbage-token' })).statusCode).toBe(401);
  });

  it('logout revokes this token (event with its jti); all_devices revokes everything', async () => {
    const u = await register(svc);
    const token = u.token as string;
    const res = await post('/auth/logout', {}, u.principal, { authorization: `Bearer ${token}` });
    expect(res.statusCode).toBe(200);
    expect(res.headers['set-cookie']).toContain('Max-Age=0');
    const claims = await verifyAccessToken(await createSigner(svc.keys.privateJwk, '[]'), token);
    expect((await outbox('identity.session.revoked')).some((e) => e.data.jti === claims.jti)).toBe(true);
    await post('/auth/logout', { all_devices: true }, u.principal);
    expect((await outbox('identity.user.tokens_revoked')).some((e) => e.data.userId === u.user.id)).toBe(true);
    expect((await post('/auth/refresh', { refresh_token: u.refresh_token })).statusCode).toBe(401);
    expect((await post('/auth/logout', {})).statusCode).toBe(401);
  });

  it('GET /auth/me answers for the caller, 401 anonymous', async () => {
    const u = await register(svc);
    const me = await svc.inject(u.principal, { method: 'GET', url: '/auth/me' });
    expect(me.json().data).toMatchObject({ user: { id: u.user.id, email: u.body.email }, org_id: u.org_id, kind: 'user' });
    expect((await svc.inject(anonymous, { method: 'GET', url: '/auth/me' })).statusCode).toBe(401);
  });
});

describe('password reset', () => {
  it('always answers 200, e-mails a one-time link, and resets once', async () => {
    const u = await register(svc);
    const unknown = await post('/auth/forgot-password', { email: 'ghost@example.com' });
    const known = await post('/auth/forgot-password', { email: u.body.email });
    expect(unknown.statusCode).toBe(200);
    expect(known.json()).toEqual(unknown.json());
    const event = (await outbox('identity.password_reset.requested')).find((e) => e.data.userId === u.user.id);
    const token = new URL(event.data.resetUrl).searchParams.get('token')!;
    expect(event.data.resetUrl.startsWith('https://aos.test/reset-password?token=')).toBe(true);
    expect((await post('/auth/reset-password', { token, password: 'a brand new password' })).statusCode).toBe(200);
    expect((await post('/auth/reset-password', { token, password: 'another new password' })).statusCode).toBe(400);
    expect((await post('/auth/login', { email: u.body.email, password: u.body.password })).statusCode).toBe(401);
    expect((await post('/auth/login', { email: u.body.email, password: 'a brand new password' })).statusCode).toBe(200);
    expect((await post('/auth/refresh', { refresh_token: u.refresh_token })).statusCode).toBe(401);
  });
});

describe('access token verification', () => {
  it('rejects alg none, HS256 signed with the public key, expired, wrong audience and tampered tokens', async () => {
    const signer = await createSigner(svc.keys.privateJwk, '[]');
    const u = await register(svc);
    const valid = u.token as string;
    await expect(verifyAccessToken(signer, valid)).resolves.toMatchObject({ userId: u.user.id });
    const claims = { tid: 't', org: 'o', org_role: 'owner', roles: ['admin'] };
    const none = new UnsecuredJWT(claims).setIssuer('aos-identity').setAudience('aos-api').setSubject(u.user.id).setJti('j').setIssuedAt().setExpirationTime('5m').encode();
    const pem = await exportSPKI(svc.keys.publicKey);
    const hs = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).setIssuer('aos-identity').setAudience('aos-api').setSubject(u.user.id).setJti('j').setIssuedAt().setExpirationTime('5m').sign(createSecretKey(Buffer.from(pem)));
    const expired = await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt' }).setIssuer('aos-identity').setAudience('aos-api').setSubject(u.user.id).setJti('j').setIssuedAt(Math.floor(Date.now() / 1000) - 3600).setExpirationTime(Math.floor(Date.now() / 1000) - 60).sign(svc.keys.privateKey);
    const wrongAud = await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt' }).setIssuer('aos-identity').setAudience('someone-else').setSubject(u.user.id).setJti('j').setIssuedAt().setExpirationTime('5m').sign(svc.keys.privateKey);
    const [h, p, s] = valid.split('.');
    const payload = JSON.parse(Buffer.from(p!, 'base64url').toString());
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...payload, roles: ['admin'] })).toString('base64url')}.${s}`;
    for (const bad of [none, hs, expired, wrongAud, tampered]) await expect(verifyAccessToken(signer, bad)).rejects.toThrow();
    await sleep(0);
  });

  it('publishes the JWKS without private parts', async () => {
    const res = await svc.inject(null, { method: 'GET', url: '/internal/jwks' });
    const keys = res.json().keys;
    expect(keys[0]).toMatchObject({ kty: 'OKP', crv: 'Ed25519', kid: svc.keys.kid, alg: 'EdDSA' });
    expect(keys[0].d).toBeUndefined();
  });
});
