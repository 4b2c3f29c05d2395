export interface ChatMessage { role: 'system' | 'user' | 'assistant'; content: string }
export interface CompletionRequest { model: string; messages: ChatMessage[]; signal?: AbortSignal; onToken?: (token: string) => void }
export interface CompletionResult { text: string; inputTokens: number; outputTokens: number }

/** One interface for every LLM backend. */
export interface Provider { name: string; complete(req: CompletionRequest): Promise<CompletionResult> }

/** An error worth retrying (rate limit, server error, network). */
export class RetryableError extends Error {}

export interface ProviderSettings {
  openaiBaseUrl: string; openaiApiKey: string; anthropicBaseUrl: string; anthropicApiKey: string;
  timeoutMs: number; maxAttempts: number; retryBaseMs: number; offlineDelayMs: number;
}

const words = (s: string) => s.split(/\s+/).filter(Boolean).length;
const sleep = (ms: number, signal?: AbortSignal) => new Promise<void>((resolve, reject) => {
  if (signal?.aborted) return reject(signal.reason);
  const t = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(t); reject(signal.reason); }, { once: true });
});

/** Deterministic, offline: the same input always gives the same reply and token counts. */
export function offlineProvider(delayMs: number): Provider {
  return {
    name: 'offline',
    async complete({ model, messages, signal, onToken }) {
      const last = [...messages].reverse().find((m) => m.role === 'user')?.content ?? '';
      const text = `[${model}] Acknowledged: ${last.trim().split(/\s+/).slice(0, 40).join(' ')}. Plan: analyse, act, report.`;
      const tokens = text.split(/(?<= )/);
      for (const token of tokens) {
        if (signal?.aborted) throw signal.reason;
        if (delayMs) await sleep(delayMs, signal);
        onToken?.(token);
      }
      return { text, inputTokens: messages.reduce((n, m) => n + words(m.content), 0), outputTokens: tokens.length };
    },
  };
}

async function withRetries<T>(s: ProviderSettings, signal: AbortSignal | undefined, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const timeout = AbortSignal.timeout(s.timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    try {
      return await fn(combined);
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      const retryable = err instanceof RetryableError || (err as Error).name === 'TimeoutError' || (err as Error).name === 'TypeError';
      if (!retryable || attempt >= s.maxAttempts) throw err;
      await sleep(s.retryBaseMs * 2 ** (attempt - 1), signal);
    }
  }
}

function check(res: Response, body: string) {
  if (res.status === 429 || res.status >= 500) throw new RetryableError(`provider answered ${res.status}`);
  if (!res.ok) throw new Error(`provider answered ${res.status}: ${body.slice(0, 300)}`);
}

/** OpenAI chat completions (also vLLM, Ollama and other compatible servers), streamed. */
export function openAiProvider(s: ProviderSettings): Provider {
  return {
    name: 'openai',
    complete: (req) => withRetries(s, req.signal, async (signal) => {
      const res = await fetch(`${s.openaiBaseUrl.replace(/\/$/, '')}/chat/completions`, {
        method: 'POST', signal,
        headers: { 'content-type': 'application/json', ...(s.openaiApiKey ? { authorization: `Bearer ${s.openaiApiKey}` } : {}) },
        body: JSON.stringify({ model: req.model, messages: req.messages, stream: true, stream_options: { include_usage: true } }),
      });
      if (!res.ok) check(res, await res.text());
      let text = '';
      let usage = { prompt_tokens: 0, completion_tokens: 0 };
      const decoder = new TextDecoder();
      let buffer = '';
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let nl;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl).trim();
          buffer = buffer.slice(nl + 1);
          if (!line.startsWith('data:')) continue;
          const data = line.slice(5).trim();
          if (data === '[DONE]') continue;
          const json = JSON.parse(data) as { choices?: { delta?: { content?: string } }[]; usage?: typeof usage };
          const token = json.choices?.[0]?.delta?.content;
          if (token) {
            text += token;
            req.onToken?.(token);
          }
          if (json.usage) usage = json.usage;
        }
      }
      return { text, inputTokens: usage.prompt_tokens, outputTokens: usage.completion_tokens };
    }),
  };
}

/** Anthropic Messages API (non-streamed; the reply is delivered as one token). */
export function anthropicProvider(s: ProviderSettings): Provider {
  return {
    name: 'anthropic',
    complete: (req) => withRetries(s, req.signal, async (signal) => {
      const system = req.messages.filter((m) => m.role === 'system').map((m) => m.content).join('\n\n');
      const res = await fetch(`${s.anthropicBaseUrl.replace(/\/$/, '')}/v1/messages`, {
        method: 'POST', signal,
        headers: { 'content-type': 'application/json', 'x-api-key': s.anthropicApiKey, 'anthropic-version': '2023-06-01' },
        body: JSON.stringify({ model: req.model, max_tokens: 1024, ...(system ? { system } : {}), messages: req.messages.filter((m) => m.role !== 'system') }),
      });
      const body = await res.text();
      check(res, body);
      const json = JSON.parse(body) as { content: { type: string; text?: string }[]; usage: { input_tokens: number; output_tokens: number } };
      const text = json.content.filter((c) => c.type === 'text').map((c) => c.text ?? '').join('');
      req.onToken?.(text);
      return { text, inputTokens: json.usage.input_tokens, outputTokens: json.usage.output_tokens };
    }),
  };
}

export function providers(s: ProviderSettings): Record<string, Provider> {
  return { offline: offlineProvider(s.offlineDelayMs), openai: openAiProvider(s), anthropic: anthropicProvider(s) };
}
