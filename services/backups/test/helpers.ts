import { createTestDatabase, startTestService } from '@aos/testkit';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { service } from '../src/service.js';

export async function sql<T extends pg.QueryResultRow = pg.QueryResultRow>(url: string, text: string): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(text)).rows;
  } finally {
    await c.end();
  }
}

/** A database with a few tables and rows (one in a second schema). */
export async function seededDatabase(label = 'bkseed') {
  const db = await createTestDatabase(label);
  await sql(db.url, `
    CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
    CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id), total numeric(10,2));
    CREATE TABLE empty_one (id int);
    CREATE SCHEMA extra;
    CREATE TABLE extra.events (id int, payload jsonb);
    INSERT INTO customers (name) SELECT 'c' || g FROM generate_series(1, 25) g;
    INSERT INTO orders (customer_id, total) SELECT 1 + (g % 25), g * 1.5 FROM generate_series(1, 130) g;
    INSERT INTO extra.events SELECT g, jsonb_build_object('g', g) FROM generate_series(1, 7) g;
  `);
  return db;
}

export async function rowCounts(url: string): Promise<Record<string, number>> {
  const rows = await sql<{ t: string; n: string }>(url, `
    SELECT 'public.customers' AS t, count(*)::text AS n FROM customers
    UNION ALL SELECT 'public.orders', count(*)::text FROM orders
    UNION ALL SELECT 'public.empty_one', count(*)::text FROM empty_one
    UNION ALL SELECT 'extra.events', count(*)::text FROM extra.events`);
  return Object.fromEntries(rows.map((r) => [r.t, Number(r.n)]));
}

export const tempDir = (prefix: string) => mkdtempSync(join(tmpdir(), `aos-${prefix}-`));

/** A URL to a database that does not exist on the same server. */
export function missingDatabaseUrl(url: string): string {
  const u = new URL(url);
  u.pathname = '/aos_does_not_exist_xyz';
  return u.toString();
}

export function pgRestoreList(file: string): string {
  return execFileSync('pg_restore', ['--list', file], { encoding: 'utf8' });
}

/** The service against a seeded database and its own BACKUP_DIR; `close` removes all three. */
export async function startBackups(label: string, env: (seedUrl: string) => Record<string, string>) {
  const seed = await seededDatabase(label);
  const dir = tempDir(label);
  const svc = await startTestService(service, { env: { BACKUP_DIR: dir, ...env(seed.url) } });
  return {
    svc, seed, dir,
    close: async () => {
      await svc.close();
      await seed.drop().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
