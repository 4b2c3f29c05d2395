import { Queues } from '@aos/contracts';
import { waitFor } from '@aos/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startBackupJobs } from '../src/jobs/backups.js';
import { sql, startBackups } from './helpers.js';

let fx: Awaited<ReturnType<typeof startBackups>>;
let svc: typeof fx.svc;

beforeAll(async () => {
  fx = await startBackups('bksched', (url) => ({ BACKUP_DATABASE_URLS: JSON.stringify({ sched: url }), BACKUP_CRON: '*/2 * * * * *' }));
  ({ svc } = fx);
}, 60_000);

afterAll(() => fx?.close());

it('BACKUP_CRON registers a repeatable job that dumps every configured database', async () => {
  const schedulers = await svc.ctx.queues.queue(Queues.backups).getJobSchedulers();
  expect(schedulers.map((s) => s.key ?? s.id)).toContain('backup-schedule');
  const rows = await waitFor(async () => {
    const r = await sql<{ status: string; trigger: string }>(svc.databaseUrl, `SELECT status, trigger FROM backups WHERE status = 'completed'`);
    return r.length > 0 ? r : null;
  }, { timeoutMs: 20_000, message: 'a scheduled backup' });
  expect(rows[0]).toMatchObject({ status: 'completed', trigger: 'schedule' });
});

it('an invalid BACKUP_CRON stops the start naming the setting', async () => {
  const saved = svc.ctx.config.BACKUP_CRON;
  Object.assign(svc.ctx.config, { BACKUP_CRON: '61 * * * *' });
  try {
    await expect(startBackupJobs(svc.ctx)).rejects.toThrow(/^BACKUP_CRON "61 \* \* \* \*" cannot be scheduled: .*59/);
  } finally {
    Object.assign(svc.ctx.config, { BACKUP_CRON: saved });
  }
});
