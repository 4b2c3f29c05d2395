import type { EventMeta } from '@aos/bus';
import { Queues } from '@aos/contracts';
import { isUniqueViolation } from '@aos/db';
import { and, desc, eq, inArray } from 'drizzle-orm';
import { createHash } from 'node:crypto';
import { backups, restores } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { backupEnv, logLine, type BackupRow } from './backup.js';
import { hashHandleWithin, MissingFileError, openBackupFile } from './files.js';
import { ifAbandoned, insertLeased, waitLease } from './lease.js';
import { connect, redact, terminateSessions } from './pg.js';
import { BusyError, restoreDatabase, RestoreError, restoreSessionName, restoreTarget, TargetError } from './restore.js';

/**
 * Restores run as jobs: the request records a `queued` row and enqueues `restore-<id>` on the
 * `backup-restores` queue; the worker holds the row's `restore` lease while it runs, so a crash
 * is seen at once by the next recovery (the lease is free) and settled from what the server knows.
 */
export type RestoreRow = typeof restores.$inferSelect;
export type RestoreStatus = 'queued' | 'running' | 'succeeded' | 'failed';
export const ACTIVE: RestoreStatus[] = ['queued', 'running'];

export interface RestoreJob { restoreId: number }

export const restoreJobId = (id: number) => `restore-${id}`;
export const hashIdempotencyKey = (key: string) => createHash('sha256').update(key).digest('hex');

/** Another restore of the database is queued or running. */
export class ActiveRestoreError extends Error {
  constructor(readonly active: RestoreRow | null, database: string) {
    super(`A restore of ${database} is already ${active?.status ?? 'queued or running'}${active ? ` (restore ${active.id})` : ''}`);
  }
}
export class QueueUnavailableError extends Error {}

export async function restoreByKey(ctx: Ctx, keyHash: string): Promise<RestoreRow | null> {
  const [r] = await ctx.db.select().from(restores).where(eq(restores.idempotencyKey, keyHash));
  return r ?? null;
}

export async function activeRestore(ctx: Ctx, where: { database: string } | { backupId: number }): Promise<RestoreRow | null> {
  const match = 'database' in where ? eq(restores.database, where.database) : eq(restores.backupId, where.backupId);
  const [r] = await ctx.db.select().from(restores).where(and(match, inArray(restores.status, ACTIVE))).orderBy(desc(restores.id)).limit(1);
  return r ?? null;
}

/**
 * What the request checks before queueing: the file opens as a regular file, has the recorded
 * size and — when hashing finishes within BACKUP_RESTORE_CHECK_WAIT_MS — the recorded SHA-256
 * (RestoreError). A larger file is hashed by the job, on the descriptor pg_restore then reads.
 * Returns whether the SHA-256 was checked here.
 */
export async function checkBeforeRestore(ctx: Ctx, row: BackupRow): Promise<boolean> {
  const { fh, size } = await openBackupFile(backupEnv(ctx).dir, row.filename);
  try {
    if (row.sizeBytes !== null && size !== row.sizeBytes) {
      throw new RestoreError(`size mismatch: the file has ${size} bytes, ${row.sizeBytes} were recorded; nothing was restored`);
    }
    const hashed = await hashHandleWithin(fh, ctx.config.BACKUP_RESTORE_CHECK_WAIT_MS);
    if (hashed && row.sha256 && hashed.sha256 !== row.sha256) {
      throw new RestoreError(`checksum mismatch: the file's SHA-256 is ${hashed.sha256}, ${row.sha256} was recorded; nothing was restored`);
    }
    return hashed !== null;
  } finally {
    await fh.close().catch(() => {});
  }
}

/**
 * Records a queued restore and enqueues its job. The row's lease is held from the insert until
 * the job is enqueued, so a recovery never mistakes a request in progress for a lost job. A
 * concurrent request with the same Idempotency-Key returns `{ replay }` (the first one's row).
 */
export async function queueRestore(ctx: Ctx, row: BackupRow, meta: EventMeta, keyHash: string | null): Promise<{ restore: RestoreRow; replay: boolean }> {
  let inserted: Awaited<ReturnType<typeof insertLeased>>;
  try {
    inserted = await insertLeased(ctx, 'restore', {
      text: `INSERT INTO backup_restores (backup_id, filename, database, status, idempotency_key, requested_by) VALUES ($1, $2, $3, 'queued', $4, $5) RETURNING id`,
      values: [row.id, row.filename, row.database, keyHash, JSON.stringify(meta)],
    });
  } catch (err) {
    if (!isUniqueViolation(err)) throw err;
    // The same key raced us (it may have tripped the one-per-database index first): answer its row.
    const first = keyHash ? await restoreByKey(ctx, keyHash) : null;
    if (first) return { restore: first, replay: true };
    throw new ActiveRestoreError(await activeRestore(ctx, { database: row.database }), row.database);
  }
  const { id, lease } = inserted;
  try {
    try {
      await ctx.queues.add<RestoreJob>(Queues.backupRestores, 'restore', { restoreId: id }, { jobId: restoreJobId(id), attempts: 1 });
    } catch {
      await finishRestore(ctx, id, 'failed', 'the job queue was unavailable; nothing was restored');
      throw new QueueUnavailableError('The job queue is unavailable; try again');
    }
    const [restore] = await ctx.db.select().from(restores).where(eq(restores.id, id));
    await logLine(ctx, `RESTORE QUEUED ${row.filename} (restore ${id})`);
    return { restore: restore!, replay: false };
  } finally {
    await lease.release();
  }
}

/** Lease wait of a job: the request that queued it lets go right after enqueueing. */
const LEASE_WAIT_MS = 30_000;

/**
 * The job: runs a queued restore under its lease and settles the row with its event. Returns
 * null when there was nothing to do (another live process holds the lease, or the row is no
 * longer queued — e.g. a stalled job re-run after a crash the recovery already settled).
 */
export async function runRestore(ctx: Ctx, restoreId: number): Promise<RestoreRow | null> {
  const lease = await waitLease(ctx, 'restore', restoreId, LEASE_WAIT_MS);
  if (!lease) return null;
  try {
    const [rec] = await ctx.db.update(restores).set({ status: 'running', startedAt: new Date() })
      .where(and(eq(restores.id, restoreId), eq(restores.status, 'queued'))).returning();
    if (!rec) return null;
    let url: string | undefined;
    try {
      const [backup] = await ctx.db.select().from(backups).where(eq(backups.id, rec.backupId));
      if (backup?.status !== 'completed') throw new RestoreError('the backup was deleted before the restore started; nothing was restored');
      url = restoreTarget(ctx, rec.database);
      await restoreDatabase(ctx, backup, url, {
        session: restoreSessionName(backupEnv(ctx), rec.id),
        started: async () => {
          await ctx.db.update(restores).set({ pgRestoreAt: new Date() }).where(eq(restores.id, rec.id));
        },
        wrote: async (xid) => {
          await ctx.db.update(restores).set({ xid }).where(eq(restores.id, rec.id));
        },
      });
      return await finishRestore(ctx, rec.id, 'succeeded', null);
    } catch (err) {
      return await finishRestore(ctx, rec.id, 'failed', failureMessage(err, url));
    }
  } finally {
    await lease.release();
  }
}

function failureMessage(err: unknown, url: string | undefined): string {
  if (err instanceof RestoreError) return err.message;
  if (err instanceof BusyError || err instanceof TargetError || err instanceof MissingFileError) return `${err.message}; nothing was restored`;
  const message = (err as Error).message || 'restore failed';
  return url ? redact(message, url) : message.slice(0, 2_000);
}

/** Settles an active restore (only once) and records its event in the same transaction. */
export async function finishRestore(ctx: Ctx, id: number, status: 'succeeded' | 'failed', error: string | null): Promise<RestoreRow> {
  const done = await ctx.db.transaction(async (tx) => {
    const [r] = await tx.update(restores).set({ status, error, completedAt: new Date() })
      .where(and(eq(restores.id, id), inArray(restores.status, ACTIVE))).returning();
    if (!r) return null;
    const data = { restoreId: r.id, backupId: r.backupId, filename: r.filename, database: r.database };
    if (status === 'succeeded') {
      await tx.update(backups).set({ restoredAt: r.completedAt }).where(eq(backups.id, r.backupId));
      await ctx.outbox.enqueue(tx, 'backups.restore.completed', data, r.requestedBy);
      await ctx.outbox.enqueue(tx, 'backups.backup.restored', { backupId: r.backupId, filename: r.filename, database: r.database }, r.requestedBy);
    } else {
      await ctx.outbox.enqueue(tx, 'backups.restore.failed', { ...data, error: error ?? 'failed' }, r.requestedBy);
    }
    return r;
  });
  if (!done) return (await ctx.db.select().from(restores).where(eq(restores.id, id)))[0]!;
  await logLine(ctx, status === 'succeeded' ? `RESTORE OK ${done.filename} (restore ${id})` : `RESTORE FAILED ${done.filename} (restore ${id}): ${error}`);
  return done;
}

/** BullMQ states in which a queued restore's job will still run. */
const PENDING_JOB = new Set(['waiting', 'delayed', 'prioritized', 'active', 'waiting-children']);

/**
 * Settles restores of processes that are gone (their lease is free): a queued one whose job no
 * longer exists or ended without running fails; a running one is settled from the server — its
 * orphaned pg_restore session (still running after its parent died) is terminated, and the
 * transaction id it recorded tells whether it committed (succeeded) or rolled back (failed,
 * database unchanged). Returns how many were settled.
 */
export async function recoverRestores(ctx: Ctx): Promise<number> {
  let settled = 0;
  const active = await ctx.db.select({ id: restores.id }).from(restores).where(inArray(restores.status, ACTIVE));
  for (const { id } of active) {
    await ifAbandoned(ctx, 'restore', id, async () => {
      const [rec] = await ctx.db.select().from(restores).where(and(eq(restores.id, id), inArray(restores.status, ACTIVE)));
      if (!rec) return;
      if (rec.status === 'queued') {
        const job = await ctx.queues.queue(Queues.backupRestores).getJob(restoreJobId(id));
        if (job && PENDING_JOB.has(await job.getState())) return;
        await finishRestore(ctx, id, 'failed', 'the restore job was lost before it started; nothing was restored');
      } else {
        const outcome = await settleInterrupted(ctx, rec);
        await finishRestore(ctx, id, outcome.status, outcome.error);
      }
      settled++;
    }).catch((err: Error) => ctx.log.warn({ err: err.message, restoreId: id }, 'restore recovery failed'));
  }
  return settled;
}

async function settleInterrupted(ctx: Ctx, rec: RestoreRow): Promise<{ status: 'succeeded' | 'failed'; error: string | null }> {
  const url = backupEnv(ctx).databases.get(rec.database);
  if (!rec.pgRestoreAt) return { status: 'failed', error: 'interrupted before pg_restore started; nothing was restored' };
  if (!url) return { status: 'failed', error: `interrupted, and ${rec.database} is no longer configured: whether pg_restore committed is unknown` };
  const stopped = await terminateSessions(url, restoreSessionName(backupEnv(ctx), rec.id));
  const xact = rec.xid ? await transactionOutcome(url, rec.xid) : null;
  if (xact === 'committed') return { status: 'succeeded', error: null };
  if (xact === 'aborted' || stopped > 0) {
    return { status: 'failed', error: 'interrupted: the process stopped during the restore; pg_restore was stopped and its transaction rolled back, the database is unchanged' };
  }
  return { status: 'failed', error: 'interrupted: the process stopped during the restore and pg_restore is no longer running; whether it committed is unknown, check the database' };
}

/** committed | aborted once the server has settled the transaction (a terminated backend takes a moment); null when unknown. */
async function transactionOutcome(url: string, xid: string): Promise<'committed' | 'aborted' | null> {
  if (!/^\d{1,20}$/.test(xid)) return null;
  const client = await connect(url).catch(() => null);
  if (!client) return null;
  try {
    for (let i = 0; i < 100; i++) {
      const { rows } = await client.query<{ s: string | null }>('SELECT pg_xact_status($1::xid8) AS s', [xid]);
      const s = rows[0]?.s;
      if (s === 'committed' || s === 'aborted') return s;
      if (s !== 'in progress') return null;
      await new Promise((r) => setTimeout(r, 100));
    }
    return null;
  } catch {
    return null;
  } finally {
    await client.end().catch(() => {});
  }
}
