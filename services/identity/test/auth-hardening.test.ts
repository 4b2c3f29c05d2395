import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSigner, signAccessToken, verifyAccessToken } from '../src/domain/tokens.js';
import { anonymous, caller, identityKeys, outboxOf, register, startIdentity, type IdentitySvc } from './helpers.js';

const closers: IdentitySvc[] = [];
afterAll(async () => { for (const s of closers.reverse()) await s.close().catch(() => {}); });

let svc: IdentitySvc;
let call: ReturnType<typeof caller>;
beforeAll(async () => {
  svc = await startIdentity({ LOGIN_MAX_FAILURES_PER_IP: '4', LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_IP: '3', LOGIN_MAX_FAILURES_PER_ACCOUNT: '6', COOKIE_SECURE: 'true',
    // Day-long windows: a window boundary in the middle of a test is then all but impossible.
    LOGIN_FAILURE_WINDOW_MINUTES: '1440' });
  closers.push(svc);
  call = caller(svc);
});

const login = (email: string, password: string, ip = '192.0.2.1') => call(anonymous, 'POST', '/auth/login', { email, password }, { 'x-forwarded-for': ip });

describe('passwords and login throttling', () => {
  it('enforces the minimum password length (10) at registration and reset', async () => {
    expect((await call(anonymous, 'POST', '/auth/register', { username: 'shorty', email: 'short@example.com', password: '123456789', terms_accepted: true, privacy_accepted: true })).statusCode).toBe(400);
    expect((await call(anonymous, 'POST', '/auth/register', { username: 'longy', email: 'long@example.com', password: '1234567890', terms_accepted: true, privacy_accepted: true })).statusCode).toBe(201);
    expect((await call(anonymous, 'POST', '/auth/reset-password', { token: 'x'.repeat(43), password: 'short' })).statusCode).toBe(400);
    const stored = (await svc.ctx.pool.query("SELECT password_hash FROM users WHERE email = 'long@example.com'")).rows[0].password_hash;
    expect(stored).toMatch(/^scrypt\$10\$8\$1\$/);
    expect(stored).not.toContain('1234567890');
  });

  it('counts failures per client address across accounts; another address is not affected; the answer never tells which part was wrong', async () => {
    const users = await Promise.all([register(svc), register(svc)]);
    const wrong = await login(users[0]!.body.email, 'not the password', '198.51.100.7');
    const unknown = await login('nobody-here@example.com', 'not the password', '198.51.100.7');
    expect(wrong.json()).toEqual(unknown.json());
    expect(wrong.json().error).toEqual({ code: 'UNAUTHORIZED', message: 'Invalid email or password' });
    await login(users[1]!.body.email, 'not the password', '198.51.100.7');
    await login('someone-else@example.com', 'not the password', '198.51.100.7');
    const blocked = await login(users[1]!.body.email, users[1]!.body.password, '198.51.100.7');
    expect(blocked.statusCode).toBe(429);
    expect(Number(blocked.headers['retry-after'])).toBeGreaterThan(0);
    expect((await login(users[1]!.body.email, users[1]!.body.password, '198.51.100.8')).statusCode).toBe(200);
  });

  it('a successful login clears the counter of its own address', async () => {
    const u = await register(svc);
    for (let i = 0; i < 2; i++) expect((await login(u.body.email, 'wrong password!', '203.0.113.9')).statusCode).toBe(401);
    expect((await login(u.body.email, u.body.password, '203.0.113.9')).statusCode).toBe(200);
    expect((await login(u.body.email, 'wrong password!', '203.0.113.9')).statusCode).toBe(401);
    expect((await login(u.body.email, u.body.password, '203.0.113.9')).statusCode).toBe(200); // 3 failures in all, but 1 since the success
  });

  it('sets the cookie httpOnly, SameSite=Lax and Secure when COOKIE_SECURE is on; logout clears it', async () => {
    const u = await register(svc);
    const res = await login(u.body.email, u.body.password, '192.0.2.50');
    expect(res.headers['set-cookie']).toBe(`assimetria_jwt=${res.json().data.token}; Path=/; HttpOnly; SameSite=Lax; Max-Age=900; Secure`);
    const out = await call(u.principal, 'POST', '/auth/logout', {}, { authorization: `Bearer ${res.json().data.token}` });
    expect(out.headers['set-cookie']).toBe('assimetria_jwt=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0; Secure');
  });
});

describe('per-account throttling without lockout', () => {
  const wrong = 'not the password!';

  it('a guesser is stopped after 3 tries from an address; the owner still signs in from elsewhere', async () => {
    const u = await register(svc);
    for (let i = 0; i < 3; i++) expect((await login(u.body.email, wrong, '198.18.1.66')).statusCode).toBe(401);
    // Even the right password is refused from the guessing address: no oracle, no 4th guess.
    const refused = await login(u.body.email, u.body.password, '198.18.1.66');
    expect(refused.statusCode).toBe(429);
    expect(refused.json().error.code).toBe('RATE_LIMITED');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    expect((await login(u.body.email, u.body.password, '198.18.1.1')).statusCode).toBe(200);
  });

  it('a guesser spread over many addresses meets the account-wide ceiling (6): new addresses wait, addresses the owner used do not', async () => {
    const u = await register(svc);
    expect((await login(u.body.email, u.body.password, '198.18.2.1')).statusCode).toBe(200); // the owner's usual address
    for (let i = 0; i < 6; i++) expect((await login(u.body.email, wrong, `198.18.2.${100 + i}`)).statusCode).toBe(401);
    expect((await login(u.body.email, u.body.password, '198.18.2.200')).statusCode).toBe(429);
    expect((await login(u.body.email, wrong, '198.18.2.201')).statusCode).toBe(429); // the guessing ends too
    expect((await login(u.body.email, u.body.password, '198.18.2.1')).statusCode).toBe(200);
    // The owner's success does not hand the guesser a fresh budget.
    expect((await login(u.body.email, u.body.password, '198.18.2.202')).statusCode).toBe(429);
    // A known address is forgotten after LOGIN_KNOWN_ADDRESS_DAYS.
    await svc.ctx.pool.query("UPDATE login_known_addresses SET last_success_at = now() - interval '31 days' WHERE user_id = $1", [u.user.id]);
    expect((await login(u.body.email, u.body.password, '198.18.2.1')).statusCode).toBe(429);
    // Opening the e-mailed reset link from an address makes it known: the owner has a way in during an attack.
    await call(anonymous, 'POST', '/auth/forgot-password', { email: u.body.email });
    const [link] = (await outboxOf(svc)('identity.password_reset.requested')).filter((e) => e.data.userId === u.user.id).map((e) => new URL(e.data.resetUrl).searchParams.get('token')!);
    expect((await call(anonymous, 'POST', '/auth/reset-password', { token: link, password: 'a brand new password' }, { 'x-forwarded-for': '198.18.2.50' })).statusCode).toBe(200);
    expect((await login(u.body.email, 'a brand new password', '198.18.2.50')).statusCode).toBe(200);
    const stored = (await svc.ctx.pool.query('SELECT address_hash FROM login_known_addresses WHERE user_id = $1', [u.user.id])).rows.map((r) => r.address_hash as string);
    expect(stored.join()).not.toContain('198.18'); // keyed hashes, not addresses
  });

  it('concurrent guesses are counted before any is checked: a burst from one address gets 3 tries, and its refused rest does not count against the account', async () => {
    const u = await register(svc);
    const burst = await Promise.all(Array.from({ length: 20 }, () => login(u.body.email, wrong, '198.18.4.66')));
    const statuses = burst.map((r) => r.statusCode).sort();
    expect(statuses).toEqual([...Array(3).fill(401), ...Array(17).fill(429)]);
    expect((await login(u.body.email, u.body.password, '198.18.4.1')).statusCode).toBe(200); // 3 failures in all, below the ceiling of 6
  });

  it('an unknown e-mail meets the same ceilings as an account (nothing tells them apart)', async () => {
    const email = `nobody-${Date.now()}@example.com`;
    for (let i = 0; i < 6; i++) expect((await login(email, wrong, `198.18.3.${100 + i}`)).statusCode).toBe(401);
    expect((await login(email, wrong, '198.18.3.200')).statusCode).toBe(429);
    for (let i = 0; i < 3; i++) expect((await login(`x${email}`, wrong, '198.18.3.1')).statusCode).toBe(401);
    expect((await login(`x${email}`, wrong, '198.18.3.1')).statusCode).toBe(429);
  });
});

describe('sessions', () => {
  it('logout ends this session (its refresh family) and only it', async () => {
    const u = await register(svc);
    const other = (await login(u.body.email, u.body.password, '192.0.2.60')).json().data;
    const res = await call(u.principal, 'POST', '/auth/logout', {}, { authorization: `Bearer ${u.token}` });
    expect(res.json().data).toEqual({ success: true, all_devices: false });
    expect((await call(anonymous, 'POST', '/auth/refresh', { refresh_token: u.refresh_token })).statusCode).toBe(401);
    expect((await call(anonymous, 'POST', '/auth/refresh', { refresh_token: other.refresh_token })).statusCode).toBe(200);
    // The cookie session logs out the same way.
    const third = (await login(u.body.email, u.body.password, '192.0.2.61')).json().data;
    await call(u.principal, 'POST', '/auth/logout', {}, { cookie: `assimetria_jwt=${third.token}` });
    expect((await call(anonymous, 'POST', '/auth/refresh', { refresh_token: third.refresh_token })).statusCode).toBe(401);
  });

  it('tokens issued after a revocation are never older than it (whole-second notBefore)', async () => {
    const u = await register(svc);
    await call(u.principal, 'POST', '/auth/logout', { all_devices: true });
    const fresh = (await login(u.body.email, u.body.password, '192.0.2.70')).json().data;
    const notBefore = (await outboxOf(svc)('identity.user.tokens_revoked')).filter((e) => e.data.userId === u.user.id).at(-1).data.notBefore;
    expect(decodeJwt(fresh.token).iat! * 1000).toBeGreaterThanOrEqual(Date.parse(notBefore));
    expect((await verifyAccessToken(await createSigner(svc.keys.privateJwk, '[]'), fresh.token)).sessionId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('an expired refresh token is refused', async () => {
    const u = await register(svc);
    await svc.ctx.pool.query("UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE user_id = $1", [u.user.id]);
    const res = await call(anonymous, 'POST', '/auth/refresh', { refresh_token: u.refresh_token });
    expect(res.statusCode).toBe(401);
    expect(res.json().error.message).toBe('Refresh token expired');
  });
});

describe('password reset', () => {
  it('sends at most three links per half hour per account (still 200), and using one voids the others', async () => {
    const u = await register(svc);
    for (let i = 0; i < 5; i++) expect((await call(anonymous, 'POST', '/auth/forgot-password', { email: u.body.email })).statusCode).toBe(200);
    const links = (await outboxOf(svc)('identity.password_reset.requested')).filter((e) => e.data.userId === u.user.id).map((e) => new URL(e.data.resetUrl).searchParams.get('token')!);
    expect(links).toHaveLength(3);
    expect((await call(anonymous, 'POST', '/auth/reset-password', { token: links[1], password: 'a whole new password' })).statusCode).toBe(200);
    for (const t of [links[0], links[2], links[1]]) expect((await call(anonymous, 'POST', '/auth/reset-password', { token: t, password: 'yet another password' })).statusCode).toBe(400);
  });
});

describe('signing keys', () => {
  it('publishes previous public keys for rotation and verifies their tokens; refuses malformed previous keys at start', async () => {
    const previous = await identityKeys();
    const prevPublic = { ...JSON.parse(previous.privateJwk), d: undefined };
    const rotating = await startIdentity({ IDENTITY_JWT_PREVIOUS_PUBLIC_JWKS: JSON.stringify([{ ...JSON.parse(previous.privateJwk) }]) });
    closers.push(rotating);
    const jwks = (await rotating.inject(null, { method: 'GET', url: '/internal/jwks' })).json().keys;
    expect(jwks.map((k: { kid: string }) => k.kid)).toEqual([rotating.keys.kid, previous.kid]);
    expect(jwks.some((k: { d?: string }) => k.d)).toBe(false); // a pasted private JWK never leaks
    const signer = await createSigner(rotating.keys.privateJwk, JSON.stringify([prevPublic]));
    const oldSigner = await createSigner(previous.privateJwk, '[]');
    const u = await register(rotating);
    const old = await signAccessToken(oldSigner, { userId: u.user.id, tenantId: u.user.tenant_id, orgId: u.org_id, orgRole: 'owner', roles: [], sessionId: crypto.randomUUID() });
    await expect(verifyAccessToken(signer, old.token)).resolves.toMatchObject({ userId: u.user.id });
    await expect(verifyAccessToken(await createSigner(rotating.keys.privateJwk, '[]'), old.token)).rejects.toThrow();

    await expect(startIdentity({ IDENTITY_JWT_PREVIOUS_PUBLIC_JWKS: '{"kid":"x"}' })).rejects.toThrow(/JSON array/);
    await expect(startIdentity({ IDENTITY_JWT_PREVIOUS_PUBLIC_JWKS: '[{"kty":"RSA","kid":"r"}]' })).rejects.toThrow(/Ed25519/);
    await expect(startIdentity({ IDENTITY_JWT_PREVIOUS_PUBLIC_JWKS: JSON.stringify([{ ...prevPublic, kid: undefined }]) })).rejects.toThrow(/needs a kid/);
  });
});
