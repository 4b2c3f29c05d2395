import type { Principal } from '@aos/contracts';
import { signInternalToken, type Key } from '@aos/http';
import { exportJWK, generateKeyPair } from 'jose';
import { randomUUID } from 'node:crypto';

let pair: Promise<{ privateKey: Key; publicJwk: string; privateJwk: string }> | undefined;

/** One internal-token key pair per test process, standing in for the gateway's. */
export function internalKeys() {
  pair ??= (async () => {
    const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
    const kid = randomUUID();
    return {
      privateKey,
      publicJwk: JSON.stringify({ ...(await exportJWK(publicKey)), kid, alg: 'EdDSA' }),
      privateJwk: JSON.stringify({ ...(await exportJWK(privateKey)), kid, alg: 'EdDSA' }),
    };
  })();
  return pair;
}

export async function tokenFor(principal: Principal): Promise<string> {
  return signInternalToken((await internalKeys()).privateKey, principal);
}

/** A user acting in an organization; fresh ids unless given. */
export function userPrincipal(overrides: Partial<Principal> = {}): Principal {
  return {
    kind: 'user', userId: randomUUID(), apiKeyId: null, tenantId: randomUUID(), orgId: randomUUID(),
    orgRole: 'owner', platformRoles: [], scopes: ['*'], ...overrides,
  };
}

export function apiKeyPrincipal(scopes: string[], overrides: Partial<Principal> = {}): Principal {
  return userPrincipal({ kind: 'api_key', apiKeyId: randomUUID(), orgRole: 'member', scopes, ...overrides });
}

export function adminPrincipal(overrides: Partial<Principal> = {}): Principal {
  return userPrincipal({ platformRoles: ['admin'], ...overrides });
}
