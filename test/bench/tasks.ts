/**
 * Tasks service: SKIP LOCKED claim throughput (8 workers over HTTP inject) and
 * task-create → changelog-visible latency through the outbox, NATS and the changelog consumer.
 */
import { startTestService, userPrincipal, waitFor } from '@aos/testkit';
import { service } from '../../services/tasks/src/service.js';

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;

export async function run(): Promise<Record<string, number>> {
  const svc = await startTestService(service);
  const principal = userPrincipal();
  const call = (method: 'POST' | 'PATCH' | 'GET', url: string, payload?: object) => svc.inject(principal, { method, url, ...(payload ? { payload } : {}) });
  try {
    const jobs = 10_000;
    await svc.ctx.pool.query(
      `INSERT INTO queue_jobs (org_id, queue_name, task_type) SELECT $1, 'bench', 't' FROM generate_series(1, $2::int)`, [principal.orgId, jobs]);
    const t0 = performance.now();
    let claimed = 0;
    await Promise.all(Array.from({ length: 8 }, async (_, w) => {
      for (;;) {
        const res = await call('POST', '/task-queue/claim', { worker_id: `w${w}`, queue_name: 'bench', batch_size: 50 });
        const data = res.json().data as unknown[] | null;
        if (!data) return;
        claimed += data.length;
      }
    }));
    const claimSeconds = (performance.now() - t0) / 1000;

    const latencies: number[] = [];
    for (let i = 0; i < 50; i++) {
      const start = performance.now();
      const created = (await call('POST', '/tasks', { title: `bench task ${i}`, status: 'review' })).json().data as { id: number };
      await call('PATCH', `/tasks/${created.id}`, { status: 'done' });
      await waitFor(async () => (await call('GET', `/changelog?task_id=${created.id}`)).json().meta.total === 1, { intervalMs: 2 });
      latencies.push(performance.now() - start);
    }
    latencies.sort((a, b) => a - b);
    return {
      'claim throughput (jobs/s, 8 workers, batch 50)': claimed / claimSeconds,
      'create→changelog visible p50 (ms)': pct(latencies, 50),
      'create→changelog visible p99 (ms)': pct(latencies, 99),
    };
  } finally {
    await svc.close();
  }
}
