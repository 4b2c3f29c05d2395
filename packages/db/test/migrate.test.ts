import { createTestDatabase } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, runMigrations, type Pool } from '../src/index.js';

let db: { url: string; drop: () => Promise<void> };
const pools: Pool[] = [];

beforeAll(async () => { db = await createTestDatabase('migrate'); });
afterAll(async () => {
  await Promise.all(pools.map((p) => p.end()));
  await db.drop();
});

describe('runMigrations', () => {
  it('lets replicas starting together migrate one database (advisory lock), and is idempotent', async () => {
    const replicas = Array.from({ length: 4 }, () => { const p = createPool(db.url, undefined, 2); pools.push(p); return p; });
    await Promise.all(replicas.map((p) => runMigrations(p)));
    await runMigrations(replicas[0]!);
    const { rows } = await replicas[0]!.query("SELECT count(*)::int AS n FROM drizzle.__aos_platform_migrations");
    expect(rows[0].n).toBe(2);
    const tables = await replicas[0]!.query("SELECT tablename FROM pg_tables WHERE tablename IN ('aos_outbox', 'aos_inbox') ORDER BY 1");
    expect(tables.rows.map((t) => t.tablename)).toEqual(['aos_inbox', 'aos_outbox']);
  });
});
