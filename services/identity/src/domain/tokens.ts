import { ACCESS_TOKEN } from '@aos/contracts';
import { importEd25519Jwk, type Key } from '@aos/http';
import { jwtVerify, SignJWT, type JWK } from 'jose';
import { randomUUID } from 'node:crypto';

export interface Signer {
  key: Key;
  kid: string;
  jwks: JWK[];
  verifyKey: Key;
}

/** Imports the signing key once at start; publishes its public half plus any previous ones. */
export async function createSigner(privateJwk: string, previousPublicJwks: string): Promise<Signer> {
  const { key, kid } = await importEd25519Jwk(privateJwk);
  const parsed = JSON.parse(privateJwk) as JWK;
  const publicJwk: JWK = { kty: parsed.kty, crv: parsed.crv, x: parsed.x, kid: kid ?? 'default', alg: 'EdDSA', use: 'sig' };
  const { key: verifyKey } = await importEd25519Jwk(JSON.stringify(publicJwk));
  let previous: JWK[];
  try {
    previous = (JSON.parse(previousPublicJwks) as JWK[]).map((k) => ({ ...k, d: undefined }));
  } catch {
    throw new Error('IDENTITY_JWT_PREVIOUS_PUBLIC_JWKS must be a JSON array of JWKs');
  }
  return { key, kid: kid ?? 'default', jwks: [publicJwk, ...previous], verifyKey };
}

export interface AccessClaims { userId: string; tenantId: string; orgId: string; orgRole: string; roles: string[] }

export async function signAccessToken(signer: Signer, c: AccessClaims): Promise<{ token: string; jti: string; expiresAt: Date }> {
  const jti = randomUUID();
  const now = Math.floor(Date.now() / 1000);
  const exp = now + ACCESS_TOKEN.ttlSeconds;
  const token = await new SignJWT({ tid: c.tenantId, org: c.orgId, org_role: c.orgRole, roles: c.roles })
    .setProtectedHeader({ alg: 'EdDSA', typ: ACCESS_TOKEN.type, kid: signer.kid })
    .setIssuer(ACCESS_TOKEN.issuer).setAudience(ACCESS_TOKEN.audience).setSubject(c.userId).setJti(jti)
    .setIssuedAt(now).setExpirationTime(exp).sign(signer.key);
  return { token, jti, expiresAt: new Date(exp * 1000) };
}

/** Verifies one of our access tokens (pinned alg, iss, aud, typ; exp and jti required). */
export async function verifyAccessToken(signer: Signer, token: string) {
  const { payload } = await jwtVerify(token, signer.verifyKey, {
    algorithms: ['EdDSA'], issuer: ACCESS_TOKEN.issuer, audience: ACCESS_TOKEN.audience, typ: ACCESS_TOKEN.type,
    requiredClaims: ['exp', 'jti', 'sub', 'iat'],
  });
  return { userId: payload.sub!, jti: payload.jti!, exp: new Date(payload.exp! * 1000), iat: new Date(payload.iat! * 1000) };
}
