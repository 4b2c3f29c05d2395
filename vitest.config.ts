import { defineConfig } from 'vitest/config';

const services = ['identity', 'agents-runtime', 'tasks', 'billing', 'notifications', 'backups'];

/**
 * One run covers every package, service and the cross-service suites; each test file
 * gets its own database and NATS/Redis namespace, so files run in parallel safely.
 * The heavy suites (load, 10k events) run only with `pnpm test:heavy`.
 */
export default defineConfig({
  test: {
    globalSetup: ['packages/testkit/src/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    poolOptions: { forks: { maxForks: 3, minForks: 1 } },
    projects: [
      { extends: true as const, test: { name: 'packages', include: ['packages/*/test/**/*.test.ts'] } },
      { extends: true as const, test: { name: 'gateway', include: ['gateway/test/**/*.test.ts'] } },
      ...services.map((s) => ({ extends: true as const, test: { name: s, include: [`services/${s}/test/**/*.test.ts`] } })),
      { extends: true as const, test: { name: 'e2e', include: ['test/e2e/**/*.test.ts', 'test/platform/**/*.test.ts'] } },
      ...(process.env.AOS_HEAVY ? [{ extends: true as const, test: { name: 'heavy', include: ['test/heavy/**/*.test.ts'], testTimeout: 600_000 } }] : []),
    ],
  },
});
