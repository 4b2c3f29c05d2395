/**
 * Billing ledger: consume throughput on one hot account (every posting serialises on its row
 * lock) and across many accounts, and agents.run.completed → consumption visible latency.
 */
import { subjectFor } from '@aos/bus';
import { startTestService, userPrincipal, waitFor } from '@aos/testkit';
import { service } from '../../services/billing/src/service.js';
import { percentile } from './stats.js';


export async function run(): Promise<Record<string, number>> {
  const svc = await startTestService(service);
  const fund = (orgId: string, amount: number) => svc.ctx.pool.query(
    `INSERT INTO billing_ledger_entries (org_id, ledger, type, amount, reference_id) VALUES ($1, 'tokens', 'admin_grant', $2, $3)`, [orgId, amount, crypto.randomUUID()]);
  try {
    const consumes = async (principals: ReturnType<typeof userPrincipal>[], perClient: number) => {
      const t0 = performance.now();
      await Promise.all(principals.map(async (p) => {
        for (let i = 0; i < perClient; i++) await svc.inject(p, { method: 'POST', url: '/tokens/consume', payload: { amount: 1, action: 'bench', reference_id: crypto.randomUUID() } });
      }));
      return (principals.length * perClient) / ((performance.now() - t0) / 1000);
    };
    const hot = userPrincipal();
    await fund(hot.orgId!, 1_000_000);
    const hotRate = await consumes(Array.from({ length: 16 }, () => hot), 100);
    const many = Array.from({ length: 16 }, () => userPrincipal());
    for (const p of many) await fund(p.orgId!, 1_000_000);
    const spreadRate = await consumes(many, 100);

    // Runs on a funded account (consumed), then on an empty one (owed: the overdraft path).
    const bus = await svc.ctx.bus;
    const runLatencies = async (orgId: string, firstRunId: number) => {
      const out: number[] = [];
      for (let runId = firstRunId; runId < firstRunId + 50; runId++) {
        const envelope = {
          id: crypto.randomUUID(), type: 'agents.run.completed', version: 1, source: 'bench', occurredAt: new Date().toISOString(), tenantId: null, orgId,
          actor: { type: 'system', id: null },
          data: { runId, agentId: 1, agentName: 'a', status: 'succeeded', taskId: null, model: 'm', provider: 'p', usage: { inputTokens: 5, outputTokens: 5, totalTokens: 10 }, costUsd: 0, userId: null, durationMs: 1, error: null },
        };
        const start = performance.now();
        await bus.js.publish(subjectFor(bus.names, 'agents.run.completed'), JSON.stringify(envelope), { msgID: envelope.id });
        await waitFor(async () => (await svc.ctx.pool.query(`SELECT 1 FROM billing_ledger_entries WHERE org_id = $1 AND reference_id = $2`, [orgId, `aos:run:${runId}`])).rowCount === 1, { intervalMs: 2 });
        out.push(performance.now() - start);
      }
      return out.sort((a, b) => a - b);
    };
    const runner = userPrincipal();
    await fund(runner.orgId!, 1_000_000);
    const latencies = await runLatencies(runner.orgId!, 1);
    const owing = await runLatencies(userPrincipal().orgId!, 1_000);
    return {
      'consume/s, one account, 16 clients': hotRate,
      'consume/s, 16 accounts, 16 clients': spreadRate,
      'run.completed → ledger entry p50 (ms)': percentile(latencies, 50),
      'run.completed → ledger entry p99 (ms)': percentile(latencies, 99),
      'run.completed beyond the balance → overdraft p50 (ms)': percentile(owing, 50),
      'run.completed beyond the balance → overdraft p99 (ms)': percentile(owing, 99),
    };
  } finally {
    await svc.close();
  }
}
