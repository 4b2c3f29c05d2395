import { putOnPlan } from '@aos/testkit';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { caller, register, startIdentity, type Svc } from './helpers.js';

/** Fields a client must never set on itself: roles, tenancy, ownership, server-side state. */
const SNEAKY = {
  role: 'owner', is_admin: true, isAdmin: true, platform_roles: ['admin'], platformRoles: ['admin'], roles: ['admin'],
  tenant_id: randomUUID(), tenantId: randomUUID(), org_id: randomUUID(), orgId: randomUUID(), id: randomUUID(), user_id: randomUUID(),
  created_by: randomUUID(), personal: true, deleted_at: null, key_hash: 'x', keyHash: 'x', revoked_at: null, password_hash: 'x', tokens_not_before: null,
};

let svc: Svc;
let call: ReturnType<typeof caller>;
let root: Awaited<ReturnType<typeof register>>;
beforeAll(async () => {
  svc = await startIdentity();
  call = caller(svc);
  root = await register(svc);
});
afterAll(() => svc?.close());

const row = async (sql: string, params: unknown[]) => (await svc.ctx.pool.query(sql, params)).rows[0];

describe('mass assignment: extra fields are ignored, never applied', () => {
  it('register cannot choose roles or tenant', async () => {
    const u = await register(svc, SNEAKY);
    expect(u.user.platform_roles).toEqual([]);
    expect(u.user.tenant_id).not.toBe(SNEAKY.tenant_id);
    expect(await row('SELECT platform_roles, tenant_id FROM users WHERE id = $1', [u.user.id])).toMatchObject({ platform_roles: [], tenant_id: u.user.tenant_id });
  });

  it('organizations: create and update keep tenant, ownership and the personal flag', async () => {
    const u = await register(svc);
    const org = (await call(u.principal, 'POST', '/organizations', { name: 'Sneaky Org', ...SNEAKY, role: undefined })).json().data;
    expect(org).toMatchObject({ tenant_id: u.user.tenant_id, personal: false, role: 'owner' });
    expect(org.id).not.toBe(SNEAKY.id);
    await call(u.principal, 'PATCH', `/organizations/${org.id}`, { name: 'Still mine', ...SNEAKY });
    expect(await row('SELECT tenant_id, personal, deleted_at, created_by FROM organizations WHERE id = $1', [org.id])).toMatchObject({ tenant_id: u.user.tenant_id, personal: false, deleted_at: null, created_by: u.user.id });
  });

  it('members and invites: platform roles and other orgs stay out of reach', async () => {
    const u = await register(svc);
    await putOnPlan(svc, u.org_id, 'pro');
    const other = await register(svc);
    const added = await call(u.principal, 'POST', `/organizations/${u.org_id}/members`, { user_id: other.user.id, role: 'viewer', platform_roles: ['admin'], is_admin: true, org_id: root.org_id });
    expect(added.json().data.role).toBe('viewer');
    expect(await row('SELECT platform_roles FROM users WHERE id = $1', [other.user.id])).toEqual({ platform_roles: [] });
    expect(await row('SELECT count(*)::int AS n FROM memberships WHERE org_id = $1', [root.org_id])).toEqual({ n: 1 });
    const invite = (await call(u.principal, 'POST', `/organizations/${u.org_id}/invites`, { email: 'inv@example.com', ...SNEAKY, role: 'member' })).json().data;
    expect(await row('SELECT org_id, team_id, invited_by FROM invites WHERE id = $1', [invite.id])).toEqual({ org_id: u.org_id, team_id: null, invited_by: u.user.id });
  });

  it('API keys: org, creator, hash and revocation state are the server\'s', async () => {
    const u = await register(svc);
    const k = (await call(u.principal, 'POST', `/organizations/${u.org_id}/api-keys`, { name: 'k', scopes: ['org:read'], ...SNEAKY, role: undefined })).json().data;
    await call(u.principal, 'PATCH', `/organizations/${u.org_id}/api-keys/${k.id}`, { name: 'k2', ...SNEAKY, role: undefined });
    const stored = await row('SELECT org_id, created_by, key_hash, revoked_at, deleted_at, scopes FROM api_keys WHERE id = $1', [k.id]);
    expect(stored).toMatchObject({ org_id: u.org_id, created_by: u.user.id, revoked_at: null, deleted_at: null, scopes: ['org:read'] });
    expect(stored.key_hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it('teams: the org comes from the caller, not the body', async () => {
    const u = await register(svc);
    const t = (await call(u.principal, 'POST', '/teams', { name: 'Sneaky Team', ...SNEAKY })).json().data;
    await call(u.principal, 'PATCH', `/teams/${t.id}`, { description: 'x', ...SNEAKY });
    expect(await row('SELECT org_id FROM teams WHERE id = $1', [t.id])).toEqual({ org_id: u.org_id });
    const joined = await call(u.principal, 'POST', `/teams/${t.id}/members`, { ...SNEAKY, user_id: u.user.id, role: 'member' });
    expect(joined.statusCode).toBe(409); // the creator is in already; nothing else changed
  });

  it('users: an admin update changes only username, e-mail and role', async () => {
    const u = await register(svc);
    await call(root.principal, 'PATCH', `/users/${u.user.id}`, { username: 'renamed_by_admin', ...SNEAKY, role: 'viewer' });
    expect(await row('SELECT username, tenant_id, platform_roles FROM users WHERE id = $1', [u.user.id])).toEqual({ username: 'renamed_by_admin', tenant_id: u.user.tenant_id, platform_roles: ['viewer'] });
  });

  it('a __proto__ payload pollutes nothing', async () => {
    const u = await register(svc);
    const res = await svc.inject(u.principal, { method: 'POST', url: '/organizations', headers: { 'content-type': 'application/json' }, payload: '{"name":"Proto","__proto__":{"isAdmin":true},"constructor":{"prototype":{"polluted":1}}}' });
    expect(res.statusCode).toBeLessThan(500);
    expect(({} as Record<string, unknown>).isAdmin).toBeUndefined();
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});
