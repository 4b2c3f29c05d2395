import { subjectFor } from '@aos/bus';
import { sleep, tokenFor, waitFor } from '@aos/testkit';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, outbox, startAgents, type Svc } from './helpers.js';

let svc: Svc;
let llm: Server;
const llmRequests: { auth?: string; body: { model: string; messages: { role: string; content: string }[]; stream: boolean } }[] = [];
let llmFailures = 0;

beforeAll(async () => {
  // A local server speaking the OpenAI chat completions API (streamed, with usage).
  llm = createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => { raw += c; });
    req.on('end', () => {
      llmRequests.push({ auth: req.headers.authorization, body: JSON.parse(raw) });
      if (req.url !== '/v1/chat/completions') return void res.writeHead(404).end();
      if (llmFailures > 0) {
        llmFailures--;
        return void res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":{"message":"overloaded"}}');
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const token of ['Hello', ' from', ' the', ' model']) res.write(`data: ${JSON.stringify({ choices: [{ delta: { content: token } }] })}\n\n`);
      res.write(`data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 12, completion_tokens: 4, total_tokens: 16 } })}\n\n`);
      res.end('data: [DONE]\n\n');
    });
  });
  await new Promise<void>((r) => llm.listen(0, '127.0.0.1', r));
  svc = await startAgents({
    env: { OPENAI_BASE_URL: `http://127.0.0.1:${(llm.address() as AddressInfo).port}/v1`, OPENAI_API_KEY: 'sk-test', OFFLINE_TOKEN_DELAY_MS: '30', LLM_RETRY_BASE_MS: '20', RUN_ATTEMPTS: '3' },
  });
});
afterAll(async () => {
  await svc?.close();
  llm.close();
});

const finished = async (api: ReturnType<typeof client>, id: number) =>
  waitFor(async () => {
    const run = (await api.call('GET', `/agent-runs/${id}`)).json().data;
    return ['succeeded', 'failed', 'cancelled'].includes(run.status) ? run : null;
  }, { message: `run ${id} finished` });

describe('runs on BullMQ', () => {
  it('runs with the offline provider, records usage and emits agents.run.completed', async () => {
    const api = client(svc);
    await api.agent({ name: 'runner' });
    const res = await api.call('POST', '/agents/runner/runs', { input: 'Summarise the backlog' });
    expect(res.statusCode).toBe(202);
    expect(res.json().data.status).toBe('queued');
    const run = await finished(api, res.json().data.id);
    expect(run).toMatchObject({ status: 'succeeded', provider: 'offline' });
    expect(run.output).toContain('Summarise the backlog');
    expect(run.total_tokens).toBeGreaterThan(0);
    const event = (await outbox(svc, 'agents.run.completed')).find((e) => e.data.runId === run.id);
    expect(event.data).toMatchObject({ agentName: 'runner', status: 'succeeded', usage: { totalTokens: run.total_tokens } });
    expect((await api.call('GET', '/agents/runner/runs')).json().data[0].id).toBe(run.id);
    expect((await api.call('GET', '/agent-metrics/efficiency')).json().data[0]).toMatchObject({ agent: 'runner', runs: 1, total_tokens: run.total_tokens });
  });

  it('talks to an OpenAI-compatible server, retrying after a 500', async () => {
    const api = client(svc);
    await api.agent({ name: 'gpt', provider: 'openai', model: 'gpt-test' });
    llmFailures = 1;
    const before = llmRequests.length;
    const { id } = (await api.call('POST', '/agents/gpt/runs', { input: 'Hi' })).json().data;
    const run = await finished(api, id);
    expect(run).toMatchObject({ status: 'succeeded', output: 'Hello from the model', input_tokens: 12, output_tokens: 4 });
    const sent = llmRequests.slice(before);
    expect(sent.length).toBe(2);
    expect(sent[1]).toMatchObject({ auth: 'Bearer sk-test', body: { model: 'gpt-test', stream: true } });
    expect(sent[1]!.body.messages.at(-1)).toEqual({ role: 'user', content: 'Hi' });
  });

  it('fails a run when the provider keeps failing, and retry runs it again', async () => {
    const api = client(svc);
    await api.agent({ name: 'flaky', provider: 'openai', model: 'gpt-test' });
    llmFailures = 100;
    const { id } = (await api.call('POST', '/agents/flaky/runs', { input: 'x' })).json().data;
    const failed = await finished(api, id);
    expect(failed.status).toBe('failed');
    expect((await outbox(svc, 'agents.agent.errored')).some((e) => e.data.name === 'flaky')).toBe(true);
    llmFailures = 0;
    expect((await api.call('POST', `/agent-runs/${id}/retry`)).statusCode).toBe(202);
    expect((await finished(api, id)).status).toBe('succeeded');
    expect((await api.call('POST', `/agent-runs/${id}/retry`)).statusCode).toBe(409);
  });

  it('cancels a running run', async () => {
    const api = client(svc);
    await api.agent({ name: 'slowpoke' });
    const { id } = (await api.call('POST', '/agents/slowpoke/runs', { input: 'a long task '.repeat(40) })).json().data;
    await waitFor(async () => (await api.call('GET', `/agent-runs/${id}`)).json().data.status === 'running');
    const res = await api.call('POST', `/agent-runs/${id}/cancel`);
    expect(res.json().data.status).toBe('cancelled');
    expect((await outbox(svc, 'agents.run.completed')).find((e) => e.data.runId === id).data.status).toBe('cancelled');
  });

  it('streams a run over SSE to a real client', async () => {
    const api = client(svc);
    await api.agent({ name: 'streamer' });
    const address = await svc.app.listen({ host: '127.0.0.1', port: 0 });
    const res = await fetch(`${address}/chat/stream`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-aos-internal-token': await tokenFor(api.principal) },
      body: JSON.stringify({ agent: 'streamer', message: 'stream me please' }),
    });
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const text = await res.text();
    const events = text.trim().split('\n\n').map((block) => {
      const lines = block.split('\n');
      return { event: lines.find((l) => l.startsWith('event: '))!.slice(7), data: JSON.parse(lines.find((l) => l.startsWith('data: '))!.slice(6)) };
    });
    expect(events[0]!.event).toBe('run');
    const tokens = events.filter((e) => e.event === 'token').map((e) => e.data.token).join('');
    expect(tokens).toContain('stream me please');
    expect(events.at(-1)).toEqual({ event: 'done', data: { status: 'succeeded' } });
  });

  it('keeps conversation history for messages', async () => {
    const api = client(svc);
    await api.agent({ name: 'chatty', provider: 'openai', model: 'gpt-test' });
    const first = (await api.call('POST', '/agents/chatty/messages', { message: 'My name is Ada' })).json().data;
    expect(first.reply).toBe('Hello from the model');
    const before = llmRequests.length;
    await api.call('POST', '/agents/chatty/messages', { message: 'What is my name?', conversation_id: first.conversation_id });
    const sent = llmRequests[before]!.body.messages.map((m) => `${m.role}:${m.content}`);
    expect(sent).toEqual([expect.stringMatching(/^system:/), 'user:My name is Ada', 'assistant:Hello from the model', 'user:What is my name?']);
    const history = (await api.call('GET', `/agents/chatty/messages?conversation_id=${first.conversation_id}`)).json().data;
    expect(history).toHaveLength(4);
  });
});

describe('task events', () => {
  it('derivation rules emit exactly one request per (task, rule), even when redelivered', async () => {
    const api = client(svc);
    await api.agent({ name: 'deriver', derivation_rules: [
      { id: 'qa', when: { type: 'feature' }, create: { title: 'QA: {title}', type: 'research' } },
      { id: 'never', when: { type: 'bug' }, create: { title: 'nope' } },
    ] });
    const bus = await svc.ctx.bus;
    const env = {
      id: uuidv7(), type: 'tasks.task.created', version: 1, source: 'tasks', occurredAt: new Date().toISOString(), tenantId: null, orgId: api.principal.orgId,
      actor: { type: 'system', id: null },
      data: { taskId: 77, title: 'Landing page', status: 'todo', priority: 'P1', type: 'feature', assignee: 'deriver', productId: null, productSlug: null, parentTaskId: null, createdBy: null },
    };
    const subject = subjectFor(bus.names, 'tasks.task.created');
    await bus.js.publish(subject, JSON.stringify(env), { msgID: env.id });
    await bus.js.publish(subject, JSON.stringify(env), { msgID: `${env.id}-again` });
    await bus.js.publish(subject, JSON.stringify({ ...env, id: uuidv7() }));
    await waitFor(async () => (await outbox(svc, 'agents.task.derivation_requested')).length >= 1);
    await sleep(500);
    const requests = await outbox(svc, 'agents.task.derivation_requested');
    expect(requests).toHaveLength(1);
    expect(requests[0].data).toMatchObject({ parentTaskId: 77, ruleId: 'qa', title: 'QA: Landing page', type: 'research', agentName: 'deriver' });
    const health = (await api.call('GET', '/agent-metrics/queue-health')).json().data.find((h: { agent: string }) => h.agent === 'deriver');
    expect(health).toMatchObject({ queued: 1 });
    const idle = (await api.call('GET', '/agent-runs/idle-check?agent_name=deriver')).json().data;
    expect(idle).toMatchObject({ should_skip: false, ready_tasks: 1 });
    await api.call('POST', '/agents/deriver/stop');
    expect((await api.call('GET', '/agent-runs/idle-check?agent_name=deriver')).json().data).toMatchObject({ should_skip: true, reason: 'agent is paused' });
    expect((await svc.inject({ kind: 'anonymous', userId: null, apiKeyId: null, tenantId: null, orgId: null, orgRole: null, platformRoles: [], scopes: [] }, { method: 'GET', url: '/agent-runs/idle-check?agent_name=deriver' })).json().data.reason).toBe('no organization context');
  });
});
