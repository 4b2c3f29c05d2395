import { createLogger, type Logger } from '@aos/core';
import { createHttpApp, importEd25519Jwk, type App } from '@aos/http';
import { Redis } from 'ioredis';
import type { GatewayConfig } from './config.js';
import { healthRoutes } from './routes/health.js';
import { anonymous, proxyRoutes, type Authenticate } from './routes/proxy.js';

export interface GatewayDeps {
  config: GatewayConfig;
  version: string;
  log?: Logger;
  authenticate?: Authenticate;
}

/** Builds the gateway from its config; `close()` on the app releases Redis too. */
export async function buildGateway({ config, version, log, authenticate }: GatewayDeps): Promise<App> {
  const logger = log ?? createLogger('gateway', config.LOG_LEVEL);
  const { key: privateKey } = await importEd25519Jwk(config.INTERNAL_TOKEN_PRIVATE_JWK).catch((err: Error) => {
    throw new Error(`INTERNAL_TOKEN_PRIVATE_JWK: ${err.message}`);
  });
  const redis = new Redis(config.REDIS_URL, { maxRetriesPerRequest: 1, lazyConnect: false });
  redis.on('error', (err) => logger.warn({ err: err.message }, 'redis error'));
  const redisOk = async () => {
    try { return (await redis.ping()) === 'PONG'; } catch { return false; }
  };
  const app = await createHttpApp({ service: 'gateway', version, logger, internalKey: null, bodyLimit: config.BODY_LIMIT_BYTES });
  healthRoutes(app, config, version, redisOk);
  await proxyRoutes(app, config, privateKey, authenticate ?? anonymous);
  app.addHook('onClose', async () => { redis.disconnect(); });
  return app;
}
