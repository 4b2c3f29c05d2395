import { Queues } from '@aos/contracts';
import { runSweeps, scheduleSweeps, type Sweep } from '@aos/runtime';
import type { Ctx } from '../service.js';

export const CLEANUP_SCHEDULER_ID = 'agents-cleanup';
const BATCH = 5_000;

type Config = Ctx['config'];
const older = (column: string) => `$1::int > 0 AND ${column} < now() - make_interval(days => $1)`;

/**
 * Statements of one cleanup run with their retention, each deleting at most one batch (repeated
 * until nothing is left, so a backlog never holds long locks). A retention of 0 keeps everything.
 */
const SWEEPS = {
  logs: [`DELETE FROM agent_logs WHERE id IN (SELECT id FROM agent_logs WHERE ${older('created_at')} LIMIT ${BATCH})`, (c: Config) => c.LOG_RETENTION_DAYS],
  // Finished runs only; a run on a task that is in todo again stays, or the task would look never worked on (ready) and run again.
  runs: [`DELETE FROM agent_runs WHERE id IN (
    SELECT r.id FROM agent_runs r WHERE r.status IN ('succeeded', 'failed', 'cancelled') AND ${older('r.finished_at')}
       AND NOT EXISTS (SELECT 1 FROM assigned_tasks t WHERE t.org_id = r.org_id AND t.task_id = r.task_id AND t.status = 'todo') LIMIT ${BATCH})`, (c: Config) => c.RUN_RETENTION_DAYS],
  discovery_runs: [`DELETE FROM discovery_runs WHERE id IN (SELECT id FROM discovery_runs WHERE ${older('created_at')} LIMIT ${BATCH})`, (c: Config) => c.RUN_RETENTION_DAYS],
  // Whole conversations: history sent to the provider never loses its beginning while the talk goes on.
  messages: [`DELETE FROM agent_messages WHERE (agent_id, conversation_id) IN (
    SELECT agent_id, conversation_id FROM agent_messages WHERE $1::int > 0 GROUP BY agent_id, conversation_id
    HAVING max(created_at) < now() - make_interval(days => $1) LIMIT ${BATCH / 10})`, (c: Config) => c.MESSAGE_RETENTION_DAYS],
} satisfies Record<string, Sweep<Config>>;

export type CleanupResult = Record<keyof typeof SWEEPS, number>;

/**
 * Deletes what is past its retention: log lines (LOG_RETENTION_DAYS), finished agent and
 * discovery runs (RUN_RETENTION_DAYS) and conversations idle for MESSAGE_RETENTION_DAYS. What
 * stays is bounded otherwise: run event streams expire in Redis (RUN_STREAM_TTL_SEC), bootstrap
 * records are a few steps on the agent row, and derivations, lineage and the task projection
 * hold one row per task (they are what keeps derivation exactly-once and the idle check right).
 */
export const runCleanup = (ctx: Ctx): Promise<CleanupResult> => runSweeps(ctx, SWEEPS);

/** Runs the sweeps every CLEANUP_INTERVAL_SECONDS, once across all replicas. */
export const startCleanup = (ctx: Ctx): Promise<void> =>
  scheduleSweeps(ctx, Queues.agentsCleanup, CLEANUP_SCHEDULER_ID, ctx.config.CLEANUP_INTERVAL_SECONDS, () => runCleanup(ctx));
