import { Queues } from '@aos/contracts';
import type { Ctx } from '../service.js';
import { applyRetention, backupDatabase, databases } from '../domain/backup.js';
import { pushOffsite } from '../domain/offsite.js';

export interface BackupJob { database: string | null; trigger: string }

/** Runs one backup job: each named database (or all), then retention and the offsite copy. */
export async function runBackupJob(ctx: Ctx, job: BackupJob) {
  const names = job.database ? [job.database] : Object.keys(databases(ctx));
  const results = [];
  for (const name of names) {
    const row = await backupDatabase(ctx, name, job.trigger);
    if (row.status === 'completed') {
      await pushOffsite(ctx, row);
      await applyRetention(ctx, name);
    }
    results.push({ filename: row.filename, status: row.status });
  }
  return results;
}

export async function startJobs(ctx: Ctx) {
  ctx.queues.worker<BackupJob>(Queues.backups, (payload) => runBackupJob(ctx, payload), { concurrency: 2 });
  const queue = ctx.queues.queue(Queues.backups);
  if (ctx.config.BACKUP_CRON) {
    await queue.upsertJobScheduler('scheduled-backup', { pattern: ctx.config.BACKUP_CRON }, { name: 'scheduled', data: { payload: { database: null, trigger: 'schedule' }, trace: {} } });
  } else {
    await queue.removeJobScheduler('scheduled-backup').catch(() => {});
  }
}
