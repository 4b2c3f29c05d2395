import { putOnPlan } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Principal } from '@aos/contracts';
import { anonymous, register, startIdentity, type Svc } from './helpers.js';

let svc: Svc;
let admin: Awaited<ReturnType<typeof register>>;
beforeAll(async () => {
  svc = await startIdentity();
  admin = await register(svc); // first user: platform admin
});
afterAll(() => svc?.close());

const call = (p: Principal, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: unknown) =>
  svc.inject(p, { method, url, ...(payload !== undefined ? { payload: payload as object } : {}) });

describe('users', () => {
  it('platform admins list, read, update and delete users; others see only themselves', async () => {
    const u = await register(svc);
    expect((await call(admin.principal, 'GET', '/users?limit=200')).json().meta.total).toBeGreaterThanOrEqual(2);
    expect((await call(u.principal, 'GET', '/users')).statusCode).toBe(403);
    expect((await call(u.principal, 'GET', `/users/${u.user.id}`)).json().data.id).toBe(u.user.id);
    expect((await call(u.principal, 'GET', `/users/${admin.user.id}`)).statusCode).toBe(404);
    expect((await call(u.principal, 'PATCH', `/users/${u.user.id}`, { role: 'admin' })).statusCode).toBe(403);
    expect((await call(admin.principal, 'PATCH', `/users/${u.user.id}`, { username: 'renamed_user' })).json().data.username).toBe('renamed_user');
    expect((await call(admin.principal, 'DELETE', `/users/${admin.user.id}`)).statusCode).toBe(403);
    expect((await call(admin.principal, 'DELETE', `/users/${u.user.id}`)).statusCode).toBe(200);
    expect((await call(admin.principal, 'GET', `/users/${u.user.id}`)).statusCode).toBe(404);
  });

  it('DELETE /users/me erases the account and tells the other services; admins cannot self-delete', async () => {
    const u = await register(svc);
    expect((await call(admin.principal, 'DELETE', '/users/me')).statusCode).toBe(403);
    expect((await call(u.principal, 'DELETE', '/users/me')).statusCode).toBe(200);
    const events = (await svc.ctx.pool.query("SELECT envelope FROM aos_outbox WHERE type = 'identity.user.deleted'")).rows.map((r) => r.envelope.data.userId);
    expect(events).toContain(u.user.id);
    expect((await svc.inject(anonymous, { method: 'POST', url: '/auth/login', payload: { email: u.body.email, password: u.body.password }, headers: {} })).statusCode).toBe(401);
  });
});

describe('teams', () => {
  it('admins create teams, add org members, invite; members read; other orgs see nothing', async () => {
    const owner = await register(svc);
    await putOnPlan(svc, owner.org_id, 'teams');
    const team = await call(owner.principal, 'POST', '/teams', { name: 'Platform', description: 'infra people' });
    expect(team.statusCode).toBe(201);
    const t = team.json().data;
    expect((await call(owner.principal, 'POST', '/teams', { name: 'platform' })).statusCode).toBe(409);
    // A user of another organization, or none at all: the organization has no such member (404 naming the field).
    for (const userId of [admin.user.id, crypto.randomUUID()]) {
      const res = await call(owner.principal, 'POST', `/teams/${t.id}/members`, { user_id: userId });
      expect(res.statusCode).toBe(404);
      expect(res.json().error).toMatchObject({ code: 'NOT_FOUND', details: [{ field: 'user_id' }] });
    }
    expect(t.member_count).toBe(1); // the creator
    expect((await call(owner.principal, 'POST', `/teams/${t.id}/members`, { user_id: owner.user.id })).statusCode).toBe(409);
    expect((await call(owner.principal, 'GET', `/teams/${t.id}`)).json().data).toMatchObject({ member_count: 1, members: [{ user_id: owner.user.id, role: 'owner' }] });
    const invite = await call(owner.principal, 'POST', `/teams/${t.id}/invites`, { email: 'teammate@example.com' });
    expect(invite.json().data.team_id).toBe(t.id);
    expect((await call(owner.principal, 'GET', `/teams/${t.id}/invites`)).json().meta.total).toBe(1);
    const v = await register(svc);
    await call(owner.principal, 'POST', `/organizations/${owner.org_id}/members`, { user_id: v.user.id, role: 'viewer' });
    const viewer = { ...v.principal, orgId: owner.org_id, tenantId: owner.user.tenant_id, orgRole: 'viewer' as const };
    expect((await call(viewer, 'POST', '/teams', { name: 'Nope' })).statusCode).toBe(403);
    expect((await call(viewer, 'GET', '/teams')).json().data.map((x: { id: string }) => x.id)).toEqual([t.id]);
    const stranger = await register(svc);
    expect((await call(stranger.principal, 'GET', `/teams/${t.id}`)).statusCode).toBe(404);
    expect((await call(stranger.principal, 'DELETE', `/teams/${t.id}`)).statusCode).toBe(404);
    expect((await call(owner.principal, 'DELETE', `/teams/${t.id}`)).statusCode).toBe(200);
  });
});

describe('credentials and integrations', () => {
  it('stores values encrypted, returns them only to platform admins', async () => {
    const saved = await call(admin.principal, 'POST', '/credentials', { key: 'openai.prod', value: 'sk-very-secret-value', description: 'prod key' });
    expect(saved.statusCode).toBe(201);
    expect(saved.json().data.value).toBeUndefined();
    const row = (await svc.ctx.pool.query("SELECT ciphertext, nonce, key_id FROM credentials WHERE key = 'openai.prod'")).rows[0];
    expect(row.ciphertext).not.toContain('secret');
    expect(row.key_id).toBe('k1');
    expect((await call(admin.principal, 'GET', '/credentials/openai.prod')).json().data.value).toBe('sk-very-secret-value');
    expect((await call(admin.principal, 'GET', '/credentials')).json().data[0]).not.toHaveProperty('value');
    const user = await register(svc);
    expect((await call(user.principal, 'GET', '/credentials/openai.prod')).statusCode).toBe(403);
    expect((await call(user.principal, 'POST', '/credentials', { key: 'x', value: 'y' })).statusCode).toBe(403);
    expect((await call(admin.principal, 'POST', '/credentials', { key: '../etc', value: 'y' })).statusCode).toBe(400);
    expect((await call(admin.principal, 'DELETE', '/credentials/openai.prod')).statusCode).toBe(200);
    expect((await call(admin.principal, 'GET', '/credentials/openai.prod')).statusCode).toBe(404);
  });

  it('integrations report and take their secrets', async () => {
    expect((await call(admin.principal, 'GET', '/integrations/github/status')).json().data).toMatchObject({ configured: false, missing: ['token'] });
    expect((await call(admin.principal, 'POST', '/integrations/github/configure', { values: { nope: 'x' } })).statusCode).toBe(400);
    expect((await call(admin.principal, 'POST', '/integrations/github/configure', { values: { token: 'ghp_x' } })).json().data.configured).toBe(true);
    expect((await call(admin.principal, 'GET', '/integrations')).json().data.find((i: { id: string }) => i.id === 'github').configured).toBe(true);
    expect((await call(admin.principal, 'GET', '/integrations/unknown/status')).statusCode).toBe(404);
  });
});
