import { createLogger } from '@aos/core';
import type { App } from '@aos/http';
import { createNamespace, internalKeys, removeNamespace, startTestService } from '@aos/testkit';
import { exportJWK, generateKeyPair } from 'jose';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildGateway } from '../../gateway/src/app.js';
import { loadGatewayConfig } from '../../gateway/src/config.js';
import { service as agents } from '../../services/agents-runtime/src/service.js';
import { service as backups } from '../../services/backups/src/service.js';
import { service as billing } from '../../services/billing/src/service.js';
import { service as identity } from '../../services/identity/src/service.js';
import { service as notifications } from '../../services/notifications/src/service.js';
import { service as tasks } from '../../services/tasks/src/service.js';

const ns = createNamespace();
const closers: Array<() => Promise<void>> = [];
let gateway: App;

async function listen(app: App) {
  await app.listen({ host: '127.0.0.1', port: 0 });
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
}

beforeAll(async () => {
  const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const identityJwk = JSON.stringify({ ...(await exportJWK(privateKey)), kid: randomUUID(), alg: 'EdDSA' });
  const started = await Promise.all([
    startTestService(identity, { namespace: ns, env: { IDENTITY_JWT_PRIVATE_JWK: identityJwk, API_KEY_PEPPER: randomBytes(24).toString('hex') } }),
    startTestService(agents, { namespace: ns, background: false }),
    startTestService(tasks, { namespace: ns, background: false }),
    startTestService(billing, { namespace: ns, background: false }),
    startTestService(notifications, { namespace: ns, background: false }),
    startTestService(backups, { namespace: ns, background: false }),
  ]);
  for (const s of started) closers.push(s.close);
  const [idUrl, agUrl, tkUrl, biUrl, noUrl, baUrl] = await Promise.all(started.map((s) => listen(s.app)));
  gateway = await buildGateway({
    config: loadGatewayConfig({
      INTERNAL_TOKEN_PRIVATE_JWK: (await internalKeys()).privateJwk, IDENTITY_URL: idUrl!, AGENTS_RUNTIME_URL: agUrl!, TASKS_URL: tkUrl!,
      BILLING_URL: biUrl!, NOTIFICATIONS_URL: noUrl!, BACKUPS_URL: baUrl!, REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      REDIS_PREFIX: `${ns.redisPrefix}:gw`,
    }),
    version: 'test', log: createLogger('gateway', 'silent'), events: false,
  });
});
afterAll(async () => {
  await gateway?.close();
  await Promise.all(closers.map((c) => c()));
  await removeNamespace(ns);
});

describe('the aggregated OpenAPI document', () => {
  it('contains every endpoint of reference/endpoints.tsv', async () => {
    const doc = (await gateway.inject({ method: 'GET', url: '/api/docs/openapi.json' })).json();
    expect(doc['x-unavailable-services']).toEqual([]);
    const rows = readFileSync(new URL('../../../shared/reference/endpoints.tsv', import.meta.url), 'utf8').trim().split('\n').slice(1).map((l) => l.split('\t'));
    expect(rows.length).toBeGreaterThan(150);
    const missing = rows.filter(([method, path]) => !doc.paths[`/api${path}`]?.[method!.toLowerCase()]).map(([m, p, , o]) => `${m} ${p} (${o})`);
    expect(missing).toEqual([]);
  });
});
