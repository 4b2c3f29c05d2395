import { readFileSync } from 'node:fs';
import { Services } from '@aos/contracts';
import { Env } from '@aos/core';
import { Type, type TProperties } from '@sinclair/typebox';

/** Settings every service process reads. */
export function baseServiceConfig(name: string) {
  const svc = (Services as Record<string, { port: number; database: string }>)[name] ?? { port: 0, database: `aos_${name.replace(/[^a-z0-9]/gi, '_')}` };
  return {
    HOST: Type.String({ default: '127.0.0.1' }),
    PORT: Env.port(svc.port),
    LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { default: 'info' }),
    DATABASE_URL: Env.postgresUrl(`postgres://postgres@127.0.0.1:5432/${svc.database}`),
    DATABASE_POOL_MAX: Env.int(10, { minimum: 1, maximum: 200 }),
    NATS_URL: Env.natsUrl(),
    REDIS_URL: Env.redisUrl(),
    /** Key prefix of this process's BullMQ queues (tests use their own). */
    REDIS_PREFIX: Type.String({ default: 'aos', pattern: '^[A-Za-z0-9_:-]+$' }),
    /** Subject root and stream names on NATS (tests use their own). */
    BUS_SUBJECT_ROOT: Type.String({ default: 'aos', pattern: '^[A-Za-z0-9_-]+$' }),
    BUS_STREAM: Type.String({ default: 'AOS_EVENTS', pattern: '^[A-Za-z0-9_-]+$' }),
    BUS_DLQ_STREAM: Type.String({ default: 'AOS_DLQ', pattern: '^[A-Za-z0-9_-]+$' }),
    BUS_MAX_DELIVER: Env.int(5, { minimum: 1, maximum: 100 }),
    BUS_BACKOFF_BASE_MS: Env.int(1_000, { minimum: 1, maximum: 60_000 }),
    OUTBOX_POLL_MS: Env.int(1_000, { minimum: 10, maximum: 60_000 }),
    OTEL_EXPORTER_OTLP_ENDPOINT: Type.Optional(Env.httpUrl()),
    /** Ed25519 public JWK (JSON) of the gateway's internal tokens. */
    INTERNAL_TOKEN_PUBLIC_JWK: Type.String({ minLength: 1 }),
  } satisfies TProperties;
}

export type BaseServiceConfig = ReturnType<typeof baseServiceConfig>;

/** Release version: `AOS_VERSION` when set (images), else the repository's package.json. */
export const VERSION: string = process.env.AOS_VERSION ?? (() => {
  try {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
})();
