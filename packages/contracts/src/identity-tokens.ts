/**
 * The access-token contract between identity (issuer) and the gateway (verifier).
 * Header: `{ alg: 'EdDSA', typ: 'at+jwt', kid }`. Claims: `iss`, `aud`, `sub` (user id),
 * `jti`, `iat`, `exp` (15 min), `tid` (tenant id), `org` (default organization id),
 * `org_role` (role in `org`), `roles` (platform roles, e.g. ['admin']).
 */
export const ACCESS_TOKEN = {
  issuer: 'aos-identity',
  audience: 'aos-api',
  type: 'at+jwt',
  ttlSeconds: 15 * 60,
  cookie: 'assimetria_jwt',
  /** Identity route (no internal token needed) publishing the verification keys. */
  jwksPath: '/internal/jwks',
} as const;

export interface AccessTokenClaims {
  sub: string;
  jti: string;
  tid: string;
  org: string;
  org_role: string;
  roles: string[];
}

/** API keys: `osk_live_` + base62 secret + checksum suffix. */
export const API_KEY_PREFIX = 'osk_live_';

/** Header a JWT caller sets to act in another organization it belongs to. */
export const ORG_HEADER = 'x-org-id';
