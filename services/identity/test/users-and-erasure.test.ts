import { putOnPlan } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actingIn, anonymous, caller, gatewayService, outboxOf, register, startIdentity, type Svc } from './helpers.js';

let svc: Svc;
let call: ReturnType<typeof caller>;
let outbox: ReturnType<typeof outboxOf>;
let admin: Awaited<ReturnType<typeof register>>;
beforeAll(async () => {
  svc = await startIdentity({ ADMIN_EMAILS: 'Chief@Example.com, ops@example.com' });
  call = caller(svc);
  outbox = outboxOf(svc);
  admin = await register(svc);
});
afterAll(() => svc?.close());

describe('platform admins', () => {
  it('the first user of an empty installation and ADMIN_EMAILS (any case) are admins; nobody else', async () => {
    expect(admin.user).toMatchObject({ platform_roles: ['admin'], role: 'admin' });
    expect((await register(svc, { email: 'chief@example.COM' })).user.platform_roles).toEqual(['admin']);
    expect((await register(svc, { email: 'ops@example.com' })).user.platform_roles).toEqual(['admin']);
    expect((await register(svc)).user).toMatchObject({ platform_roles: [], role: 'member' });
  });

  it('list and filter users; role changes void the user\'s tokens, other edits do not; e-mail clashes are 409', async () => {
    const u = await register(svc, { username: `findme_${Date.now()}` });
    expect((await call(admin.principal, 'GET', `/users?q=${u.body.username.toUpperCase()}`)).json().data.map((x: { id: string }) => x.id)).toEqual([u.user.id]);
    expect((await call(admin.principal, 'GET', '/users?q=%25')).json().meta.total).toBe(0);
    const admins = (await call(admin.principal, 'GET', '/users?role=admin&limit=200')).json().data.map((x: { id: string }) => x.id);
    expect(admins).toContain(admin.user.id);
    expect(admins).not.toContain(u.user.id);

    const revoked = async () => (await outbox('identity.user.tokens_revoked')).filter((e) => e.data.userId === u.user.id);
    await call(admin.principal, 'PATCH', `/users/${u.user.id}`, { username: `renamed_${Date.now()}` });
    expect(await revoked()).toEqual([]);
    const promoted = (await call(admin.principal, 'PATCH', `/users/${u.user.id}`, { role: 'editor' })).json().data;
    expect(promoted).toMatchObject({ role: 'editor', platform_roles: ['editor'] });
    const [event] = await revoked();
    expect(Date.parse(event.data.notBefore) % 1000).toBe(0); // whole seconds: see revocationInstant
    await call(admin.principal, 'PATCH', `/users/${u.user.id}`, { role: 'editor' });
    expect(await revoked()).toHaveLength(1); // no change, no revocation
    expect((await call(admin.principal, 'PATCH', `/users/${u.user.id}`, { email: admin.body.email.toUpperCase() })).statusCode).toBe(409);
    expect((await call(admin.principal, 'PATCH', `/users/${admin.user.id}`, { role: 'member' })).statusCode).toBe(403);
    expect((await call(admin.principal, 'PATCH', '/users/00000000-0000-4000-8000-000000000000', { role: 'member' })).statusCode).toBe(404);
    expect((await call(admin.principal, 'DELETE', '/users/00000000-0000-4000-8000-000000000000')).statusCode).toBe(404);
  });
});

describe('erasure (DELETE /users/me)', () => {
  it('refuses while the user is the only owner of an organization others use, naming it', async () => {
    const u = await register(svc);
    const org = (await call(u.principal, 'POST', '/organizations', { name: 'Shared Things' })).json().data;
    await putOnPlan(svc, org.id, 'pro');
    const colleague = await register(svc);
    expect((await call(u.principal, 'POST', `/organizations/${org.id}/members`, { user_id: colleague.user.id, role: 'admin' })).statusCode).toBe(201);
    const refused = await call(u.principal, 'DELETE', '/users/me');
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error.details).toEqual([{ org_id: org.id, name: 'Shared Things' }]);
    expect((await call(gatewayService, 'POST', '/internal/memberships/resolve', { user_id: u.user.id, org_id: org.id })).statusCode).toBe(200); // nothing happened

    await call(actingIn(u, org, 'owner'), 'PATCH', `/organizations/${org.id}/members/${colleague.user.id}`, { role: 'owner' });
    expect((await call(u.principal, 'DELETE', '/users/me')).statusCode).toBe(200);
    expect((await call(colleague.principal, 'GET', `/organizations/${org.id}`)).json().data).toMatchObject({ member_count: 1 });
  });

  it('erases the account: personal and solo orgs deleted with their keys revoked, invitations to the address dropped, events for the other services; the address can sign up again', async () => {
    const u = await register(svc);
    const solo = (await call(u.principal, 'POST', '/organizations', { name: 'Only Me' })).json().data;
    const personalKey = (await call(u.principal, 'POST', `/organizations/${u.org_id}/api-keys`, { name: 'p' })).json().data;
    const soloKey = (await call(u.principal, 'POST', `/organizations/${solo.id}/api-keys`, { name: 's' })).json().data;
    const inviter = await register(svc);
    await putOnPlan(svc, inviter.org_id, 'pro');
    expect((await call(inviter.principal, 'POST', `/organizations/${inviter.org_id}/invites`, { email: u.body.email })).statusCode).toBe(201);
    await call(anonymous, 'POST', '/auth/login', { email: u.body.email, password: 'a wrong password' });

    const res = await call(u.principal, 'DELETE', '/users/me');
    expect(res.json()).toEqual({ data: { id: u.user.id, deleted: true } });
    const q = async (sql: string, params: unknown[]) => (await svc.ctx.pool.query(sql, params)).rows;
    expect(await q('SELECT id FROM users WHERE id = $1', [u.user.id])).toEqual([]);
    expect((await q('SELECT deleted_at FROM organizations WHERE id = ANY($1)', [[u.org_id, solo.id]])).every((r) => r.deleted_at)).toBe(true);
    expect(await q('SELECT id FROM invites WHERE lower(email) = lower($1)', [u.body.email])).toEqual([]);
    expect(await q('SELECT token_hash FROM refresh_tokens WHERE user_id = $1', [u.user.id])).toEqual([]);
    expect(await q('SELECT key FROM login_failures WHERE key = $1', [`email:${u.body.email.toLowerCase()}`])).toEqual([]);
    expect(await q('SELECT key FROM login_failures WHERE position($1 in key) > 0', [u.body.email.toLowerCase()])).toEqual([]); // also the per-address counters
    for (const k of [personalKey, soloKey]) expect((await call(gatewayService, 'POST', '/internal/api-keys/verify', { key: k.key })).statusCode).toBe(401);
    const revokedKeys = (await outbox('identity.api_key.revoked')).filter((e) => e.data.reason === 'org_deleted').map((e) => e.data.apiKeyId);
    expect(revokedKeys).toEqual(expect.arrayContaining([personalKey.id, soloKey.id]));
    expect((await outbox('identity.user.deleted')).map((e) => e.data)).toContainEqual({ userId: u.user.id, tenantId: u.user.tenant_id });
    expect((await outbox('identity.user.tokens_revoked')).some((e) => e.data.userId === u.user.id)).toBe(true);
    expect((await outbox('identity.org.deleted')).map((e) => e.data.orgId)).toEqual(expect.arrayContaining([u.org_id, solo.id]));

    expect((await call(anonymous, 'POST', '/auth/login', { email: u.body.email, password: u.body.password })).statusCode).toBe(401);
    const again = await register(svc, { email: u.body.email, username: u.body.username });
    expect(again.user.id).not.toBe(u.user.id);
  });

  it('an admin deletes others (not themselves); admins cannot erase themselves', async () => {
    const u = await register(svc);
    expect((await call(admin.principal, 'DELETE', '/users/me')).statusCode).toBe(403);
    expect((await call(admin.principal, 'DELETE', `/users/${admin.user.id}`)).statusCode).toBe(403);
    expect((await call(u.principal, 'DELETE', `/users/${admin.user.id}`)).statusCode).toBe(403);
    expect((await call(admin.principal, 'DELETE', `/users/${u.user.id}`)).statusCode).toBe(200);
    expect((await call(admin.principal, 'GET', `/users/${u.user.id}`)).statusCode).toBe(404);
  });
});
