/**
 * Outbox → JetStream → consumer: events/s end to end and commit-to-projection latency,
 * using the platform probe services (real Postgres, NATS, relay and durable consumer).
 */
import { createNamespace, removeNamespace, startTestService, userPrincipal, waitFor } from '@aos/testkit';
import { count, reader, writer } from '../platform/fixtures/services.js';
import { percentile } from './stats.js';

export async function run(): Promise<Record<string, number>> {
  const ns = createNamespace();
  const w = await startTestService(writer, { namespace: ns, env: { OUTBOX_POLL_MS: '1000' } });
  const r = await startTestService(reader, { namespace: ns });
  const principal = userPrincipal();
  try {
    // Latency: one write at a time, time until the projection row exists.
    const latencies: number[] = [];
    for (let i = 0; i < 100; i++) {
      const label = `lat-${i}`;
      const t0 = performance.now();
      await w.inject(principal, { method: 'POST', url: '/probes', payload: { label } });
      await waitFor(() => count(r.ctx.pool, 'SELECT count(*) AS n FROM probe_projection WHERE label = $1', [label]), { intervalMs: 2 });
      latencies.push(performance.now() - t0);
    }
    latencies.sort((a, b) => a - b);

    // Throughput: 2,000 writes, 16 in flight, until all are projected.
    const total = 2_000;
    const t0 = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < total) {
        const i = next++;
        await w.inject(principal, { method: 'POST', url: '/probes', payload: { label: `tp-${i}` } });
      }
    }));
    const written = performance.now() - t0;
    await waitFor(async () => (await count(r.ctx.pool, "SELECT count(*) AS n FROM probe_projection WHERE label LIKE 'tp-%'")) >= total, { timeoutMs: 120_000, intervalMs: 20 });
    const elapsed = performance.now() - t0;
    return {
      'commit→projection p50 (ms)': percentile(latencies, 50),
      'commit→projection p99 (ms)': percentile(latencies, 99),
      'writes/s (HTTP + tx + outbox)': total / (written / 1000),
      'events/s end to end': total / (elapsed / 1000),
    };
  } finally {
    await w.close();
    await r.close();
    await removeNamespace(ns);
  }
}
