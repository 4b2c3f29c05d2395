import { Env } from '@aos/core';
import { Type, type TProperties } from '@sinclair/typebox';

/** Settings of this service beyond the base ones every service reads (see @aos/runtime). */
export const config = {
  /** Provider for agents created without one: offline (deterministic, no network), openai, anthropic. */
  LLM_DEFAULT_PROVIDER: Type.Union([Type.Literal('offline'), Type.Literal('openai'), Type.Literal('anthropic')], { default: 'offline' }),
  /** OpenAI-compatible endpoint (OpenAI, vLLM, Ollama…), e.g. https://api.openai.com/v1. */
  OPENAI_BASE_URL: Env.httpUrl('https://api.openai.com/v1'),
  OPENAI_API_KEY: Type.String({ default: '' }),
  ANTHROPIC_BASE_URL: Env.httpUrl('https://api.anthropic.com'),
  ANTHROPIC_API_KEY: Type.String({ default: '' }),
  LLM_TIMEOUT_MS: Env.int(60_000, { minimum: 100, maximum: 600_000 }),
  /** Attempts of one provider call on 429/5xx/network errors, with exponential backoff. */
  LLM_MAX_ATTEMPTS: Env.int(3, { minimum: 1, maximum: 10 }),
  LLM_RETRY_BASE_MS: Env.int(500, { minimum: 1, maximum: 60_000 }),
  /** Delay between the offline provider's tokens (lets tests cancel a running run). */
  OFFLINE_TOKEN_DELAY_MS: Env.int(0, { minimum: 0, maximum: 10_000 }),
  LLM_COST_PER_1K_INPUT_USD: Type.Number({ default: 0.0008, minimum: 0 }),
  LLM_COST_PER_1K_OUTPUT_USD: Type.Number({ default: 0.004, minimum: 0 }),
  /** Runs executed at once by this process. */
  RUN_CONCURRENCY: Env.int(4, { minimum: 1, maximum: 100 }),
  RUN_ATTEMPTS: Env.int(3, { minimum: 1, maximum: 20 }),
} satisfies TProperties;
