import { systemMeta, type EventMeta } from '@aos/bus';
import { isUniqueViolation } from '@aos/db';
import { and, desc, eq, inArray, ne, type SQL } from 'drizzle-orm';
import { createHash, randomBytes } from 'node:crypto';
import { rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { backups, restores } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { appendNoFollow, createExclusive, ensureDir, fsyncPath, hashFile, openRegular } from './files.js';
import { insertLeased } from './lease.js';
import { GitOffsite } from './offsite.js';
import { redactS3, s3Delete, s3Put, type S3Settings } from './s3.js';
import { connect, countTables, pgEnv, redact, runTool, terminateSessions } from './pg.js';
import { backupFilename, FILENAME_RE, parseDatabaseUrls, resolveBackupDir, safePath } from './targets.js';

export type BackupRow = typeof backups.$inferSelect;

/** The reference API calls the log `offsite_backup.log`; it holds every backup event, not only offsite ones. */
export const LOG_FILE = 'offsite_backup.log';

/** Per-context settings derived from config once (database map, directory, offsite). */
export interface BackupEnv {
  dir: string;
  databases: Map<string, string>;
  offsite: GitOffsite | null;
  s3: S3Settings | null;
  /**
   * Short hash of this service's own database: names of scratch databases and of pg_dump
   * sessions carry it, so a start only ever cleans up what its own deployment left behind.
   */
  tag: string;
}

const envs = new WeakMap<object, BackupEnv>();

export function backupEnv(ctx: Ctx): BackupEnv {
  let env = envs.get(ctx);
  if (!env) {
    const dir = resolveBackupDir(ctx.config.BACKUP_DIR);
    const own = new URL(ctx.config.DATABASE_URL);
    env = {
      dir,
      databases: parseDatabaseUrls(ctx.config.BACKUP_DATABASE_URLS, ctx.config.DATABASE_URL),
      offsite: ctx.config.BACKUP_GIT_REMOTE ? new GitOffsite(dir, ctx.config.BACKUP_GIT_REMOTE, ctx.config.BACKUP_GIT_BRANCH) : null,
      s3: s3Settings(ctx),
      tag: createHash('sha256').update(`${own.hostname}:${own.port || '5432'}${own.pathname}`).digest('hex').slice(0, 8),
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

/** The application_name of the pg_dump session of a backup row: lets a later start stop an orphaned pg_dump. */
export const dumpSessionName = (env: BackupEnv, id: number) => `aos-backups-dump-${env.tag}-${id}`;

/** Appends one line to BACKUP_DIR/offsite_backup.log (never a URL or password). */
export async function logLine(ctx: Ctx, line: string): Promise<void> {
  const { dir } = backupEnv(ctx);
  try {
    await ensureDir(dir);
    await appendNoFollow(join(dir, LOG_FILE), `${new Date().toISOString()} ${line.replace(/[\r\n]+/g, ' ')}\n`);
  } catch (err) {
    ctx.log.warn({ err: (err as Error).message }, 'backup log write failed');
  }
}

export async function tailLog(ctx: Ctx, lines = 100): Promise<string[]> {
  const file = await openRegular(join(backupEnv(ctx).dir, LOG_FILE)).catch(() => null);
  if (!file) return [];
  const { fh, size } = file;
  try {
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

export const systemEventMeta = (): EventMeta => systemMeta(null, null);

/** Inserts the `running` row and takes its dump lease in one statement (see lease.ts). */
async function insertRunning(ctx: Ctx, database: string, trigger: string, jobId: string | null) {
  for (let i = 0; ; i++) {
    try {
      const { id, lease } = await insertLeased(ctx, 'dump', {
        text: `INSERT INTO backups (filename, database, status, trigger, job_id) VALUES ($1, $2, 'running', $3, $4) RETURNING id`,
        values: [backupFilename(database, new Date()), database, trigger, jobId],
      });
      const [row] = await ctx.db.select().from(backups).where(eq(backups.id, id));
      return { row: row!, lease };
    } catch (err) {
      // Two dumps of one database in the same millisecond: take the next millisecond.
      if (!isUniqueViolation(err) || i >= 20) throw err;
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}

/**
 * Dumps one database: counts every table and runs pg_dump in the same exported snapshot,
 * writes an owner-only temp file in BACKUP_DIR, fsyncs, hashes and renames it into place,
 * then records the result and its event in one transaction. A failure leaves no file and a
 * failed row. The row's lease is held throughout, so a crash is recognised at the next start.
 */
export async function runBackup(ctx: Ctx, database: string, trigger: string, jobId: string | null): Promise<BackupRow> {
  const env = backupEnv(ctx);
  const url = env.databases.get(database);
  if (!url) throw new Error(`unknown database ${database}`);
  await ensureDir(env.dir);
  const { row, lease } = await insertRunning(ctx, database, trigger, jobId);
  try {
    return await dump(ctx, env, row, url);
  } finally {
    await lease.release();
  }
}

async function dump(ctx: Ctx, env: BackupEnv, row: BackupRow, url: string): Promise<BackupRow> {
  const tmp = join(env.dir, `.tmp-${row.id}-${randomBytes(6).toString('hex')}.dump`);
  const final = safePath(env.dir, row.filename);
  if (!final) throw new Error('generated filename rejected');
  await logLine(ctx, `START ${row.filename} (${row.trigger})`);
  let exporter: Awaited<ReturnType<typeof connect>> | null = null;
  let renamed = false;
  try {
    await createExclusive(tmp);
    // The exporting transaction only holds the snapshot (no table locks) until pg_dump has
    // imported it. Counting happens in a second transaction on the same snapshot that commits
    // before pg_dump starts: none of our sessions holds a table lock while pg_dump waits for
    // its own, so DDL arriving meanwhile (a migration, a restore) cannot close a lock cycle
    // through this process that Postgres would never detect.
    exporter = await connect(url);
    await exporter.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const snapshot = (await exporter.query<{ s: string }>('SELECT pg_export_snapshot() AS s')).rows[0]!.s;
    const counts = await countInSnapshot(url, snapshot);
    const res = await runTool('pg_dump', ['--format=custom', '--compress=6', `--snapshot=${snapshot}`, '--no-password', `--file=${tmp}`],
      { ...pgEnv(url), PGAPPNAME: dumpSessionName(env, row.id) }, ctx.config.BACKUP_TIMEOUT_MS);
    if (res.code !== 0) throw new Error(res.stderr || `pg_dump exited with code ${res.code}`);
    await exporter.query('COMMIT');
    await fsyncPath(tmp);
    const { size, sha256 } = await hashFile(tmp);
    await rename(tmp, final);
    renamed = true;
    await fsyncPath(env.dir);
    const done = await ctx.db.transaction(async (tx) => {
      const [r] = await tx.update(backups).set({ status: 'completed', sizeBytes: size, sha256, tableCounts: counts, completedAt: new Date() })
        .where(and(eq(backups.id, row.id), eq(backups.status, 'running'))).returning();
      if (r) await ctx.outbox.enqueue(tx, 'backups.backup.completed', { backupId: row.id, filename: row.filename, database: row.database, sizeBytes: size, sha256 }, systemEventMeta());
      return r;
    });
    if (!done) throw new Error('the backup was marked interrupted while it ran');
    await logLine(ctx, `OK ${row.filename} size=${size} sha256=${sha256}`);
    return done;
  } catch (err) {
    // A pg_dump killed at BACKUP_TIMEOUT_MS leaves its server session (and its place in lock queues) until it next talks to it.
    await terminateSessions(url, dumpSessionName(env, row.id)).catch(() => 0);
    await unlink(tmp).catch(() => {});
    if (renamed) await unlink(final).catch(() => {});
    const message = redact((err as Error).message || 'backup failed', url);
    ctx.log.warn({ database: row.database, backupId: row.id, err: message }, 'backup failed');
    await logLine(ctx, `FAILED ${row.filename}: ${message}`);
    return ctx.db.transaction(async (tx) => {
      const [r] = await tx.update(backups).set({ status: 'failed', error: message, completedAt: new Date() })
        .where(and(eq(backups.id, row.id), eq(backups.status, 'running'))).returning();
      if (r) await ctx.outbox.enqueue(tx, 'backups.backup.failed', { backupId: row.id, database: row.database, error: message }, systemEventMeta());
      return r ?? (await tx.select().from(backups).where(eq(backups.id, row.id)))[0]!;
    });
  } finally {
    await exporter?.end().catch(() => {});
  }
}

/** Row counts of every table as of an exported snapshot, in a transaction that ends before returning (its locks with it). */
async function countInSnapshot(url: string, snapshot: string): Promise<Record<string, number>> {
  if (!/^[0-9A-F]+-[0-9A-F]+(-[0-9A-F]+)?$/i.test(snapshot)) throw new Error('unexpected snapshot id');
  const client = await connect(url);
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await client.query(`SET TRANSACTION SNAPSHOT '${snapshot}'`);
    const counts = await countTables(client);
    await client.query('COMMIT');
    return counts;
  } finally {
    await client.end().catch(() => {});
  }
}

/** A completed backup's file, as copied offsite. */
interface BackupFile { id: number; path: string; filename: string; sha256: string }

/** Copies a completed backup to every configured offsite target, recording each outcome on the row (never throws). */
export async function pushOffsite(ctx: Ctx, row: BackupRow): Promise<void> {
  const env = backupEnv(ctx);
  if (row.status !== 'completed' || !row.sha256) return;
  const path = safePath(env.dir, row.filename);
  if (!path) return;
  const file = { id: row.id, path, filename: row.filename, sha256: row.sha256 };
  if (env.s3) await syncS3(ctx, env.s3, file);
  if (!env.offsite) return;
  try {
    const also = await failedPushes(ctx, row.id);
    const { ref, removed } = await env.offsite.push(file, { also, prune: (onBranch) => deletedAmong(ctx, onBranch) });
    await ctx.db.update(backups).set({ offsiteStatus: 'pushed', offsiteRef: ref, offsiteError: null, offsiteAt: new Date() })
      .where(inArray(backups.id, [row.id, ...also.map((a) => a.id)]));
    const extra = [...(also.length > 0 ? [`also ${also.map((a) => a.filename).join(' ')}`] : []), ...(removed.length > 0 ? [`removed from the branch: ${removed.join(' ')}`] : [])];
    await logLine(ctx, `OFFSITE ${row.filename} git ${ref}${extra.length > 0 ? ` (${extra.join('; ')})` : ''}`);
  } catch (err) {
    // git names the remote in its errors; a token in the URL's userinfo must not be stored.
    const message = ((err as { stderr?: string }).stderr || (err as Error).message || 'push failed').replace(/\/\/[^/@\s]+@/g, '//***@').slice(0, 2_000);
    await ctx.db.update(backups).set({ offsiteStatus: 'failed', offsiteError: message, offsiteAt: new Date() }).where(eq(backups.id, row.id));
    ctx.log.warn({ backupId: row.id, err: message }, 'offsite push failed');
    await logLine(ctx, `OFFSITE FAILED ${row.filename}`);
  }
}

/**
 * Uploads the backup, and earlier ones whose upload failed, to the bucket, then deletes the
 * objects of backups deleted here (retention or by hand: `s3.status` becomes `removed`). Each
 * outcome is recorded on its row; nothing here fails the backup.
 */
async function syncS3(ctx: Ctx, s3: S3Settings, file: BackupFile): Promise<void> {
  for (const r of [file, ...await failedUploads(ctx, file.id)]) {
    try {
      const key = await s3Put(s3, r.path, r.filename, r.sha256, ctx.config.BACKUP_TIMEOUT_MS);
      await ctx.db.update(backups).set({ s3Status: 'uploaded', s3Key: key, s3Error: null, s3At: new Date() }).where(eq(backups.id, r.id));
      await logLine(ctx, `OFFSITE ${r.filename} s3 ${key}`);
    } catch (err) {
      const message = redactS3((err as Error).message || 'upload failed', s3);
      await ctx.db.update(backups).set({ s3Status: 'failed', s3Error: message, s3At: new Date() }).where(eq(backups.id, r.id));
      ctx.log.warn({ backupId: r.id, err: message }, 's3 upload failed');
      await logLine(ctx, `OFFSITE FAILED ${r.filename} s3`);
    }
  }
  const gone = await ctx.db.select().from(backups).where(and(eq(backups.status, 'deleted'), eq(backups.s3Status, 'uploaded'))).limit(100);
  for (const r of gone) {
    try {
      await s3Delete(s3, r.s3Key ?? `${s3.prefix}${r.filename}`);
      await ctx.db.update(backups).set({ s3Status: 'removed', s3Error: null, s3At: new Date() }).where(eq(backups.id, r.id));
      await logLine(ctx, `OFFSITE REMOVED ${r.filename} s3`);
    } catch (err) {
      // Stays `uploaded` with the error: the next backup tries again.
      await ctx.db.update(backups).set({ s3Error: redactS3((err as Error).message || 'delete failed', s3) }).where(eq(backups.id, r.id));
    }
  }
}

/** Completed backups still on disk (unchanged) whose upload failed: retried with the next backup. */
const failedUploads = (ctx: Ctx, exceptId: number) => unchangedBackups(ctx, and(eq(backups.s3Status, 'failed'), ne(backups.id, exceptId))!);

/** Completed backups whose git push failed: carried by the next push. */
const failedPushes = (ctx: Ctx, exceptId: number) => unchangedBackups(ctx, and(eq(backups.offsiteStatus, 'failed'), ne(backups.id, exceptId))!);

/** How many earlier failed copies (per target) go along with the next backup. */
const RETRY_PUSHES = 10;

/**
 * The newest few completed backups matching `where` whose file is still a regular file with the
 * recorded SHA-256 (a changed file is never copied offsite as that backup).
 */
async function unchangedBackups(ctx: Ctx, where: SQL): Promise<BackupFile[]> {
  const { dir } = backupEnv(ctx);
  const rows = await ctx.db.select().from(backups).where(and(eq(backups.status, 'completed'), where))
    .orderBy(desc(backups.completedAt), desc(backups.id)).limit(RETRY_PUSHES);
  const out: BackupFile[] = [];
  for (const r of rows) {
    const path = safePath(dir, r.filename);
    if (!path || !r.sha256 || (await hashFile(path).catch(() => null))?.sha256 !== r.sha256) continue;
    out.push({ id: r.id, path, filename: r.filename, sha256: r.sha256 });
  }
  return out;
}

/**
 * The files among `filenames` whose backups were deleted here (by retention or by hand): the
 * offsite branch drops them from its tree at the next push. Files this service never recorded
 * (another deployment's, say) are left alone.
 */
async function deletedAmong(ctx: Ctx, filenames: string[]): Promise<string[]> {
  const ours = filenames.filter((f) => FILENAME_RE.test(f));
  if (ours.length === 0) return [];
  const rows = await ctx.db.select({ filename: backups.filename }).from(backups)
    .where(and(eq(backups.status, 'deleted'), inArray(backups.filename, ours)));
  return rows.map((r) => r.filename);
}

/** Removes a backup's file and marks the row deleted. */
export async function deleteBackup(ctx: Ctx, row: BackupRow, reason: string): Promise<void> {
  // Row first: a crash in between leaves an unlisted file (removed by the next recovery), never a listed backup without its file.
  await ctx.db.update(backups).set({ status: 'deleted', deletedAt: new Date(), deletedReason: reason })
    .where(and(eq(backups.id, row.id), eq(backups.status, 'completed')));
  await removeDumpFile(ctx, row.filename);
  await logLine(ctx, `DELETED ${row.filename} (${reason})`);
}

/** unlink never follows a symlink: a link planted under a recorded name is removed, not its target. */
export async function removeDumpFile(ctx: Ctx, filename: string): Promise<boolean> {
  const path = safePath(backupEnv(ctx).dir, filename);
  if (!path) return false;
  return unlink(path).then(() => true, (err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return false;
    throw err;
  });
}

/**
 * Keeps, per database, the newest BACKUP_KEEP_LAST completed backups plus the newest one of
 * each of the last BACKUP_KEEP_DAILY_DAYS UTC days, and any backup a restore is queued or running
 * for; deletes the rest. Returns deleted filenames.
 */
export async function applyRetention(ctx: Ctx, database: string, now = new Date()): Promise<string[]> {
  const rows = await ctx.db.select().from(backups)
    .where(and(eq(backups.database, database), eq(backups.status, 'completed')))
    .orderBy(desc(backups.completedAt), desc(backups.id));
  const keep = new Set<number>(rows.slice(0, ctx.config.BACKUP_KEEP_LAST).map((r) => r.id));
  // A backup that is being restored stays until the restore has finished.
  const restoring = await ctx.db.select({ id: restores.backupId }).from(restores)
    .where(and(eq(restores.database, database), inArray(restores.status, ['queued', 'running'])));
  for (const r of restoring) keep.add(r.id);
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

