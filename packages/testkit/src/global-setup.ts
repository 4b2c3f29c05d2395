import { ensureInfra } from './infra.js';

/** Vitest global setup: checks (or starts) Postgres, NATS and Redis once per run. */
export default async function setup(): Promise<() => Promise<void>> {
  const { urls, stop } = await ensureInfra();
  process.env.TEST_DATABASE_URL = urls.databaseUrl;
  process.env.NATS_URL = urls.natsUrl;
  process.env.REDIS_URL = urls.redisUrl;
  return stop;
}
