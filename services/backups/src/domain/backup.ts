import { Services } from '@aos/contracts';
import { systemMeta } from '@aos/bus';
import { and, desc, eq, inArray, isNull } from 'drizzle-orm';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { appendFile, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve, sep } from 'node:path';
import pg from 'pg';
import { backups } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { pgEnv, run } from './process.js';

export const FILENAME = /^[a-z0-9_]{1,63}-\d{8}T\d{9}Z\.dump$/;

export function backupDir(ctx: Ctx): string {
  return isAbsolute(ctx.config.BACKUP_DIR) ? ctx.config.BACKUP_DIR : resolve(process.cwd(), ctx.config.BACKUP_DIR);
}

/** The databases this service backs up, by name. */
export function databases(ctx: Ctx): Record<string, string> {
  const raw = ctx.config.BACKUP_DATABASE_URLS.trim();
  if (raw.startsWith('{')) return JSON.parse(raw) as Record<string, string>;
  if (raw) return Object.fromEntries(raw.split(',').map((pair) => pair.split('=', 2).map((s) => s.trim()) as [string, string]));
  const base = new URL(ctx.config.DATABASE_URL);
  return Object.fromEntries(Object.values(Services).map((s) => {
    const u = new URL(base);
    u.pathname = `/${s.database}`;
    return [s.database, u.toString()];
  }));
}

/** A recorded, present backup's path; anything else (traversal, unknown, deleted) is null. */
export async function resolveBackup(ctx: Ctx, filename: string) {
  if (!FILENAME.test(filename)) return null;
  const [row] = await ctx.db.select().from(backups).where(and(eq(backups.filename, filename), eq(backups.status, 'completed'), isNull(backups.deletedAt)));
  if (!row) return null;
  const dir = backupDir(ctx);
  const path = resolve(dir, row.filename);
  if (!path.startsWith(dir + sep)) return null;
  return { row, path };
}

export async function logLine(ctx: Ctx, line: string) {
  const dir = backupDir(ctx);
  await mkdir(dir, { recursive: true });
  await appendFile(join(dir, 'backup.log'), `${new Date().toISOString()} ${line.replace(/[\r\n]+/g, ' ')}\n`);
}

const stamp = (d: Date) => d.toISOString().replace(/[-:.]/g, '').replace(/(\d{8}T\d{6})(\d{3})Z/, '$1$2Z');

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Row counts of every user table, in the caller's transaction. */
export async function tableCounts(client: pg.ClientBase): Promise<Record<string, number>> {
  const { rows } = await client.query<{ schema: string; name: string }>(
    `SELECT table_schema AS schema, table_name AS name FROM information_schema.tables
      WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2`);
  const counts: Record<string, number> = {};
  for (const t of rows) {
    const q = `SELECT count(*)::bigint AS n FROM ${client.escapeIdentifier(t.schema)}.${client.escapeIdentifier(t.name)}`;
    counts[`${t.schema}.${t.name}`] = Number((await client.query<{ n: string }>(q)).rows[0]!.n);
  }
  return counts;
}

/**
 * Dumps one database: counts and `pg_dump --snapshot` share one exported snapshot, so the
 * recorded counts are exactly what the file holds. Written to a temp file, fsynced, then
 * renamed: a listed backup is always complete.
 */
export async function backupDatabase(ctx: Ctx, database: string, trigger: string): Promise<typeof backups.$inferSelect> {
  const url = databases(ctx)[database];
  const dir = backupDir(ctx);
  await mkdir(dir, { recursive: true });
  let filename = '';
  let row: typeof backups.$inferSelect | undefined;
  // Two backups of one database in the same millisecond: the second takes the next one.
  for (let attempt = 0; !row; attempt++) {
    filename = `${database}-${stamp(new Date(Date.now() + attempt))}.dump`;
    [row] = await ctx.db.insert(backups).values({ filename, database, status: 'running', trigger }).onConflictDoNothing().returning();
  }
  const tmp = join(dir, `.${filename}.${randomBytes(6).toString('hex')}.tmp`);
  const fail = async (error: string) => {
    await rm(tmp, { force: true });
    const clean = error.replace(/postgres(ql)?:\/\/[^\s@]*@/g, 'postgres://***@').slice(0, 2_000);
    await ctx.db.transaction(async (tx) => {
      await tx.update(backups).set({ status: 'failed', error: clean, completedAt: new Date() }).where(eq(backups.id, row!.id));
      await ctx.outbox.enqueue(tx, 'backups.backup.failed', { backupId: row!.id, database, error: clean }, systemMeta(null, null));
    });
    await logLine(ctx, `FAILED ${filename}: ${clean}`);
    return (await ctx.db.select().from(backups).where(eq(backups.id, row!.id)))[0]!;
  };
  if (!url) return fail(`unknown database ${database}`);
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  try {
    await client.connect();
  } catch (err) {
    return fail(`cannot connect: ${(err as Error).message}`);
  }
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const snapshot = (await client.query<{ id: string }>('SELECT pg_export_snapshot() AS id')).rows[0]!.id;
    const counts = await tableCounts(client);
    const res = await run(ctx.config.PG_DUMP, ['--format=custom', '--compress=6', `--snapshot=${snapshot}`, '--no-owner', `--file=${tmp}`], pgEnv(url));
    if (res.code !== 0) return await fail(`pg_dump exited ${res.code}: ${res.stderr.trim()}`);
    const fh = await open(tmp, 'r+');
    await fh.sync();
    await fh.close();
    await rename(tmp, join(dir, filename));
    const dirHandle = await open(dir, 'r');
    await dirHandle.sync().catch(() => {});
    await dirHandle.close();
    const { size } = await stat(join(dir, filename));
    const sha256 = await sha256File(join(dir, filename));
    const done = await ctx.db.transaction(async (tx) => {
      const [b] = await tx.update(backups).set({ status: 'completed', sizeBytes: size, sha256, tableCounts: counts, completedAt: new Date() }).where(eq(backups.id, row!.id)).returning();
      await ctx.outbox.enqueue(tx, 'backups.backup.completed', { backupId: row!.id, filename, database, sizeBytes: size, sha256 }, systemMeta(null, null));
      return b!;
    });
    await logLine(ctx, `OK ${filename} ${size} bytes sha256=${sha256}`);
    return done;
  } catch (err) {
    return await fail((err as Error).message);
  } finally {
    await client.query('COMMIT').catch(() => {});
    await client.end().catch(() => {});
  }
}

/** Keeps the newest N backups of a database plus the newest of each day for D days; deletes the rest. */
export async function applyRetention(ctx: Ctx, database: string): Promise<string[]> {
  const rows = await ctx.db.select().from(backups).where(and(eq(backups.database, database), eq(backups.status, 'completed'), isNull(backups.deletedAt))).orderBy(desc(backups.startedAt), desc(backups.id));
  const keep = new Set(rows.slice(0, ctx.config.BACKUP_KEEP_LAST).map((r) => r.id));
  const since = Date.now() - ctx.config.BACKUP_KEEP_DAILY_DAYS * 86_400_000;
  const days = new Set<string>();
  for (const r of rows) {
    const day = r.startedAt.toISOString().slice(0, 10);
    if (r.startedAt.getTime() >= since && !days.has(day)) {
      days.add(day);
      keep.add(r.id);
    }
  }
  const drop = rows.filter((r) => !keep.has(r.id));
  for (const r of drop) await rm(join(backupDir(ctx), r.filename), { force: true });
  if (drop.length) await ctx.db.update(backups).set({ status: 'deleted', deletedAt: new Date() }).where(inArray(backups.id, drop.map((r) => r.id)));
  return drop.map((r) => r.filename);
}

export async function tailLog(ctx: Ctx, lines = 100): Promise<string[]> {
  try {
    return (await readFile(join(backupDir(ctx), 'backup.log'), 'utf8')).trimEnd().split('\n').slice(-lines);
  } catch {
    return [];
  }
}
