import { Queues } from '@aos/contracts';
import { loadServiceConfig } from '@aos/runtime';
import { waitFor } from '@aos/testkit';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLEANUP_SCHEDULER_ID, runCleanup } from '../src/jobs/cleanup.js';
import { service } from '../src/service.js';
import { anonymous, register, startIdentity, type IdentitySvc } from './helpers.js';

let svc: IdentitySvc;
beforeAll(async () => {
  svc = await startIdentity();
  // The scheduler's first run starts at once; let it finish so it cannot race the rows planted below.
  await waitFor(async () => (await svc.ctx.queues.queue(Queues.identityCleanup).getJobCounts('completed')).completed! >= 1, { message: 'the first cleanup run' });
});
afterAll(() => svc?.close());

const q = (text: string, params: unknown[] = []) => svc.ctx.pool.query(text, params);
const ago = (ms: number) => new Date(Date.now() - ms);
const DAY = 86_400_000;
const ids = async (table: string) => new Set((await q(`SELECT id FROM ${table}`)).rows.map((r) => r.id as string));
const post = (url: string, payload: object) => svc.inject(anonymous, { method: 'POST', url, payload });

describe('cleanup', () => {
  it('deletes old usage rows, ended login-failure windows, and reset links, invitations and refresh families unusable for longer than the retention; fresh ones stay', async () => {
    const u = await register(svc);
    const orgId = u.org_id as string;
    const usage = async (at: Date) => (await q(`INSERT INTO api_key_usage (api_key_id, method, path, status, latency_ms, at) VALUES ($1, 'GET', '/x', 200, 1, $2) RETURNING id`, [randomUUID(), at])).rows[0].id as number;
    const oldUsage = await usage(ago(91 * DAY));
    const recentUsage = await usage(ago(89 * DAY));

    const window = 15 * 60_000;
    const currentWindow = new Date(Math.floor(Date.now() / window) * window);
    await q(`INSERT INTO login_failures (key, window_start, count) VALUES ('ip:10.0.0.1', $1, 3), ('ip:10.0.0.2', $2, 3)`, [new Date(currentWindow.getTime() - window - 60_000), currentWindow]);

    // Registering made this client's address known; one seen 31 days ago is forgotten.
    await q(`INSERT INTO login_known_addresses (user_id, address_hash, last_success_at) VALUES ($1, 'old-address', $2)`, [u.user.id, ago(31 * DAY)]);

    const reset = async (expiresAt: Date, usedAt: Date | null) =>
      (await q(`INSERT INTO password_resets (user_id, token_hash, expires_at, used_at) VALUES ($1, $2, $3, $4) RETURNING id`, [u.user.id, randomUUID(), expiresAt, usedAt])).rows[0].id as string;
    await reset(ago(8 * DAY), null); // expired long ago
    await reset(ago(7 * DAY), ago(8 * DAY)); // used long ago
    const resetExpiredRecently = await reset(ago(6 * DAY), null);
    const resetPending = await reset(new Date(Date.now() + 20 * 60_000), null);

    const invite = async (expiresAt: Date, acceptedAt: Date | null) =>
      (await q(`INSERT INTO invites (org_id, email, role, token_hash, expires_at, accepted_at) VALUES ($1, $2, 'member', $3, $4, $5) RETURNING id`, [orgId, `${randomUUID()}@example.com`, randomUUID(), expiresAt, acceptedAt])).rows[0].id as string;
    await invite(ago(8 * DAY), null); // expired long ago
    const inviteAcceptedLongAgo = await invite(ago(30 * DAY), ago(31 * DAY));
    const inviteExpiredRecently = await invite(ago(6 * DAY), null);
    const invitePending = await invite(new Date(Date.now() + DAY), null);

    const token = async (familyId: string, expiresAt: Date, usedAt: Date | null, revokedAt: Date | null) =>
      (await q(`INSERT INTO refresh_tokens (user_id, family_id, token_hash, expires_at, used_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`, [u.user.id, familyId, randomUUID(), expiresAt, usedAt, revokedAt])).rows[0].id as string;
    const [expiredFamily, revokedFamily, recentlyRevokedFamily] = [randomUUID(), randomUUID(), randomUUID()];
    const gone = [
      await token(expiredFamily, ago(20 * DAY), ago(40 * DAY), null), await token(expiredFamily, ago(8 * DAY), null, null),
      await token(revokedFamily, new Date(Date.now() + 20 * DAY), ago(9 * DAY), ago(8 * DAY)), await token(revokedFamily, new Date(Date.now() + 22 * DAY), null, ago(8 * DAY)),
    ];
    const kept = [await token(recentlyRevokedFamily, new Date(Date.now() + 20 * DAY), null, ago(2 * DAY))];

    // A live session whose first token was rotated long ago: that used token must stay, so its reuse is still detected.
    const rotated = await post('/auth/refresh', { refresh_token: u.refresh_token });
    expect(rotated.statusCode).toBe(200);
    await q(`UPDATE refresh_tokens SET used_at = $2, created_at = $2 WHERE user_id = $1 AND used_at IS NOT NULL`, [u.user.id, ago(40 * DAY)]);

    const removed = await runCleanup(svc.ctx);
    expect(removed).toEqual({ api_key_usage: 1, login_failures: 1, login_known_addresses: 1, password_resets: 2, invites: 1, refresh_tokens: 4 });

    const usageLeft = new Set((await q('SELECT id FROM api_key_usage')).rows.map((r) => Number(r.id)));
    expect(usageLeft.has(oldUsage)).toBe(false);
    expect(usageLeft.has(recentUsage)).toBe(true);
    expect((await q('SELECT key FROM login_failures')).rows.map((r) => r.key)).toEqual(['ip:10.0.0.2']);
    expect((await q('SELECT address_hash FROM login_known_addresses')).rows.map((r) => r.address_hash)).toEqual([expect.stringMatching(/^[0-9a-f]{64}$/)]);
    expect([...await ids('password_resets')].sort()).toEqual([resetExpiredRecently, resetPending].sort());
    expect([...await ids('invites')].sort()).toEqual([inviteAcceptedLongAgo, inviteExpiredRecently, invitePending].sort());
    const tokensLeft = await ids('refresh_tokens');
    for (const id of gone) expect(tokensLeft.has(id)).toBe(false);
    for (const id of kept) expect(tokensLeft.has(id)).toBe(true);
    expect(tokensLeft.size).toBe(3); // the recently revoked family plus the live session's two tokens

    const reuse = await post('/auth/refresh', { refresh_token: u.refresh_token });
    expect(reuse.statusCode).toBe(401);
    expect(reuse.json().error.message).toMatch(/reuse/);
    expect((await post('/auth/refresh', { refresh_token: rotated.json().data.refresh_token })).statusCode).toBe(401);

    // A second run finds nothing more.
    expect(Object.values(await runCleanup(svc.ctx)).every((n) => n === 0)).toBe(true);
  });

  it('API_KEY_USAGE_RETENTION_DAYS=0 keeps usage forever', async () => {
    await q(`INSERT INTO api_key_usage (api_key_id, method, path, status, latency_ms, at) VALUES ($1, 'GET', '/x', 200, 1, $2)`, [randomUUID(), ago(5_000 * DAY)]);
    const saved = svc.ctx.config.API_KEY_USAGE_RETENTION_DAYS;
    Object.assign(svc.ctx.config, { API_KEY_USAGE_RETENTION_DAYS: 0 });
    try {
      expect((await runCleanup(svc.ctx)).api_key_usage).toBe(0);
    } finally {
      Object.assign(svc.ctx.config, { API_KEY_USAGE_RETENTION_DAYS: saved });
    }
    expect((await runCleanup(svc.ctx)).api_key_usage).toBe(1);
  });

  it('runs on its own every CLEANUP_INTERVAL_SECONDS through one BullMQ job scheduler', async () => {
    const fast = await startIdentity({ CLEANUP_INTERVAL_SECONDS: '1', API_KEY_USAGE_RETENTION_DAYS: '1' });
    try {
      const schedulers = await waitFor(async () => {
        const s = await fast.ctx.queues.queue(Queues.identityCleanup).getJobSchedulers();
        return s.length > 0 ? s : null;
      }, { message: 'the cleanup scheduler' });
      expect(schedulers).toMatchObject([{ key: CLEANUP_SCHEDULER_ID, every: 1_000 }]);
      await fast.ctx.pool.query(`INSERT INTO api_key_usage (api_key_id, method, path, status, latency_ms, at) VALUES ($1, 'GET', '/x', 200, 1, $2)`, [randomUUID(), ago(2 * DAY)]);
      await waitFor(async () => (await fast.ctx.pool.query('SELECT 1 FROM api_key_usage')).rowCount === 0, { timeoutMs: 10_000, message: 'the scheduled cleanup' });
    } finally {
      await fast.close();
    }
  });

  it('its settings are checked at start, naming the setting', () => {
    const c = svc.ctx.config;
    const valid = { INTERNAL_TOKEN_PUBLIC_JWK: c.INTERNAL_TOKEN_PUBLIC_JWK, IDENTITY_JWT_PRIVATE_JWK: c.IDENTITY_JWT_PRIVATE_JWK, API_KEY_PEPPER: c.API_KEY_PEPPER };
    expect(loadServiceConfig(service, valid).CLEANUP_INTERVAL_SECONDS).toBe(3_600);
    for (const [name, value] of [['CLEANUP_INTERVAL_SECONDS', '0'], ['API_KEY_USAGE_RETENTION_DAYS', '-1'], ['AUTH_RECORD_RETENTION_DAYS', 'weekly']]) {
      expect(() => loadServiceConfig(service, { ...valid, [name!]: value })).toThrow(new RegExp(`${name}: `));
    }
  });
});
