/**
 * Identity behind the gateway, all on loopback: API-key revoke → refused at the gateway (50 keys),
 * login throughput at the production scrypt cost, and the gateway's cost per request for an
 * anonymous caller, a JWT and an API key on a trivial upstream route.
 */
import { createNamespace, removeNamespace } from '@aos/testkit';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cacheKeys } from '../../gateway/src/auth/authenticate.js';
import { startGateway, startIdentity } from '../../gateway/test/helpers.js';
import { hashPassword, verifyPassword } from '../../services/identity/src/domain/crypto.js';
import { percentile } from './stats.js';

const KEYS = 50;
const LOGINS = 40;
const REQUESTS = 1_000;
const ROUNDS = 3;
const CLIENTS = 8;
const SCRYPT_LOG_N = 15; // the production default

export async function run(): Promise<Record<string, number>> {
  const ns = createNamespace();
  // The trivial route: a loopback "tasks" service answering at once, so only the gateway's work differs.
  const upstream = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":[]}'));
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const identity = await startIdentity(ns, { PASSWORD_SCRYPT_LOG_N: String(SCRYPT_LOG_N) });
  const prefix = `${ns.redisPrefix}:gw`;
  const gateway = await startGateway(ns, identity.url, {
    TASKS_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`, REDIS_PREFIX: prefix,
    RATE_LIMIT_ENTERPRISE_PER_MINUTE: '1000000', RATE_LIMIT_ENTERPRISE_PER_HOUR: '10000000', AUTH_RATE_LIMIT_PER_MINUTE: '100000',
  });
  let address = 0;
  /** In-process requests (no gateway socket), each from its own client address, so per-address limits measure nothing here. */
  const api = (method: 'GET' | 'POST', url: string, token?: string, body?: object) => gateway.inject({
    method, url, remoteAddress: `10.${(address >> 16) & 255}.${(address >> 8) & 255}.${address++ & 255}`,
    headers: token ? { authorization: `Bearer ${token}` } : {}, ...(body ? { payload: body } : {}),
  });
  try {
    const password = 'correct horse battery';
    const signup = await api('POST', '/api/auth/register', undefined, { username: 'bench_owner', email: 'bench-owner@example.com', password, terms_accepted: true, privacy_accepted: true });
    if (signup.statusCode !== 201) throw new Error(`register ${signup.statusCode} ${signup.body}`);
    const { token: jwt, org_id: orgId } = signup.json().data as { token: string; org_id: string };
    // Enterprise tier with a high limit: the bench measures the gateway, not its rate limits.
    await identity.ctx.queues.connection.set(cacheKeys(prefix).tier(orgId), 'enterprise');

    // 1. Revocation: each key used once (so the gateway caches it), revoked, then polled from the moment
    // the revoke answered until the gateway refuses it.
    const revocations: number[] = [];
    for (let i = 0; i < KEYS; i++) {
      const created = await api('POST', `/api/organizations/${orgId}/api-keys`, jwt, { name: `bench ${i}`, scopes: ['tasks:read'] });
      const { id, key } = created.json().data as { id: string; key: string };
      if ((await api('GET', '/api/tasks', key)).statusCode !== 200) throw new Error('a new key was refused');
      if ((await api('POST', `/api/organizations/${orgId}/api-keys/${id}/revoke`, jwt)).statusCode !== 200) throw new Error('revoke failed');
      const t0 = performance.now();
      while ((await api('GET', '/api/tasks', key)).statusCode !== 401) {
        if (performance.now() - t0 > 5_000) throw new Error('a revoked key still passes after 5 s');
      }
      revocations.push(performance.now() - t0);
    }
    revocations.sort((a, b) => a - b);

    // 2. Login: the scrypt verification alone, then whole logins through the gateway, 4 at a time.
    const stored = await hashPassword(password, SCRYPT_LOG_N);
    const verifications: number[] = [];
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now();
      await verifyPassword(password, stored);
      verifications.push(performance.now() - t0);
    }
    verifications.sort((a, b) => a - b);
    const loginStart = performance.now();
    await Promise.all(Array.from({ length: 4 }, async () => {
      for (let i = 0; i < LOGINS / 4; i++) {
        const res = await api('POST', '/api/auth/login', undefined, { email: 'bench-owner@example.com', password });
        if (res.statusCode !== 200) throw new Error(`login ${res.statusCode} ${res.body}`);
      }
    }));
    const loginsPerSecond = LOGINS / ((performance.now() - loginStart) / 1000);

    // 3. The trivial route: anonymous, JWT (signature + revocation lookup in Redis), API key (cached verification).
    // Rounds interleave the three kinds so a busy machine weighs on each alike; the median round counts.
    const apiKey = (await api('POST', `/api/organizations/${orgId}/api-keys`, jwt, { name: 'bench throughput', scopes: ['tasks:read'] })).json().data.key as string;
    const kinds = { anonymous: undefined, JWT: jwt, 'API key': apiKey } as const;
    const get = async (token?: string) => {
      const res = await api('GET', '/api/tasks', token);
      if (res.statusCode !== 200) throw new Error(`GET /api/tasks ${res.statusCode} ${res.body}`);
    };
    const rates: Record<string, number[]> = {};
    const latencies: Record<string, number[]> = {};
    for (const token of Object.values(kinds)) await get(token); // warm caches
    for (let round = 0; round < ROUNDS; round++) {
      for (const [kind, token] of Object.entries(kinds)) {
        const t0 = performance.now();
        await Promise.all(Array.from({ length: CLIENTS }, async () => {
          for (let i = 0; i < REQUESTS / CLIENTS; i++) await get(token);
        }));
        (rates[kind] ??= []).push(REQUESTS / ((performance.now() - t0) / 1000));
        for (let i = 0; i < 100; i++) {
          const t1 = performance.now();
          await get(token);
          (latencies[kind] ??= []).push(performance.now() - t1);
        }
      }
    }
    const median = (values: number[]) => percentile([...values].sort((a, b) => a - b), 50);
    const throughput = Object.fromEntries(Object.keys(kinds).flatMap((kind) => [
      [`req/s ${kind}, ${CLIENTS} clients`, median(rates[kind]!)],
      [`p50 ${kind}, 1 client (ms)`, median(latencies[kind]!)],
    ]));

    return {
      [`key revoked → 401, p50 of ${KEYS} (ms)`]: percentile(revocations, 50),
      [`key revoked → 401, p99 of ${KEYS} (ms)`]: percentile(revocations, 99),
      [`scrypt verify N=2^${SCRYPT_LOG_N}, p50 (ms)`]: percentile(verifications, 50),
      'logins/s via gateway, 4 clients': loginsPerSecond,
      ...throughput,
    };
  } finally {
    await gateway.close();
    await identity.close();
    upstream.close();
    await removeNamespace(ns);
  }
}
