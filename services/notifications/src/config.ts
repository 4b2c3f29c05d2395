import { Env } from '@aos/core';
import { Type, type TProperties } from '@sinclair/typebox';

/** Settings of this service beyond the base ones every service reads (see @aos/runtime). */
export const config = {
  /** SMTP relay (e.g. smtp://127.0.0.1:1025 for Mailpit). Unset: e-mails are stored and logged, not sent. */
  SMTP_URL: Type.Optional(Type.String({ format: 'smtp-url' })),
  MAIL_FROM: Type.String({ default: 'AOS <no-reply@aos.local>', minLength: 3 }),
  /** Deliver webhooks to private, loopback and link-local addresses (off in production). */
  WEBHOOK_ALLOW_PRIVATE_TARGETS: Env.bool(false),
  /** Comma-separated hosts allowed even when private (e.g. an internal receiver). */
  WEBHOOK_ALLOWED_HOSTS: Env.list(''),
  WEBHOOK_TIMEOUT_MS: Env.int(10_000, { minimum: 100, maximum: 60_000 }),
  WEBHOOK_ATTEMPTS: Env.int(6, { minimum: 1, maximum: 20 }),
  WEBHOOK_BACKOFF_MS: Env.int(2_000, { minimum: 10, maximum: 600_000 }),
  /** Consecutive failed deliveries (after retries) that disable an endpoint. */
  WEBHOOK_MAX_FAILURES: Env.int(5, { minimum: 1, maximum: 1_000 }),
  ACTIVITY_CONCURRENCY: Env.int(16, { minimum: 1, maximum: 256 }),
} satisfies TProperties;
