import type { Principal } from '@aos/contracts';
import { startTestService } from '@aos/testkit';
import { exportJWK, generateKeyPair } from 'jose';
import { randomBytes, randomUUID } from 'node:crypto';
import { service } from '../src/service.js';

export type Svc = Awaited<ReturnType<typeof startTestService<typeof service.schema, typeof service.config>>>;

export async function identityKeys() {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const kid = randomUUID();
  return { privateJwk: JSON.stringify({ ...(await exportJWK(privateKey)), kid, alg: 'EdDSA' }), publicKey, privateKey, kid };
}

export async function startIdentity(env: Record<string, string> = {}): Promise<Svc & { keys: Awaited<ReturnType<typeof identityKeys>> }> {
  const keys = await identityKeys();
  const svc = await startTestService(service, {
    env: {
      IDENTITY_JWT_PRIVATE_JWK: keys.privateJwk, API_KEY_PEPPER: randomBytes(24).toString('hex'), PASSWORD_SCRYPT_LOG_N: '10',
      CREDENTIALS_KEY: randomBytes(32).toString('base64'), APP_URL: 'https://aos.test', ...env,
    },
  });
  return Object.assign(svc, { keys });
}

export const gatewayService: Principal = {
  kind: 'service', service: 'gateway', userId: null, apiKeyId: null, tenantId: null, orgId: null, orgRole: null, platformRoles: [], scopes: [],
};

let n = 0;
/** Registers a user through the API and returns the principal the gateway would forward for them. */
export async function register(svc: Svc, over: Record<string, unknown> = {}) {
  n++;
  const body = { username: `user${n}_${randomUUID().slice(0, 6)}`, email: `u${n}-${randomUUID().slice(0, 6)}@example.com`, password: 'correct horse battery', terms_accepted: true, privacy_accepted: true, ...over };
  const r = await svc.inject({ kind: 'anonymous', userId: null, apiKeyId: null, tenantId: null, orgId: null, orgRole: null, platformRoles: [], scopes: [] }, { method: 'POST', url: '/auth/register', payload: body });
  if (r.statusCode !== 201) throw new Error(`register ${r.statusCode} ${r.body}`);
  const data = r.json().data;
  const principal: Principal = {
    kind: 'user', userId: data.user.id, apiKeyId: null, tenantId: data.user.tenant_id, orgId: data.org_id, orgRole: 'owner',
    platformRoles: data.user.platform_roles, scopes: ['*'],
  };
  return { ...data, body, principal, response: r };
}

export const anonymous: Principal = { kind: 'anonymous', userId: null, apiKeyId: null, tenantId: null, orgId: null, orgRole: null, platformRoles: [], scopes: [] };

type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';

/** `svc.inject` as `principal` with an optional JSON body. */
export const caller = (svc: Svc) => (principal: Principal | null, method: Method, url: string, payload?: unknown, headers: Record<string, string> = {}) =>
  svc.inject(principal, { method, url, headers, ...(payload !== undefined ? { payload: payload as object } : {}) });

/** Envelopes written to the outbox, oldest first. */
export const outboxOf = (svc: Svc) => async (type: string) =>
  (await svc.ctx.pool.query('SELECT envelope FROM aos_outbox WHERE type = $1 ORDER BY created_at', [type])).rows.map((r) => r.envelope);

/** The principal the gateway forwards for `user` acting in `orgId` with `role` (what X-Org-Id resolves to). */
export const actingIn = (user: { principal: Principal }, org: { id: string; tenant_id: string }, role: Principal['orgRole']): Principal =>
  ({ ...user.principal, orgId: org.id, tenantId: org.tenant_id, orgRole: role });

/** A started identity with its signing keys. */
export type IdentitySvc = Awaited<ReturnType<typeof startIdentity>>;
