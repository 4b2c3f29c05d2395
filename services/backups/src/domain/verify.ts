import { eq } from 'drizzle-orm';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { systemMeta } from '@aos/bus';
import { backups } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { databases, logLine, tableCounts } from './backup.js';
import { pgEnv, run } from './process.js';

async function admin(url: string, sql: string) {
  const u = new URL(url);
  u.pathname = '/postgres';
  const c = new pg.Client({ connectionString: u.toString() });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** Restores into a scratch database, compares row counts with those recorded at dump time, drops the scratch. */
export async function verifyBackup(ctx: Ctx, row: typeof backups.$inferSelect, path: string) {
  const source = databases(ctx)[row.database] ?? ctx.config.DATABASE_URL;
  const scratchName = `aos_verify_${randomBytes(5).toString('hex')}`;
  const scratch = new URL(source);
  scratch.pathname = `/${scratchName}`;
  await admin(source, `CREATE DATABASE "${scratchName}"`);
  let details: { ok: boolean; mismatches: { table: string; expected: number; actual: number | null }[]; error?: string; tables: number };
  try {
    const res = await run(ctx.config.PG_RESTORE, ['--no-owner', '--exit-on-error', `--dbname=${scratchName}`, path], pgEnv(scratch.toString()));
    if (res.code !== 0) {
      details = { ok: false, mismatches: [], error: `pg_restore exited ${res.code}: ${res.stderr.trim().slice(0, 1_000)}`, tables: 0 };
    } else {
      const c = new pg.Client({ connectionString: scratch.toString() });
      await c.connect();
      const actual = await tableCounts(c).finally(() => c.end());
      const expected = row.tableCounts ?? {};
      const mismatches = Object.entries(expected).filter(([t, n]) => actual[t] !== n).map(([table, n]) => ({ table, expected: n, actual: actual[table] ?? null }));
      details = { ok: mismatches.length === 0, mismatches, tables: Object.keys(expected).length };
    }
  } finally {
    await admin(source, `DROP DATABASE IF EXISTS "${scratchName}" WITH (FORCE)`).catch(() => {});
  }
  await ctx.db.transaction(async (tx) => {
    await tx.update(backups).set({ verifiedAt: new Date(), verifyOk: details.ok, verifyDetails: details }).where(eq(backups.id, row.id));
    await ctx.outbox.enqueue(tx, 'backups.backup.verified', { backupId: row.id, filename: row.filename, ok: details.ok }, systemMeta(null, null));
  });
  await logLine(ctx, `VERIFY ${row.filename} ${details.ok ? 'ok' : 'FAILED'}`);
  return details;
}

/** Restores a backup over its service database (objects dropped and recreated). */
export async function restoreBackup(ctx: Ctx, row: typeof backups.$inferSelect, path: string) {
  const target = databases(ctx)[row.database];
  if (!target) throw new Error(`no connection configured for ${row.database}`);
  const res = await run(ctx.config.PG_RESTORE, ['--no-owner', '--clean', '--if-exists', '--single-transaction', `--dbname=${new URL(target).pathname.slice(1)}`, path], pgEnv(target));
  if (res.code !== 0) throw new Error(`pg_restore exited ${res.code}: ${res.stderr.trim().slice(0, 1_000)}`);
  await ctx.db.transaction((tx) => ctx.outbox.enqueue(tx, 'backups.backup.restored', { backupId: row.id, filename: row.filename, database: row.database }, systemMeta(null, null)));
  await logLine(ctx, `RESTORE ${row.filename} into ${row.database}`);
}
