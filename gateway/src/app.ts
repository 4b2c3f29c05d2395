import { createLogger, type Logger } from '@aos/core';
import { createHttpApp, importEd25519Jwk, type App } from '@aos/http';
import cors from '@fastify/cors';
import helmet from '@fastify/helmet';
import { Redis } from 'ioredis';
import { createAuthenticator } from './auth/authenticate.js';
import { UsageLog } from './auth/usage.js';
import type { GatewayConfig } from './config.js';
import { splitList } from '@aos/core';
import { CacheEvents } from './events/cache-events.js';
import { RateLimiter, type Decision } from './ratelimit/limiter.js';
import { dashboardRoutes } from './routes/dashboard.js';
import { docsRoutes } from './routes/docs.js';
import { healthRoutes } from './routes/health.js';
import { proxyRoutes, type Admit } from './routes/proxy.js';
import { AppError } from '@aos/core';
import type { FastifyReply } from 'fastify';
import type { Principal } from '@aos/contracts';

export interface GatewayDeps {
  config: GatewayConfig;
  version: string;
  log?: Logger;
  /** Replace authentication and rate limiting (tests of the bare proxy). */
  admit?: Admit;
  /** Consume identity/billing events into the caches (default true). */
  events?: boolean;
}

/** Resolves once the gateway consumes identity/billing events (tests wait on it). */
export const cacheEventsReady = new WeakMap<App, Promise<void>>();

const STRICT_PATHS = new Set(['/auth/login', '/auth/register', '/auth/forgot-password', '/auth/reset-password']);

function rateHeaders(reply: FastifyReply, d: Decision) {
  reply.header('x-ratelimit-limit', String(d.limit));
  reply.header('x-ratelimit-remaining', String(d.remaining));
  reply.header('x-ratelimit-reset', String(d.reset));
  if (!d.allowed) reply.header('retry-after', String(d.retryAfter));
}

/** Builds the gateway from its config; `close()` on the app releases Redis, NATS and flushes usage. */
export async function buildGateway({ config, version, log, admit, events = true }: GatewayDeps): Promise<App> {
  const logger = log ?? createLogger('gateway', config.LOG_LEVEL);
  const { key: privateKey } = await importEd25519Jwk(config.INTERNAL_TOKEN_PRIVATE_JWK).catch((err: Error) => {
    throw new Error(`INTERNAL_TOKEN_PRIVATE_JWK: ${err.message}`);
  });
  // Fail fast while Redis is away (no offline queue, a command timeout): requests must not hang on it.
  const redis = new Redis(config.REDIS_URL, {
    maxRetriesPerRequest: 1, enableOfflineQueue: false, commandTimeout: 1_000, retryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
  });
  redis.on('error', (err) => logger.warn({ err: err.message }, 'redis error'));
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => { logger.warn('redis not reachable at start; serving without it until it is'); resolve(); }, 3_000);
    redis.once('ready', () => { clearTimeout(timer); resolve(); });
  });
  const redisOk = async () => {
    try { return (await redis.ping()) === 'PONG'; } catch { return false; }
  };
  const app = await createHttpApp({ service: 'gateway', version, logger, internalKey: null, bodyLimit: config.BODY_LIMIT_BYTES });
  const origins = splitList(config.CORS_ORIGINS);
  await app.register(cors, { origin: origins.length ? origins : false, credentials: true, exposedHeaders: ['x-trace-id', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'retry-after'] });
  await app.register(helmet, { contentSecurityPolicy: false, crossOriginResourcePolicy: { policy: 'same-site' } });

  const authenticate = createAuthenticator(config, redis, privateKey, logger);
  const limiter = new RateLimiter(redis, config.REDIS_PREFIX, config, logger);
  const usage = new UsageLog(config.IDENTITY_URL, privateKey, logger);
  const defaultAdmit: Admit = async (request, reply, path) => {
    if (STRICT_PATHS.has(path) && request.method === 'POST') {
      const d = await limiter.check(`auth-ip:${request.ip}`, config.AUTH_RATE_LIMIT_PER_MINUTE, config.AUTH_RATE_LIMIT_PER_MINUTE * 20);
      if (d) rateHeaders(reply, d);
      if (d && !d.allowed) throw new AppError('RATE_LIMITED', 'Too many attempts from this address; slow down');
    }
    let principal: Principal;
    try {
      principal = await authenticate(request);
    } catch (err) {
      // Bad credentials never reach the principal's limit: count them per address instead, so
      // guessing tokens or keys (or flooding identity with them) is throttled too.
      if (err instanceof AppError && err.code === 'UNAUTHORIZED') {
        const d = await limiter.check(`auth-fail-ip:${request.ip}`, config.AUTH_FAILURES_PER_MINUTE, config.AUTH_FAILURES_PER_MINUTE * 20);
        if (d) rateHeaders(reply, d);
        if (d && !d.allowed) throw new AppError('RATE_LIMITED', 'Too many failed authentications from this address; slow down');
      }
      throw err;
    }
    if (!STRICT_PATHS.has(path)) {
      const d = await limiter.forPrincipal(principal, request.ip);
      if (d) rateHeaders(reply, d);
      if (d && !d.allowed) throw new AppError('RATE_LIMITED', 'Rate limit exceeded', [{ limit: d.limit, retry_after: d.retryAfter }]);
    }
    if (principal.kind === 'api_key') {
      const started = performance.now();
      reply.raw.once('finish', () => usage.record({
        api_key_id: principal.apiKeyId!, method: request.method, path: request.url.split('?')[0]!.slice(0, 2_000),
        status: reply.statusCode, latency_ms: Math.round(performance.now() - started), at: new Date().toISOString(),
      }));
    }
    return principal;
  };

  healthRoutes(app, config, version, redisOk);
  dashboardRoutes(app, config, privateKey, admit ?? defaultAdmit, redisOk);
  await docsRoutes(app, config, version);
  await proxyRoutes(app, config, privateKey, admit ?? defaultAdmit);

  const cacheEvents = new CacheEvents(config, redis, logger);
  // In the background: the gateway serves while NATS is away (revocations then wait for it).
  cacheEventsReady.set(app, events
    ? cacheEvents.start().catch((err: Error) => logger.error({ err: err.message }, 'gateway cache events not started'))
    : Promise.resolve());
  app.addHook('onClose', async () => {
    await usage.close();
    await cacheEvents.stop();
    redis.disconnect();
  });
  return app;
}
