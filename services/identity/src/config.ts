import { Env } from '@aos/core';
import { Type, type TProperties } from '@sinclair/typebox';

/** Settings of this service beyond the base ones every service reads (see @aos/runtime). */
export const config = {
  /** Ed25519 private JWK (JSON, with `kid`) signing access tokens. */
  IDENTITY_JWT_PRIVATE_JWK: Type.String({ minLength: 1 }),
  /** JSON array of previous public JWKs still published in the JWKS during a key rotation. */
  IDENTITY_JWT_PREVIOUS_PUBLIC_JWKS: Type.String({ default: '[]' }),
  /** Secret mixed into API-key hashes (HMAC-SHA256); a database leak alone cannot verify keys. */
  API_KEY_PEPPER: Type.String({ minLength: 16 }),
  /** base64 of 32 bytes: AES-256-GCM key for stored credentials. Unset: credential routes answer 503. */
  CREDENTIALS_KEY: Type.Optional(Type.String({ minLength: 40 })),
  CREDENTIALS_KEY_ID: Type.String({ default: 'k1', pattern: '^[A-Za-z0-9_-]{1,32}$' }),
  /** JSON object `{"<key id>": "<base64 key>"}` of previous credential keys: values sealed with them still open and are re-sealed with the current key at start. */
  CREDENTIALS_PREVIOUS_KEYS: Type.String({ default: '{}' }),
  /** Comma-separated e-mails that get the platform admin role at registration. */
  ADMIN_EMAILS: Env.list(''),
  /** Public base URL for links in e-mails (reset, invites). */
  APP_URL: Env.httpUrl('http://127.0.0.1:3001'),
  COOKIE_SECURE: Env.bool(false),
  REFRESH_TOKEN_TTL_DAYS: Env.int(30, { minimum: 1, maximum: 365 }),
  INVITE_TTL_HOURS: Env.int(72, { minimum: 1, maximum: 24 * 30 }),
  /** log2 of the scrypt cost (memory ≈ 128 · 2^N · 8 bytes: 15 → 32 MiB). */
  PASSWORD_SCRYPT_LOG_N: Env.int(15, { minimum: 10, maximum: 20 }),
  /** Failed logins per window for one account from one client address. */
  LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_IP: Env.int(5, { minimum: 1, maximum: 1_000 }),
  /** Failed logins per window for one account from all addresses; addresses the account logged in from recently skip it. */
  LOGIN_MAX_FAILURES_PER_ACCOUNT: Env.int(50, { minimum: 1, maximum: 100_000 }),
  /** Failed logins per window from one client address, whatever the accounts. */
  LOGIN_MAX_FAILURES_PER_IP: Env.int(30, { minimum: 1, maximum: 100_000 }),
  LOGIN_FAILURE_WINDOW_MINUTES: Env.int(15, { minimum: 1, maximum: 1_440 }),
  /** Days an address stays known after a successful login, registration or password reset from it (0: no address is known). */
  LOGIN_KNOWN_ADDRESS_DAYS: Env.int(30, { minimum: 0, maximum: 365 }),
  /** Days API-key usage rows are kept (0 = forever). */
  API_KEY_USAGE_RETENTION_DAYS: Env.int(90, { minimum: 0, maximum: 3_650 }),
  /** Days a reset link, an invitation or a refresh-token family is kept once it can no longer be used (expired, used, revoked). */
  AUTH_RECORD_RETENTION_DAYS: Env.int(7, { minimum: 0, maximum: 365 }),
  /** Seconds between cleanup runs (one BullMQ job scheduler: one run per interval across replicas). */
  CLEANUP_INTERVAL_SECONDS: Env.int(3_600, { minimum: 1, maximum: 86_400 }),
} satisfies TProperties;
