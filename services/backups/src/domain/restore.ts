import { eq } from 'drizzle-orm';
import { randomBytes } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { backups } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { backupEnv, logLine, systemEventMeta, type BackupEnv, type BackupRow } from './backup.js';
import { hashHandle, openBackupFile } from './files.js';
import { tryLease, type Lease } from './lease.js';
import { connect, countDatabase, onServer, pgEnv, quoteIdent, redact, runTool, terminateSessions, withDatabase } from './pg.js';

export class BusyError extends Error {}
export class RestoreError extends Error {}

/** Scratch databases of this deployment: `aos_verify_<tag>_<backup id>_<random>`. */
export const scratchPrefix = (env: BackupEnv) => `aos_verify_${env.tag}_`;

/**
 * Opens the recorded file without following links and checks it still has the recorded
 * SHA-256; pg_restore then reads this very descriptor (its stdin), never the path again.
 */
async function openVerified(env: BackupEnv, row: BackupRow): Promise<FileHandle> {
  const { fh } = await openBackupFile(env.dir, row.filename);
  try {
    const { sha256 } = await hashHandle(fh);
    if (row.sha256 && sha256 !== row.sha256) throw new ChecksumError(`checksum mismatch: the file's SHA-256 is ${sha256}, ${row.sha256} was recorded`);
    return fh;
  } catch (err) {
    await fh.close();
    throw err;
  }
}

export class ChecksumError extends Error {}

/**
 * Starts a verification: takes the backup's verify lease (another running verification of the
 * same backup → BusyError) and marks it running; `done` settles with the result.
 */
export async function startVerify(ctx: Ctx, row: BackupRow): Promise<{ done: Promise<BackupRow> }> {
  const lease = await tryLease(ctx, 'verify', row.id);
  if (!lease) throw new BusyError(`A verification of ${row.filename} is already running`);
  try {
    const env = backupEnv(ctx);
    const scratch = `${scratchPrefix(env)}${row.id}_${randomBytes(4).toString('hex')}`;
    await ctx.db.update(backups).set({ verifyStatus: 'running', verifyDetails: { scratchDatabase: scratch, tables: [] }, verifiedAt: new Date() })
      .where(eq(backups.id, row.id));
    return { done: verify(ctx, env, row, scratch, lease) };
  } catch (err) {
    await lease.release();
    throw err;
  }
}

/** Restores the dump into the scratch database, compares row counts with the recorded ones, drops the scratch. */
async function verify(ctx: Ctx, env: BackupEnv, row: BackupRow, scratch: string, lease: Lease): Promise<BackupRow> {
  const url = env.databases.get(row.database) ?? ctx.config.DATABASE_URL;
  const scratchUrl = withDatabase(url, scratch);
  let ok = false;
  const details: NonNullable<BackupRow['verifyDetails']> = { scratchDatabase: scratch, tables: [] };
  let fh: FileHandle | null = null;
  try {
    try {
      fh = await openVerified(env, row);
      details.checksumOk = true;
      await onServer(url, (c) => c.query(`CREATE DATABASE ${quoteIdent(scratch)}`));
      const res = await runTool('pg_restore', ['--no-owner', '--no-privileges', '--exit-on-error', '--no-password', `--dbname=${scratch}`],
        pgEnv(scratchUrl), ctx.config.BACKUP_TIMEOUT_MS, fh.fd);
      if (res.code !== 0) throw new Error(res.stderr || `pg_restore exited with code ${res.code}`);
      const actual = await countDatabase(scratchUrl);
      const expected = row.tableCounts ?? {};
      const names = [...new Set([...Object.keys(expected), ...Object.keys(actual)])].sort();
      details.tables = names.map((t) => ({ table: t, expected: expected[t] ?? null, actual: actual[t] ?? null, ok: expected[t] === actual[t] }));
      ok = row.tableCounts !== null && details.tables.every((t) => t.ok);
    } catch (err) {
      if (err instanceof ChecksumError) details.checksumOk = false;
      details.error = redact((err as Error).message || 'verify failed', url);
    } finally {
      await fh?.close().catch(() => {});
      await onServer(url, (c) => c.query(`DROP DATABASE IF EXISTS ${quoteIdent(scratch)} WITH (FORCE)`)).catch((err: Error) => {
        ctx.log.warn({ err: redact(err.message, url), scratch }, 'scratch database drop failed');
      });
    }
    const status = details.error ? 'error' : ok ? 'ok' : 'mismatch';
    await logLine(ctx, `VERIFY ${row.filename} ${status}`);
    return await ctx.db.transaction(async (tx) => {
      const [r] = await tx.update(backups).set({ verifyStatus: status, verifyDetails: details, verifiedAt: new Date() }).where(eq(backups.id, row.id)).returning();
      await ctx.outbox.enqueue(tx, 'backups.backup.verified', { backupId: row.id, filename: row.filename, ok: status === 'ok' }, systemEventMeta());
      return r!;
    });
  } finally {
    await lease.release();
  }
}

export class TargetError extends Error {}

/**
 * The URL a backup of `database` is restored over: it must still be configured and must not
 * be this service's own database (restoring that would pull the records out from under the restore).
 */
export function restoreTarget(ctx: Ctx, database: string): string {
  const url = backupEnv(ctx).databases.get(database);
  if (!url) throw new TargetError(`Database ${database} is no longer configured for backups`);
  const own = new URL(ctx.config.DATABASE_URL);
  const target = new URL(url);
  if (own.hostname === target.hostname && (own.port || '5432') === (target.port || '5432') && own.pathname === target.pathname) {
    throw new TargetError('The backups service cannot restore its own database while running; use pg_restore offline');
  }
  return url;
}

/** The application_name of a restore's pg_restore session: the watchdog and a later recovery find it by this name. */
export const restoreSessionName = (env: BackupEnv, restoreId: number) => `aos-backups-restore-${env.tag}-${restoreId}`;

export interface RestoreHooks {
  /** application_name of the pg_restore session. */
  session: string;
  /** pg_restore is about to start (the checksum matched). */
  started(): Promise<void>;
  /** The restore transaction got its id (epoch-qualified, as text): it has begun to write. */
  wrote(xid: string): Promise<void>;
}

/**
 * Restores a dump over the database at `url`: clean + recreate every object in one transaction,
 * so a failure leaves the database as it was. One restore per database at a time across
 * replicas (BusyError); a changed file is refused before anything is touched (RestoreError).
 */
export async function restoreDatabase(ctx: Ctx, row: BackupRow, url: string, hooks: RestoreHooks): Promise<void> {
  const env = backupEnv(ctx);
  // A session advisory lock on our own database, held for the whole pg_restore.
  const lock = await ctx.pool.connect();
  try {
    const got = await lock.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock(hashtext('aos-backups-restore'), hashtext($1)) AS ok`, [row.database]);
    if (!got.rows[0]?.ok) throw new BusyError(`A restore of ${row.database} is already running`);
    try {
      await restoreLocked(ctx, env, row, url, hooks);
    } finally {
      await lock.query(`SELECT pg_advisory_unlock(hashtext('aos-backups-restore'), hashtext($1))`, [row.database]).catch(() => {});
    }
  } finally {
    lock.release();
  }
}

async function restoreLocked(ctx: Ctx, env: BackupEnv, row: BackupRow, url: string, hooks: RestoreHooks): Promise<void> {
  await logLine(ctx, `RESTORE START ${row.filename}`);
  let fh: FileHandle;
  try {
    fh = await openVerified(env, row);
  } catch (err) {
    throw err instanceof ChecksumError ? new RestoreError(`${err.message}; nothing was restored`) : err;
  }
  try {
    await hooks.started();
    const watchdog = watchRestore(url, hooks.session, ctx.config.BACKUP_RESTORE_LOCK_TIMEOUT_MS, hooks.wrote);
    try {
      const res = await runTool('pg_restore', ['--clean', '--if-exists', '--no-owner', '--no-privileges', '--single-transaction', '--exit-on-error', '--no-password',
        `--dbname=${new URL(url).pathname.slice(1)}`], { ...pgEnv(url), PGAPPNAME: hooks.session }, ctx.config.BACKUP_TIMEOUT_MS, fh.fd);
      if (res.code !== 0) {
        await watchdog.stop(); // a cancel in flight is counted before deciding what failed
        // pg_restore killed at BACKUP_TIMEOUT_MS leaves its server session running until it next talks to it: end it (and its locks) now.
        await terminateSessions(url, hooks.session).catch(() => 0);
        const message = watchdog.fired()
          ? `lock timeout: waited more than ${ctx.config.BACKUP_RESTORE_LOCK_TIMEOUT_MS} ms for a lock held by another session of ${row.database}; rolled back, the database is unchanged`
          : `${redact(res.stderr || `pg_restore exited with code ${res.code}`, url)}; rolled back, the database is unchanged`;
        throw new RestoreError(message);
      }
    } finally {
      await watchdog.stop();
    }
  } finally {
    await fh.close().catch(() => {});
  }
}

/**
 * Watches the restore session: reports its transaction id once it has one (a later recovery
 * asks the server whether that transaction committed), and cancels the session once it has
 * waited for a single lock longer than `ms` (its single transaction then rolls back). A
 * lock_timeout setting cannot do this: every pg_dump archive starts with `SET lock_timeout = 0`.
 */
function watchRestore(url: string, applicationName: string, ms: number, wrote: (xid: string) => Promise<void>): { fired(): boolean; stop(): Promise<void> } {
  let fired = false;
  let stopped = false;
  let xidSeen = false;
  const loop = (async () => {
    const client = await connect(url).catch(() => null);
    if (!client) return;
    try {
      while (!stopped && !fired) {
        if (!xidSeen) {
          // backend_xid is 32 bits; the epoch comes from the current snapshot (the xid is recent, so it is the same epoch or the one before).
          const { rows } = await client.query<{ xid: string | null; xmax: string }>(
            `SELECT a.backend_xid::text AS xid, pg_snapshot_xmax(pg_current_snapshot())::text AS xmax FROM pg_stat_activity a WHERE a.application_name = $1`,
            [applicationName]);
          const xid = rows.find((r) => r.xid)?.xid;
          if (xid) {
            xidSeen = true;
            await wrote(fullXid(BigInt(xid), BigInt(rows[0]!.xmax))).catch(() => {});
          }
        }
        const { rows } = await client.query<{ cancelled: boolean }>(
          `SELECT pg_cancel_backend(a.pid) AS cancelled FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
           WHERE a.application_name = $1 AND NOT l.granted AND l.waitstart < now() - make_interval(secs => $2::float8 / 1000)`,
          [applicationName, ms]);
        if (rows.some((r) => r.cancelled)) fired = true;
        else await new Promise((r) => setTimeout(r, Math.min(250, Math.max(50, ms / 4))));
      }
    } catch {
      // best effort: without the watchdog the restore still ends at BACKUP_TIMEOUT_MS
    } finally {
      await client.end().catch(() => {});
    }
  })();
  return {
    fired: () => fired,
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}

/**
 * The epoch-qualified (xid8) form of a recent 32-bit transaction id, next to `xmax` (a snapshot's
 * first unassigned xid8): the nearest value with those low 32 bits. The xid may be a little
 * ahead of xmax (assigned after the snapshot was taken) or behind it, across an epoch boundary too.
 */
export function fullXid(xid32: bigint, xmax: bigint): string {
  let behind = (xmax - xid32) & 0xffffffffn;
  if (behind >= 1n << 31n) behind -= 1n << 32n;
  return (xmax - behind).toString();
}
