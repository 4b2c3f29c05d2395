import type { ServiceName } from '@aos/contracts';
import { createLogger } from '@aos/core';
import type { App } from '@aos/http';
import { createNamespace, internalKeys, removeNamespace, startTestService, type TestNamespace } from '@aos/testkit';
import { exportJWK, generateKeyPair } from 'jose';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildGateway, cacheEventsReady } from '../../gateway/src/app.js';
import { loadGatewayConfig } from '../../gateway/src/config.js';
import { service as agents } from '../../services/agents-runtime/src/service.js';
import { service as backups } from '../../services/backups/src/service.js';
import { service as billing } from '../../services/billing/src/service.js';
import { service as identity } from '../../services/identity/src/service.js';
import { service as notifications } from '../../services/notifications/src/service.js';
import { service as tasks } from '../../services/tasks/src/service.js';

/** Listens on a free loopback port; returns the base URL. */
export async function listen(app: App): Promise<string> {
  await app.listen({ host: '127.0.0.1', port: 0 });
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
}

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
  const config = loadGatewayConfig({
    INTERNAL_TOKEN_PRIVATE_JWK: (await internalKeys()).privateJwk,
    IDENTITY_URL: await listen(id.app), TASKS_URL: await listen(tk.app),
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

export interface FullStackOptions {
  /** Extra settings per service, by service name (`identity`, `billing`…), and for the gateway. */
  env?: Partial<Record<ServiceName | 'gateway', Record<string, string>>>;
  /** Start relays, consumers and workers (default true). */
  background?: boolean;
}

/**
 * All six services listening on loopback ports behind a real gateway, on one test namespace.
 * Backups write to a temporary directory removed on `close()`.
 */
export async function startFullStack(opts: FullStackOptions = {}) {
  const ns = createNamespace();
  const env = opts.env ?? {};
  const background = opts.background ?? true;
  const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const identityJwk = JSON.stringify({ ...(await exportJWK(privateKey)), kid: randomUUID(), alg: 'EdDSA' });
  const backupDir = mkdtempSync(join(tmpdir(), 'aos-stack-backups-'));
  const started = await Promise.all([
    startTestService(identity, { namespace: ns, background, env: { IDENTITY_JWT_PRIVATE_JWK: identityJwk, API_KEY_PEPPER: randomBytes(24).toString('hex'), PASSWORD_SCRYPT_LOG_N: '10', ...env.identity } }),
    startTestService(agents, { namespace: ns, background, env: { ...env['agents-runtime'] } }),
    startTestService(tasks, { namespace: ns, background, env: { ...env.tasks } }),
    startTestService(billing, { namespace: ns, background, env: { ...env.billing } }),
    startTestService(notifications, { namespace: ns, background, env: { ...env.notifications } }),
    startTestService(backups, { namespace: ns, background, env: { BACKUP_DIR: backupDir, ...env.backups } }),
  ]);
  const closeServices = async () => {
    await Promise.all(started.map((s) => s.close()));
    rmSync(backupDir, { recursive: true, force: true });
    await removeNamespace(ns);
  };
  const [idUrl, agUrl, tkUrl, biUrl, noUrl, baUrl] = await Promise.all(started.map((s) => listen(s.app)));
  const config = loadGatewayConfig({
    INTERNAL_TOKEN_PRIVATE_JWK: (await internalKeys()).privateJwk,
    IDENTITY_URL: idUrl!, AGENTS_RUNTIME_URL: agUrl!, TASKS_URL: tkUrl!, BILLING_URL: biUrl!, NOTIFICATIONS_URL: noUrl!, BACKUPS_URL: baUrl!,
    REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', NATS_URL: process.env.NATS_URL ?? 'nats://127.0.0.1:4222',
    REDIS_PREFIX: `${ns.redisPrefix}:gw`, BUS_SUBJECT_ROOT: ns.bus.subjectRoot, BUS_STREAM: ns.bus.stream, ...env.gateway,
  });
  const gateway = await buildGateway({ config, version: 'test', log: createLogger('gateway', process.env.TEST_LOG_LEVEL ?? 'silent'), events: background });
  await gateway.ready();
  await cacheEventsReady.get(gateway);
  const [id, ag, tk, bi, no, ba] = started;
  return {
    gateway, config, ns, backupDir,
    services: { identity: id!, 'agents-runtime': ag!, tasks: tk!, billing: bi!, notifications: no!, backups: ba! },
    close: async () => {
      await gateway.close();
      await closeServices();
    },
  };
}
