import { GATEWAY_PORT, Services, type ServiceName } from '@aos/contracts';
import { Env, loadConfig } from '@aos/core';
import { Type, type Static, type TProperties } from '@sinclair/typebox';

const serviceUrls = Object.fromEntries(
  (Object.entries(Services) as [ServiceName, (typeof Services)[ServiceName]][]).map(([, s]) => [s.urlEnv, Env.httpUrl(`http://127.0.0.1:${s.port}`)]),
) as Record<(typeof Services)[ServiceName]['urlEnv'], ReturnType<typeof Env.httpUrl>>;

export const configSchema = Type.Object({
  HOST: Type.String({ default: '127.0.0.1' }),
  PORT: Env.port(GATEWAY_PORT),
  LOG_LEVEL: Type.String({ default: 'info' }),
  REDIS_URL: Env.redisUrl(),
  NATS_URL: Env.natsUrl(),
  OTEL_EXPORTER_OTLP_ENDPOINT: Type.Optional(Env.httpUrl()),
  /** Ed25519 private JWK (JSON) signing the internal tokens services verify. */
  INTERNAL_TOKEN_PRIVATE_JWK: Type.String({ minLength: 1 }),
  ...serviceUrls,
  /** Time a service has to answer before the gateway replies 504 UPSTREAM_TIMEOUT. */
  UPSTREAM_TIMEOUT_MS: Env.int(30_000, { minimum: 100, maximum: 600_000 }),
  BODY_LIMIT_BYTES: Env.int(1024 * 1024, { minimum: 1024 }),
  BUS_SUBJECT_ROOT: Type.String({ default: 'aos', pattern: '^[A-Za-z0-9_-]+$' }),
  BUS_STREAM: Type.String({ default: 'AOS_EVENTS', pattern: '^[A-Za-z0-9_-]+$' }),
  /** Key prefix of the gateway's Redis keys (rate limits, caches). */
  REDIS_PREFIX: Type.String({ default: 'aos:gw', pattern: '^[A-Za-z0-9_:-]+$' }),
  RATE_LIMIT_ENTERPRISE_PER_MINUTE: Env.int(10_000, { minimum: 1 }),
  RATE_LIMIT_ENTERPRISE_PER_HOUR: Env.int(500_000, { minimum: 1 }),
  /** Per client IP, on /auth/login, /auth/register and /auth/forgot-password. */
  AUTH_RATE_LIMIT_PER_MINUTE: Env.int(20, { minimum: 1 }),
  /** Per client IP: failed authentications (bad token or key) per minute before 429. */
  AUTH_FAILURES_PER_MINUTE: Env.int(60, { minimum: 1 }),
  /** Comma-separated browser origins allowed by CORS (credentials included). */
  CORS_ORIGINS: Env.list(''),
  /** How long a verified API key or org membership is cached (events evict earlier). */
  AUTH_CACHE_SECONDS: Env.int(300, { minimum: 1, maximum: 3_600 }),
  /** `/ready` answers 200 only when every service is ready (what `pnpm start` waits for). */
  READY_REQUIRES_SERVICES: Env.bool(true),
} satisfies TProperties);

export type GatewayConfig = Static<typeof configSchema>;

export const loadGatewayConfig = (env: NodeJS.ProcessEnv = process.env) => loadConfig(configSchema, env);

export function serviceUrl(config: GatewayConfig, name: ServiceName): string {
  return config[Services[name].urlEnv];
}
