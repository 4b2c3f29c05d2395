import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

const PREFIX = 'enc1:';

/** The 32-byte key of `WEBHOOK_SECRET_KEY` (base64 or hex), or null when unset. */
export function secretKey(configured: string | undefined): Buffer | null {
  if (!configured) return null;
  const key = /^[0-9a-f]{64}$/i.test(configured) ? Buffer.from(configured, 'hex') : Buffer.from(configured, 'base64');
  if (key.length !== 32) throw new Error('WEBHOOK_SECRET_KEY must be 32 bytes (64 hex or 44 base64 characters)');
  return key;
}

/** Encrypts a webhook secret for storage (AES-256-GCM); without a key it is stored as is. */
export function sealSecret(secret: string, key: Buffer | null): string {
  if (!key) return secret;
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  const sealed = Buffer.concat([cipher.update(secret, 'utf8'), cipher.final()]);
  return `${PREFIX}${[iv, cipher.getAuthTag(), sealed].map((b) => b.toString('base64url')).join('.')}`;
}

/** The stored secret in clear: sealed ones need the key, ones stored before a key was set are read as is. */
export function openSecret(stored: string, key: Buffer | null): string {
  if (!stored.startsWith(PREFIX)) return stored;
  if (!key) throw new Error('webhook secret is encrypted but WEBHOOK_SECRET_KEY is not set');
  const [iv, tag, sealed] = stored.slice(PREFIX.length).split('.').map((p) => Buffer.from(p, 'base64url')) as [Buffer, Buffer, Buffer];
  const decipher = createDecipheriv('aes-256-gcm', key, iv);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(sealed), decipher.final()]).toString('utf8');
}
