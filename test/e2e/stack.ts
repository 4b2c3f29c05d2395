import { createLogger } from '@aos/core';
import type { App } from '@aos/http';
import { createNamespace, internalKeys, removeNamespace, startTestService, type TestNamespace } from '@aos/testkit';
import { exportJWK, generateKeyPair } from 'jose';
import { randomBytes, randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { buildGateway, cacheEventsReady } from '../../gateway/src/app.js';
import { loadGatewayConfig } from '../../gateway/src/config.js';
import { service as identity } from '../../services/identity/src/service.js';
import { service as tasks } from '../../services/tasks/src/service.js';

/**
 * Identity and tasks services listening on loopback ports behind a real gateway, all on
 * one test namespace: the path a client's request really takes. Pass `ns` (and the URL of a
 * service started on it in `gatewayEnv`) to put more services behind the same gateway.
 */
export async function startStack(gatewayEnv: Record<string, string> = {}, ns: TestNamespace = createNamespace()) {
  const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const identityJwk = JSON.stringify({ ...(await exportJWK(privateKey)), kid: randomUUID(), alg: 'EdDSA' });
  const id = await startTestService(identity, { namespace: ns, env: { IDENTITY_JWT_PRIVATE_JWK: identityJwk, API_KEY_PEPPER: randomBytes(24).toString('hex'), PASSWORD_SCRYPT_LOG_N: '10' } });
  const tk = await startTestService(tasks, { namespace: ns });
  const url = async (app: App) => {
    await app.listen({ host: '127.0.0.1', port: 0 });
    return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  };
  const config = loadGatewayConfig({
    INTERNAL_TOKEN_PRIVATE_JWK: (await internalKeys()).privateJwk,
    IDENTITY_URL: await url(id.app), TASKS_URL: await url(tk.app),
    AGENTS_RUNTIME_URL: 'http://127.0.0.1:9', BILLING_URL: 'http://127.0.0.1:9', NOTIFICATIONS_URL: 'http://127.0.0.1:9', BACKUPS_URL: 'http://127.0.0.1:9',
    REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', NATS_URL: process.env.NATS_URL ?? 'nats://127.0.0.1:4222',
    REDIS_PREFIX: `${ns.redisPrefix}:gw`, BUS_SUBJECT_ROOT: ns.bus.subjectRoot, BUS_STREAM: ns.bus.stream, ...gatewayEnv,
  });
  const gateway = await buildGateway({ config, version: 'test', log: createLogger('gateway', process.env.TEST_LOG_LEVEL ?? 'silent') });
  await gateway.ready();
  await cacheEventsReady.get(gateway);
  return {
    gateway, identity: id, tasks: tk, ns,
    close: async () => {
      await gateway.close();
      await id.close();
      await tk.close();
      await removeNamespace(ns);
    },
  };
}
