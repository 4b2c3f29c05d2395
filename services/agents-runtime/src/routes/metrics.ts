import { badRequest } from '@aos/core';
import { Envelope, ListEnvelope, list, ok, orgOf, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, eq } from 'drizzle-orm';
import { agents } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { AGENT_NAME } from './agents.js';

export async function metricRoutes(app: App, ctx: Ctx) {
  app.get('/agent-metrics/efficiency', {
    config: { scope: 'agents:read' },
    schema: {
      tags: ['Agent metrics'], summary: 'Per-agent tokens, cost and tasks per 1k tokens, most efficient first',
      response: { 200: ListEnvelope(Type.Object({ agent: Type.String(), runs: Type.Integer(), total_tokens: Type.Integer(), cost_usd: Type.Number(), tasks_completed: Type.Integer(), tasks_per_1k_tokens: Type.Number() })) },
    },
  }, async (request) => {
    const { rows } = await ctx.pool.query(
      `SELECT a.name AS agent,
              (SELECT count(*)::int FROM agent_runs r WHERE r.agent_id = a.id) AS runs,
              (SELECT coalesce(sum(r.input_tokens + r.output_tokens), 0)::int FROM agent_runs r WHERE r.agent_id = a.id) AS total_tokens,
              (SELECT coalesce(sum(r.cost_usd), 0)::float FROM agent_runs r WHERE r.agent_id = a.id) AS cost_usd,
              (SELECT count(*)::int FROM assigned_tasks t WHERE t.org_id = a.org_id AND t.assignee = a.name AND t.status = 'done') AS tasks_completed
         FROM agents a WHERE a.org_id = $1`, [orgOf(request)]);
    const data = rows.map((r) => ({ ...r, tasks_per_1k_tokens: r.total_tokens > 0 ? Math.round((r.tasks_completed / (r.total_tokens / 1000)) * 1000) / 1000 : 0 }))
      .sort((a, b) => b.tasks_per_1k_tokens - a.tasks_per_1k_tokens || a.agent.localeCompare(b.agent));
    return list(data, data.length, { limit: data.length, offset: 0 });
  });

  app.get('/agent-metrics/queue-health', {
    config: { scope: 'agents:read' },
    schema: {
      tags: ['Agent metrics'], summary: 'Per-agent queued tasks and the oldest wait',
      response: { 200: ListEnvelope(Type.Object({ agent: Type.String(), queued: Type.Integer(), in_progress: Type.Integer(), blocked: Type.Integer(), oldest_wait_seconds: Type.Union([Type.Integer(), Type.Null()]) })) },
    },
  }, async (request) => {
    const { rows } = await ctx.pool.query(
      `SELECT a.name AS agent,
              count(t.*) FILTER (WHERE t.status = 'todo')::int AS queued,
              count(t.*) FILTER (WHERE t.status = 'in_progress')::int AS in_progress,
              count(t.*) FILTER (WHERE t.status = 'blocked')::int AS blocked,
              extract(epoch FROM now() - min(t.queued_since) FILTER (WHERE t.status = 'todo'))::int AS oldest_wait_seconds
         FROM agents a LEFT JOIN assigned_tasks t ON t.org_id = a.org_id AND t.assignee = a.name
        WHERE a.org_id = $1 GROUP BY a.name ORDER BY queued DESC, a.name`, [orgOf(request)]);
    return list(rows, rows.length, { limit: rows.length, offset: 0 });
  });

  app.get('/agent-runs/idle-check', {
    config: { auth: 'public' },
    schema: {
      tags: ['Runs'], summary: 'Should the agent skip this cycle? (stopped, nothing ready, over budget)',
      querystring: Type.Object({ agent_name: Type.String({ maxLength: 200 }), run_mode: Type.Optional(Type.String({ maxLength: 30 })) }),
      response: { 200: Envelope(Type.Object({ agent_name: Type.String(), should_skip: Type.Boolean(), reason: Type.String(), ready_tasks: Type.Integer(), cached: Type.Boolean() })) },
    },
  }, async (request) => {
    const name = request.query.agent_name;
    if (!new RegExp(AGENT_NAME).test(name)) throw badRequest('Invalid agent name', [{ field: 'agent_name' }]);
    const orgId = request.principal.orgId;
    // Anonymous callers learn nothing about any organization's agents.
    if (!orgId) return ok({ agent_name: name, should_skip: true, reason: 'no organization context', ready_tasks: 0, cached: false });
    const key = `${ctx.config.REDIS_PREFIX}:idle:${orgId}:${name}`;
    const cached = await ctx.queues.connection.get(key);
    if (cached) return ok({ ...JSON.parse(cached), cached: true });
    const [agent] = await ctx.db.select().from(agents).where(and(eq(agents.orgId, orgId), eq(agents.name, name)));
    let result: { agent_name: string; should_skip: boolean; reason: string; ready_tasks: number };
    if (!agent) result = { agent_name: name, should_skip: true, reason: 'unknown agent', ready_tasks: 0 };
    else if (agent.status === 'paused' || agent.status === 'offline') result = { agent_name: name, should_skip: true, reason: `agent is ${agent.status}`, ready_tasks: 0 };
    else {
      const { rows } = await ctx.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM assigned_tasks WHERE org_id = $1 AND assignee = $2 AND status = 'todo'", [orgId, name]);
      const ready = rows[0]!.n;
      result = request.query.run_mode === 'discovery' || ready > 0
        ? { agent_name: name, should_skip: false, reason: ready > 0 ? `${ready} ready task(s)` : 'discovery run', ready_tasks: ready }
        : { agent_name: name, should_skip: true, reason: 'no ready tasks', ready_tasks: 0 };
    }
    await ctx.queues.connection.set(key, JSON.stringify(result), 'EX', 15);
    return ok({ ...result, cached: false });
  });
}
