import { ACCESS_TOKEN, ANONYMOUS, API_KEY_PREFIX, INTERNAL_TOKEN_HEADER, ORG_HEADER, type OrgRole, type Principal } from '@aos/contracts';
import { AppError, unauthorized, type Logger } from '@aos/core';
import { signInternalToken, type Key } from '@aos/http';
import type { FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { createHash } from 'node:crypto';
import type { GatewayConfig } from '../config.js';

const GATEWAY: Principal = { ...ANONYMOUS, kind: 'service', service: 'gateway' };
/** jose errors meaning "no usable key set", as opposed to "this token is bad". */
const KEYS_UNAVAILABLE = new Set(['ERR_JWKS_TIMEOUT', 'ERR_JOSE_GENERIC', 'ERR_JWKS_INVALID']);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface CachedKey { api_key_id: string; org_id: string; tenant_id: string; user_id: string | null; scopes: string[]; expires_at: string | null }

/** Redis keys of the gateway's caches; `keys.*` are shared with the event consumer that evicts them. */
export const cacheKeys = (prefix: string) => ({
  apiKey: (sha: string) => `${prefix}:key:${sha}`,
  apiKeyIndex: (id: string) => `${prefix}:keyidx:${id}`,
  member: (userId: string, orgId: string) => `${prefix}:member:${userId}:${orgId}`,
  revokedJti: (jti: string) => `${prefix}:revoked:${jti}`,
  notBefore: (userId: string) => `${prefix}:nbf:${userId}`,
  tier: (orgId: string) => `${prefix}:tier:${orgId}`,
  /** When the tier in `tier` took effect (event time, ms): an older event never overwrites a newer tier. */
  tierAt: (orgId: string) => `${prefix}:tier-at:${orgId}`,
  /** An Enterprise plan's negotiated rate limits (`{"minute":n|null,"hour":n|null}`), set with the tier. */
  tierLimits: (orgId: string) => `${prefix}:tier-limits:${orgId}`,
  /** Counts the evictions from one cache: a fill whose lookup began before an eviction is not stored. */
  evictions: (cache: 'apiKey' | 'member') => `${prefix}:evictions:${cache}`,
});

/**
 * Caches what identity answered unless the cache was evicted since the lookup began (the eviction
 * counter is no longer what was read before asking): an eviction that overtook the answer must not
 * be undone by it. KEYS: entry, eviction counter, [index]; ARGV: value, seconds, counter seen, [index member, index seconds].
 */
const FILL_UNLESS_EVICTED = `
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if KEYS[3] then
  redis.call('SADD', KEYS[3], ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
return 1`;

/**
 * Resolves the caller: Bearer JWT or the `assimetria_jwt` cookie (verified against
 * identity's JWKS), or `Bearer osk_live_…` API keys (verified by identity, cached by hash).
 * No credentials → anonymous; bad credentials → 401.
 */
export function createAuthenticator(config: GatewayConfig, redis: Redis, privateKey: Key, log: Logger) {
  const jwks = createRemoteJWKSet(new URL(ACCESS_TOKEN.jwksPath, config.IDENTITY_URL), { cooldownDuration: 30_000, timeoutDuration: 3_000 });
  const keys = cacheKeys(config.REDIS_PREFIX);
  const ttl = config.AUTH_CACHE_SECONDS;

  async function identity<T>(path: string, body: unknown): Promise<{ status: number; data?: T }> {
    const res = await fetch(new URL(path, config.IDENTITY_URL), {
      method: 'POST',
      headers: { 'content-type': 'application/json', [INTERNAL_TOKEN_HEADER]: await signInternalToken(privateKey, GATEWAY) },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(5_000),
    }).catch((err: Error) => {
      log.warn({ err: err.message }, 'identity unreachable');
      throw new AppError('SERVICE_UNAVAILABLE', 'Authentication is unavailable right now');
    });
    if (res.status >= 500) throw new AppError('SERVICE_UNAVAILABLE', 'Authentication is unavailable right now');
    const json = (await res.json().catch(() => ({}))) as { data?: T };
    return { status: res.status, data: json.data };
  }

  const tierOf = async (orgId: string) => (await redis.get(keys.tier(orgId)).catch(() => null)) ?? 'free';

  async function apiKey(raw: string): Promise<Principal> {
    const sha = createHash('sha256').update(raw).digest('hex');
    let entry: CachedKey;
    // Without Redis every call asks identity: slower, never staler.
    const [cached, evictions] = await redis.mget(keys.apiKey(sha), keys.evictions('apiKey')).catch(() => [null, undefined]);
    if (cached) entry = JSON.parse(cached) as CachedKey;
    else {
      const res = await identity<CachedKey>('/internal/api-keys/verify', { key: raw });
      if (res.status !== 200 || !res.data) throw unauthorized('Invalid API key');
      entry = res.data;
      const seconds = entry.expires_at ? Math.min(ttl, Math.floor((Date.parse(entry.expires_at) - Date.now()) / 1000)) : ttl;
      if (seconds > 0 && evictions !== undefined) {
        await redis.eval(FILL_UNLESS_EVICTED, 3, keys.apiKey(sha), keys.evictions('apiKey'), keys.apiKeyIndex(entry.api_key_id),
          JSON.stringify(entry), seconds, evictions ?? '', sha, ttl * 2)
          .catch((err: Error) => log.warn({ err: err.message }, 'api key not cached'));
      }
    }
    if (entry.expires_at && Date.parse(entry.expires_at) <= Date.now()) throw unauthorized('API key expired');
    return {
      kind: 'api_key', userId: entry.user_id, apiKeyId: entry.api_key_id, tenantId: entry.tenant_id, orgId: entry.org_id,
      orgRole: null, platformRoles: [], scopes: entry.scopes, tier: await tierOf(entry.org_id),
    };
  }

  async function jwt(token: string, orgHeader: string | undefined): Promise<Principal> {
    let payload;
    try {
      ({ payload } = await jwtVerify(token, jwks, {
        algorithms: ['EdDSA'], issuer: ACCESS_TOKEN.issuer, audience: ACCESS_TOKEN.audience, typ: ACCESS_TOKEN.type,
        requiredClaims: ['exp', 'jti', 'sub', 'iat'],
      }));
    } catch (err) {
      // The keys could not be fetched (identity down or answering garbage): not the token's fault.
      const code = (err as { code?: string }).code;
      if (!code?.startsWith('ERR_') || KEYS_UNAVAILABLE.has(code)) throw new AppError('SERVICE_UNAVAILABLE', 'Authentication is unavailable right now');
      throw unauthorized('Invalid or expired token');
    }
    const userId = payload.sub!;
    // The revocation state lives only in Redis: without it a revoked token cannot be told apart, so refuse.
    const [revoked, notBefore] = await redis.mget(keys.revokedJti(payload.jti!), keys.notBefore(userId)).catch((err: Error) => {
      log.warn({ err: err.message }, 'revocation state unavailable');
      throw new AppError('SERVICE_UNAVAILABLE', 'Authentication is unavailable right now');
    });
    if (revoked || (notBefore && payload.iat! * 1000 < Number(notBefore))) throw unauthorized('Token revoked');
    const claims = payload as { tid?: string; org?: string; org_role?: string; roles?: string[] };
    let orgId = claims.org ?? null;
    let orgRole = (claims.org_role ?? null) as OrgRole | null;
    let tenantId = claims.tid ?? null;
    let platformRoles = Array.isArray(claims.roles) ? claims.roles : [];
    if (orgHeader && orgHeader !== orgId) {
      if (!UUID.test(orgHeader)) throw new AppError('VALIDATION_ERROR', `${ORG_HEADER} must be an organization id`);
      const cacheKey = keys.member(userId, orgHeader);
      const [cached, evictions] = await redis.mget(cacheKey, keys.evictions('member')).catch(() => [null, undefined]);
      let member = cached ? JSON.parse(cached) as { org_role: string; tenant_id: string; platform_roles: string[] } : null;
      if (!member) {
        const res = await identity<{ org_role: string; tenant_id: string; platform_roles: string[] }>('/internal/memberships/resolve', { user_id: userId, org_id: orgHeader });
        if (res.status !== 200 || !res.data) throw new AppError('FORBIDDEN', 'You are not a member of this organization');
        member = res.data;
        if (evictions !== undefined) {
          await redis.eval(FILL_UNLESS_EVICTED, 2, cacheKey, keys.evictions('member'), JSON.stringify(member), ttl, evictions ?? '').catch(() => undefined);
        }
      }
      orgId = orgHeader;
      orgRole = member.org_role as OrgRole;
      tenantId = member.tenant_id;
      platformRoles = member.platform_roles;
    }
    return {
      kind: 'user', userId, apiKeyId: null, tenantId, orgId, orgRole, platformRoles, scopes: ['*'],
      tier: orgId ? await tierOf(orgId) : 'free',
    };
  }

  return async function authenticate(request: FastifyRequest): Promise<Principal> {
    const header = request.headers.authorization;
    const orgHeader = typeof request.headers[ORG_HEADER] === 'string' ? (request.headers[ORG_HEADER] as string) : undefined;
    if (header) {
      const [scheme, value] = header.split(' ', 2);
      if (scheme?.toLowerCase() !== 'bearer' || !value) throw unauthorized('Authorization must be "Bearer <token>"');
      return value.startsWith(API_KEY_PREFIX) ? apiKey(value.trim()) : jwt(value.trim(), orgHeader);
    }
    const cookie = request.headers.cookie?.split(';').map((c) => c.trim()).find((c) => c.startsWith(`${ACCESS_TOKEN.cookie}=`));
    const token = cookie?.slice(ACCESS_TOKEN.cookie.length + 1);
    if (token) {
      let decoded: string;
      try {
        decoded = decodeURIComponent(token);
      } catch {
        throw unauthorized('Invalid or expired token');
      }
      return jwt(decoded, orgHeader);
    }
    return ANONYMOUS;
  };
}
