import { Queues } from '@aos/contracts';
import { lockWaits, waitFor } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reconcileRuns } from '../src/domain/runs.js';
import { client, startAgents, type Svc } from './helpers.js';

let svc: Svc;
// The reconciler's own schedule stays out of the way: the test runs its passes by hand.
beforeAll(async () => { svc = await startAgents({ env: { RUN_RECONCILE_INTERVAL_MS: '3600000', RUN_RECONCILE_GRACE_MS: '1000' } }); });
afterAll(() => svc?.close());

describe('run reconciler', () => {
  it('gives a run a new job only if no other pass did so meanwhile (compare-and-set on the job id it read)', async () => {
    const api = client(svc);
    const agent = await api.agent({ name: 'contested' });
    const { rows: [run] } = await svc.ctx.pool.query<{ id: number }>(
      `INSERT INTO agent_runs (org_id, agent_id, input, provider, model, created_at) VALUES ($1, $2, 'job lost', 'offline', 'offline-1', now() - interval '1 minute') RETURNING id`,
      [api.principal.orgId, agent.id]);
    const held = await svc.ctx.pool.connect();
    let pass: Promise<{ requeued: number }>;
    try {
      await held.query('BEGIN');
      await held.query('SELECT 1 FROM agent_runs WHERE id = $1 FOR UPDATE', [run!.id]);
      // This pass finds the run without a job and waits on the row to give it one...
      pass = reconcileRuns(svc.ctx);
      await waitFor(async () => (await lockWaits(svc.ctx.pool)) > 0, { message: 'pass waiting on the run' });
      // ...while another pass gives it one first.
      await held.query('UPDATE agent_runs SET job_id = $2 WHERE id = $1', [run!.id, `run-${run!.id}-other-pass`]);
      await held.query('COMMIT');
    } finally {
      held.release();
    }
    expect(await pass).toEqual({ requeued: 0 });
    const { rows: [after] } = await svc.ctx.pool.query('SELECT job_id, status FROM agent_runs WHERE id = $1', [run!.id]);
    expect(after).toEqual({ job_id: `run-${run!.id}-other-pass`, status: 'queued' });
    expect(await svc.ctx.queues.queue(Queues.agentRuns).getJob(`run-${run!.id}`)).toBeUndefined();
  });
});
