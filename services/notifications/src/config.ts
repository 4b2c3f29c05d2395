import { Env } from '@aos/core';
import { Type, type TProperties } from '@sinclair/typebox';

/** Settings of this service beyond the base ones every service reads (see @aos/runtime). */
export const config = {
  /** smtp(s)://user:pass@host:port; unset = e-mails are logged and stored (status `stored`), not sent. */
  SMTP_URL: Type.Optional(Type.String({ format: 'smtp-url' })),
  MAIL_FROM: Type.String({ default: 'AOS <no-reply@aos.local>', minLength: 3 }),
  EMAIL_MAX_ATTEMPTS: Env.int(5, { minimum: 1, maximum: 20 }),
  EMAIL_BACKOFF_MS: Env.int(2_000, { minimum: 10 }),
  /** Allow webhook targets on private, loopback and link-local networks (never in production). */
  WEBHOOK_ALLOW_PRIVATE_TARGETS: Env.bool(false),
  /** Comma-separated host names allowed whatever they resolve to (e.g. an internal receiver). */
  WEBHOOK_ALLOWED_HOSTS: Env.list(''),
  /** DNS servers (`ip` or `ip:port`, comma-separated) for webhook hosts; empty = the system resolver. */
  WEBHOOK_DNS_SERVERS: Type.String({ default: '', pattern: '^[0-9A-Fa-f.:\\[\\], ]*$' }),
  /** 32 bytes (64 hex or 44 base64 characters): webhook signing secrets are stored AES-256-GCM encrypted with it. */
  WEBHOOK_SECRET_KEY: Type.Optional(Type.String({ pattern: '^([0-9a-fA-F]{64}|[A-Za-z0-9+/]{43}=)$' })),
  WEBHOOK_MAX_ATTEMPTS: Env.int(6, { minimum: 1, maximum: 20 }),
  WEBHOOK_BACKOFF_MS: Env.int(5_000, { minimum: 10 }),
  WEBHOOK_TIMEOUT_MS: Env.int(10_000, { minimum: 100, maximum: 60_000 }),
  /** Consecutive failed deliveries (each after all retries) that disable a webhook. */
  WEBHOOK_DISABLE_AFTER: Env.int(10, { minimum: 1 }),
  WEBHOOK_CONCURRENCY: Env.int(8, { minimum: 1, maximum: 100 }),
  ACTIVITY_CONCURRENCY: Env.int(16, { minimum: 1, maximum: 256 }),
  SSE_HEARTBEAT_MS: Env.int(15_000, { minimum: 100 }),
  SSE_MAX_STREAMS_PER_CALLER: Env.int(10, { minimum: 1, maximum: 1_000 }),
  /** Retention (days; 0 = keep forever) and how often the sweep runs. */
  ACTIVITY_RETENTION_DAYS: Env.int(90, { minimum: 0 }),
  DELIVERY_RETENTION_DAYS: Env.int(30, { minimum: 0 }),
  EMAIL_RETENTION_DAYS: Env.int(30, { minimum: 0 }),
  READ_NOTIFICATION_RETENTION_DAYS: Env.int(90, { minimum: 0 }),
  RETENTION_INTERVAL_MS: Env.int(3_600_000, { minimum: 1_000 }),
  /** How often (and after how long unfinished) deliveries and e-mails without a live job are queued again. */
  JOB_RECOVERY_INTERVAL_MS: Env.int(60_000, { minimum: 1_000 }),
} satisfies TProperties;
