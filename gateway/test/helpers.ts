import { createLogger } from '@aos/core';
import type { App } from '@aos/http';
import { createNamespace, internalKeys, removeNamespace, startTestService, type TestNamespace } from '@aos/testkit';
import { exportJWK, generateKeyPair } from 'jose';
import { randomBytes, randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { service as identity } from '../../services/identity/src/service.js';
import { buildGateway, cacheEventsReady } from '../src/app.js';
import { loadGatewayConfig } from '../src/config.js';

export async function signingKey() {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const kid = randomUUID();
  return {
    kid, privateKey, publicKey,
    privateJwk: JSON.stringify({ ...(await exportJWK(privateKey)), kid, alg: 'EdDSA' }),
    publicJwk: { ...(await exportJWK(publicKey)), kid, alg: 'EdDSA' },
  };
}

export const listen = async (app: App) => {
  await app.listen({ host: '127.0.0.1', port: 0 });
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
};

export type Identity = Awaited<ReturnType<typeof startIdentity>>;

/** A real identity service listening on a loopback port (fresh database unless `DATABASE_URL` is given). */
export async function startIdentity(ns: TestNamespace, env: Record<string, string> = {}) {
  const key = await signingKey();
  const svc = await startTestService(identity, {
    namespace: ns,
    env: { IDENTITY_JWT_PRIVATE_JWK: key.privateJwk, API_KEY_PEPPER: 'gateway-test-pepper-0123456789', PASSWORD_SCRYPT_LOG_N: '10', CREDENTIALS_KEY: randomBytes(32).toString('base64'), ...env },
  });
  return Object.assign(svc, { key, url: await listen(svc.app) });
}

export async function startGateway(ns: TestNamespace, identityUrl: string, env: Record<string, string> = {}, log = createLogger('gateway', process.env.TEST_LOG_LEVEL ?? 'silent')) {
  const config = loadGatewayConfig({
    INTERNAL_TOKEN_PRIVATE_JWK: (await internalKeys()).privateJwk, IDENTITY_URL: identityUrl,
    TASKS_URL: 'http://127.0.0.1:9', AGENTS_RUNTIME_URL: 'http://127.0.0.1:9', BILLING_URL: 'http://127.0.0.1:9', NOTIFICATIONS_URL: 'http://127.0.0.1:9', BACKUPS_URL: 'http://127.0.0.1:9',
    REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', NATS_URL: process.env.NATS_URL ?? 'nats://127.0.0.1:4222',
    REDIS_PREFIX: `${ns.redisPrefix}:gw:${randomUUID().slice(0, 6)}`, BUS_SUBJECT_ROOT: ns.bus.subjectRoot, BUS_STREAM: ns.bus.stream, ...env,
  });
  const gateway = await buildGateway({ config, version: 'test', log });
  await gateway.ready();
  await cacheEventsReady.get(gateway);
  return gateway;
}

/** Identity behind a gateway on one test namespace. */
export async function startAuthStack(gatewayEnv: Record<string, string> = {}, identityEnv: Record<string, string> = {}) {
  const ns = createNamespace();
  const id = await startIdentity(ns, identityEnv);
  const gateway = await startGateway(ns, id.url, gatewayEnv);
  let n = 0;
  const api = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE' | 'OPTIONS', url: string, opts: { token?: string; body?: unknown; headers?: Record<string, string>; ip?: string } = {}) =>
    gateway.inject({
      method, url, ...(opts.body !== undefined ? { payload: opts.body as object } : {}), remoteAddress: opts.ip ?? '10.0.0.1',
      headers: { ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}), ...opts.headers },
    });
  /** Registers through the gateway, each from its own address so the per-IP auth limits stay out of the way. */
  const signup = async (over: Record<string, unknown> = {}) => {
    n++;
    const id8 = randomUUID().slice(0, 8);
    const body = { username: `u_${id8}`, email: `${id8}@example.com`, password: 'correct horse battery', terms_accepted: true, privacy_accepted: true, ...over };
    const res = await api('POST', '/api/auth/register', { body, ip: `10.1.${Math.floor(n / 250)}.${n % 250}` });
    if (res.statusCode !== 201) throw new Error(`register ${res.statusCode} ${res.body}`);
    return { ...(res.json().data as { token: string; refresh_token: string; org_id: string; user: { id: string; tenant_id: string } }), body };
  };
  return {
    ns, identity: id, gateway, api, signup,
    close: async () => {
      await gateway.close();
      await id.close();
      await removeNamespace(ns);
    },
  };
}
