import { systemMeta, type EventMeta } from '@aos/bus';
import { isUniqueViolation } from '@aos/db';
import { and, desc, eq, lt } from 'drizzle-orm';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { appendFile, mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { backups } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { GitOffsite } from './offsite.js';
import { s3Put, type S3Settings } from './s3.js';
import { connect, countDatabase, countTables, onServer, pgEnv, quoteIdent, redact, runTool, withDatabase } from './pg.js';
import { backupFilename, parseDatabaseUrls, resolveBackupDir, safePath } from './targets.js';

export type BackupRow = typeof backups.$inferSelect;

/** The reference API calls the log `offsite_backup.log`; it holds every backup event, not only offsite ones. */
export const LOG_FILE = 'offsite_backup.log';

/** Per-context settings derived from config once (database map, directory, offsite). */
export interface BackupEnv {
  dir: string;
  databases: Map<string, string>;
  offsite: GitOffsite | null;
  s3: S3Settings | null;
}

const envs = new WeakMap<object, BackupEnv>();

export function backupEnv(ctx: Ctx): BackupEnv {
  let env = envs.get(ctx);
  if (!env) {
    const dir = resolveBackupDir(ctx.config.BACKUP_DIR);
    env = {
      dir,
      databases: parseDatabaseUrls(ctx.config.BACKUP_DATABASE_URLS, ctx.config.DATABASE_URL),
      offsite: ctx.config.BACKUP_GIT_REMOTE ? new GitOffsite(dir, ctx.config.BACKUP_GIT_REMOTE, ctx.config.BACKUP_GIT_BRANCH) : null,
      s3: s3Settings(ctx),
    };
    envs.set(ctx, env);
  }
  return env;
}

function s3Settings(ctx: Ctx): S3Settings | null {
  const c = ctx.config;
  const parts = [c.BACKUP_S3_ENDPOINT, c.BACKUP_S3_BUCKET, c.BACKUP_S3_ACCESS_KEY_ID, c.BACKUP_S3_SECRET_ACCESS_KEY];
  if (parts.every((p) => !p)) return null;
  if (parts.some((p) => !p)) {
    throw new Error('BACKUP_S3_ENDPOINT, BACKUP_S3_BUCKET, BACKUP_S3_ACCESS_KEY_ID and BACKUP_S3_SECRET_ACCESS_KEY must be set together');
  }
  return {
    endpoint: c.BACKUP_S3_ENDPOINT!, bucket: c.BACKUP_S3_BUCKET!, region: c.BACKUP_S3_REGION,
    accessKeyId: c.BACKUP_S3_ACCESS_KEY_ID!, secretAccessKey: c.BACKUP_S3_SECRET_ACCESS_KEY!, prefix: c.BACKUP_S3_PREFIX,
  };
}

/** Appends one line to BACKUP_DIR/backup.log (never a URL or password). */
export async function logLine(ctx: Ctx, line: string): Promise<void> {
  const { dir } = backupEnv(ctx);
  await mkdir(dir, { recursive: true });
  await appendFile(join(dir, LOG_FILE), `${new Date().toISOString()} ${line.replace(/[\r\n]+/g, ' ')}\n`).catch((err: Error) => {
    ctx.log.warn({ err: err.message }, 'backup log write failed');
  });
}

export async function tailLog(ctx: Ctx, lines = 100): Promise<string[]> {
  const file = join(backupEnv(ctx).dir, LOG_FILE);
  const fh = await open(file, 'r').catch(() => null);
  if (!fh) return [];
  try {
    const { size } = await fh.stat();
    const want = Math.min(size, 256 * 1024);
    const buf = Buffer.alloc(want);
    await fh.read(buf, 0, want, size - want);
    const all = buf.toString('utf8').split('\n').filter((l) => l.length > 0);
    if (want < size) all.shift(); // first line may be cut
    return all.slice(-lines);
  } finally {
    await fh.close();
  }
}

export async function hashFile(path: string): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { size, sha256: hash.digest('hex') };
}

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

const meta = (): EventMeta => systemMeta(null, null);

async function insertRunning(ctx: Ctx, database: string, trigger: string, jobId: string | null): Promise<BackupRow> {
  for (let i = 0; ; i++) {
    try {
      const [row] = await ctx.db.insert(backups).values({
        filename: backupFilename(database, new Date()), database, status: 'running', trigger, jobId,
      }).returning();
      return row!;
    } catch (err) {
      // Two dumps of one database in the same millisecond: take the next millisecond.
      if (!isUniqueViolation(err) || i >= 20) throw err;
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}

/**
 * Dumps one database: counts every table and runs pg_dump in the same exported snapshot,
 * writes a temp file in BACKUP_DIR, fsyncs, hashes and renames it into place, then records
 * the result and its event in one transaction. A failure leaves no file and a failed row.
 */
export async function runBackup(ctx: Ctx, database: string, trigger: string, jobId: string | null): Promise<BackupRow> {
  const env = backupEnv(ctx);
  const url = env.databases.get(database);
  if (!url) throw new Error(`unknown database ${database}`);
  await mkdir(env.dir, { recursive: true });
  const row = await insertRunning(ctx, database, trigger, jobId);
  const tmp = join(env.dir, `.tmp-${row.id}-${randomBytes(6).toString('hex')}.dump`);
  const final = safePath(env.dir, row.filename);
  if (!final) throw new Error('generated filename rejected');
  await logLine(ctx, `START ${row.filename} (${trigger})`);
  let client: Awaited<ReturnType<typeof connect>> | null = null;
  try {
    client = await connect(url);
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const snapshot = (await client.query<{ s: string }>('SELECT pg_export_snapshot() AS s')).rows[0]!.s;
    const counts = await countTables(client);
    const res = await runTool('pg_dump', ['--format=custom', '--compress=6', `--snapshot=${snapshot}`, '--no-password', `--file=${tmp}`],
      pgEnv(url), ctx.config.BACKUP_TIMEOUT_MS);
    if (res.code !== 0) throw new Error(res.stderr || `pg_dump exited with code ${res.code}`);
    await client.query('COMMIT');
    await fsyncPath(tmp);
    const { size, sha256 } = await hashFile(tmp);
    await rename(tmp, final);
    await fsyncPath(env.dir);
    const done = await ctx.db.transaction(async (tx) => {
      const [r] = await tx.update(backups).set({ status: 'completed', sizeBytes: size, sha256, tableCounts: counts, completedAt: new Date() })
        .where(eq(backups.id, row.id)).returning();
      await ctx.outbox.enqueue(tx, 'backups.backup.completed', { backupId: row.id, filename: row.filename, database, sizeBytes: size, sha256 }, meta());
      return r!;
    });
    await logLine(ctx, `OK ${row.filename} size=${size} sha256=${sha256}`);
    return done;
  } catch (err) {
    await unlink(tmp).catch(() => {});
    const message = redact((err as Error).message || 'backup failed', url);
    ctx.log.warn({ database, backupId: row.id, err: message }, 'backup failed');
    await logLine(ctx, `FAILED ${row.filename}: ${message}`);
    return ctx.db.transaction(async (tx) => {
      const [r] = await tx.update(backups).set({ status: 'failed', error: message, completedAt: new Date() }).where(eq(backups.id, row.id)).returning();
      await ctx.outbox.enqueue(tx, 'backups.backup.failed', { backupId: row.id, database, error: message }, meta());
      return r!;
    });
  } finally {
    await client?.end().catch(() => {});
  }
}

/** Copies a completed backup to every configured offsite target, recording each outcome on the row (never throws). */
export async function pushOffsite(ctx: Ctx, row: BackupRow): Promise<void> {
  const env = backupEnv(ctx);
  if (row.status !== 'completed' || !row.sha256) return;
  const path = safePath(env.dir, row.filename);
  if (!path) return;
  if (env.s3) {
    try {
      const key = await s3Put(env.s3, path, row.filename, row.sha256, ctx.config.BACKUP_TIMEOUT_MS);
      await ctx.db.update(backups).set({ s3Status: 'uploaded', s3Key: key, s3Error: null, s3At: new Date() }).where(eq(backups.id, row.id));
      await logLine(ctx, `OFFSITE ${row.filename} s3 ${key}`);
    } catch (err) {
      const message = ((err as Error).message || 'upload failed').split(env.s3.secretAccessKey).join('***').slice(0, 2_000);
      await ctx.db.update(backups).set({ s3Status: 'failed', s3Error: message, s3At: new Date() }).where(eq(backups.id, row.id));
      ctx.log.warn({ backupId: row.id, err: message }, 's3 upload failed');
      await logLine(ctx, `OFFSITE FAILED ${row.filename} s3`);
    }
  }
  if (!env.offsite) return;
  try {
    const ref = await env.offsite.push(path, row.filename, row.sha256);
    await ctx.db.update(backups).set({ offsiteStatus: 'pushed', offsiteRef: ref, offsiteError: null, offsiteAt: new Date() }).where(eq(backups.id, row.id));
    await logLine(ctx, `OFFSITE ${row.filename} git ${ref}`);
  } catch (err) {
    // git names the remote in its errors; a token in the URL's userinfo must not be stored.
    const message = ((err as { stderr?: string }).stderr || (err as Error).message || 'push failed').replace(/\/\/[^/@\s]+@/g, '//***@').slice(0, 2_000);
    await ctx.db.update(backups).set({ offsiteStatus: 'failed', offsiteError: message, offsiteAt: new Date() }).where(eq(backups.id, row.id));
    ctx.log.warn({ backupId: row.id, err: message }, 'offsite push failed');
    await logLine(ctx, `OFFSITE FAILED ${row.filename}`);
  }
}

/** Removes a backup's file and marks the row deleted. */
export async function deleteBackup(ctx: Ctx, row: BackupRow, reason: string): Promise<void> {
  const path = safePath(backupEnv(ctx).dir, row.filename);
  if (path) await unlink(path).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err; });
  await ctx.db.update(backups).set({ status: 'deleted', deletedAt: new Date(), deletedReason: reason })
    .where(and(eq(backups.id, row.id), eq(backups.status, 'completed')));
  await logLine(ctx, `DELETED ${row.filename} (${reason})`);
}

/**
 * Keeps, per database, the newest BACKUP_KEEP_LAST completed backups plus the newest one of
 * each of the last BACKUP_KEEP_DAILY_DAYS UTC days; deletes the rest. Returns deleted filenames.
 */
export async function applyRetention(ctx: Ctx, database: string, now = new Date()): Promise<string[]> {
  const rows = await ctx.db.select().from(backups)
    .where(and(eq(backups.database, database), eq(backups.status, 'completed')))
    .orderBy(desc(backups.completedAt), desc(backups.id));
  const keep = new Set<number>(rows.slice(0, ctx.config.BACKUP_KEEP_LAST).map((r) => r.id));
  const days = ctx.config.BACKUP_KEEP_DAILY_DAYS;
  if (days > 0) {
    const cutoff = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()) - (days - 1) * 86_400_000;
    const seenDays = new Set<string>();
    for (const r of rows) {
      const at = r.completedAt ?? r.createdAt;
      if (at.getTime() < cutoff) continue;
      const day = at.toISOString().slice(0, 10);
      if (!seenDays.has(day)) {
        seenDays.add(day);
        keep.add(r.id);
      }
    }
  }
  const removed: string[] = [];
  for (const r of rows) {
    if (keep.has(r.id)) continue;
    await deleteBackup(ctx, r, 'retention');
    removed.push(r.filename);
  }
  return removed;
}

/** Restores a dump into the scratch database, compares row counts with the recorded ones, drops the scratch. */
export async function verifyBackup(ctx: Ctx, row: BackupRow): Promise<BackupRow> {
  const env = backupEnv(ctx);
  const path = safePath(env.dir, row.filename);
  const url = env.databases.get(row.database) ?? ctx.config.DATABASE_URL;
  const scratch = `aos_verify_${row.id}_${randomBytes(4).toString('hex')}`;
  const scratchUrl = withDatabase(url, scratch);
  let ok = false;
  const details: NonNullable<BackupRow['verifyDetails']> = { scratchDatabase: scratch, tables: [] };
  await ctx.db.update(backups).set({ verifyStatus: 'running', verifyDetails: details, verifiedAt: new Date() }).where(eq(backups.id, row.id));
  try {
    if (!path) throw new Error('file missing');
    await stat(path);
    await onServer(url, (c) => c.query(`CREATE DATABASE ${quoteIdent(scratch)}`));
    const res = await runTool('pg_restore', ['--no-owner', '--no-privileges', '--exit-on-error', '--no-password', `--dbname=${scratch}`, path],
      pgEnv(scratchUrl), ctx.config.BACKUP_TIMEOUT_MS);
    if (res.code !== 0) throw new Error(res.stderr || `pg_restore exited with code ${res.code}`);
    const actual = await countDatabase(scratchUrl);
    const expected = row.tableCounts ?? {};
    const names = [...new Set([...Object.keys(expected), ...Object.keys(actual)])].sort();
    details.tables = names.map((t) => ({ table: t, expected: expected[t] ?? null, actual: actual[t] ?? null, ok: expected[t] === actual[t] }));
    ok = row.tableCounts !== null && details.tables.every((t) => t.ok);
  } catch (err) {
    details.error = redact((err as Error).message || 'verify failed', url);
  } finally {
    await onServer(url, (c) => c.query(`DROP DATABASE IF EXISTS ${quoteIdent(scratch)} WITH (FORCE)`)).catch((err: Error) => {
      ctx.log.warn({ err: err.message, scratch }, 'scratch database drop failed');
    });
  }
  const status = details.error ? 'error' : ok ? 'ok' : 'mismatch';
  await logLine(ctx, `VERIFY ${row.filename} ${status}`);
  return ctx.db.transaction(async (tx) => {
    const [r] = await tx.update(backups).set({ verifyStatus: status, verifyDetails: details, verifiedAt: new Date() }).where(eq(backups.id, row.id)).returning();
    await ctx.outbox.enqueue(tx, 'backups.backup.verified', { backupId: row.id, filename: row.filename, ok: status === 'ok' }, meta());
    return r!;
  });
}

/** Restores a dump over its service database (clean + recreate objects, one transaction). */
export async function restoreBackup(ctx: Ctx, row: BackupRow, metaOf: EventMeta): Promise<BackupRow> {
  const env = backupEnv(ctx);
  const url = env.databases.get(row.database);
  const path = safePath(env.dir, row.filename);
  if (!url || !path) throw new Error('not restorable');
  // One restore per database at a time, across replicas (session advisory lock on our own database).
  const lock = await ctx.pool.connect();
  try {
    const got = await lock.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock(hashtext('aos-backups-restore'), hashtext($1)) AS ok`, [row.database]);
    if (!got.rows[0]?.ok) throw new RestoreBusyError(`A restore of ${row.database} is already running`);
    try {
      return await restoreLocked(ctx, row, url, path, metaOf);
    } finally {
      await lock.query(`SELECT pg_advisory_unlock(hashtext('aos-backups-restore'), hashtext($1))`, [row.database]).catch(() => {});
    }
  } finally {
    lock.release();
  }
}

async function restoreLocked(ctx: Ctx, row: BackupRow, url: string, path: string, metaOf: EventMeta): Promise<BackupRow> {
  await logLine(ctx, `RESTORE START ${row.filename}`);
  const res = await runTool('pg_restore', ['--clean', '--if-exists', '--no-owner', '--no-privileges', '--single-transaction', '--exit-on-error', '--no-password',
    `--dbname=${new URL(url).pathname.slice(1)}`, path], pgEnv(url), ctx.config.BACKUP_TIMEOUT_MS);
  if (res.code !== 0) {
    const message = redact(res.stderr || `pg_restore exited with code ${res.code}`, url);
    await logLine(ctx, `RESTORE FAILED ${row.filename}: ${message}`);
    throw new RestoreError(message);
  }
  await logLine(ctx, `RESTORE OK ${row.filename}`);
  return ctx.db.transaction(async (tx) => {
    const [r] = await tx.update(backups).set({ restoredAt: new Date() }).where(eq(backups.id, row.id)).returning();
    await ctx.outbox.enqueue(tx, 'backups.backup.restored', { backupId: row.id, filename: row.filename, database: row.database }, metaOf);
    return r!;
  });
}

export class RestoreError extends Error {}
export class RestoreBusyError extends Error {}


/**
 * After a crash: rows still `running` longer than the dump timeout become failed (with their
 * event), and temp files that old are removed. Younger ones may belong to another replica.
 */
export async function recoverInterrupted(ctx: Ctx, now = Date.now()): Promise<number> {
  const cutoff = new Date(now - ctx.config.BACKUP_TIMEOUT_MS - 60_000);
  const stale = await ctx.db.select().from(backups).where(and(eq(backups.status, 'running'), lt(backups.startedAt, cutoff)));
  for (const row of stale) {
    await ctx.db.transaction(async (tx) => {
      const [r] = await tx.update(backups).set({ status: 'failed', error: 'interrupted (process stopped during the dump)', completedAt: new Date() })
        .where(and(eq(backups.id, row.id), eq(backups.status, 'running'))).returning();
      if (r) await ctx.outbox.enqueue(tx, 'backups.backup.failed', { backupId: row.id, database: row.database, error: r.error! }, meta());
    });
    await logLine(ctx, `FAILED ${row.filename}: interrupted`);
  }
  const { dir } = backupEnv(ctx);
  for (const f of await readdir(dir).catch(() => [] as string[])) {
    if (!/^\.tmp-\d+-[0-9a-f]+\.dump$/.test(f)) continue;
    const st = await stat(join(dir, f)).catch(() => null);
    if (st && st.mtimeMs < cutoff.getTime()) await unlink(join(dir, f)).catch(() => {});
  }
  return stale.length;
}
