import { Queues } from '@aos/contracts';
import { applyRetention, backupEnv, pushOffsite, runBackup } from '../domain/backup.js';
import { recoverInterrupted } from '../domain/recovery.js';
import { runRestore, type RestoreJob } from '../domain/restores.js';
import type { Ctx } from '../service.js';

export interface BackupJob {
  /** Logical names of BACKUP_DATABASE_URLS; empty = all. */
  databases: string[];
  trigger: 'manual' | 'schedule';
}

export const SCHEDULER_ID = 'backup-schedule';

/** Dumps each requested database, then applies retention and pushes offsite for it. */
export async function processBackupJob(ctx: Ctx, payload: BackupJob, jobId: string | null): Promise<{ ids: number[] }> {
  // What a crashed replica left behind is cleaned up by the next job anywhere, not only at a restart.
  await recover(ctx);
  const { databases } = backupEnv(ctx);
  const names = payload.databases.length > 0 ? payload.databases.filter((d) => databases.has(d)) : [...databases.keys()];
  const ids: number[] = [];
  for (const name of names) {
    const row = await runBackup(ctx, name, payload.trigger, jobId);
    ids.push(row.id);
    if (row.status !== 'completed') continue;
    // Retention first: the offsite push then drops what it deleted from the git branch in the same commit.
    await applyRetention(ctx, name).catch((err: Error) => ctx.log.warn({ err: err.message, database: name }, 'retention failed'));
    await pushOffsite(ctx, row);
  }
  return { ids };
}

async function recover(ctx: Ctx): Promise<void> {
  try {
    const r = await recoverInterrupted(ctx);
    if (Object.values(r).some((n) => n > 0)) ctx.log.warn(r, 'cleaned up interrupted backup work');
  } catch (err) {
    ctx.log.warn({ err: (err as Error).message }, 'backup recovery failed');
  }
}

export async function startBackupJobs(ctx: Ctx): Promise<void> {
  await recover(ctx);
  ctx.queues.worker<BackupJob>(Queues.backups, (payload, job) => processBackupJob(ctx, payload, job.id ?? null), {
    concurrency: ctx.config.BACKUP_CONCURRENCY,
    // A dump can take long; the lock is renewed while the process lives.
    lockDuration: 120_000,
  });
  // Restores have their own queue: one is never stuck behind long dumps of every database.
  ctx.queues.worker<RestoreJob>(Queues.backupRestores, async (payload) => {
    await recover(ctx);
    const done = await runRestore(ctx, payload.restoreId);
    return { status: done?.status ?? 'skipped' };
  }, { concurrency: ctx.config.BACKUP_CONCURRENCY, lockDuration: 120_000 });
  const queue = ctx.queues.queue(Queues.backups);
  if (ctx.config.BACKUP_CRON) {
    await queue.upsertJobScheduler(SCHEDULER_ID, { pattern: ctx.config.BACKUP_CRON, tz: 'UTC' }, {
      name: 'backup',
      data: { payload: { databases: [], trigger: 'schedule' } satisfies BackupJob, trace: {} },
      opts: { attempts: 1 },
    }).catch((err: Error) => {
      // The start fails naming the setting (a pattern is no secret).
      throw new Error(`BACKUP_CRON "${ctx.config.BACKUP_CRON}" cannot be scheduled: ${err.message.slice(0, 200)}`);
    });
  } else {
    await queue.removeJobScheduler(SCHEDULER_ID).catch(() => {});
  }
}
