/**
 * Tasks service: SKIP LOCKED claim throughput (8 workers over HTTP inject, batched and one job at a
 * time with complete) and task-create → changelog-visible latency through the outbox, NATS and the
 * changelog consumer.
 */
import { putOnPlan, startTestService, userPrincipal, waitFor } from '@aos/testkit';
import { service } from '../../services/tasks/src/service.js';
import { percentile } from './stats.js';

const WORKERS = 8;

export async function run(): Promise<Record<string, number>> {
  const svc = await startTestService(service);
  const principal = userPrincipal();
  const call = (method: 'POST' | 'GET', url: string, payload?: object) => svc.inject(principal, { method, url, ...(payload ? { payload } : {}) });
  const seed = (queue: string, jobs: number) => svc.ctx.pool.query(
    `INSERT INTO queue_jobs (org_id, queue_name, task_type) SELECT $1, $2, 't' FROM generate_series(1, $3::int)`, [principal.orgId, queue, jobs]);
  /** Runs WORKERS loops until the queue is empty; returns jobs per second. */
  async function drain(queue: string, batch: number | undefined, completeEach: boolean): Promise<number> {
    const t0 = performance.now();
    let done = 0;
    await Promise.all(Array.from({ length: WORKERS }, async (_, w) => {
      for (;;) {
        const data = (await call('POST', '/task-queue/claim', { worker_id: `w${w}`, queue_name: queue, ...(batch ? { batch_size: batch } : {}) })).json().data as { id: number } | { id: number }[] | null;
        if (!data) return;
        const jobs = Array.isArray(data) ? data : [data];
        if (completeEach) for (const j of jobs) await call('POST', `/task-queue/${j.id}/complete`, { worker_id: `w${w}` });
        done += jobs.length;
      }
    }));
    return done / ((performance.now() - t0) / 1000);
  }
  try {
    await seed('bench-batch', 20_000);
    const batched = await drain('bench-batch', 50, false);
    await seed('bench-single', 3_000);
    const single = await drain('bench-single', undefined, true);

    // 200 tasks: more than Free's tasks a month.
    await putOnPlan(svc, principal.orgId!, 'enterprise');
    const latencies: number[] = [];
    for (let i = 0; i < 200; i++) {
      const start = performance.now();
      const created = (await call('POST', '/tasks', { title: `bench task ${i}`, status: 'done' })).json().data as { id: number };
      await waitFor(async () => (await svc.ctx.pool.query('SELECT 1 FROM changelog WHERE task_id = $1', [created.id])).rowCount === 1, { intervalMs: 1 });
      latencies.push(performance.now() - start);
    }
    latencies.sort((a, b) => a - b);
    return {
      [`claim throughput (jobs/s, ${WORKERS} workers, batch 50)`]: batched,
      [`claim+complete throughput (jobs/s, ${WORKERS} workers, 1 by 1)`]: single,
      'create→changelog visible p50 (ms)': percentile(latencies, 50),
      'create→changelog visible p99 (ms)': percentile(latencies, 99),
    };
  } finally {
    await svc.close();
  }
}
