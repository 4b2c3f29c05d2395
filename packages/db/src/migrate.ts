import { fileURLToPath } from 'node:url';
import { drizzle } from 'drizzle-orm/node-postgres';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import type pg from 'pg';

export const PLATFORM_MIGRATIONS = fileURLToPath(new URL('../migrations', import.meta.url));

/**
 * Applies the platform tables (outbox, inbox) and then the service's own migrations,
 * under an advisory lock so replicas starting together do not race.
 */
export async function runMigrations(pool: pg.Pool, serviceMigrationsFolder?: string): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query("SELECT pg_advisory_lock(hashtext('aos:migrations'))");
    try {
      const db = drizzle(client);
      await migrate(db, { migrationsFolder: PLATFORM_MIGRATIONS, migrationsTable: '__aos_platform_migrations' });
      if (serviceMigrationsFolder) {
        await migrate(db, { migrationsFolder: serviceMigrationsFolder, migrationsTable: '__aos_migrations' });
      }
    } finally {
      await client.query("SELECT pg_advisory_unlock(hashtext('aos:migrations'))");
    }
  } finally {
    client.release();
  }
}
