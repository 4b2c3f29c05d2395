import { Envelope, ListEnvelope, list, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { checkName } from '../domain/agents.js';
import { idleCheck } from '../domain/idle.js';
import type { Ctx } from '../service.js';
import { countOf, windowTotal } from './common.js';
import { agents } from '../db/schema.js';
import { eq } from 'drizzle-orm';

const Window = Type.Optional(Type.Integer({ minimum: 1, maximum: 3_650, description: 'Only the last N days (default: all time)' }));

export async function metricRoutes(app: App, ctx: Ctx) {
  app.get('/agent-metrics/efficiency', {
    config: { scope: 'agents:read' },
    schema: {
      tags: ['Agent metrics'], summary: 'Per-agent tokens, cost and tasks per 1k tokens, most efficient first',
      querystring: Type.Object({ ...PaginationQuery, days: Window }),
      response: { 200: ListEnvelope(Type.Object({ agent: Type.String(), runs: Type.Integer(), succeeded_runs: Type.Integer(), failed_runs: Type.Integer(), total_tokens: Type.Integer(), cost_usd: Type.Number(), tasks_completed: Type.Integer(), tasks_per_1k_tokens: Type.Number(), cost_per_task_usd: Type.Union([Type.Number(), Type.Null()]) })) },
    },
  }, async (request) => {
    const p = page(request.query);
    // $4: the window start (no window: -infinity); bound as a parameter, never spliced into the SQL.
    const since = '$4::timestamptz';
    const from = request.query.days ? new Date(Date.now() - request.query.days * 86_400_000).toISOString() : '-infinity';
    const { rows } = await ctx.pool.query(
      `WITH per_agent AS (
         SELECT a.name AS agent,
                count(r.id)::int AS runs,
                count(r.id) FILTER (WHERE r.status = 'succeeded')::int AS succeeded_runs,
                count(r.id) FILTER (WHERE r.status = 'failed')::int AS failed_runs,
                coalesce(sum(r.input_tokens + r.output_tokens), 0)::bigint AS total_tokens,
                coalesce(sum(r.cost_usd), 0)::float AS cost_usd,
                (SELECT count(*)::int FROM assigned_tasks t WHERE t.org_id = a.org_id AND t.assignee = a.name AND t.status = 'done' AND t.completed_at >= ${since}) AS tasks_completed
           FROM agents a LEFT JOIN agent_runs r ON r.agent_id = a.id AND r.created_at >= ${since}
          WHERE a.org_id = $1 GROUP BY a.id)
       SELECT *, CASE WHEN total_tokens > 0 THEN round(tasks_completed * 1000.0 / total_tokens, 3)::float ELSE 0 END AS tasks_per_1k_tokens,
              CASE WHEN tasks_completed > 0 THEN cost_usd / tasks_completed END AS cost_per_task_usd,
              count(*) OVER ()::int AS total
         FROM per_agent ORDER BY tasks_per_1k_tokens DESC, agent LIMIT $2 OFFSET $3`, [orgOf(request), p.limit, p.offset, from]);
    const total = await windowTotal(rows, p, () => countOf(ctx, agents, eq(agents.orgId, orgOf(request))));
    return list(rows.map(({ total: _t, ...r }) => ({ ...r, total_tokens: Number(r.total_tokens) })), total, p);
  });

  app.get('/agent-metrics/queue-health', {
    config: { scope: 'agents:read' },
    schema: {
      tags: ['Agent metrics'], summary: 'Per-agent task queue (from task events) and run queue: counts and oldest wait',
      querystring: Type.Object({ ...PaginationQuery }),
      response: { 200: ListEnvelope(Type.Object({ agent: Type.String(), queued: Type.Integer(), in_progress: Type.Integer(), blocked: Type.Integer(), oldest_wait_seconds: Type.Union([Type.Integer(), Type.Null()]), runs_queued: Type.Integer(), runs_running: Type.Integer(), oldest_run_wait_seconds: Type.Union([Type.Integer(), Type.Null()]) })) },
    },
  }, async (request) => {
    const p = page(request.query);
    const { rows } = await ctx.pool.query(
      `SELECT a.name AS agent, t.queued, t.in_progress, t.blocked, t.oldest_wait_seconds, r.runs_queued, r.runs_running, r.oldest_run_wait_seconds,
              count(*) OVER ()::int AS total
         FROM agents a
         CROSS JOIN LATERAL (
           SELECT count(*) FILTER (WHERE status = 'todo')::int AS queued,
                  count(*) FILTER (WHERE status = 'in_progress')::int AS in_progress,
                  count(*) FILTER (WHERE status = 'blocked')::int AS blocked,
                  extract(epoch FROM now() - min(queued_since) FILTER (WHERE status = 'todo'))::int AS oldest_wait_seconds
             FROM assigned_tasks WHERE org_id = a.org_id AND assignee = a.name) t
         CROSS JOIN LATERAL (
           SELECT count(*) FILTER (WHERE status = 'queued')::int AS runs_queued,
                  count(*) FILTER (WHERE status = 'running')::int AS runs_running,
                  extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'queued'))::int AS oldest_run_wait_seconds
             FROM agent_runs WHERE agent_id = a.id AND status IN ('queued', 'running')) r
        WHERE a.org_id = $1 ORDER BY t.queued DESC, t.oldest_wait_seconds DESC NULLS LAST, a.name LIMIT $2 OFFSET $3`, [orgOf(request), p.limit, p.offset]);
    const total = await windowTotal(rows, p, () => countOf(ctx, agents, eq(agents.orgId, orgOf(request))));
    return list(rows.map(({ total: _t, ...r }) => r), total, p);
  });

  app.get('/agent-runs/idle-check', {
    config: { auth: 'public' },
    schema: {
      tags: ['Runs'], summary: 'Should the agent skip this cycle? (stopped, bootstrap incomplete, over budget, nothing ready)',
      description: 'Answered from a per-organization Redis cache (IDLE_CACHE_TTL_SEC) built from this service\'s own projections of task and billing events; state changes evict it. Anonymous callers learn nothing.',
      querystring: Type.Object({ agent_name: Type.String({ minLength: 1, maxLength: 200 }), run_mode: Type.Optional(Type.String({ maxLength: 30, pattern: '^[a-z_-]*$' })) }),
      response: { 200: Envelope(Type.Object({ agent_name: Type.String(), should_skip: Type.Boolean(), reason: Type.String(), ready_tasks: Type.Integer(), blocked_tasks: Type.Integer({ description: 'its tasks in blocked: work it has but cannot do' }), over_budget: Type.Boolean(), cached: Type.Boolean() })) },
    },
  }, async (request) => {
    const name = request.query.agent_name;
    checkName(name, 'agent_name');
    const orgId = request.principal.orgId;
    if (!orgId) return ok({ agent_name: name, should_skip: true, reason: 'no organization context', ready_tasks: 0, blocked_tasks: 0, over_budget: false, cached: false });
    return ok(await idleCheck(ctx, orgId, name, request.query.run_mode));
  });
}
