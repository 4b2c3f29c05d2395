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

export const opaqueToken = () => randomBytes(32).toString('base64url');
export const sha256 = (value: string) => createHash('sha256').update(value).digest('hex');

/** AES-256-GCM with a random 96-bit nonce per value. */
export function encrypt(keyB64: string, plaintext: string) {
  const key = Buffer.from(keyB64, 'base64');
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return { nonce: nonce.toString('base64'), ciphertext: ciphertext.toString('base64'), tag: cipher.getAuthTag().toString('base64') };
}

export function decrypt(keyB64: string, v: { nonce: string; ciphertext: string; tag: string }): string {
  const decipher = createDecipheriv('aes-256-gcm', Buffer.from(keyB64, 'base64'), Buffer.from(v.nonce, 'base64'));
  decipher.setAuthTag(Buffer.from(v.tag, 'base64'));
  return Buffer.concat([decipher.update(Buffer.from(v.ciphertext, 'base64')), decipher.final()]).toString('utf8');
}
