import { apiKeyPrincipal } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { looksLikeApiKey } from '../src/domain/crypto.js';
import { caller, gatewayService, register, startIdentity, type Svc } from './helpers.js';

let svc: Svc;
let call: ReturnType<typeof caller>;
beforeAll(async () => {
  svc = await startIdentity();
  call = caller(svc);
  await register(svc);
});
afterAll(() => svc?.close());

const verify = (key: string) => call(gatewayService, 'POST', '/internal/api-keys/verify', { key });

describe('API keys', () => {
  it('secrets are osk_live_ + 43 base62 chars (≥ 32 random bytes) + a 6-char checksum, unique, recognisable offline', async () => {
    const u = await register(svc);
    const keys = new Set<string>();
    for (let i = 0; i < 5; i++) keys.add((await call(u.principal, 'POST', `/organizations/${u.org_id}/api-keys`, { name: `k${i}` })).json().data.key);
    expect(keys.size).toBe(5);
    for (const k of keys) {
      expect(k).toMatch(/^osk_live_[0-9A-Za-z]{49}$/);
      expect(looksLikeApiKey(k)).toBe(true);
      expect(looksLikeApiKey(k.slice(0, -1) + (k.endsWith('A') ? 'B' : 'A'))).toBe(false);
    }
  });

  it('list by status; get, update description/scopes/expiry; the secret never shows again', async () => {
    const u = await register(svc);
    const base = `/organizations/${u.org_id}/api-keys`;
    const mk = async (name: string, extra: Record<string, unknown> = {}) => (await call(u.principal, 'POST', base, { name, ...extra })).json().data;
    const active = await mk('active', { scopes: ['tasks:read'], description: 'CI' });
    const revoked = await mk('revoked');
    const inactive = await mk('inactive');
    const expired = await mk('expired', { expires_at: new Date(Date.now() + 60_000).toISOString() });
    await call(u.principal, 'POST', `${base}/${revoked.id}/revoke`);
    await call(u.principal, 'PATCH', `${base}/${inactive.id}`, { is_active: false });
    await svc.ctx.pool.query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", [expired.id]);
    const ids = async (status: string) => (await call(u.principal, 'GET', `${base}?status=${status}`)).json().data.map((k: { id: string }) => k.id);
    expect(await ids('active')).toEqual([active.id]);
    expect(await ids('revoked')).toEqual([revoked.id]);
    expect(await ids('inactive')).toEqual([inactive.id]);
    expect(await ids('expired')).toEqual([expired.id]);
    expect((await call(u.principal, 'GET', base)).json().meta.total).toBe(4);
    expect((await call(u.principal, 'GET', `${base}?status=bogus`)).statusCode).toBe(400);
    expect((await verify(expired.key)).statusCode).toBe(401);

    const detail = (await call(u.principal, 'GET', `${base}/${active.id}`)).json().data;
    expect(detail).toMatchObject({ name: 'active', description: 'CI', scopes: ['tasks:read'], status: 'active', is_active: true, created_by: u.user.id });
    expect(detail.key).toBeUndefined();
    const when = new Date(Date.now() + 86_400_000).toISOString();
    const patched = (await call(u.principal, 'PATCH', `${base}/${active.id}`, { description: null, scopes: ['tasks:read', 'tasks:write', 'tasks:read'], expires_at: when })).json().data;
    expect(patched).toMatchObject({ description: null, scopes: ['tasks:read', 'tasks:write'], expires_at: when });
    expect((await verify(active.key)).json().data).toMatchObject({ scopes: ['tasks:read', 'tasks:write'], expires_at: when });
    expect((await call(u.principal, 'PATCH', `${base}/${active.id}`, {})).statusCode).toBe(400);
    expect((await call(u.principal, 'PATCH', `${base}/${active.id}`, { expires_at: '2000-01-01T00:00:00Z' })).statusCode).toBe(400);
    expect((await call(u.principal, 'PATCH', `${base}/${revoked.id}`, { is_active: true })).statusCode).toBe(409);
    expect((await call(u.principal, 'POST', `${base}/${revoked.id}/rotate`)).statusCode).toBe(409);
  });

  it('rotate defaults to 24 h of grace and takes 0–720 h; grace 0 is a roll', async () => {
    const u = await register(svc);
    const base = `/organizations/${u.org_id}/api-keys`;
    const k = (await call(u.principal, 'POST', base, { name: 'r' })).json().data;
    const rotated = (await call(u.principal, 'POST', `${base}/${k.id}/rotate`)).json().data;
    const grace = new Date(rotated.previous_key_valid_until).getTime() - Date.now();
    expect(grace).toBeGreaterThan(24 * 3_600_000 - 60_000);
    expect(grace).toBeLessThanOrEqual(24 * 3_600_000);
    expect((await verify(k.key)).json().data.expires_at).toBe(rotated.previous_key_valid_until); // the old secret expires with its grace
    for (const bad of [-1, 721, 1.5, 'ten']) expect((await call(u.principal, 'POST', `${base}/${k.id}/rotate`, { grace_hours: bad })).statusCode, String(bad)).toBe(400);
    const noGrace = (await call(u.principal, 'POST', `${base}/${k.id}/rotate`, { grace_hours: 0 })).json().data;
    expect(noGrace.previous_key_valid_until).toBeNull();
    expect((await verify(rotated.key)).statusCode).toBe(401);
    expect((await verify(noGrace.key)).statusCode).toBe(200);
  });

  it('an API key cannot create, widen, rotate or roll a key with scopes it lacks (no escalation to *)', async () => {
    const u = await register(svc);
    const base = `/organizations/${u.org_id}/api-keys`;
    const writer = apiKeyPrincipal(['org:read', 'org:write', 'tasks:read'], { orgId: u.org_id, tenantId: u.user.tenant_id, userId: u.user.id });
    for (const scopes of [undefined, ['*'], ['billing:write'], ['org:write', 'credentials:read']]) {
      const res = await call(writer, 'POST', base, { name: 'escalate', ...(scopes ? { scopes } : {}) });
      expect(res.statusCode, JSON.stringify(scopes)).toBe(403);
    }
    const mine = await call(writer, 'POST', base, { name: 'narrower', scopes: ['tasks:read'] });
    expect(mine.statusCode).toBe(201);
    const strong = (await call(u.principal, 'POST', base, { name: 'strong' })).json().data; // '*', made by a user
    for (const [method, url] of [['GET', `${base}/${strong.id}`], ['POST', `${base}/${strong.id}/roll`], ['POST', `${base}/${strong.id}/rotate`], ['PATCH', `${base}/${strong.id}`], ['DELETE', `${base}/${strong.id}`]] as const) {
      expect((await call(writer, method, url, method === 'PATCH' ? { name: 'x' } : undefined)).statusCode, `${method} ${url}`).toBe(403);
    }
    expect((await call(writer, 'PATCH', `${base}/${mine.json().data.id}`, { scopes: ['*'] })).statusCode).toBe(403);
    expect((await verify(strong.key)).statusCode).toBe(200); // untouched
  });

  it('usage from the gateway lists newest first, paginated, and moves last_used_at', async () => {
    const u = await register(svc);
    const base = `/organizations/${u.org_id}/api-keys`;
    const k = (await call(u.principal, 'POST', base, { name: 'used' })).json().data;
    const t = (s: number) => new Date(Date.now() - s * 1_000).toISOString();
    const entries = [30, 10, 20].map((s, i) => ({ api_key_id: k.id, method: 'GET', path: `/api/tasks/${i}`, status: 200 + i, latency_ms: i, at: t(s) }));
    expect((await call(gatewayService, 'POST', '/internal/api-keys/usage', { entries })).statusCode).toBe(202);
    const page = (await call(u.principal, 'GET', `${base}/${k.id}/usage?limit=2`)).json();
    expect(page.meta).toEqual({ total: 3, limit: 2, offset: 0 });
    expect(page.data.map((e: { path: string }) => e.path)).toEqual(['/api/tasks/1', '/api/tasks/2']);
    expect((await call(u.principal, 'GET', `${base}/${k.id}`)).json().data.last_used_at).toBe(entries[1]!.at);
    // An older batch arriving late does not move it back.
    await call(gatewayService, 'POST', '/internal/api-keys/usage', { entries: [{ ...entries[0]!, at: t(3_600) }] });
    expect((await call(u.principal, 'GET', `${base}/${k.id}`)).json().data.last_used_at).toBe(entries[1]!.at);
    expect((await call(u.principal, 'POST', '/internal/api-keys/usage', { entries })).statusCode).toBe(403); // only the gateway feeds it
  });
});
