import { INTERNAL_TOKEN_HEADER, ServiceNames, type Principal, type ServiceName } from '@aos/contracts';
import { AppError, unauthorized } from '@aos/core';
import { signInternalToken, type App, type Key } from '@aos/http';
import { Type } from '@sinclair/typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { serviceUrl, type GatewayConfig } from '../config.js';
import { servicesReady } from './health.js';
import type { Admit } from './proxy.js';

type Json = Record<string, unknown>;

/**
 * Gateway-owned aggregates (`/dashboard*`, `/search`, `/system/health`, `/arch-health`): each
 * calls the owning services' public routes as the caller, in parallel with a short timeout;
 * a service that is down makes its section `null` and is listed in `unavailable`.
 */
export function dashboardRoutes(app: App, config: GatewayConfig, privateKey: Key, admit: Admit, redisOk: () => Promise<boolean>) {
  const call = async (principal: Principal, service: ServiceName, path: string): Promise<Json | null> => {
    try {
      const res = await fetch(`${serviceUrl(config, service)}${path}`, {
        headers: { [INTERNAL_TOKEN_HEADER]: await signInternalToken(privateKey, principal) }, signal: AbortSignal.timeout(3_000),
      });
      return res.ok ? ((await res.json()) as Json) : null;
    } catch {
      return null;
    }
  };
  const total = (r: Json | null) => (r ? ((r.meta as { total?: number })?.total ?? 0) : null);
  const data = (r: Json | null) => (r ? r.data : null);
  /** Admits the caller before the query is validated: without credentials it is 401, whatever the query. */
  const admitUser = async (request: FastifyRequest, reply: FastifyReply) => {
    const principal = await admit(request, reply, request.routeOptions.url!.replace(/^\/api(\/v1)?/, ''));
    if (principal.kind === 'anonymous') throw unauthorized();
    if (!principal.orgId) throw new AppError('FORBIDDEN', 'This needs an organization context');
    request.principal = principal;
  };
  const opts = { schema: { tags: ['Dashboard'] }, config: { auth: 'none' as const } };
  const userOpts = { ...opts, onRequest: admitUser };

  for (const prefix of ['/api', '/api/v1']) {
    app.get(`${prefix}/dashboard`, { ...opts, schema: { ...opts.schema, summary: 'Dashboard root: service status and the sub-endpoints' } }, async () => {
      const ready = await servicesReady(config);
      return { data: { services: ready, endpoints: ['/api/dashboard/stats', '/api/dashboard/overview', '/api/dashboard/agent-efficiency', '/api/dashboard/agent-queue-health', '/api/search', '/api/system/health', '/api/arch-health'] } };
    });

    app.get(`${prefix}/dashboard/stats`, { ...userOpts, schema: { ...opts.schema, summary: 'Counts: agents, tasks, products, pending tasks' } }, async (request) => {
      const p = request.principal;
      const [agents, tasks, pending, inProgress, products] = await Promise.all([
        call(p, 'agents-runtime', '/agents?limit=1'), call(p, 'tasks', '/tasks?limit=1'), call(p, 'tasks', '/tasks?status=todo&limit=1'),
        call(p, 'tasks', '/tasks?status=in_progress&limit=1'), call(p, 'tasks', '/products?limit=1'),
      ]);
      const unavailable = [!agents && 'agents-runtime', !tasks && 'tasks'].filter(Boolean);
      return { data: { agents: total(agents), tasks: total(tasks), pending_tasks: total(pending), in_progress_tasks: total(inProgress), products: total(products), unavailable } };
    });

    app.get(`${prefix}/dashboard/overview`, { ...userOpts, schema: { ...opts.schema, summary: 'Token balance, recent runs, activity, task counts' } }, async (request) => {
      const p = request.principal;
      const [balance, runs, activity, tasks] = await Promise.all([
        call(p, 'billing', '/tokens/balance'), call(p, 'agents-runtime', '/agent-runs?limit=5'), call(p, 'notifications', '/activity-log/stats'), call(p, 'tasks', '/tasks?limit=1'),
      ]);
      const unavailable = [!balance && 'billing', !runs && 'agents-runtime', !activity && 'notifications', !tasks && 'tasks'].filter(Boolean);
      return { data: { token_balance: data(balance), recent_runs: data(runs), activity_7d: data(activity), tasks: total(tasks), unavailable } };
    });

    app.get(`${prefix}/dashboard/agent-efficiency`, { ...userOpts, schema: { ...opts.schema, summary: 'Per-agent efficiency KPIs' } }, async (request) => {
      const p = request.principal;
      const r = await call(p, 'agents-runtime', '/agent-metrics/efficiency');
      if (!r) throw new AppError('SERVICE_UNAVAILABLE', 'The agents-runtime service is unavailable');
      return r;
    });

    app.get(`${prefix}/dashboard/agent-queue-health`, { ...userOpts, schema: { ...opts.schema, summary: 'Per-agent queued tasks and wait times' } }, async (request) => {
      const p = request.principal;
      const r = await call(p, 'agents-runtime', '/agent-metrics/queue-health');
      if (!r) throw new AppError('SERVICE_UNAVAILABLE', 'The agents-runtime service is unavailable');
      return r;
    });

    app.get(`${prefix}/search`, {
      ...userOpts, schema: { ...opts.schema, summary: 'Search tasks, products and agents', querystring: Type.Object({ q: Type.String({ minLength: 1, maxLength: 200 }), limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 50, default: 10 })) }) },
    }, async (request) => {
      const p = request.principal;
      const { q, limit = 10 } = request.query as { q: string; limit?: number };
      const qs = `q=${encodeURIComponent(q)}&limit=${limit}`;
      const [tasks, products, agents] = await Promise.all([call(p, 'tasks', `/tasks?${qs}`), call(p, 'tasks', `/products?${qs}`), call(p, 'agents-runtime', `/agents?${qs}`)]);
      return { data: { query: q, tasks: data(tasks), products: data(products), agents: data(agents), unavailable: [!tasks && 'tasks', !agents && 'agents-runtime'].filter(Boolean) } };
    });

    app.get(`${prefix}/system/health`, { ...userOpts, schema: { ...opts.schema, summary: 'Compliance score with per-section breakdowns' } }, async (request) => {
      const p = request.principal;
      const [ready, agents, errored, tasks, blocked] = await Promise.all([
        servicesReady(config), call(p, 'agents-runtime', '/agents?limit=1'), call(p, 'agents-runtime', '/agents?status=error&limit=1'),
        call(p, 'tasks', '/tasks?limit=1'), call(p, 'tasks', '/tasks?status=blocked&limit=1'),
      ]);
      const up = Object.values(ready).filter(Boolean).length;
      const sections = {
        services: { score: Math.round((up / ServiceNames.length) * 100), ready },
        agents: { score: total(agents) ? Math.round(100 * (1 - (total(errored) ?? 0) / total(agents)!)) : 100, total: total(agents), in_error: total(errored) },
        tasks: { score: total(tasks) ? Math.round(100 * (1 - (total(blocked) ?? 0) / total(tasks)!)) : 100, total: total(tasks), blocked: total(blocked) },
      };
      const score = Math.round((sections.services.score + sections.agents.score + sections.tasks.score) / 3);
      return { data: { score, sections } };
    });

    app.get(`${prefix}/arch-health`, { ...opts, schema: { ...opts.schema, summary: 'Architecture health: services, Redis, memory' } }, async (_request, reply) => {
      const [ready, redis] = await Promise.all([servicesReady(config), redisOk()]);
      const mem = process.memoryUsage();
      const degraded = !redis || Object.values(ready).some((r) => !r);
      return reply.status(degraded ? 503 : 200).send({
        data: {
          status: degraded ? 'degraded' : 'ok', services: ready, redis: redis ? 'connected' : 'error',
          memory: { rss_mb: Math.round(mem.rss / 1_048_576), heap_used_mb: Math.round(mem.heapUsed / 1_048_576) }, uptime: Math.round(process.uptime()),
        },
      });
    });
  }
}
