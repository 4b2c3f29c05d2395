import { apiKeyPrincipal, putOnPlan } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gatewayService, register, startIdentity, type Svc } from './helpers.js';
import type { Principal } from '@aos/contracts';

let svc: Svc;
beforeAll(async () => { svc = await startIdentity(); });
afterAll(() => svc?.close());

const call = (p: Principal | null, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: unknown) =>
  svc.inject(p, { method, url, ...(payload !== undefined ? { payload: payload as object } : {}) });
const verify = (key: string) => call(gatewayService, 'POST', '/internal/api-keys/verify', { key });

describe('organizations, members, invites', () => {
  it('create, list, update, members with roles, invite → accept, delete', async () => {
    const owner = await register(svc);
    const created = await call(owner.principal, 'POST', '/organizations', { name: 'Acme Robotics' });
    expect(created.statusCode).toBe(201);
    const org = created.json().data;
    await putOnPlan(svc, org.id, 'teams');
    expect(org).toMatchObject({ slug: 'acme-robotics', role: 'owner', member_count: 1, personal: false });
    const again = (await call(owner.principal, 'POST', '/organizations', { name: 'Acme Robotics' })).json().data;
    expect(again.slug).toMatch(/^acme-robotics-[a-z0-9]+$/); // a derived slug that is taken gets a suffix
    expect((await call(owner.principal, 'POST', '/organizations', { name: 'Other', slug: 'acme-robotics' })).statusCode).toBe(409); // a chosen one does not
    expect((await call(owner.principal, 'DELETE', `/organizations/${again.id}`)).statusCode).toBe(200);
    const mine = (await call(owner.principal, 'GET', '/organizations')).json();
    expect(mine.data.map((o: { id: string }) => o.id)).toEqual([owner.org_id, org.id]);

    const bob = await register(svc);
    const added = await call(owner.principal, 'POST', `/organizations/${org.id}/members`, { user_id: bob.user.id, role: 'member' });
    expect(added.statusCode).toBe(201);
    expect((await call(owner.principal, 'POST', `/organizations/${org.id}/members`, { user_id: bob.user.id })).statusCode).toBe(409);
    expect((await call(owner.principal, 'POST', `/organizations/${org.id}/members`, { email: bob.body.email })).statusCode).toBe(409);
    expect((await call(bob.principal, 'PATCH', `/organizations/${org.id}`, { name: 'Bob Was Here' })).statusCode).toBe(403);
    expect((await call(owner.principal, 'PATCH', `/organizations/${org.id}/members/${bob.user.id}`, { role: 'admin' })).json().data.role).toBe('admin');
    expect((await call(bob.principal, 'PATCH', `/organizations/${org.id}/members/${owner.user.id}`, { role: 'member' })).statusCode).toBe(403);
    expect((await call(owner.principal, 'PATCH', `/organizations/${org.id}/members/${owner.user.id}`, { role: 'member' })).statusCode).toBe(422);

    const carol = await register(svc);
    const invite = await call(bob.principal, 'POST', `/organizations/${org.id}/invites`, { email: carol.body.email, role: 'viewer' });
    expect(invite.statusCode).toBe(201);
    const { token, accept_url: acceptUrl } = invite.json().data;
    expect(acceptUrl).toBe(`https://aos.test/invites/${token}`);
    const events = (await svc.ctx.pool.query("SELECT envelope FROM aos_outbox WHERE type = 'identity.invite.created'")).rows.map((r) => r.envelope);
    expect(events.some((e) => e.data.inviteeUserId === carol.user.id && e.data.acceptUrl === acceptUrl)).toBe(true);
    expect((await call(owner.principal, 'GET', `/organizations/${org.id}/invites`)).json().data[0]).not.toHaveProperty('token');
    expect((await call(bob.principal, 'POST', `/organizations/invites/${token}/accept`)).statusCode).toBe(404); // not bob's e-mail
    expect((await call(carol.principal, 'POST', `/organizations/invites/${token}/accept`)).json().data).toMatchObject({ org_id: org.id, role: 'viewer' });
    expect((await call(carol.principal, 'POST', `/organizations/invites/${token}/accept`)).statusCode).toBe(404); // single use
    expect((await call(carol.principal, 'GET', `/organizations/${org.id}`)).json().data).toMatchObject({ role: 'viewer', member_count: 3 });

    expect((await call(bob.principal, 'DELETE', `/organizations/${org.id}`)).statusCode).toBe(403);
    expect((await call(owner.principal, 'DELETE', `/organizations/${owner.org_id}`)).statusCode).toBe(422);
    expect((await call(owner.principal, 'DELETE', `/organizations/${org.id}`)).statusCode).toBe(200);
    expect((await call(owner.principal, 'GET', `/organizations/${org.id}`)).statusCode).toBe(404);
  });

  it('a user of org A gets 404 on every org-B resource and cannot add members, keys or invites there', async () => {
    const a = await register(svc);
    const b = await register(svc);
    const key = (await call(b.principal, 'POST', `/organizations/${b.org_id}/api-keys`, { name: 'b key' })).json().data;
    const orgB = b.org_id;
    const attempts: Array<[string, string, unknown?]> = [
      ['GET', `/organizations/${orgB}`], ['PATCH', `/organizations/${orgB}`, { name: 'x' }], ['DELETE', `/organizations/${orgB}`],
      ['GET', `/organizations/${orgB}/members`], ['POST', `/organizations/${orgB}/members`, { user_id: a.user.id, role: 'owner' }],
      ['PATCH', `/organizations/${orgB}/members/${b.user.id}`, { role: 'viewer' }], ['DELETE', `/organizations/${orgB}/members/${b.user.id}`],
      ['GET', `/organizations/${orgB}/invites`], ['POST', `/organizations/${orgB}/invites`, { email: 'x@example.com' }],
      ['GET', `/organizations/${orgB}/api-keys`], ['POST', `/organizations/${orgB}/api-keys`, { name: 'mine now' }],
      ['GET', `/organizations/${orgB}/api-keys/${key.id}`], ['PATCH', `/organizations/${orgB}/api-keys/${key.id}`, { name: 'x' }],
      ['DELETE', `/organizations/${orgB}/api-keys/${key.id}`], ['POST', `/organizations/${orgB}/api-keys/${key.id}/revoke`],
      ['POST', `/organizations/${orgB}/api-keys/${key.id}/rotate`], ['POST', `/organizations/${orgB}/api-keys/${key.id}/roll`],
      ['GET', `/organizations/${orgB}/api-keys/${key.id}/usage`],
      ['GET', `/organizations/${a.org_id}/api-keys/${key.id}`], // b's key through a's own org
      ['GET', '/organizations/not-a-uuid'], ['GET', `/organizations/${orgB}' OR '1'='1`],
    ];
    for (const [method, url, body] of attempts) {
      const res = await call(a.principal, method as 'GET', url, body);
      expect(res.statusCode, `${method} ${url}`).toBe(404);
    }
    expect((await verify(key.key)).statusCode).toBe(200); // b's key untouched
  });
});

describe('API keys', () => {
  it('shows the secret once, masks listings, verifies, and validates scopes', async () => {
    const u = await register(svc);
    const res = await call(u.principal, 'POST', `/organizations/${u.org_id}/api-keys`, { name: 'ci', scopes: ['tasks:read', 'tasks:write'], description: 'CI pipeline' });
    expect(res.statusCode).toBe(201);
    const k = res.json().data;
    expect(k.key).toMatch(/^osk_live_[0-9A-Za-z]{49}$/);
    expect(k.key_preview).toBe(`${k.key.slice(0, 11)}…${k.key.slice(-2)}`);
    const listed = (await call(u.principal, 'GET', `/organizations/${u.org_id}/api-keys`)).json().data[0];
    expect(listed).not.toHaveProperty('key');
    expect(JSON.stringify(listed)).not.toContain(k.key.slice(11, 30));
    const stored = (await svc.ctx.pool.query('SELECT key_hash FROM api_keys WHERE id = $1', [k.id])).rows[0].key_hash;
    expect(stored).not.toContain(k.key.slice(9));
    const v = await verify(k.key);
    expect(v.json().data).toMatchObject({ api_key_id: k.id, org_id: u.org_id, tenant_id: u.user.tenant_id, user_id: u.user.id, scopes: ['tasks:read', 'tasks:write'] });
    // One changed character breaks the checksum; a well-formed unknown key is unknown.
    const flipped = k.key.slice(0, 20) + (k.key[20] === 'a' ? 'b' : 'a') + k.key.slice(21);
    expect((await verify(flipped)).statusCode).toBe(401);
    expect((await verify('osk_live_nope')).statusCode).toBe(401);
    expect((await call(u.principal, 'POST', `/organizations/${u.org_id}/api-keys`, { name: 'bad', scopes: ['root'] })).statusCode).toBe(400);
    expect((await call(u.principal, 'POST', `/organizations/${u.org_id}/api-keys`, { name: 'past', expires_at: '2001-01-01T00:00:00Z' })).statusCode).toBe(400);
    expect((await call(gatewayService, 'GET', `/organizations/${u.org_id}/api-keys`)).statusCode).toBe(404);
    expect((await call(u.principal, 'POST', '/internal/api-keys/verify', { key: k.key })).statusCode).toBe(403);
  });

  it('revoke and delete stop a key at once; PATCH is_active false too', async () => {
    const u = await register(svc);
    const mk = async (name: string) => (await call(u.principal, 'POST', `/organizations/${u.org_id}/api-keys`, { name })).json().data;
    const a = await mk('a');
    const b = await mk('b');
    const c = await mk('c');
    expect((await call(u.principal, 'POST', `/organizations/${u.org_id}/api-keys/${a.id}/revoke`)).json().data.status).toBe('revoked');
    expect((await verify(a.key)).statusCode).toBe(401);
    expect((await call(u.principal, 'DELETE', `/organizations/${u.org_id}/api-keys/${b.id}`)).statusCode).toBe(200);
    expect((await verify(b.key)).statusCode).toBe(401);
    expect((await call(u.principal, 'GET', `/organizations/${u.org_id}/api-keys/${b.id}`)).statusCode).toBe(404);
    expect((await call(u.principal, 'PATCH', `/organizations/${u.org_id}/api-keys/${c.id}`, { is_active: false })).json().data.status).toBe('inactive');
    expect((await verify(c.key)).statusCode).toBe(401);
    const types = (await svc.ctx.pool.query("SELECT envelope->'data'->>'apiKeyId' AS id, type FROM aos_outbox WHERE type LIKE 'identity.api_key.%'")).rows;
    expect(types).toEqual(expect.arrayContaining([{ id: a.id, type: 'identity.api_key.revoked' }, { id: b.id, type: 'identity.api_key.revoked' }, { id: c.id, type: 'identity.api_key.updated' }]));
  });

  it('rotate keeps the old secret for the grace period; roll kills it now', async () => {
    const u = await register(svc);
    const k = (await call(u.principal, 'POST', `/organizations/${u.org_id}/api-keys`, { name: 'rot' })).json().data;
    const rotated = (await call(u.principal, 'POST', `/organizations/${u.org_id}/api-keys/${k.id}/rotate`, { grace_hours: 2 })).json().data;
    expect(rotated.key).not.toBe(k.key);
    expect(new Date(rotated.previous_key_valid_until).getTime()).toBeGreaterThan(Date.now() + 3_500_000);
    expect((await verify(k.key)).statusCode).toBe(200);
    expect((await verify(rotated.key)).statusCode).toBe(200);
    const rolled = (await call(u.principal, 'POST', `/organizations/${u.org_id}/api-keys/${k.id}/roll`)).json().data;
    expect((await verify(k.key)).statusCode).toBe(401);
    expect((await verify(rotated.key)).statusCode).toBe(401);
    expect((await verify(rolled.key)).statusCode).toBe(200);
  });

  it('records and lists per-key usage; API keys manage only their own org with org:write', async () => {
    const u = await register(svc);
    const k = (await call(u.principal, 'POST', `/organizations/${u.org_id}/api-keys`, { name: 'usage' })).json().data;
    const at = new Date().toISOString();
    const res = await call(gatewayService, 'POST', '/internal/api-keys/usage', { entries: [{ api_key_id: k.id, method: 'GET', path: '/api/tasks', status: 200, latency_ms: 12, at }] });
    expect(res.statusCode).toBe(202);
    expect((await call(u.principal, 'GET', `/organizations/${u.org_id}/api-keys/${k.id}/usage`)).json().data).toEqual([{ at, method: 'GET', path: '/api/tasks', status: 200, latency_ms: 12 }]);
    const reader = apiKeyPrincipal(['org:read'], { orgId: u.org_id, tenantId: u.user.tenant_id });
    expect((await call(reader, 'POST', `/organizations/${u.org_id}/api-keys`, { name: 'x' })).statusCode).toBe(403);
    const writer = apiKeyPrincipal(['org:write'], { orgId: u.org_id, tenantId: u.user.tenant_id });
    expect((await call(writer, 'POST', `/organizations/${u.org_id}/api-keys`, { name: 'x', scopes: ['org:write'] })).statusCode).toBe(201);
  });

  it('resolves memberships for the gateway', async () => {
    const u = await register(svc);
    const ok = await call(gatewayService, 'POST', '/internal/memberships/resolve', { user_id: u.user.id, org_id: u.org_id });
    expect(ok.json().data).toMatchObject({ org_id: u.org_id, org_role: 'owner', tenant_id: u.user.tenant_id });
    const other = await register(svc);
    expect((await call(gatewayService, 'POST', '/internal/memberships/resolve', { user_id: u.user.id, org_id: other.org_id })).statusCode).toBe(404);
  });
});
