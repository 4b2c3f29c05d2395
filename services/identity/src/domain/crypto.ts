import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { promisify } from 'node:util';
import { API_KEY_PREFIX } from '@aos/contracts';

const scrypt = promisify(scryptCb) as (password: string, salt: Buffer, keylen: number, options: { N: number; r: number; p: number; maxmem: number }) => Promise<Buffer>;

/** `scrypt$<logN>$<r>$<p>$<salt b64>$<hash b64>`: parameters travel with the hash so they can be raised later. */
export async function hashPassword(password: string, logN: number): Promise<string> {
  const salt = randomBytes(16);
  const r = 8;
  const p = 1;
  const hash = await scrypt(password.normalize('NFKC'), salt, 64, { N: 2 ** logN, r, p, maxmem: 256 * 2 ** logN * r });
  return `scrypt$${logN}$${r}$${p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [kind, logN, r, p, salt, hash] = stored.split('$');
  if (kind !== 'scrypt' || !logN || !r || !p || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const actual = await scrypt(password.normalize('NFKC'), Buffer.from(salt, 'base64'), expected.length, {
    N: 2 ** Number(logN), r: Number(r), p: Number(p), maxmem: 256 * 2 ** Number(logN) * Number(r),
  });
  return timingSafeEqual(actual, expected);
}

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

function base62(bytes: Buffer): string {
  let n = BigInt(`0x${bytes.toString('hex')}`);
  let out = '';
  while (n > 0n) {
    out = BASE62[Number(n % 62n)] + out;
    n /= 62n;
  }
  return out;
}

const checksum = (body: string) => base62(Buffer.from(crc32(body).toString(16).padStart(8, '0'), 'hex')).padStart(6, '0');

/** `osk_live_` + 32 random bytes in base62 + a 6-char CRC32 checksum, so scanners can recognise leaked keys. */
export function generateApiKey(): string {
  const body = base62(randomBytes(32)).padStart(43, '0');
  return `${API_KEY_PREFIX}${body}${checksum(body)}`;
}

/** Cheap syntactic check before any database work. */
export function looksLikeApiKey(key: string): boolean {
  if (!key.startsWith(API_KEY_PREFIX)) return false;
  const rest = key.slice(API_KEY_PREFIX.length);
  if (!/^[0-9A-Za-z]{49}$/.test(rest)) return false;
  return checksum(rest.slice(0, 43)) === rest.slice(43);
}

export const maskApiKey = (key: string) => `${key.slice(0, API_KEY_PREFIX.length + 2)}…${key.slice(-2)}`;

export const apiKeyHash = (pepper: string, key: string) => createHmac('sha256', pepper).update(key).digest('hex');
/** A client address as stored: keyed, so a database leak alone does not list where users log in from. */
export const addressHash = (pepper: string, ip: string) => createHmac('sha256', pepper).update(`login-address:${ip}`).digest('hex');

export const opaqueToken = () => randomBytes(32).toString('base64url');
export const sha256 = (value: string) => createHash('sha256').update(value).digest('hex');

export interface Sealed { nonce: string; ciphertext: string; tag: string }

/** AES-256-GCM with a random 96-bit nonce per value; `aad` binds the value to its name (a swapped row fails). */
export function encrypt(key: Buffer, plaintext: string, aad: string): Sealed {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return { nonce: nonce.toString('base64'), ciphertext: ciphertext.toString('base64'), tag: cipher.getAuthTag().toString('base64') };
}

export function decrypt(key: Buffer, v: Sealed, aad: string): string {
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(v.nonce, 'base64'));
  decipher.setAAD(Buffer.from(aad, 'utf8'));
  decipher.setAuthTag(Buffer.from(v.tag, 'base64'));
  return Buffer.concat([decipher.update(Buffer.from(v.ciphertext, 'base64')), decipher.final()]).toString('utf8');
}

/**
 * The credential encryption keys: the current one (new values) and previous ones by id, so
 * values sealed before a key rotation still open and can be re-sealed with the current key.
 */
export class Vault {
  private constructor(readonly keyId: string, private readonly keys: Map<string, Buffer>) {}

  /** `null` when no key is configured. Throws naming the setting when a key is not 32 bytes of base64. */
  static fromConfig(current: string | undefined, currentId: string, previousJson: string): Vault | null {
    if (!current) return null;
    const decode = (name: string, b64: string) => {
      const key = Buffer.from(b64, 'base64');
      if (key.length !== 32) throw new Error(`${name} must be 32 bytes in base64`);
      return key;
    };
    let previous: unknown;
    try {
      previous = JSON.parse(previousJson);
    } catch {
      throw new Error('CREDENTIALS_PREVIOUS_KEYS must be a JSON object {"<key id>": "<base64 key>"}');
    }
    if (!previous || typeof previous !== 'object' || Array.isArray(previous)) throw new Error('CREDENTIALS_PREVIOUS_KEYS must be a JSON object {"<key id>": "<base64 key>"}');
    const keys = new Map<string, Buffer>();
    for (const [id, b64] of Object.entries(previous as Record<string, unknown>)) {
      if (typeof b64 !== 'string') throw new Error(`CREDENTIALS_PREVIOUS_KEYS.${id} must be a base64 string`);
      keys.set(id, decode(`CREDENTIALS_PREVIOUS_KEYS.${id}`, b64));
    }
    keys.set(currentId, decode('CREDENTIALS_KEY', current));
    return new Vault(currentId, keys);
  }

  seal(name: string, value: string): Sealed & { keyId: string } {
    return { ...encrypt(this.keys.get(this.keyId)!, value, name), keyId: this.keyId };
  }

  /** The value, or `null` when its key is not configured or it does not authenticate. */
  open(name: string, sealed: Sealed & { keyId: string }): string | null {
    const key = this.keys.get(sealed.keyId);
    if (!key) return null;
    try {
      return decrypt(key, sealed, name);
    } catch {
      return null;
    }
  }
}
