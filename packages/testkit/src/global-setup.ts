import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureInfra } from './infra.js';
import { REGISTRY_ENV, removeRegistered, sweepStale } from './namespace.js';

/** Test resources older than this were left by a killed run (a run takes minutes). */
const STALE_AFTER_MS = 2 * 60 * 60 * 1000;

/**
 * Vitest global setup: checks (or starts) Postgres, NATS and Redis once per run, sweeps
 * what killed runs left behind, and at the end removes every database and namespace this
 * run created, also those of test files that failed before cleaning up.
 */
export default async function setup(): Promise<() => Promise<void>> {
  const { urls, stop } = await ensureInfra();
  process.env.TEST_DATABASE_URL = urls.databaseUrl;
  process.env.NATS_URL = urls.natsUrl;
  process.env.REDIS_URL = urls.redisUrl;
  await sweepStale(STALE_AFTER_MS);
  const dir = mkdtempSync(join(tmpdir(), 'aos-testkit-'));
  const registry = join(dir, 'registry');
  writeFileSync(registry, '');
  process.env[REGISTRY_ENV] = registry;
  return async () => {
    await removeRegistered(readFileSync(registry, 'utf8')).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    await stop();
  };
}
