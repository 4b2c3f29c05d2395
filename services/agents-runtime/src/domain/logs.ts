import type { Executor } from '@aos/db';
import { logs } from '../db/schema.js';

export const LogLevels = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LogLevels)[number];

/**
 * Appends a line to an agent's own log (`source: file`): what the runtime did for the agent —
 * bootstrap, stop/start/restart, client status changes, runs queued (by whom), started, retried and finished.
 * Written in the caller's transaction, so a line exists exactly when its change does.
 */
export async function agentLog(db: Executor, a: { orgId: string; name: string; id: number }, level: LogLevel, message: string, meta: Record<string, unknown> = {}) {
  await db.insert(logs).values({ orgId: a.orgId, agent: a.name, level, message: message.slice(0, 20_000), meta: { agent_id: a.id, ...meta }, source: 'file' });
}

/** One line about a run's outcome: status, tokens (estimated or not), cost, error. */
export function runOutcomeLine(r: { id: number; status: string; inputTokens: number; outputTokens: number; usageEstimated: boolean; costUsd: number; error: string | null }) {
  const usage = `${r.inputTokens} in / ${r.outputTokens} out tokens${r.usageEstimated ? ' (partly estimated)' : ''}, $${r.costUsd.toFixed(6)}`;
  return `run ${r.id} ${r.status}: ${usage}${r.error && r.status !== 'cancelled' ? `; ${r.error.slice(0, 500)}` : ''}`;
}
