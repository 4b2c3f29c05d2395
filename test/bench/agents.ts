/**
 * Agents runtime: idle-check latency (cache hit vs. miss), offline-provider run throughput
 * through BullMQ (POST → succeeded), and first-token latency of an SSE stream.
 */
import { startTestService, tokenFor, userPrincipal, waitFor } from '@aos/testkit';
import { service } from '../../services/agents-runtime/src/service.js';
import { percentile } from './stats.js';


export async function run(): Promise<Record<string, number>> {
  const svc = await startTestService(service, { env: { RUN_CONCURRENCY: '8', IDLE_CACHE_TTL_SEC: '3600' } });
  const principal = userPrincipal();
  const call = (method: 'POST' | 'GET', url: string, payload?: object) => svc.inject(principal, { method, url, ...(payload ? { payload } : {}) });
  try {
    await call('POST', '/agents', { name: 'bench' });
    const timed = async (n: number, fn: () => Promise<unknown>) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) {
        const t = performance.now();
        await fn();
        out.push(performance.now() - t);
      }
      return out.sort((a, b) => a - b);
    };
    const redis = svc.ctx.queues.connection;
    const key = `${svc.ctx.config.REDIS_PREFIX}:idle:${principal.orgId}`;
    const misses = await timed(200, async () => { await redis.del(key); await call('GET', '/agent-runs/idle-check?agent_name=bench'); });
    const hits = await timed(1_000, () => call('GET', '/agent-runs/idle-check?agent_name=bench'));

    const runs = 300;
    const t0 = performance.now();
    const ids = await Promise.all(Array.from({ length: runs }, async (_, i) => (await call('POST', '/agents/bench/runs', { input: `bench run ${i}` })).json().data.id as number));
    await waitFor(async () => (await svc.ctx.pool.query("SELECT count(*)::int AS n FROM agent_runs WHERE status = 'succeeded' AND id = ANY($1::int[])", [ids])).rows[0].n === runs, { timeoutMs: 120_000, intervalMs: 20 });
    const runSeconds = (performance.now() - t0) / 1000;

    const address = await svc.app.listen({ host: '127.0.0.1', port: 0 });
    const firstToken: number[] = [];
    for (let i = 0; i < 30; i++) {
      const t = performance.now();
      const res = await fetch(`${address}/chat/stream`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-aos-internal-token': await tokenFor(principal) }, body: JSON.stringify({ agent: 'bench', message: `hello ${i}` }) });
      const reader = res.body!.getReader();
      let text = '';
      while (!text.includes('event: token')) text += new TextDecoder().decode((await reader.read()).value);
      firstToken.push(performance.now() - t);
      while (!(await reader.read()).done);
    }
    firstToken.sort((a, b) => a - b);
    return {
      'idle-check cache miss p50 (ms)': percentile(misses, 50),
      'idle-check cache miss p99 (ms)': percentile(misses, 99),
      'idle-check cache hit p50 (ms)': percentile(hits, 50),
      'idle-check cache hit p99 (ms)': percentile(hits, 99),
      'offline runs POST→succeeded (runs/s, concurrency 8)': runs / runSeconds,
      'SSE /chat/stream first token p50 (ms)': percentile(firstToken, 50),
      'SSE /chat/stream first token p99 (ms)': percentile(firstToken, 99),
    };
  } finally {
    await svc.close();
  }
}
