import { ACCESS_TOKEN } from '@aos/contracts';
import { importEd25519Jwk, type Key } from '@aos/http';
import { createLocalJWKSet, jwtVerify, SignJWT, type JWK } from 'jose';
import { randomUUID } from 'node:crypto';

export interface Signer {
  key: Key;
  kid: string;
  /** Published on the JWKS route: the current public key first, then the previous ones. */
  jwks: JWK[];
  /** Verifies tokens of any published key (a token of the previous key stays valid during a rotation). */
  verifyKeys: ReturnType<typeof createLocalJWKSet>;
}

const publicPart = (k: JWK, fallbackKid: string): JWK => ({ kty: k.kty, crv: k.crv, x: k.x, kid: k.kid ?? fallbackKid, alg: 'EdDSA', use: 'sig' });

/** Imports the signing key once at start; publishes its public half plus any previous ones. */
export async function createSigner(privateJwk: string, previousPublicJwks: string): Promise<Signer> {
  const { key, kid } = await importEd25519Jwk(privateJwk);
  const current = publicPart(JSON.parse(privateJwk) as JWK, kid ?? 'default');
  let parsed: unknown;
  try {
    parsed = JSON.parse(previousPublicJwks);
  } catch {
    throw new Error('IDENTITY_JWT_PREVIOUS_PUBLIC_JWKS must be a JSON array of JWKs');
  }
  if (!Array.isArray(parsed)) throw new Error('IDENTITY_JWT_PREVIOUS_PUBLIC_JWKS must be a JSON array of JWKs');
  const previous = await Promise.all((parsed as JWK[]).map(async (k, i) => {
    if (!k || typeof k.kid !== 'string' || !k.kid) throw new Error(`IDENTITY_JWT_PREVIOUS_PUBLIC_JWKS[${i}] needs a kid`);
    if (k.kid === current.kid) throw new Error(`IDENTITY_JWT_PREVIOUS_PUBLIC_JWKS[${i}] repeats the current kid`);
    const pub = publicPart(k, k.kid);
    await importEd25519Jwk(JSON.stringify(pub)).catch((err: Error) => { throw new Error(`IDENTITY_JWT_PREVIOUS_PUBLIC_JWKS[${i}]: ${err.message}`); });
    return pub; // never the private members, even when an operator pasted a full private JWK
  }));
  const jwks = [current, ...previous];
  return { key, kid: current.kid!, jwks, verifyKeys: createLocalJWKSet({ keys: jwks }) };
}

export interface AccessClaims { userId: string; tenantId: string; orgId: string; orgRole: string; roles: string[]; sessionId: string }

export async function signAccessToken(signer: Signer, c: AccessClaims): Promise<{ token: string; jti: string; expiresAt: Date }> {
  const jti = randomUUID();
  const now = Math.floor(Date.now() / 1000);
  const exp = now + ACCESS_TOKEN.ttlSeconds;
  const token = await new SignJWT({ tid: c.tenantId, org: c.orgId, org_role: c.orgRole, roles: c.roles, sid: c.sessionId })
    .setProtectedHeader({ alg: 'EdDSA', typ: ACCESS_TOKEN.type, kid: signer.kid })
    .setIssuer(ACCESS_TOKEN.issuer).setAudience(ACCESS_TOKEN.audience).setSubject(c.userId).setJti(jti)
    .setIssuedAt(now).setExpirationTime(exp).sign(signer.key);
  return { token, jti, expiresAt: new Date(exp * 1000) };
}

/** Verifies one of our access tokens (pinned alg, iss, aud, typ; exp, jti, sub and iat required). */
export async function verifyAccessToken(signer: Signer, token: string) {
  const { payload } = await jwtVerify(token, signer.verifyKeys, {
    algorithms: ['EdDSA'], issuer: ACCESS_TOKEN.issuer, audience: ACCESS_TOKEN.audience, typ: ACCESS_TOKEN.type,
    requiredClaims: ['exp', 'jti', 'sub', 'iat'],
  });
  return {
    userId: payload.sub!, jti: payload.jti!, exp: new Date(payload.exp! * 1000), iat: new Date(payload.iat! * 1000),
    sessionId: typeof payload.sid === 'string' ? payload.sid : null,
  };
}

/**
 * The instant from which a user's older access tokens are void, rounded up to a whole second:
 * `iat` has second precision, so the gateway's `iat < notBefore` check then refuses every token
 * issued before the revocation and none issued after it.
 */
export const revocationInstant = () => new Date(Math.ceil(Date.now() / 1000) * 1000);
