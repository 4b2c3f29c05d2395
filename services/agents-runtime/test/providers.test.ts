import type { ServerResponse } from 'node:http';
import { waitFor } from '@aos/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import { anthropicProvider, offlineProvider, openAiProvider, ProviderError, UsageMeter, type Provider, type ProviderSettings } from '../src/domain/providers.js';
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
    expect(result).toEqual({ text: 'Hello there', inputTokens: 9, outputTokens: 3, estimated: false });
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
    expect(result.inputTokens).toBe(Math.ceil('You are terse. Say hello'.length / 4));
    expect(result.outputTokens).toBe(Math.ceil('four score and seven'.length / 4));
    expect(result.estimated).toBe(true);
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
    expect(result).toEqual({ text: 'Bonjour, monde', inputTokens: 31, outputTokens: 7, estimated: false });
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

describe('usage of a call that ends early (the meter)', () => {
  const chunk = (content: string) => `data: ${JSON.stringify({ choices: [{ delta: { content } }] })}\n\n`;
  /** Runs a call that the caller aborts once `after` tokens arrived; returns what the meter counted. */
  async function abortedAfter(provider: Provider, after: number) {
    const meter = new UsageMeter();
    const controller = new AbortController();
    let n = 0;
    const pending = provider.complete({ model: 'm', messages, meter, signal: controller.signal, onToken: () => { if (++n === after) controller.abort(new Error('cancelled')); } });
    await expect(pending).rejects.toThrow('cancelled');
    return meter.usage(messages);
  }

  it('OpenAI-compatible, cut mid-stream: the prompt and the streamed text, estimated at ~4 characters a token', async () => {
    server = await fakeProvider((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const t of ['The quick', ' brown fox', ' jumps']) res.write(chunk(t));
    });
    expect(await abortedAfter(openAiProvider(settings(server.url)), 2)).toEqual({
      inputTokens: Math.ceil('You are terse. Say hello'.length / 4), outputTokens: Math.ceil('The quick brown fox'.length / 4), estimated: true,
    });
  });

  it('Anthropic, cut mid-stream: the prompt count of message_start, the output estimated', async () => {
    server = await fakeProvider((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`event: message_start\ndata: ${JSON.stringify({ type: 'message_start', message: { usage: { input_tokens: 31, output_tokens: 1 } } })}\n\n`);
      for (const text of ['Bonjour', ', monde', '!']) res.write(`event: content_block_delta\ndata: ${JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } })}\n\n`);
    });
    expect(await abortedAfter(anthropicProvider(settings(server.url)), 2)).toEqual({ inputTokens: 31, outputTokens: Math.ceil('Bonjour, monde'.length / 4), estimated: true });
  });

  it('offline, cut mid-stream: exact counts (its own: prompt words, streamed pieces)', async () => {
    expect(await abortedAfter(offlineProvider(0), 3)).toEqual({ inputTokens: 5, outputTokens: 3, estimated: false });
  });

  it('a request the provider never answered, or attempts that failed before answering, use nothing', async () => {
    server = await fakeProvider(() => {});
    const meter = new UsageMeter();
    const controller = new AbortController();
    const pending = openAiProvider(settings(server.url)).complete({ model: 'm', messages, meter, signal: controller.signal });
    await waitFor(() => server!.requests.length === 1, { message: 'request sent' });
    controller.abort(new Error('cancelled'));
    await expect(pending).rejects.toThrow('cancelled');
    expect(meter.usage(messages)).toEqual({ inputTokens: 0, outputTokens: 0, estimated: false });
    await server.close();

    server = await fakeProvider((_req, res, n) => (n === 1 ? failWith(503)(res) : openAiStream(res, ['ok'], { prompt_tokens: 9, completion_tokens: 1 })));
    const after = new UsageMeter();
    expect(await openAiProvider(settings(server.url)).complete({ model: 'm', messages, meter: after })).toMatchObject({ inputTokens: 9, outputTokens: 1 });
    expect(after.usage(messages)).toEqual({ inputTokens: 9, outputTokens: 1, estimated: false });
  });
});
