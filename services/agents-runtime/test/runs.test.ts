import { Queues } from '@aos/contracts';
import { tokenFor, waitFor } from '@aos/testkit';
import type { ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anthropicStream, client, fakeProvider, openAiStream, outbox, parseSse, startAgents, type RecordedRequest, type Svc } from './helpers.js';

let svc: Svc;
let llm: Awaited<ReturnType<typeof fakeProvider>>;
let address: string;
/** What the local provider server does next: scripted answers first, then the default reply. */
const script: ((req: RecordedRequest, res: ServerResponse) => void)[] = [];
const fail = (status: number) => (_req: RecordedRequest, res: ServerResponse) => void res.writeHead(status, { 'content-type': 'application/json' }).end('{"error":{"message":"no"}}');

beforeAll(async () => {
  llm = await fakeProvider((req, res) => {
    const next = script.shift();
    if (next) return next(req, res);
    if (req.url === '/v1/messages') return anthropicStream(res, ['Claude', ' says', ' hi'], { input_tokens: 21, output_tokens: 3 });
    openAiStream(res, ['Hello', ' from', ' the', ' model'], { prompt_tokens: 12, completion_tokens: 4 });
  });
  svc = await startAgents({
    env: {
      OPENAI_BASE_URL: `${llm.url}/v1`, OPENAI_API_KEY: 'sk-test', ANTHROPIC_BASE_URL: llm.url, ANTHROPIC_API_KEY: 'ak-test',
      OFFLINE_TOKEN_DELAY_MS: '25', LLM_RETRY_BASE_MS: '20', LLM_MAX_ATTEMPTS: '2', LLM_TIMEOUT_MS: '1500', RUN_ATTEMPTS: '3',
      RUN_CANCEL_POLL_MS: '100', RUN_RECONCILE_INTERVAL_MS: '300', RUN_RECONCILE_GRACE_MS: '200', SSE_HEARTBEAT_MS: '100',
    },
  });
  address = await svc.app.listen({ host: '127.0.0.1', port: 0 });
});
afterAll(async () => {
  await svc?.close();
  await llm?.close();
});

const sent = () => llm.requests.length;
/** The events a run has streamed so far (its Redis event stream). */
const streamEvents = async (id: number) =>
  (await svc.ctx.queues.connection.xrange(`${svc.ctx.config.REDIS_PREFIX}:run:${id}:events`, '-', '+'))
    .map(([, fields]) => JSON.parse(fields[1]!) as { type: string; token?: string; attempt?: number; status?: string });
const tokensStreamed = async (id: number) => (await streamEvents(id)).filter((e) => e.type === 'token').map((e) => e.token!);

describe('runs on BullMQ', () => {
  it('runs with the offline provider: queued → running → succeeded, usage recorded, events emitted', async () => {
    const api = client(svc);
    await api.agent({ name: 'runner' });
    const res = await api.call('POST', '/agents/runner/runs', { input: 'Summarise the backlog' });
    expect(res.statusCode).toBe(202);
    expect(res.json().data).toMatchObject({ status: 'queued', attempts: 0, provider: 'offline' });
    const run = await api.finished(res.json().data.id);
    expect(run).toMatchObject({ status: 'succeeded', attempts: 1, error: null, cancel_requested: false });
    expect(run.output).toBe('[offline-1] Acknowledged: Summarise the backlog. Plan: analyse, act, report.');
    expect(run.total_tokens).toBe(run.input_tokens + run.output_tokens);
    expect(run.cost_usd).toBeGreaterThan(0);
    expect(Date.parse(run.finished_at)).toBeGreaterThanOrEqual(Date.parse(run.started_at));
    expect((await outbox(svc, 'agents.run.started')).filter((e) => e.data.runId === run.id)).toHaveLength(1);
    const completed = (await outbox(svc, 'agents.run.completed')).filter((e) => e.data.runId === run.id);
    expect(completed).toHaveLength(1);
    expect(completed[0].data).toMatchObject({ agentName: 'runner', status: 'succeeded', provider: 'offline', usage: { inputTokens: run.input_tokens, outputTokens: run.output_tokens, totalTokens: run.total_tokens }, costUsd: run.cost_usd });
    expect(completed[0].orgId).toBe(api.principal.orgId);
    expect((await api.call('GET', '/agents/runner')).json().data).toMatchObject({ status: 'idle', current_task: null });
    expect((await api.call('GET', '/agents/runner/runs')).json().data.map((r: { id: number }) => r.id)).toEqual([run.id]);
    expect((await api.call('GET', '/agent-runs?agent=runner&status=succeeded')).json().meta.total).toBe(1);
    expect((await api.call('GET', '/agent-runs?status=failed,cancelled')).json().meta.total).toBe(0);
    expect((await api.call('GET', '/agent-runs?status=done')).statusCode).toBe(400);
    expect((await api.call('GET', '/agent-metrics/efficiency')).json().data.find((a: { agent: string }) => a.agent === 'runner')).toMatchObject({ runs: 1, succeeded_runs: 1, total_tokens: run.total_tokens });
  });

  it('talks to an OpenAI-compatible server, retrying after a 500 (the run succeeds)', async () => {
    const api = client(svc);
    await api.agent({ name: 'gpt', provider: 'openai', model: 'gpt-test', system_prompt: 'Be brief.' });
    const before = sent();
    script.push(fail(500));
    const { id } = (await api.call('POST', '/agents/gpt/runs', { input: 'Hi' })).json().data;
    const run = await api.finished(id);
    expect(run).toMatchObject({ status: 'succeeded', output: 'Hello from the model', input_tokens: 12, output_tokens: 4, provider: 'openai', model: 'gpt-test' });
    const requests = llm.requests.slice(before);
    expect(requests).toHaveLength(2);
    expect(requests[1]!.headers.authorization).toBe('Bearer sk-test');
    expect(requests[1]!.body).toMatchObject({ model: 'gpt-test', stream: true, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }] });
    expect((await outbox(svc, 'agents.run.completed')).find((e) => e.data.runId === id).data.usage).toEqual({ inputTokens: 12, outputTokens: 4, totalTokens: 16 });
  });

  it('runs an Anthropic agent against a server speaking the Messages API', async () => {
    const api = client(svc);
    await api.agent({ name: 'claude', provider: 'anthropic', model: 'claude-test' });
    const { id } = (await api.call('POST', '/agents/claude/runs', { input: 'Hello Claude' })).json().data;
    expect(await api.finished(id)).toMatchObject({ status: 'succeeded', output: 'Claude says hi', input_tokens: 21, output_tokens: 3 });
  });

  it('a provider that keeps failing: BullMQ attempts are spent, the run fails, the agent errors; retry runs it again once', async () => {
    const api = client(svc);
    await api.agent({ name: 'flaky', provider: 'openai', model: 'gpt-test' });
    const before = sent();
    // 2 provider attempts per job attempt × 3 job attempts.
    script.push(...Array(6).fill(fail(503)));
    const { id } = (await api.call('POST', '/agents/flaky/runs', { input: 'x' })).json().data;
    const failed = await api.finished(id);
    expect(failed).toMatchObject({ status: 'failed', attempts: 3, total_tokens: 0 });
    expect(failed.error).toContain('503');
    expect(sent() - before).toBe(6);
    expect((await api.call('GET', '/agents/flaky')).json().data.status).toBe('error');
    expect((await outbox(svc, 'agents.agent.errored')).filter((e) => e.data.name === 'flaky')).toHaveLength(1);
    expect((await outbox(svc, 'agents.run.completed')).find((e) => e.data.runId === id).data).toMatchObject({ status: 'failed', usage: { totalTokens: 0 } });

    // A retry is a new run (billing charges each run id once); two retries at once make one.
    const [a, b] = await Promise.all([api.call('POST', `/agent-runs/${id}/retry`), api.call('POST', `/agent-runs/${id}/retry`)]);
    expect([a.statusCode, b.statusCode].sort()).toEqual([202, 409]);
    const retry = [a, b].find((r) => r.statusCode === 202)!.json().data;
    expect(retry).toMatchObject({ status: 'queued', retry_of: id, input: 'x', total_tokens: 0 });
    expect([a, b].find((r) => r.statusCode === 409)!.json().error.message).toMatch(/already retried as run \d+/);
    const again = await api.finished(retry.id);
    expect(again).toMatchObject({ status: 'succeeded', output: 'Hello from the model', error: null, retry_of: id });
    expect((await api.call('GET', `/agent-runs/${id}`)).json().data).toMatchObject({ status: 'failed', attempts: 3 });
    expect((await api.call('GET', `/agent-runs?retry_of=${id}`)).json().data.map((r: { id: number }) => r.id)).toEqual([retry.id]);
    expect((await outbox(svc, 'agents.run.completed')).filter((e) => e.data.runId === retry.id && e.data.status === 'succeeded')).toHaveLength(1);
    expect((await api.call('GET', '/agents/flaky')).json().data.status).toBe('idle');
    expect((await api.call('POST', `/agent-runs/${id}/retry`)).json().error.message).toBe(`Run ${id} was already retried as run ${retry.id}`);
    expect((await api.call('POST', `/agent-runs/${retry.id}/retry`)).statusCode).toBe(409);
  });

  it('a 4xx from the provider fails the run at once (no retries)', async () => {
    const api = client(svc);
    await api.agent({ name: 'badreq', provider: 'openai', model: 'gpt-test' });
    const before = sent();
    script.push(fail(400));
    const { id } = (await api.call('POST', '/agents/badreq/runs', { input: 'x' })).json().data;
    expect(await api.finished(id)).toMatchObject({ status: 'failed', attempts: 1 });
    expect(sent() - before).toBe(1);
  });

  it('cancels a running run (the worker aborts the provider call); the tokens produced so far are recorded and emitted once', async () => {
    const api = client(svc);
    await api.agent({ name: 'slowpoke' });
    const { id } = (await api.call('POST', '/agents/slowpoke/runs', { input: 'a long task '.repeat(40) })).json().data;
    await waitFor(async () => (await tokensStreamed(id)).length >= 3, { message: 'tokens streamed' });
    const res = await api.call('POST', `/agent-runs/${id}/cancel`);
    const run = res.json().data;
    expect(run).toMatchObject({ status: 'cancelled', cancel_requested: true, usage_estimated: false });
    // Offline counts are exact: the prompt's words (6 of "You are slowpoke, a engineer agent." + 120), one token per streamed piece.
    const tokens = await tokensStreamed(id);
    expect(run.input_tokens).toBe(6 + 120);
    expect(run.output_tokens).toBe(tokens.length);
    expect(run.output_tokens).toBeLessThan(45);
    expect(run.output).toBe(tokens.join(''));
    expect(run.cost_usd).toBeCloseTo((126 / 1000) * 0.0008 + (tokens.length / 1000) * 0.004, 12);
    const completed = (await outbox(svc, 'agents.run.completed')).filter((e) => e.data.runId === id);
    expect(completed).toHaveLength(1);
    expect(completed[0].data).toMatchObject({ status: 'cancelled', usage: { inputTokens: 126, outputTokens: tokens.length, totalTokens: 126 + tokens.length }, costUsd: run.cost_usd });
    expect((await api.call('GET', '/agents/slowpoke')).json().data.status).toBe('idle');
    expect((await api.call('POST', `/agent-runs/${id}/cancel`)).statusCode).toBe(409);
  });

  it('a cancelled OpenAI-compatible run records an estimate of what was streamed (the server reports usage only at the end)', async () => {
    const api = client(svc);
    await api.agent({ name: 'cutoff', provider: 'openai', model: 'gpt-test', system_prompt: 'Be brief.' });
    script.push((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const t of ['Once upon', ' a time', ' there was']) res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: t } }] })}\n\n`);
    });
    const { id } = (await api.call('POST', '/agents/cutoff/runs', { input: 'Tell me a story' })).json().data;
    await waitFor(async () => (await tokensStreamed(id)).length === 3, { message: 'tokens streamed' });
    const run = (await api.call('POST', `/agent-runs/${id}/cancel`)).json().data;
    expect(run).toMatchObject({
      status: 'cancelled', output: 'Once upon a time there was', usage_estimated: true,
      input_tokens: Math.ceil('Be brief. Tell me a story'.length / 4), output_tokens: Math.ceil('Once upon a time there was'.length / 4),
    });
    expect((await outbox(svc, 'agents.run.completed')).find((e) => e.data.runId === id).data.usage.totalTokens).toBe(run.total_tokens);
  });

  it('an attempt cut after streaming tokens is retried by BullMQ; the run records the usage of every attempt', async () => {
    const api = client(svc);
    await api.agent({ name: 'bumpy', provider: 'openai', model: 'gpt-test' });
    script.push((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: 'Half an answer' } }] })}\n\n`);
      setTimeout(() => res.destroy(), 20);
    });
    const { id } = (await api.call('POST', '/agents/bumpy/runs', { input: 'Hi' })).json().data;
    const run = await api.finished(id);
    const prompt = Math.ceil('You are bumpy, a engineer agent. Hi'.length / 4);
    expect(run).toMatchObject({
      status: 'succeeded', output: 'Hello from the model', attempts: 2, usage_estimated: true,
      input_tokens: prompt + 12, output_tokens: Math.ceil('Half an answer'.length / 4) + 4,
    });
    expect((await streamEvents(id)).filter((e) => e.type === 'retry')).toMatchObject([{ type: 'retry', attempt: 2 }]);
    expect((await outbox(svc, 'agents.run.completed')).filter((e) => e.data.runId === id).map((e) => e.data.usage.totalTokens)).toEqual([run.total_tokens]);
  });

  it('a run cancelled while waiting for its next attempt keeps the usage of the attempts it made', async () => {
    const api = client(svc);
    await api.agent({ name: 'patient', provider: 'openai', model: 'gpt-test' });
    const queue = svc.ctx.queues.queue(Queues.agentRuns);
    script.push((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: 'Some words' } }] })}\n\n`);
      // The next attempt must not start before the cancel: hold the queue while the first attempt fails.
      void queue.pause().then(() => res.destroy());
    });
    try {
      const { id } = (await api.call('POST', '/agents/patient/runs', { input: 'Hi' })).json().data;
      await waitFor(async () => { const r = (await api.call('GET', `/agent-runs/${id}`)).json().data; return r.status === 'queued' && r.attempts === 1 ? r : null; }, { message: 'back in the queue' });
      const run = (await api.call('POST', `/agent-runs/${id}/cancel`)).json().data;
      expect(run).toMatchObject({ status: 'cancelled', usage_estimated: true, input_tokens: Math.ceil('You are patient, a engineer agent. Hi'.length / 4), output_tokens: Math.ceil('Some words'.length / 4) });
      expect((await outbox(svc, 'agents.run.completed')).find((e) => e.data.runId === id).data).toMatchObject({ status: 'cancelled', usage: { totalTokens: run.total_tokens } });
    } finally {
      await queue.resume();
    }
  });

  it('a running run whose cancel message was lost still stops (the worker polls the flag)', async () => {
    const api = client(svc);
    await api.agent({ name: 'deaf' });
    const { id } = (await api.call('POST', '/agents/deaf/runs', { input: 'a long task '.repeat(40) })).json().data;
    await waitFor(async () => (await api.call('GET', `/agent-runs/${id}`)).json().data.status === 'running', { message: 'running' });
    // What POST /cancel writes, without its pub/sub message.
    await svc.ctx.pool.query('UPDATE agent_runs SET cancel_requested_at = now() WHERE id = $1', [id]);
    expect((await api.finished(id)).status).toBe('cancelled');
  });

  it('cancels a queued run before any worker takes it; it never runs', async () => {
    const api = client(svc);
    await api.agent({ name: 'waiter' });
    const queue = svc.ctx.queues.queue(Queues.agentRuns);
    await queue.pause();
    try {
      const { id } = (await api.call('POST', '/agents/waiter/runs', { input: 'never' })).json().data;
      const res = await api.call('POST', `/agent-runs/${id}/cancel`);
      expect(res.json().data).toMatchObject({ status: 'cancelled', attempts: 0, started_at: null });
      expect(await queue.getJob(`run-${id}`)).toBeUndefined();
    } finally {
      await queue.resume();
    }
  });

  it('re-queues a run whose job was lost (crash between the insert and the enqueue)', async () => {
    const api = client(svc);
    const agent = await api.agent({ name: 'orphan' });
    const { rows: [row] } = await svc.ctx.pool.query(
      `INSERT INTO agent_runs (org_id, agent_id, input, provider, model, created_at) VALUES ($1, $2, 'left behind', 'offline', 'offline-1', now() - interval '1 minute') RETURNING id`,
      [api.principal.orgId, agent.id]);
    expect(await svc.ctx.queues.queue(Queues.agentRuns).getJob(`run-${row.id}`)).toBeUndefined();
    expect(await api.finished(row.id)).toMatchObject({ status: 'succeeded', output: expect.stringContaining('left behind') });
  });

  it('a run whose worker died mid-attempt starts over with a retry event on its stream', async () => {
    const api = client(svc);
    const agent = await api.agent({ name: 'phoenix' });
    // What a worker that died after streaming a token leaves: a running run (attempt 1), its stream, no job.
    const { rows: [row] } = await svc.ctx.pool.query(
      `INSERT INTO agent_runs (org_id, agent_id, input, provider, model, status, attempts, created_at, started_at)
       VALUES ($1, $2, 'rise again', 'offline', 'offline-1', 'running', 1, now() - interval '1 minute', now() - interval '1 minute') RETURNING id`,
      [api.principal.orgId, agent.id]);
    await svc.ctx.queues.connection.xadd(`${svc.ctx.config.REDIS_PREFIX}:run:${row.id}:events`, '*', 'e', JSON.stringify({ type: 'token', token: 'half ' }));
    const run = await api.finished(row.id);
    expect(run).toMatchObject({ status: 'succeeded', attempts: 2 });
    const events = await streamEvents(row.id);
    expect(events.slice(0, 2)).toMatchObject([{ type: 'token' }, { type: 'retry', attempt: 2 }]);
    expect(events.at(-1)).toMatchObject({ type: 'done', status: 'succeeded' });
  });

  it('restores job schedulers Redis lost (running agents, enabled engines), not those of stopped agents', async () => {
    const api = client(svc);
    const live = await api.agent({ name: 'forgotten', interval_sec: 3600 });
    const stopped = await api.agent({ name: 'resting', interval_sec: 3600 });
    await api.call('POST', '/agents/resting/stop');
    const engine = (await api.call('POST', '/discovery-engines', { name: 'Lost Engine', layer: 'ops' })).json().data;
    const cycles = svc.ctx.queues.queue(Queues.agentSchedules);
    const discovery = svc.ctx.queues.queue(Queues.discovery);
    await cycles.removeJobScheduler(`agent-${live.id}`);
    await discovery.removeJobScheduler(`discovery-${engine.id}`);
    await waitFor(async () => (await cycles.getJobScheduler(`agent-${live.id}`))?.every === 3_600_000, { message: 'agent scheduler restored' });
    await waitFor(async () => (await discovery.getJobScheduler(`discovery-${engine.id}`))?.every === 3_600_000, { message: 'engine scheduler restored' });
    expect(await cycles.getJobScheduler(`agent-${stopped.id}`)).toBeFalsy();
  });

  it('a paused agent stays paused through a run it was asked to do', async () => {
    const api = client(svc);
    await api.agent({ name: 'sleeper' });
    await api.call('POST', '/agents/sleeper/stop');
    const { id } = (await api.call('POST', '/agents/sleeper/runs', { input: 'one-off' })).json().data;
    expect((await api.finished(id)).status).toBe('succeeded');
    expect((await api.call('GET', '/agents/sleeper')).json().data.status).toBe('paused');
  });

  it('validates run requests and scopes every run to its organization', async () => {
    const api = client(svc);
    await api.agent({ name: 'strict' });
    for (const body of [{}, { input: '' }, { task_id: 0 }, { task_id: 'abc' }, { task_id: 2 ** 31 }]) {
      expect((await api.call('POST', '/agents/strict/runs', body)).statusCode, JSON.stringify(body)).toBe(400);
    }
    expect((await api.call('POST', '/agents/ghost/runs', { input: 'x' })).statusCode).toBe(404);
    const { id } = (await api.call('POST', '/agents/strict/runs', { input: 'mine' })).json().data;
    const other = client(svc);
    for (const [method, url] of [['GET', `/agent-runs/${id}`], ['POST', `/agent-runs/${id}/cancel`], ['POST', `/agent-runs/${id}/retry`], ['GET', `/agent-runs/${id}/stream`]] as const) {
      expect((await other.call(method, url)).statusCode, url).toBe(404);
    }
    expect((await other.call('GET', '/agent-runs')).json().meta.total).toBe(0);
    expect((await other.call('POST', '/chat/stream', { agent: 'strict', message: 'x' })).statusCode).toBe(404);
    for (const url of ['/agent-runs/0', '/agent-runs/abc', '/agent-runs/99999999999', '/agent-runs/-1']) expect((await api.call('GET', url)).statusCode, url).toBe(400);
    await api.finished(id);
  });
});

describe('SSE', () => {
  const headers = async (api: ReturnType<typeof client>, extra: Record<string, string> = {}) => ({ 'content-type': 'application/json', 'x-aos-internal-token': await tokenFor(api.principal), ...extra });

  it('POST /chat/stream starts a run and streams every token to a real HTTP client', async () => {
    const api = client(svc);
    await api.agent({ name: 'streamer' });
    const res = await fetch(`${address}/chat/stream`, { method: 'POST', headers: await headers(api), body: JSON.stringify({ agent: 'streamer', message: 'stream me please' }) });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const events = parseSse(await res.text());
    expect(events[0]!.event).toBe('run');
    const run = await api.finished(events[0]!.data.id);
    const tokens = events.filter((e) => e.event === 'token');
    expect(tokens.map((e) => e.data.token).join('')).toBe(run.output);
    expect(tokens.every((e) => e.id !== null)).toBe(true);
    expect(events.at(-1)).toMatchObject({ event: 'done', data: { status: 'succeeded' } });
  });

  it('GET /agent-runs/{id}/stream follows a running run; a reconnect with Last-Event-ID continues without repeats', async () => {
    const api = client(svc);
    await api.agent({ name: 'narrator' });
    const { id } = (await api.call('POST', '/agents/narrator/runs', { input: 'tell a long story about '.repeat(6) })).json().data;
    const first = await fetch(`${address}/agent-runs/${id}/stream`, { headers: await headers(api) });
    const reader = first.body!.getReader();
    let text = '';
    while (parseSse(text).filter((e) => e.event === 'token').length < 3) text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    const seen = parseSse(text).filter((e) => e.event === 'token');
    const last = seen.at(-1)!.id!;
    const rest = parseSse(await (await fetch(`${address}/agent-runs/${id}/stream`, { headers: await headers(api, { 'last-event-id': last }) })).text());
    const more = rest.filter((e) => e.event === 'token');
    expect(more.every((e) => e.id! > last)).toBe(true);
    const run = await api.finished(id);
    expect([...seen, ...more].map((e) => e.data.token).join('')).toBe(run.output);
    expect(rest.at(-1)).toMatchObject({ event: 'done', data: { status: 'succeeded' } });
  });

  it('a reader reconnecting after done (as EventSource does) gets done again and the stream ends', async () => {
    const api = client(svc);
    await api.agent({ name: 'rewinder' });
    const { id } = (await api.call('POST', '/agents/rewinder/runs', { input: 'once' })).json().data;
    await api.finished(id);
    const all = parseSse(await (await fetch(`${address}/agent-runs/${id}/stream`, { headers: await headers(api) })).text());
    const done = all.at(-1)!;
    expect(done).toMatchObject({ event: 'done', id: expect.any(String) });
    const again = await fetch(`${address}/agent-runs/${id}/stream`, { headers: await headers(api, { 'last-event-id': done.id! }), signal: AbortSignal.timeout(8_000) });
    expect(parseSse(await again.text())).toEqual([{ id: null, event: 'run', data: { id, status: 'succeeded' } }, { id: null, event: 'done', data: { status: 'succeeded' } }]);
  });

  it('a finished run whose token stream expired replays its output; a failed run reports its error', async () => {
    const api = client(svc);
    await api.agent({ name: 'replayer' });
    const { id } = (await api.call('POST', '/agents/replayer/runs', { input: 'short' })).json().data;
    const run = await api.finished(id);
    await svc.ctx.queues.connection.del(`${svc.ctx.config.REDIS_PREFIX}:run:${id}:events`);
    const events = parseSse(await (await fetch(`${address}/agent-runs/${id}/stream`, { headers: await headers(api) })).text());
    expect(events.map((e) => e.event)).toEqual(['run', 'token', 'done']);
    expect(events[1]!.data.token).toBe(run.output);
    await api.agent({ name: 'breaker', provider: 'openai', model: 'gpt-test' });
    script.push(fail(400));
    const failed = (await api.call('POST', '/agents/breaker/runs', { input: 'x' })).json().data;
    await api.finished(failed.id);
    const failure = parseSse(await (await fetch(`${address}/agent-runs/${failed.id}/stream`, { headers: await headers(api) })).text());
    expect(failure.at(-1)).toMatchObject({ event: 'done', data: { status: 'failed', error: expect.stringContaining('400') } });
  });
});

describe('messages', () => {
  it('keeps the conversation; the provider gets the most recent history in order', async () => {
    const api = client(svc);
    await api.agent({ name: 'chatty', provider: 'openai', model: 'gpt-test' });
    const first = (await api.call('POST', '/agents/chatty/messages', { message: 'My name is Ada' })).json().data;
    expect(first).toMatchObject({ reply: 'Hello from the model', usage: { input_tokens: 12, output_tokens: 4 } });
    const before = sent();
    await api.call('POST', '/agents/chatty/messages', { message: 'What is my name?', conversation_id: first.conversation_id });
    expect(llm.requests[before]!.body.messages).toEqual([
      { role: 'system', content: 'You are chatty, a engineer agent.' }, { role: 'user', content: 'My name is Ada' },
      { role: 'assistant', content: 'Hello from the model' }, { role: 'user', content: 'What is my name?' },
    ]);
    const history = (await api.call('GET', `/agents/chatty/messages?conversation_id=${first.conversation_id}`)).json();
    expect(history.meta.total).toBe(4);
    expect(history.data.map((m: { role: string }) => m.role)).toEqual(['user', 'assistant', 'user', 'assistant']);
    expect((await api.call('GET', `/agents/chatty/messages?conversation_id=${first.conversation_id}&limit=1&offset=2`)).json().data[0].content).toBe('What is my name?');
    // Each message is a run with its usage (billing sees it).
    const run = (await api.call('GET', `/agent-runs/${first.run_id}`)).json().data;
    expect(run).toMatchObject({ status: 'succeeded', input_tokens: 12, output_tokens: 4 });
    expect((await outbox(svc, 'agents.run.completed')).some((e) => e.data.runId === first.run_id)).toBe(true);
    expect((await client(svc).call('GET', `/agents/chatty/messages?conversation_id=${first.conversation_id}`)).statusCode).toBe(404);
  });

  it('a long conversation sends the newest 50 turns, oldest first', async () => {
    const api = client(svc);
    await api.agent({ name: 'memory', provider: 'openai', model: 'gpt-test' });
    const conversation = 'long-talk';
    for (let i = 1; i <= 26; i++) await api.call('POST', '/agents/memory/messages', { message: `turn ${i}`, conversation_id: conversation });
    const before = sent();
    await api.call('POST', '/agents/memory/messages', { message: 'turn 27', conversation_id: conversation });
    const msgs = (llm.requests[before]!.body.messages as { role: string; content: string }[]);
    expect(msgs).toHaveLength(52);
    expect(msgs[1]).toEqual({ role: 'user', content: 'turn 2' });
    expect(msgs.at(-3)).toEqual({ role: 'user', content: 'turn 26' });
    expect(msgs.at(-1)).toEqual({ role: 'user', content: 'turn 27' });
  });

  it('provider failures are 503 (or 504 on timeout) in the error envelope, and nothing is stored', async () => {
    const api = client(svc);
    await api.agent({ name: 'fragile', provider: 'openai', model: 'gpt-test' });
    script.push(fail(401));
    const res = await api.call('POST', '/agents/fragile/messages', { message: 'hi', conversation_id: 'c1' });
    expect(res.statusCode).toBe(503);
    expect(res.json().error).toMatchObject({ code: 'SERVICE_UNAVAILABLE', message: expect.stringContaining('401') });
    script.push(() => {}, () => {});
    const slow = await api.call('POST', '/agents/fragile/messages', { message: 'hi', conversation_id: 'c1' });
    expect(slow.statusCode).toBe(504);
    expect(slow.json().error.code).toBe('UPSTREAM_TIMEOUT');
    expect((await api.call('GET', '/agents/fragile/messages?conversation_id=c1')).json().meta.total).toBe(0);
    expect((await api.call('GET', '/agents/fragile/runs')).json().meta.total).toBe(0);

    // Timed out after the provider began answering: the conversation is unchanged, the tokens used are a failed run (billed).
    script.push((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: 'I was about to' } }] })}\n\n`);
    });
    expect((await api.call('POST', '/agents/fragile/messages', { message: 'hi', conversation_id: 'c1' })).statusCode).toBe(504);
    expect((await api.call('GET', '/agents/fragile/messages?conversation_id=c1')).json().meta.total).toBe(0);
    const [partial] = (await api.call('GET', '/agents/fragile/runs')).json().data;
    expect(partial).toMatchObject({ status: 'failed', output: 'I was about to', usage_estimated: true, output_tokens: Math.ceil('I was about to'.length / 4), error: expect.stringContaining('timed out') });
    expect((await outbox(svc, 'agents.run.completed')).find((e) => e.data.runId === partial.id).data).toMatchObject({ status: 'failed', usage: { totalTokens: partial.total_tokens } });
    for (const body of [{ message: '' }, { message: 'x', conversation_id: '../x' }, { message: 'x', conversation_id: 'a'.repeat(101) }]) {
      expect((await api.call('POST', '/agents/fragile/messages', body)).statusCode).toBe(400);
    }
    expect((await api.call('GET', '/agents/fragile/messages')).statusCode).toBe(400);
  });
});
