export interface ChatMessage { role: 'system' | 'user' | 'assistant'; content: string }
export interface CompletionRequest { model: string; messages: ChatMessage[]; signal?: AbortSignal; onToken?: (token: string) => void; meter?: UsageMeter }
export interface Usage { inputTokens: number; outputTokens: number; /** Some of it is the ~4-characters-a-token estimate, not the provider's count. */ estimated: boolean }
export interface CompletionResult extends Usage { text: string }

/** One interface for every LLM backend. */
export interface Provider { name: string; complete(req: CompletionRequest): Promise<CompletionResult> }

/** A provider failure; `retryable` for rate limits, server errors, timeouts and network errors. */
export class ProviderError extends Error {
  constructor(message: string, readonly retryable: boolean, readonly kind: 'http' | 'timeout' | 'network' | 'protocol', readonly retryAfterMs?: number) {
    super(message);
    this.name = 'ProviderError';
  }
}

export interface ProviderSettings {
  openaiBaseUrl: string; openaiApiKey: string; anthropicBaseUrl: string; anthropicApiKey: string; anthropicMaxTokens: number;
  timeoutMs: number; maxAttempts: number; retryBaseMs: number; retryMaxMs: number; offlineDelayMs: number;
}

const words = (s: string) => s.split(/\s+/).filter(Boolean).length;
/** Rough token count (~4 characters a token) for servers that report no usage. */
const estimateTokens = (s: string) => Math.max(1, Math.ceil(s.length / 4));
const promptText = (messages: ChatMessage[]) => messages.map((m) => m.content).join(' ');

/**
 * What the provider call in progress has used so far, kept up to date while it streams, so a
 * call that ends early (cancelled, or failed after tokens arrived) is still accounted for.
 * Counts the provider reported win; the rest is estimated (~4 characters a token): the prompt
 * once the provider accepted the request (HTTP 200; offline: at once), the output from the
 * text streamed so far. A request the provider never answered uses nothing.
 */
export class UsageMeter {
  accepted = false;
  inputTokens: number | null = null;
  outputTokens: number | null = null;
  text = '';

  /** A new attempt starts: an earlier one that failed before any token is not counted. */
  reset() {
    this.accepted = false;
    this.inputTokens = null;
    this.outputTokens = null;
    this.text = '';
  }

  usage(messages: ChatMessage[]): Usage {
    if (!this.accepted && !this.text) return { inputTokens: 0, outputTokens: 0, estimated: false };
    const output = this.outputTokens ?? (this.text ? estimateTokens(this.text) : 0);
    return {
      inputTokens: this.inputTokens ?? estimateTokens(promptText(messages)), outputTokens: output,
      estimated: this.inputTokens === null || (this.outputTokens === null && this.text !== ''),
    };
  }
}

export const sleep = (ms: number, signal?: AbortSignal) => new Promise<void>((resolve, reject) => {
  if (signal?.aborted) return reject(signal.reason);
  const onAbort = () => { clearTimeout(t); reject(signal!.reason); };
  // The listener goes with the timer: a long stream of sleeps on one signal leaves none behind.
  const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, ms);
  signal?.addEventListener('abort', onAbort, { once: true });
});

/** Deterministic, offline: the same input always gives the same reply and token counts. */
export function offlineProvider(delayMs: number): Provider {
  return {
    name: 'offline',
    async complete({ model, messages, signal, onToken, meter }) {
      const last = [...messages].reverse().find((m) => m.role === 'user')?.content ?? '';
      const text = `[${model}] Acknowledged: ${last.trim().split(/\s+/).slice(0, 40).join(' ')}. Plan: analyse, act, report.`;
      const tokens = text.split(/(?<= )/);
      const inputTokens = messages.reduce((n, m) => n + words(m.content), 0);
      // Its counts are exact by definition: the prompt's words, one token per streamed piece.
      meter?.reset();
      if (meter) Object.assign(meter, { accepted: true, inputTokens, outputTokens: 0 });
      for (const [n, token] of tokens.entries()) {
        if (signal?.aborted) throw signal.reason;
        if (delayMs) await sleep(delayMs, signal);
        onToken?.(token);
        if (meter) Object.assign(meter, { outputTokens: n + 1, text: meter.text + token });
      }
      return { text, inputTokens, outputTokens: tokens.length, estimated: false };
    },
  };
}

function retryAfter(res: Response): number | undefined {
  const ms = Number(res.headers.get('retry-after-ms'));
  if (ms > 0) return ms;
  const value = res.headers.get('retry-after');
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

async function failure(res: Response): Promise<ProviderError> {
  const body = (await res.text().catch(() => '')).slice(0, 300);
  // 529 is Anthropic's "overloaded".
  const retryable = res.status === 408 || res.status === 409 || res.status === 429 || res.status >= 500;
  return new ProviderError(`provider answered ${res.status}${body ? `: ${body}` : ''}`, retryable, 'http', retryAfter(res));
}

/**
 * One provider call with a timeout per attempt and retries with exponential backoff (or the
 * server's Retry-After, capped). An attempt that already delivered tokens is not repeated
 * here: the caller would see them twice; the error goes up as retryable instead.
 */
async function withRetries(s: ProviderSettings, req: CompletionRequest, attempt: (signal: AbortSignal, onToken: (t: string) => void, meter: UsageMeter) => Promise<CompletionResult>): Promise<CompletionResult> {
  const meter = req.meter ?? new UsageMeter();
  for (let n = 1; ; n++) {
    const timeout = AbortSignal.timeout(s.timeoutMs);
    const signal = req.signal ? AbortSignal.any([req.signal, timeout]) : timeout;
    let delivered = 0;
    meter.reset();
    try {
      return await attempt(signal, (t) => { delivered++; meter.text += t; req.onToken?.(t); }, meter);
    } catch (raw) {
      if (req.signal?.aborted) throw req.signal.reason;
      const err = raw instanceof ProviderError ? raw
        : timeout.aborted ? new ProviderError(`provider timed out after ${s.timeoutMs} ms`, true, 'timeout')
          : (raw as Error).name === 'TypeError' ? new ProviderError(`provider unreachable: ${(raw as Error & { cause?: Error }).cause?.message ?? (raw as Error).message}`, true, 'network')
            : new ProviderError(`provider response not understood: ${(raw as Error).message}`, false, 'protocol');
      if (!err.retryable || delivered > 0 || n >= s.maxAttempts) throw err;
      await sleep(Math.min(err.retryAfterMs ?? s.retryBaseMs * 2 ** (n - 1), s.retryMaxMs), req.signal);
    }
  }
}

/** Server-sent events of a streamed HTTP response body. */
async function* sseEvents(body: ReadableStream<Uint8Array> | null): AsyncGenerator<{ event: string; data: string }> {
  if (!body) throw new ProviderError('provider sent no body', true, 'protocol');
  const decoder = new TextDecoder();
  let buffer = '';
  let event = 'message';
  let data: string[] = [];
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl).replace(/\r$/, '');
      buffer = buffer.slice(nl + 1);
      if (line === '') {
        if (data.length) yield { event, data: data.join('\n') };
        event = 'message';
        data = [];
      } else if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
  }
  if (data.length) yield { event, data: data.join('\n') };
}

/** OpenAI chat completions (also vLLM, Ollama and other compatible servers), streamed with usage. */
export function openAiProvider(s: ProviderSettings): Provider {
  return {
    name: 'openai',
    complete: (req) => withRetries(s, req, async (signal, onToken, meter) => {
      const res = await fetch(`${s.openaiBaseUrl.replace(/\/$/, '')}/chat/completions`, {
        method: 'POST', signal,
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...(s.openaiApiKey ? { authorization: `Bearer ${s.openaiApiKey}` } : {}) },
        body: JSON.stringify({ model: req.model, messages: req.messages, stream: true, stream_options: { include_usage: true } }),
      });
      if (!res.ok) throw await failure(res);
      meter.accepted = true;
      let text = '';
      type Usage = { prompt_tokens: number; completion_tokens: number };
      let usage: Usage | null = null;
      for await (const { data } of sseEvents(res.body)) {
        // Events already buffered when the call was aborted are not delivered.
        if (signal.aborted) throw signal.reason;
        if (data === '[DONE]') break;
        const json = JSON.parse(data) as { choices?: { delta?: { content?: string | null } }[]; usage?: Usage | null; error?: { message?: string } };
        if (json.error) throw new ProviderError(`provider stream error: ${json.error.message ?? 'unknown'}`, true, 'http');
        const token = json.choices?.[0]?.delta?.content;
        if (token) {
          text += token;
          onToken(token);
        }
        if (json.usage) usage = json.usage;
      }
      if (usage) Object.assign(meter, { inputTokens: usage.prompt_tokens, outputTokens: usage.completion_tokens });
      return { text, ...meter.usage(req.messages) };
    }),
  };
}

/** Anthropic Messages API, streamed (message_start / content_block_delta / message_delta). */
export function anthropicProvider(s: ProviderSettings): Provider {
  return {
    name: 'anthropic',
    complete: (req) => withRetries(s, req, async (signal, onToken, meter) => {
      const system = req.messages.filter((m) => m.role === 'system').map((m) => m.content).join('\n\n');
      const res = await fetch(`${s.anthropicBaseUrl.replace(/\/$/, '')}/v1/messages`, {
        method: 'POST', signal,
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', 'x-api-key': s.anthropicApiKey, 'anthropic-version': '2023-06-01' },
        body: JSON.stringify({ model: req.model, max_tokens: s.anthropicMaxTokens, stream: true, ...(system ? { system } : {}), messages: req.messages.filter((m) => m.role !== 'system') }),
      });
      if (!res.ok) throw await failure(res);
      meter.accepted = true;
      let text = '';
      let stopped = false;
      for await (const { event, data } of sseEvents(res.body)) {
        if (signal.aborted) throw signal.reason;
        const json = JSON.parse(data) as {
          message?: { usage?: { input_tokens?: number; output_tokens?: number } }; delta?: { type?: string; text?: string };
          usage?: { output_tokens?: number }; error?: { type?: string; message?: string };
        };
        if (event === 'error') throw new ProviderError(`provider stream error: ${json.error?.type ?? 'error'}: ${json.error?.message ?? ''}`, json.error?.type !== 'invalid_request_error', 'http');
        // message_start's output count is a placeholder (1): the output is known at message_delta.
        if (event === 'message_start') {
          meter.inputTokens = json.message?.usage?.input_tokens ?? null;
        } else if (event === 'content_block_delta' && json.delta?.type === 'text_delta' && json.delta.text) {
          text += json.delta.text;
          onToken(json.delta.text);
        } else if (event === 'message_delta' && json.usage?.output_tokens !== undefined) {
          meter.outputTokens = json.usage.output_tokens;
        } else if (event === 'message_stop') {
          stopped = true;
          break;
        }
      }
      if (!stopped) throw new ProviderError('provider stream ended before message_stop', true, 'protocol');
      return { text, ...meter.usage(req.messages) };
    }),
  };
}

export function providers(s: ProviderSettings): Record<string, Provider> {
  return { offline: offlineProvider(s.offlineDelayMs), openai: openAiProvider(s), anthropic: anthropicProvider(s) };
}
