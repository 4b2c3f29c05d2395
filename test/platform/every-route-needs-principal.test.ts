import { INTERNAL_TOKEN_HEADER } from '@aos/contracts';
import { routesOf, signInternalToken, type App } from '@aos/http';
import { internalKeys, startTestService, userPrincipal, type TestService } from '@aos/testkit';
import { generateKeyPair, exportJWK } from 'jose';
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service as agents } from '../../services/agents-runtime/src/service.js';
import { service as backups } from '../../services/backups/src/service.js';
import { service as billing } from '../../services/billing/src/service.js';
import { service as identity } from '../../services/identity/src/service.js';
import { service as notifications } from '../../services/notifications/src/service.js';
import { service as tasks } from '../../services/tasks/src/service.js';

/** Routes any caller may reach without the gateway's token: probes, the spec, and identity's public keys. */
const OPEN = ['/health', '/ready', '/version', '/openapi.json'];
const OPEN_BY_SERVICE: Record<string, string[]> = { identity: ['/internal/jwks'] };

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const started: TestService<any, any>[] = [];

beforeAll(async () => {
  const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const identityJwk = JSON.stringify({ ...(await exportJWK(privateKey)), kid: randomUUID(), alg: 'EdDSA' });
  started.push(...await Promise.all([
    startTestService(identity, { background: false, env: { IDENTITY_JWT_PRIVATE_JWK: identityJwk, API_KEY_PEPPER: randomBytes(24).toString('hex') } }),
    startTestService(agents, { background: false }),
    startTestService(tasks, { background: false }),
    startTestService(billing, { background: false }),
    startTestService(notifications, { background: false }),
    startTestService(backups, { background: false }),
  ]));
});
afterAll(async () => {
  await Promise.all(started.map((s) => s.close()));
});

const concrete = (url: string) => url.replace(/:[A-Za-z_]+/g, '1').replace(/\*/g, 'x');

async function callEveryRoute(app: App, headers: Record<string, string>) {
  const wrong: string[] = [];
  for (const route of routesOf(app)) {
    if (route.auth === 'none' || route.method === 'HEAD' || route.method === 'OPTIONS') continue;
    const res = await app.inject({ method: route.method as 'GET', url: concrete(route.url), headers, payload: ['POST', 'PUT', 'PATCH'].includes(route.method) ? {} : undefined });
    if (res.statusCode !== 401 || res.json().error?.code !== 'UNAUTHORIZED') wrong.push(`${route.method} ${route.url} → ${res.statusCode}`);
  }
  return wrong;
}

describe('every service route', () => {
  it('is open without the internal token only for health, readiness, version, the spec (and identity\'s JWKS)', () => {
    for (const s of started) {
      const open = routesOf(s.app).filter((r) => r.auth === 'none' && r.method !== 'HEAD').map((r) => r.url).sort();
      expect(open, s.ctx.name).toEqual([...OPEN, ...(OPEN_BY_SERVICE[s.ctx.name] ?? [])].sort());
    }
  });

  it('answers 401 in the envelope without a token, with a forged one and with an expired one', async () => {
    const forged = await signInternalToken((await generateKeyPair('EdDSA', { crv: 'Ed25519' })).privateKey, userPrincipal({ platformRoles: ['admin'] }));
    const expired = await signInternalToken((await internalKeys()).privateKey, userPrincipal({ platformRoles: ['admin'] }), -5);
    let checked = 0;
    for (const s of started) {
      checked += routesOf(s.app).filter((r) => r.auth !== 'none').length;
      expect(await callEveryRoute(s.app, {}), `${s.ctx.name} without a token`).toEqual([]);
      expect(await callEveryRoute(s.app, { [INTERNAL_TOKEN_HEADER]: forged }), `${s.ctx.name} forged`).toEqual([]);
      expect(await callEveryRoute(s.app, { [INTERNAL_TOKEN_HEADER]: expired }), `${s.ctx.name} expired`).toEqual([]);
      expect(await callEveryRoute(s.app, { [INTERNAL_TOKEN_HEADER]: 'not-a-jwt' }), `${s.ctx.name} garbage`).toEqual([]);
    }
    expect(checked).toBeGreaterThan(150);
  });
});
