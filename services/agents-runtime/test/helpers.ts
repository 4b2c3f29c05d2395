import { subjectFor } from '@aos/bus';
import type { Principal } from '@aos/contracts';
import { startTestService, userPrincipal, waitFor, type TestServiceOptions } from '@aos/testkit';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { v7 as uuidv7 } from 'uuid';
import { service } from '../src/service.js';

export type Svc = Awaited<ReturnType<typeof startTestService<typeof service.schema, typeof service.config>>>;
export const startAgents = (opts: TestServiceOptions = {}): Promise<Svc> => startTestService(service, opts);

export type Api = ReturnType<typeof client>;
export function client(svc: Svc, principal: Principal = userPrincipal()) {
  const call = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: unknown, headers?: Record<string, string>) =>
    svc.inject(principal, { method, url, ...(payload !== undefined ? { payload: payload as object } : {}), ...(headers ? { headers } : {}) });
  return {
    principal, call,
    async agent(body: Record<string, unknown>) {
      const res = await call('POST', '/agents', body);
      if (res.statusCode !== 201) throw new Error(`agent ${res.statusCode} ${res.body}`);
      return res.json().data.agent as { id: number; name: string; status: string };
    },
    /** Waits until the run reaches a final status and returns it. */
    async finished(id: number) {
      return waitFor(async () => {
        const run = (await call('GET', `/agent-runs/${id}`)).json().data;
        return ['succeeded', 'failed', 'cancelled'].includes(run.status) ? run : null;
      }, { message: `run ${id} finished` });
    },
  };
}

export const outbox = async (svc: Svc, type: string) =>
  (await svc.ctx.pool.query('SELECT envelope FROM aos_outbox WHERE type = $1 ORDER BY created_at, id', [type])).rows.map((r) => r.envelope);

/** Publishes an event on the service's bus the way another service's relay would (same envelope, msgID = id). */
export async function publish(svc: Svc, type: string, orgId: string, data: Record<string, unknown>, opts: { id?: string; occurredAt?: string; msgId?: string } = {}) {
  const bus = await svc.ctx.bus;
  const env = {
    id: opts.id ?? uuidv7(), type, version: 1, source: type.split('.')[0], occurredAt: opts.occurredAt ?? new Date().toISOString(),
    tenantId: null, orgId, actor: { type: 'system', id: null }, data,
  };
  await bus.js.publish(subjectFor(bus.names, type), JSON.stringify(env), { msgID: opts.msgId ?? env.id });
  return env;
}

/** A `tasks.task.*` payload with defaults. */
export const task = (o: Record<string, unknown> = {}) => ({
  taskId: 1, title: 'A task', status: 'todo', priority: 'P2', type: 'feature', assignee: null, productId: null, productSlug: null, parentTaskId: null, createdBy: null, ...o,
});

/** Whether `handler` has handled the event (its inbox row), to wait for an effect without sleeping. */
export const handled = async (svc: Svc, eventId: string, handler: 'derivation-rules' | 'agent-queues' | 'org-budgets') =>
  (await svc.ctx.pool.query('SELECT 1 FROM aos_inbox WHERE event_id = $1 AND consumer = $2', [eventId, `agents-runtime:${handler}`])).rowCount! > 0;

export interface RecordedRequest { url: string; headers: IncomingMessage['headers']; body: Record<string, unknown> }

/**
 * A local HTTP server standing in for an LLM provider: `handle` answers each request (it
 * speaks the real protocol in the tests), every request is recorded.
 */
export async function fakeProvider(handle: (req: RecordedRequest, res: ServerResponse, n: number) => unknown) {
  const requests: RecordedRequest[] = [];
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => { raw += c; });
    req.on('end', () => {
      const recorded = { url: req.url ?? '', headers: req.headers, body: raw ? JSON.parse(raw) : {} };
      requests.push(recorded);
      void Promise.resolve(handle(recorded, res, requests.length)).catch(() => res.destroy());
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    requests,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

/** Writes an OpenAI chat-completions stream: one chunk per token, then usage, then [DONE]. */
export function openAiStream(res: ServerResponse, tokens: string[], usage: { prompt_tokens: number; completion_tokens: number } | null = { prompt_tokens: 12, completion_tokens: tokens.length }) {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  for (const token of tokens) res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: token } }] })}\n\n`);
  if (usage) res.write(`data: ${JSON.stringify({ choices: [], usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens } })}\n\n`);
  res.end('data: [DONE]\n\n');
}

/** Writes an Anthropic Messages API stream (message_start, content_block_delta…, message_delta, message_stop). */
export function anthropicStream(res: ServerResponse, tokens: string[], usage = { input_tokens: 20, output_tokens: tokens.length }) {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  send('message_start', { type: 'message_start', message: { id: 'msg_1', type: 'message', role: 'assistant', content: [], model: 'claude-test', usage: { input_tokens: usage.input_tokens, output_tokens: 1 } } });
  send('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
  send('ping', { type: 'ping' });
  for (const text of tokens) send('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } });
  send('content_block_stop', { type: 'content_block_stop', index: 0 });
  send('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: usage.output_tokens } });
  send('message_stop', { type: 'message_stop' });
  res.end();
}

/** Parses a text/event-stream body into events, as an EventSource would. */
export function parseSse(text: string) {
  return text.split(/\n\n/).map((block) => block.split('\n').filter((l) => !l.startsWith(':'))).filter((lines) => lines.some((l) => l.startsWith('data:'))).map((lines) => ({
    id: lines.find((l) => l.startsWith('id: '))?.slice(4) ?? null,
    event: lines.find((l) => l.startsWith('event: '))?.slice(7) ?? 'message',
    data: JSON.parse(lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n')),
  }));
}
