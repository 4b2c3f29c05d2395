import { connectBus, type BusConnection } from '@aos/bus';
import { ACCESS_TOKEN, type EventType } from '@aos/contracts';
import { createLogger } from '@aos/core';
import type { App } from '@aos/http';
import { createNamespace, removeNamespace, waitFor } from '@aos/testkit';
import { SignJWT } from 'jose';
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signingKey, startGateway } from './helpers.js';

/**
 * An eviction event that overtakes identity's answer (the key revoked, the member removed while the
 * gateway was asking) must not be undone by that answer being cached afterwards.
 */
const ns = createNamespace();
const log = createLogger('cache-races', process.env.TEST_LOG_LEVEL ?? 'silent');
let bus: BusConnection;
let gateway: App;
let server: Server;
let key: Awaited<ReturnType<typeof signingKey>>;

/** identity's answers, per internal route: what it says now, and a gate holding the answer back. */
const identity = {
  verify: { ok: true, calls: 0, gate: null as Promise<void> | null },
  resolve: { ok: true, calls: 0, gate: null as Promise<void> | null },
};
const orgId = randomUUID();
const otherOrgId = randomUUID();
const userId = randomUUID();
const apiKeyId = randomUUID();

beforeAll(async () => {
  key = await signingKey();
  server = createServer((req, res) => {
    const send = (status: number, body: unknown) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(body)); };
    req.resume();
    req.on('end', () => void (async () => {
      if (req.url === ACCESS_TOKEN.jwksPath) return send(200, { keys: [key.publicJwk] });
      const route = req.url === '/internal/api-keys/verify' ? identity.verify : req.url === '/internal/memberships/resolve' ? identity.resolve : null;
      if (!route) return send(200, { data: [] }); // the proxied call itself, usage
      route.calls++;
      const ok = route.ok; // read before the gate: identity looked the key/member up, then took its time answering
      await route.gate;
      if (!ok) return send(401, { error: { code: 'UNAUTHORIZED', message: 'no' } });
      return send(200, route === identity.verify
        ? { data: { api_key_id: apiKeyId, org_id: orgId, tenant_id: randomUUID(), user_id: null, scopes: ['org:read'], expires_at: null } }
        : { data: { org_role: 'member', tenant_id: randomUUID(), platform_roles: [] } });
    })());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  bus = await connectBus(process.env.NATS_URL ?? 'nats://127.0.0.1:4222', ns.bus, 'cache-races', log); // creates the stream
  gateway = await startGateway(ns, `http://127.0.0.1:${(server.address() as AddressInfo).port}`, { AUTH_FAILURES_PER_MINUTE: '1000' });
});

afterAll(async () => {
  await gateway?.close();
  await bus?.nc.close();
  server?.close();
  await removeNamespace(ns);
});

/** Publishes an identity event and waits until the gateway has applied (acked) it. */
async function delivered(type: EventType, data: Record<string, unknown>) {
  const envelope = { id: randomUUID(), type, version: 1, source: 'identity', occurredAt: new Date().toISOString(), tenantId: null, orgId, actor: { type: 'system', id: null }, data };
  const ack = await bus.js.publish(`${ns.bus.subjectRoot}.${type}`, JSON.stringify(envelope));
  await waitFor(async () => (await bus.jsm.consumers.info(ns.bus.stream, 'gateway--identity')).ack_floor.stream_seq >= ack.seq, { timeoutMs: 5_000, message: `${type} applied` });
}

/** Holds identity's next answer on `route` until the returned function is called. */
function hold(route: { gate: Promise<void> | null }): () => void {
  let release!: () => void;
  route.gate = new Promise<void>((resolve) => { release = resolve; });
  return () => { route.gate = null; release(); };
}

describe('gateway caches and evictions that overtake a lookup', () => {
  it('an API key revoked while identity verified it is not cached as valid', async () => {
    const newKey = () => `osk_live_${randomUUID().replaceAll('-', '')}`;
    const raw = newKey();
    const call = (k = raw) => gateway.inject({ method: 'GET', url: '/api/organizations', headers: { authorization: `Bearer ${k}` } });
    const release = hold(identity.verify);
    const first = call();
    await waitFor(() => identity.verify.calls === 1, { message: 'verification asked' });
    identity.verify.ok = false; // revoked now: identity commits, the event reaches the gateway first
    await delivered('identity.api_key.revoked', { orgId, tenantId: randomUUID(), apiKeyId, reason: 'revoked' });
    release();
    expect((await first).statusCode).toBe(200); // admitted on the answer given before the revocation
    const second = await call();
    expect(second.statusCode).toBe(401);
    expect(identity.verify.calls).toBe(2);

    // Without an eviction in between, a verified key is cached as before.
    identity.verify.ok = true;
    const fresh = newKey();
    expect((await call(fresh)).statusCode).toBe(200);
    expect((await call(fresh)).statusCode).toBe(200);
    expect(identity.verify.calls).toBe(3);
  });

  it('a member removed while identity resolved the membership is not cached as a member', async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ tid: randomUUID(), org: orgId, org_role: 'owner', roles: [] })
      .setProtectedHeader({ alg: 'EdDSA', typ: ACCESS_TOKEN.type, kid: key.kid })
      .setIssuer(ACCESS_TOKEN.issuer).setAudience(ACCESS_TOKEN.audience).setSubject(userId).setJti(randomUUID())
      .setIssuedAt(now).setExpirationTime(now + 300).sign(key.privateKey);
    const call = () => gateway.inject({ method: 'GET', url: '/api/organizations', headers: { authorization: `Bearer ${token}`, 'x-org-id': otherOrgId } });
    const release = hold(identity.resolve);
    const first = call();
    await waitFor(() => identity.resolve.calls === 1, { message: 'membership asked' });
    identity.resolve.ok = false;
    await delivered('identity.member.removed', { orgId: otherOrgId, tenantId: randomUUID(), userId });
    release();
    expect((await first).statusCode).toBe(200);
    const second = await call();
    expect(second.statusCode).toBe(403);
    expect(identity.resolve.calls).toBe(2);

    identity.resolve.ok = true; // a member again: resolved once, then cached
    await delivered('identity.member.added', { orgId: otherOrgId, tenantId: randomUUID(), userId, role: 'member' });
    expect((await call()).statusCode).toBe(200);
    expect((await call()).statusCode).toBe(200);
    expect(identity.resolve.calls).toBe(3);
  });
});
