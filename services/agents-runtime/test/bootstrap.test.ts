import { Queues } from '@aos/contracts';
import { createTcpProxy, infraUrls, waitFor, type TcpProxy } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, outbox, startAgents, type Svc } from './helpers.js';

let svc: Svc;
let redis: TcpProxy;
beforeAll(async () => {
  // Redis behind a proxy we can take down: the schedule step then fails like it would in production.
  redis = await createTcpProxy(infraUrls().redisUrl);
  svc = await startAgents({ env: { REDIS_URL: redis.url('redis:'), BOOTSTRAP_STEP_TIMEOUT_MS: '400' } });
});
afterAll(async () => {
  redis?.up();
  await svc?.close();
  await redis?.close();
});

describe('bootstrap after a partial failure', () => {
  it('records the failed step, resumes from it on the next POST, duplicates nothing, then answers 409', async () => {
    const api = client(svc);
    redis.down();
    const first = await api.call('POST', '/agents', { name: 'phoenix', display_name: 'Phoenix', interval_sec: 600 });
    expect(first.statusCode).toBe(201);
    const body = first.json().data;
    expect(body.complete).toBe(false);
    expect(body.agent.bootstrapped).toBe(false);
    expect(body.steps.map((s: { step: string; state: string }) => `${s.step}:${s.state}`)).toEqual([
      'registration:done', 'workspace:done', 'identity_document:done', 'schedule:failed', 'heartbeat:pending', 'log:pending',
    ]);
    expect(body.steps[3].detail).toContain('timed out');
    // The record survives: the agent is listed as not bootstrapped, and may not be started yet.
    expect((await api.call('GET', '/agents?bootstrapped=false')).json().data.map((a: { name: string }) => a.name)).toEqual(['phoenix']);
    expect((await api.call('POST', '/agents/phoenix/start')).statusCode).toBe(409);

    redis.up();
    await waitFor(() => svc.ctx.queues.ping(), { message: 'redis back' });
    const resumed = await api.call('POST', '/agents', { name: 'phoenix' });
    expect(resumed.statusCode).toBe(200);
    const again = resumed.json().data;
    expect({ complete: again.complete, resumed: again.resumed, bootstrapped: again.agent.bootstrapped }).toEqual({ complete: true, resumed: true, bootstrapped: true });
    expect(again.steps.every((s: { state: string }) => s.state === 'done')).toBe(true);
    // Steps done before the failure kept their first result (not re-run).
    expect(again.steps.slice(0, 3)).toEqual(body.steps.slice(0, 3));
    // The registration of the first request stands (display name, interval).
    expect(again.agent).toMatchObject({ display_name: 'Phoenix', interval_sec: 600 });
    expect((await svc.ctx.queues.queue(Queues.agentSchedules).getJobScheduler(`agent-${again.agent.id}`))?.every).toBe(600_000);

    expect((await outbox(svc, 'agents.agent.created')).filter((e) => e.data.name === 'phoenix')).toHaveLength(1);
    expect((await api.call('GET', '/files?agent=phoenix')).json().meta.total).toBe(1);
    expect((await api.call('GET', '/logs?agent=phoenix')).json().meta.total).toBe(1);
    expect((await api.call('GET', '/agents?q=phoenix')).json().meta.total).toBe(1);
    expect((await api.call('POST', '/agents', { name: 'phoenix' })).statusCode).toBe(409);
    expect((await api.call('POST', '/agents/phoenix/start')).statusCode).toBe(200);
  });

  it('a second request while a bootstrap holds its lease gets 409, not a second run of the steps', async () => {
    const api = client(svc);
    redis.down();
    const [a, b] = await Promise.all([api.call('POST', '/agents', { name: 'twin' }), api.call('POST', '/agents', { name: 'twin' })]);
    redis.up();
    const codes = [a.statusCode, b.statusCode].sort();
    expect(codes).toEqual([201, 409]);
    const loser = a.statusCode === 409 ? a : b;
    expect(loser.json().error.message).toMatch(/being bootstrapped|already exists/);
    await waitFor(() => svc.ctx.queues.ping(), { message: 'redis back' });
    expect((await api.call('POST', '/agents', { name: 'twin' })).statusCode).toBe(200);
    expect((await outbox(svc, 'agents.agent.created')).filter((e) => e.data.name === 'twin')).toHaveLength(1);
  });

  it('an unfinished bootstrap resumes even when the organization is at its plan limit (it counts already)', async () => {
    const api = client(svc);
    for (const name of ['one', 'two']) expect((await api.call('POST', '/agents', { name })).statusCode).toBe(201);
    redis.down();
    const partial = await api.call('POST', '/agents', { name: 'three' });
    redis.up();
    expect(partial.json().data.complete).toBe(false);
    await waitFor(() => svc.ctx.queues.ping(), { message: 'redis back' });
    // The failed bootstrap released its lease when its request ended; Free's 3 agents are taken.
    expect((await api.call('POST', '/agents', { name: 'four' })).statusCode).toBe(402);
    const resumed = await api.call('POST', '/agents', { name: 'three' });
    expect(resumed.statusCode).toBe(200);
    expect(resumed.json().data.complete).toBe(true);
  });
});
