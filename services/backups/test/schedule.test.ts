import { rmSync } from 'node:fs';
import { Queues } from '@aos/contracts';
import { startTestService, waitFor, type TestService } from '@aos/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { service } from '../src/service.js';
import { seededDatabase, sql, tempDir } from './helpers.js';

let svc: TestService<typeof service.schema, typeof service.config>;
let seed: Awaited<ReturnType<typeof seededDatabase>>;
let dir: string;

beforeAll(async () => {
  seed = await seededDatabase('bksched');
  dir = tempDir('backups-sched');
  svc = await startTestService(service, {
    env: { BACKUP_DIR: dir, BACKUP_DATABASE_URLS: JSON.stringify({ sched: seed.url }), BACKUP_CRON: '*/2 * * * * *' },
  });
}, 60_000);

afterAll(async () => {
  await svc?.close();
  await seed?.drop().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

it('BACKUP_CRON registers a repeatable job that dumps every configured database', async () => {
  const schedulers = await svc.ctx.queues.queue(Queues.backups).getJobSchedulers();
  expect(schedulers.map((s) => s.key ?? s.id)).toContain('backup-schedule');
  const rows = await waitFor(async () => {
    const r = await sql<{ status: string; trigger: string }>(svc.databaseUrl, `SELECT status, trigger FROM backups WHERE status = 'completed'`);
    return r.length > 0 ? r : null;
  }, { timeoutMs: 20_000, message: 'a scheduled backup' });
  expect(rows[0]).toMatchObject({ status: 'completed', trigger: 'schedule' });
});
