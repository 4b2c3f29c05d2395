import { waitFor } from '@aos/testkit';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { caller, outboxOf, register, startIdentity, type IdentitySvc } from './helpers.js';

const closers: IdentitySvc[] = [];
afterAll(async () => { for (const s of closers.reverse()) await s.close().catch(() => {}); });

let svc: IdentitySvc;
let call: ReturnType<typeof caller>;
let admin: Awaited<ReturnType<typeof register>>;
const K1 = randomBytes(32).toString('base64');
beforeAll(async () => {
  svc = await startIdentity({ CREDENTIALS_KEY: K1, CREDENTIALS_KEY_ID: 'k1' });
  closers.push(svc);
  call = caller(svc);
  admin = await register(svc);
});

describe('credentials', () => {
  it('seal each value with its own nonce and its name as associated data: a ciphertext moved to another row does not open', async () => {
    for (const key of ['a.one', 'a.two']) expect((await call(admin.principal, 'POST', '/credentials', { key, value: 'same value' })).statusCode).toBe(201);
    const rows = (await svc.ctx.pool.query("SELECT key, nonce, ciphertext, tag, key_id FROM credentials WHERE key LIKE 'a.%' ORDER BY key")).rows;
    expect(rows[0].nonce).not.toBe(rows[1].nonce);
    expect(rows[0].ciphertext).not.toBe(rows[1].ciphertext);
    expect(rows.map((r) => r.key_id)).toEqual(['k1', 'k1']);
    await svc.ctx.pool.query("UPDATE credentials SET nonce = $1, ciphertext = $2, tag = $3 WHERE key = 'a.two'", [rows[0].nonce, rows[0].ciphertext, rows[0].tag]);
    const swapped = await call(admin.principal, 'GET', '/credentials/a.two');
    expect(swapped.statusCode).toBe(500);
    expect(swapped.json().error).toEqual({ code: 'INTERNAL_ERROR', message: 'Decryption failed (stored with key k1)' });
    expect((await call(admin.principal, 'GET', '/credentials/a.one')).json().data.value).toBe('same value');
  });

  it('list with a prefix filter and pagination, values hidden; saving again updates; every change is an event', async () => {
    for (const key of ['svc.b', 'svc.a', 'svc.c', 'other.x']) await call(admin.principal, 'POST', '/credentials', { key, value: `v-${key}` });
    const listed = (await call(admin.principal, 'GET', '/credentials?prefix=svc.&limit=2')).json();
    expect(listed.meta).toEqual({ total: 3, limit: 2, offset: 0 });
    expect(listed.data.map((c: { key: string }) => c.key)).toEqual(['svc.a', 'svc.b']);
    expect(JSON.stringify(listed)).not.toContain('v-svc');
    expect((await call(admin.principal, 'GET', '/credentials?prefix=svc_')).json().meta.total).toBe(0); // _ is literal
    await call(admin.principal, 'POST', '/credentials', { key: 'svc.a', value: 'second-value', description: 'now described' });
    expect((await call(admin.principal, 'GET', '/credentials/svc.a')).json().data).toMatchObject({ value: 'second-value', description: 'now described' });
    expect((await call(admin.principal, 'DELETE', '/credentials/svc.a')).statusCode).toBe(200);
    const events = (await outboxOf(svc)('identity.credential.changed')).map((e) => e.data).filter((d) => d.key === 'svc.a');
    expect(events).toEqual([{ key: 'svc.a', action: 'saved' }, { key: 'svc.a', action: 'saved' }, { key: 'svc.a', action: 'deleted' }]);
    expect(JSON.stringify(await outboxOf(svc)('identity.credential.changed'))).not.toContain('second-value'); // no values in events
  });

  it('integrations take their secrets as `fields` (only known ones), report what is missing, and need a platform admin to configure', async () => {
    const user = await register(svc);
    expect((await call(user.principal, 'GET', '/integrations')).statusCode).toBe(200);
    expect((await call(user.principal, 'POST', '/integrations/stripe/configure', { fields: { secret_key: 'sk' } })).statusCode).toBe(403);
    expect((await call(admin.principal, 'POST', '/integrations/stripe/configure', { fields: {} })).statusCode).toBe(400);
    const unknown = await call(admin.principal, 'POST', '/integrations/stripe/configure', { fields: { secret_key: 'sk', evil: 'x' } });
    expect(unknown.statusCode).toBe(400);
    expect(unknown.json().error.details).toEqual([{ field: 'fields', allowed: ['secret_key', 'webhook_secret'] }]);
    expect((await call(admin.principal, 'GET', '/credentials/integration.stripe.secret_key')).statusCode).toBe(404); // nothing half-saved
    const half = (await call(admin.principal, 'POST', '/integrations/stripe/configure', { fields: { secret_key: 'sk_test' } })).json().data;
    expect(half).toMatchObject({ configured: false, missing: ['webhook_secret'] });
    const full = (await call(admin.principal, 'POST', '/integrations/stripe/configure', { values: { webhook_secret: 'whsec' } })).json().data;
    expect(full).toMatchObject({ id: 'stripe', configured: true, missing: [] });
    expect((await call(admin.principal, 'GET', '/credentials/integration.stripe.webhook_secret')).json().data.value).toBe('whsec');
    expect((await call(user.principal, 'GET', '/integrations/stripe/status')).json().data.configured).toBe(true);
  });
});

describe('credential key rotation', () => {
  it('values sealed with a previous key open and are re-sealed with the current key at start; a key that is gone fails loudly', async () => {
    await call(admin.principal, 'POST', '/credentials', { key: 'rot.secret', value: 'survives rotation' });
    const K2 = randomBytes(32).toString('base64');
    const rotated = await startIdentity({
      DATABASE_URL: svc.databaseUrl, IDENTITY_JWT_PRIVATE_JWK: svc.keys.privateJwk,
      CREDENTIALS_KEY: K2, CREDENTIALS_KEY_ID: 'k2', CREDENTIALS_PREVIOUS_KEYS: JSON.stringify({ k1: K1 }),
    });
    closers.push(rotated);
    const keyIds = async () => Object.fromEntries((await rotated.ctx.pool.query('SELECT key, key_id FROM credentials')).rows.map((r) => [r.key, r.key_id]));
    // Every value that opens moves to k2; the one tampered with above stays as it was.
    await waitFor(async () => JSON.stringify(Object.entries(await keyIds()).filter(([, id]) => id !== 'k2')) === '[["a.two","k1"]]', { message: 're-sealed' });
    const asAdmin = caller(rotated);
    expect((await asAdmin(admin.principal, 'GET', '/credentials/rot.secret')).json().data).toMatchObject({ value: 'survives rotation', key_id: 'k2' });

    const forgetful = await startIdentity({ DATABASE_URL: svc.databaseUrl, IDENTITY_JWT_PRIVATE_JWK: svc.keys.privateJwk, CREDENTIALS_KEY: randomBytes(32).toString('base64'), CREDENTIALS_KEY_ID: 'k3' });
    closers.push(forgetful);
    const res = await caller(forgetful)(admin.principal, 'GET', '/credentials/rot.secret');
    expect(res.statusCode).toBe(500);
    expect(res.json().error.message).toBe('Decryption failed (stored with key k2)');
  });

  it('a malformed key stops the service at start, naming the setting; without a key the routes answer 503', async () => {
    await expect(startIdentity({ CREDENTIALS_KEY: Buffer.alloc(16).toString('base64') + 'AAAAAAAAAAAAAAAAAAAAAAAA' })).rejects.toThrow(/CREDENTIALS_KEY must be 32 bytes/);
    await expect(startIdentity({ CREDENTIALS_PREVIOUS_KEYS: '["not an object"]' })).rejects.toThrow(/CREDENTIALS_PREVIOUS_KEYS/);
    const keyless = await startIdentity({ CREDENTIALS_KEY: '' });
    closers.push(keyless);
    const first = await register(keyless);
    const res = await caller(keyless)(first.principal, 'POST', '/credentials', { key: 'x', value: 'y' });
    expect(res.statusCode).toBe(503);
    expect(res.json().error.code).toBe('SERVICE_UNAVAILABLE');
  });
});
