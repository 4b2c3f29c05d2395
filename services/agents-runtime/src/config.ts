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
  ANTHROPIC_MAX_TOKENS: Env.int(1024, { minimum: 1, maximum: 200_000 }),
  /** Time one provider call may take (connect to last token). */
  LLM_TIMEOUT_MS: Env.int(60_000, { minimum: 100, maximum: 600_000 }),
  /** Attempts of one provider call on 429/5xx/network errors, with exponential backoff. */
  LLM_MAX_ATTEMPTS: Env.int(3, { minimum: 1, maximum: 10 }),
  LLM_RETRY_BASE_MS: Env.int(500, { minimum: 1, maximum: 60_000 }),
  /** Longest wait a provider's `Retry-After` may impose before the next attempt. */
  LLM_RETRY_MAX_MS: Env.int(30_000, { minimum: 1, maximum: 600_000 }),
  /** Delay between the offline provider's tokens (lets tests cancel a running run). */
  OFFLINE_TOKEN_DELAY_MS: Env.int(0, { minimum: 0, maximum: 10_000 }),
  LLM_COST_PER_1K_INPUT_USD: Type.Number({ default: 0.0008, minimum: 0 }),
  LLM_COST_PER_1K_OUTPUT_USD: Type.Number({ default: 0.004, minimum: 0 }),
  /** Runs executed at once by this process. */
  RUN_CONCURRENCY: Env.int(4, { minimum: 1, maximum: 100 }),
  RUN_ATTEMPTS: Env.int(3, { minimum: 1, maximum: 20 }),
  /** How often a running run checks its cancel flag in the database (pub/sub is the fast path). */
  RUN_CANCEL_POLL_MS: Env.int(1_000, { minimum: 10, maximum: 60_000 }),
  /** How often queued runs whose BullMQ job went missing (crash between insert and enqueue) are re-queued. */
  RUN_RECONCILE_INTERVAL_MS: Env.int(30_000, { minimum: 100, maximum: 3_600_000 }),
  /** Age of a queued run before the reconciler looks at it. */
  RUN_RECONCILE_GRACE_MS: Env.int(15_000, { minimum: 0, maximum: 3_600_000 }),
  /** How long a run's token stream stays readable in Redis after it ends (SSE replay). */
  RUN_STREAM_TTL_SEC: Env.int(3_600, { minimum: 10, maximum: 7 * 86_400 }),
  /** SSE comment lines that keep idle connections (and proxies) open. */
  SSE_HEARTBEAT_MS: Env.int(15_000, { minimum: 50, maximum: 300_000 }),
  /** Time one bootstrap step may take before it is recorded as failed (resumable). */
  BOOTSTRAP_STEP_TIMEOUT_MS: Env.int(5_000, { minimum: 50, maximum: 120_000 }),
  /** Seconds an idle-check answer is cached (state changes evict it earlier). */
  IDLE_CACHE_TTL_SEC: Env.int(15, { minimum: 1, maximum: 3_600 }),
  /** Derived tasks deeper than this never trigger derivation rules (no runaway chains). */
  DERIVATION_MAX_DEPTH: Env.int(3, { minimum: 1, maximum: 20 }),
  /** Days agent log lines (both sources) are kept (0 = forever). */
  LOG_RETENTION_DAYS: Env.int(30, { minimum: 0, maximum: 3_650 }),
  /** Days finished runs (agent and discovery runs) are kept after they ended (0 = forever); efficiency and engine stats cover what is kept. */
  RUN_RETENTION_DAYS: Env.int(180, { minimum: 0, maximum: 3_650 }),
  /** Days a conversation is kept after its newest message (0 = forever). */
  MESSAGE_RETENTION_DAYS: Env.int(90, { minimum: 0, maximum: 3_650 }),
  /** Seconds between cleanup runs (one BullMQ job scheduler: one run per interval across replicas). */
  CLEANUP_INTERVAL_SECONDS: Env.int(3_600, { minimum: 1, maximum: 86_400 }),
  /** Queues `/bull-queue/submit*` may write to (comma list); every queue stays readable. */
  BULL_ADMIN_SUBMIT_QUEUES: Env.list('factory,discovery-engines'),
} satisfies TProperties;
