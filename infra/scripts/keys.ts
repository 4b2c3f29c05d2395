/**
 * Dev key pairs (Ed25519 JWKs): `internal` signs the gateway's per-request principal tokens,
 * `identity` signs user access tokens. Created once under `dir`, reused after.
 * CLI: `node --import tsx infra/scripts/keys.ts <dir>`.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { exportJWK, generateKeyPair } from 'jose';

export interface DevKeys {
  internalPrivateJwk: string;
  internalPublicJwk: string;
  identityPrivateJwk: string;
  identityPublicJwk: string;
  /** Random secrets: the API-key hash pepper and the credentials encryption key (base64, 32 bytes). */
  apiKeyPepper: string;
  credentialsKey: string;
}

async function ensureSecret(dir: string, name: string): Promise<string> {
  const path = join(dir, name);
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    const value = randomBytes(32).toString('base64');
    await writeFile(path, value, { mode: 0o600 });
    return value;
  }
}

async function ensurePair(dir: string, name: string): Promise<[string, string]> {
  const privatePath = join(dir, `${name}.private.jwk.json`);
  const publicPath = join(dir, `${name}.public.jwk.json`);
  try {
    return [(await readFile(privatePath, 'utf8')).trim(), (await readFile(publicPath, 'utf8')).trim()];
  } catch {
    const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
    const kid = randomUUID();
    const priv = JSON.stringify({ ...(await exportJWK(privateKey)), kid, alg: 'EdDSA' });
    const pub = JSON.stringify({ ...(await exportJWK(publicKey)), kid, alg: 'EdDSA' });
    await writeFile(privatePath, priv, { mode: 0o600 });
    await writeFile(publicPath, pub, { mode: 0o644 });
    return [priv, pub];
  }
}

export async function ensureDevKeys(dir: string): Promise<DevKeys> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const [internalPrivateJwk, internalPublicJwk] = await ensurePair(dir, 'internal');
  const [identityPrivateJwk, identityPublicJwk] = await ensurePair(dir, 'identity');
  const apiKeyPepper = await ensureSecret(dir, 'api-key-pepper');
  const credentialsKey = await ensureSecret(dir, 'credentials-key');
  return { internalPrivateJwk, internalPublicJwk, identityPrivateJwk, identityPublicJwk, apiKeyPepper, credentialsKey };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const dir = process.argv[2];
  if (!dir) {
    console.error('usage: keys.ts <dir>');
    process.exit(2);
  }
  await ensureDevKeys(dir);
  console.log(`keys in ${dir}: internal.{private,public}.jwk.json, identity.{private,public}.jwk.json, api-key-pepper, credentials-key`);
}
