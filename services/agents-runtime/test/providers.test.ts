import type { ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { anthropicProvider, offlineProvider, openAiProvider, ProviderError, type ProviderSettings } from '../src/domain/providers.js';
import { anthropicStream, fakeProvider, openAiStream } from './helpers.js';

type Server = Awaited<ReturnType<typeof fakeProvider>>;
let server: Server | undefined;
afterEach(async () => { await server?.close(); server = undefined; });

const settings = (url: string, o: Partial<ProviderSettings> = {}): ProviderSettings => ({
  openaiBaseUrl: `${url}/v1`, openaiApiKey: 'sk-test', anthropicBaseUrl: url, anthropicApiKey: 'ak-test', anthropicMaxTokens: 256,
  timeoutMs: 2_000, maxAttempts: 3, retryBaseMs: 10, retryMaxMs: 1_000, offlineDelayMs: 0, ...o,
});
const messages = [{ role: 'system' as const, content: 'You are terse.' }, { role: 'user' as const, content: 'Say hello' }];
const failWith = (status: number, headers: Record<string, string> = {}) => (res: ServerResponse) =>
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify({ error: { message: `status ${status}` } }));

describe('OpenAI-compatible provider (local server speaking the chat completions API)', () => {
  it('streams tokens in order and reports the usage of the final chunk', async () => {
    server = await fakeProvider((_req, res) => openAiStream(res, ['Hel', 'lo', ' there'], { prompt_tokens: 9, completion_tokens: 3 }));
    const tokens: string[] = [];
    const result = await openAiProvider(settings(server.url)).complete({ model: 'gpt-test', messages, onToken: (t) => tokens.push(t) });
    expect(result).toEqual({ text: 'Hello there', inputTokens: 9, outputTokens: 3 });
    expect(tokens).toEqual(['Hel', 'lo', ' there']);
    const [req] = server.requests;
    expect(req!.url).toBe('/v1/chat/completions');
    expect(req!.headers.authorization).toBe('Bearer sk-test');
    expect(req!.body).toEqual({ model: 'gpt-test', messages, stream: true, stream_options: { include_usage: true } });
  });

  it('retries a 500 and succeeds on the next attempt', async () => {
    server = await fakeProvider((_req, res, n) => (n === 1 ? failWith(500)(res) : openAiStream(res, ['ok'])));
    const result = await openAiProvider(settings(server.url)).complete({ model: 'm', messages });
    expect(result.text).toBe('ok');
    expect(server.requests).toHaveLength(2);
  });

  it('honours Retry-After on a 429', async () => {
    server = await fakeProvider((_req, res, n) => (n === 1 ? failWith(429, { 'retry-after-ms': '150' })(res) : openAiStream(res, ['later'])));
    const started = Date.now();
    expect((await openAiProvider(settings(server.url, { retryBaseMs: 1 })).complete({ model: 'm', messages })).text).toBe('later');
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
  });

  it('does not retry a 400 (the request itself is wrong)', async () => {
    server = await fakeProvider((_req, res) => failWith(400)(res));
    const err = await openAiProvider(settings(server.url)).complete({ model: 'm', messages }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProviderError);
    expect(err).toMatchObject({ retryable: false, kind: 'http' });
    expect((err as Error).message).toContain('400');
    expect(server.requests).toHaveLength(1);
  });

  it('gives up after LLM_MAX_ATTEMPTS server errors, with a retryable error', async () => {
    server = await fakeProvider((_req, res) => failWith(503)(res));
    const err = await openAiProvider(settings(server.url, { maxAttempts: 4 })).complete({ model: 'm', messages }).catch((e: unknown) => e);
    expect(err).toMatchObject({ retryable: true, kind: 'http' });
    expect(server.requests).toHaveLength(4);
  });

  it('times out a request that never answers and retries it', async () => {
    server = await fakeProvider((_req, res, n) => { if (n > 1) openAiStream(res, ['awake']); });
    const result = await openAiProvider(settings(server.url, { timeoutMs: 200 })).complete({ model: 'm', messages });
    expect(result.text).toBe('awake');
    expect(server.requests).toHaveLength(2);
  });

  it('reports a timeout kind when every attempt times out', async () => {
    server = await fakeProvider(() => {});
    const err = await openAiProvider(settings(server.url, { timeoutMs: 100, maxAttempts: 2 })).complete({ model: 'm', messages }).catch((e: unknown) => e);
    expect(err).toMatchObject({ retryable: true, kind: 'timeout' });
  });

  it('an attempt that already streamed tokens is not repeated inside the call (no duplicate tokens)', async () => {
    server = await fakeProvider((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: ${JSON.stringify({ choices: [{ delta: { content: 'partial' } }] })}\n\n`);
      setTimeout(() => res.destroy(), 20);
    });
    const tokens: string[] = [];
    const err = await openAiProvider(settings(server.url)).complete({ model: 'm', messages, onToken: (t) => tokens.push(t) }).catch((e: unknown) => e);
    expect(err).toMatchObject({ retryable: true });
    expect(tokens).toEqual(['partial']);
    expect(server.requests).toHaveLength(1);
  });

  it('estimates tokens when the server reports no usage (older Ollama, some vLLM builds)', async () => {
    server = await fakeProvider((_req, res) => openAiStream(res, ['four score and seven'], null));
    const result = await openAiProvider(settings(server.url)).complete({ model: 'm', messages });
    expect(result.inputTokens).toBeGreaterThan(0);
    expect(result.outputTokens).toBe(Math.ceil('four score and seven'.length / 4));
  });

  it('a closed port is a retryable network error', async () => {
    server = await fakeProvider(() => {});
    const url = server.url;
    await server.close();
    server = undefined;
    const err = await openAiProvider(settings(url, { maxAttempts: 2 })).complete({ model: 'm', messages }).catch((e: unknown) => e);
    expect(err).toMatchObject({ retryable: true, kind: 'network' });
  });

  it('stops at once when the caller aborts (cancellation)', async () => {
    server = await fakeProvider((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: ${JSON.stringify({ choices: [{ delta: { content: 'a' } }] })}\n\n`);
    });
    const controller = new AbortController();
    const pending = openAiProvider(settings(server.url)).complete({ model: 'm', messages, signal: controller.signal, onToken: () => controller.abort(new Error('cancelled')) });
    await expect(pending).rejects.toThrow('cancelled');
    expect(server.requests).toHaveLength(1);
  });
});

describe('Anthropic provider (local server speaking the Messages API)', () => {
  it('streams text deltas and reads usage from message_start and message_delta', async () => {
    server = await fakeProvider((_req, res) => anthropicStream(res, ['Bonjour', ', ', 'monde'], { input_tokens: 31, output_tokens: 7 }));
    const tokens: string[] = [];
    const result = await anthropicProvider(settings(server.url)).complete({ model: 'claude-test', messages, onToken: (t) => tokens.push(t) });
    expect(result).toEqual({ text: 'Bonjour, monde', inputTokens: 31, outputTokens: 7 });
    expect(tokens).toEqual(['Bonjour', ', ', 'monde']);
    const [req] = server.requests;
    expect(req!.url).toBe('/v1/messages');
    expect(req!.headers).toMatchObject({ 'x-api-key': 'ak-test', 'anthropic-version': '2023-06-01' });
    expect(req!.body).toEqual({ model: 'claude-test', max_tokens: 256, stream: true, system: 'You are terse.', messages: [{ role: 'user', content: 'Say hello' }] });
  });

  it('retries 529 (overloaded) and an overloaded_error event before any token', async () => {
    server = await fakeProvider((_req, res, n) => {
      if (n === 1) return failWith(529)(res);
      if (n === 2) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        return void res.end(`event: error\ndata: ${JSON.stringify({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } })}\n\n`);
      }
      anthropicStream(res, ['third time']);
    });
    expect((await anthropicProvider(settings(server.url)).complete({ model: 'c', messages })).text).toBe('third time');
    expect(server.requests).toHaveLength(3);
  });

  it('a stream cut before message_stop is an error, not a truncated success', async () => {
    server = await fakeProvider((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(`event: message_start\ndata: ${JSON.stringify({ type: 'message_start', message: { usage: { input_tokens: 3, output_tokens: 0 } } })}\n\n`);
    });
    await expect(anthropicProvider(settings(server.url, { maxAttempts: 1 })).complete({ model: 'c', messages })).rejects.toThrow('message_stop');
  });

  it('does not retry 401 (bad key)', async () => {
    server = await fakeProvider((_req, res) => failWith(401)(res));
    await expect(anthropicProvider(settings(server.url)).complete({ model: 'c', messages })).rejects.toMatchObject({ retryable: false });
    expect(server.requests).toHaveLength(1);
  });
});

describe('offline provider', () => {
  it('is deterministic: the same conversation gives the same reply and token counts', async () => {
    const p = offlineProvider(0);
    const a = await p.complete({ model: 'offline-1', messages });
    const b = await p.complete({ model: 'offline-1', messages });
    expect(a).toEqual(b);
    expect(a.text).toBe('[offline-1] Acknowledged: Say hello. Plan: analyse, act, report.');
    expect(a.inputTokens).toBe(5);
  });
});
