import {
  INTERNAL_TOKEN_AUDIENCE, INTERNAL_TOKEN_ISSUER, INTERNAL_TOKEN_TYPE, PrincipalSchema, type Principal,
} from '@aos/contracts';
import { Value } from '@sinclair/typebox/value';
import { importJWK, jwtVerify, SignJWT, type CryptoKey, type JWK, type KeyObject } from 'jose';
import { randomUUID } from 'node:crypto';

export type Key = CryptoKey | KeyObject;

/** Imports an Ed25519 JWK given as a JSON string (imported once at start, never per request). */
export async function importEd25519Jwk(json: string): Promise<{ key: Key; kid: string | undefined }> {
  let jwk: JWK;
  try {
    jwk = JSON.parse(json) as JWK;
  } catch {
    throw new Error('key is not valid JSON (expected an Ed25519 JWK)');
  }
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519') throw new Error('key must be an Ed25519 JWK (kty OKP, crv Ed25519)');
  return { key: (await importJWK(jwk, 'EdDSA')) as Key, kid: jwk.kid };
}

const TTL_SECONDS = 60;

/** The gateway's short-lived statement of who is calling, for one request to one service. */
export async function signInternalToken(privateKey: Key, principal: Principal, ttlSeconds = TTL_SECONDS): Promise<string> {
  return new SignJWT({ principal })
    .setProtectedHeader({ alg: 'EdDSA', typ: INTERNAL_TOKEN_TYPE })
    .setIssuer(INTERNAL_TOKEN_ISSUER)
    .setAudience(INTERNAL_TOKEN_AUDIENCE)
    .setSubject(principal.userId ?? principal.apiKeyId ?? principal.service ?? 'anonymous')
    .setJti(randomUUID())
    .setIssuedAt()
    .setExpirationTime(`${ttlSeconds}s`)
    .sign(privateKey);
}

export async function verifyInternalToken(publicKey: Key, token: string): Promise<Principal> {
  const { payload } = await jwtVerify(token, publicKey, {
    algorithms: ['EdDSA'],
    issuer: INTERNAL_TOKEN_ISSUER,
    audience: INTERNAL_TOKEN_AUDIENCE,
    typ: INTERNAL_TOKEN_TYPE,
    requiredClaims: ['exp', 'jti', 'iat'],
    maxTokenAge: `${TTL_SECONDS * 2}s`,
  });
  if (!Value.Check(PrincipalSchema, payload.principal)) throw new Error('principal claim is malformed');
  return payload.principal;
}
