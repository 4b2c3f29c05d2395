import { ServiceNames, type ServiceName } from '@aos/contracts';
import type { App } from '@aos/http';
import swaggerUi from '@fastify/swagger-ui';
import { serviceUrl, type GatewayConfig } from '../config.js';

type Spec = { paths?: Record<string, Record<string, unknown>>; components?: Record<string, Record<string, unknown>>; tags?: { name: string }[] };

const toOpenApiPath = (p: string) => p.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

/** Gateway-owned routes, documented here since they are not behind a service. */
const GATEWAY_PATHS: Record<string, Record<string, unknown>> = {
  '/api/health': { get: { tags: ['Health'], summary: 'API health check (gateway, Redis and every service)', security: [] } },
  '/api/ready': { get: { tags: ['Health'], summary: 'Readiness probe (200 when the stack is ready)', security: [] } },
  '/api/version': { get: { tags: ['Health'], summary: 'Version and uptime', security: [] } },
  '/api/v1/public/health': { get: { tags: ['Public API'], summary: 'Public API health check', security: [] } },
  '/api/dashboard': { get: { tags: ['Dashboard'], summary: 'Dashboard root — overview stats and available sub-endpoints', security: [] } },
  '/api/dashboard/stats': { get: { tags: ['Dashboard'], summary: 'Dashboard overview stats (agents, tasks, products, pending)' } },
  '/api/dashboard/overview': { get: { tags: ['Dashboard'], summary: 'Aggregated overview (token balance, recent runs, activity)' } },
  '/api/dashboard/agent-efficiency': { get: { tags: ['Dashboard'], summary: 'Per-agent efficiency KPIs (tokens, cost, tasks per 1k tokens)' } },
  '/api/dashboard/agent-queue-health': { get: { tags: ['Dashboard'], summary: 'Per-agent queued task count and wait times' } },
  '/api/search': {
    get: {
      tags: ['Dashboard'], summary: 'Global search across tasks, products, and agents',
      parameters: [
        { in: 'query', name: 'q', required: true, schema: { type: 'string', minLength: 1, maxLength: 200 } },
        { in: 'query', name: 'limit', required: false, schema: { type: 'integer', minimum: 1, maximum: 50, default: 10 } },
      ],
    },
  },
  '/api/system/health': { get: { tags: ['Dashboard'], summary: 'Architecture health dashboard (compliance score, per-section breakdowns)' } },
  '/api/arch-health': { get: { tags: ['Health'], summary: 'Architecture health overview (services, Redis, memory)', security: [] } },
};

/**
 * `GET /api/docs/openapi.json`: one OpenAPI 3 document merged from every service's spec
 * (paths under `/api`), cached for a minute; services that are down are listed in
 * `x-unavailable-services`. Swagger UI at `/api/docs`.
 */
export async function mergeSpecs(config: GatewayConfig, version: string, extraPaths: Record<string, Record<string, unknown>> = {}) {
  const specs = await Promise.all(ServiceNames.map(async (name: ServiceName) => {
    try {
      const res = await fetch(`${serviceUrl(config, name)}/openapi.json`, { signal: AbortSignal.timeout(3_000) });
      return res.ok ? { name, spec: (await res.json()) as Spec } : { name, spec: null };
    } catch {
      return { name, spec: null };
    }
  }));
  const paths: Record<string, Record<string, unknown>> = { ...GATEWAY_PATHS, ...extraPaths };
  const schemas: Record<string, unknown> = {};
  const tags = new Map<string, { name: string }>();
  for (const { name, spec } of specs) {
    if (!spec) continue;
    for (const [path, ops] of Object.entries(spec.paths ?? {})) {
      if (path.startsWith('/internal') || path === '/openapi.json') continue;
      const tagged = Object.fromEntries(Object.entries(ops).map(([method, op]) => [method, { ...(op as object), 'x-service': name }]));
      paths[`/api${toOpenApiPath(path)}`] = { ...(paths[`/api${toOpenApiPath(path)}`] ?? {}), ...tagged };
    }
    Object.assign(schemas, spec.components?.schemas ?? {});
    for (const t of spec.tags ?? []) tags.set(t.name, t);
  }
  return {
    openapi: '3.0.3',
    info: { title: 'Assimetria OS API (AOS)', version, description: 'Agents, tasks, products, billing, notifications, backups and identity — one REST API.' },
    servers: [{ url: '/' }],
    tags: [...tags.values()],
    paths: Object.fromEntries(Object.entries(paths).sort(([a], [b]) => a.localeCompare(b))),
    components: {
      schemas,
      securitySchemes: {
        bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'Access token from POST /api/auth/login' },
        apiKey: { type: 'http', scheme: 'bearer', description: 'Organization API key: Authorization: Bearer osk_live_…' },
        cookieAuth: { type: 'apiKey', in: 'cookie', name: 'assimetria_jwt' },
      },
    },
    security: [{ bearerAuth: [] }, { apiKey: [] }, { cookieAuth: [] }],
    'x-unavailable-services': specs.filter((s) => !s.spec).map((s) => s.name),
  };
}

export async function docsRoutes(app: App, config: GatewayConfig, version: string) {
  let cache: { at: number; doc: Awaited<ReturnType<typeof mergeSpecs>> } | null = null;
  const document = async () => {
    if (!cache || Date.now() - cache.at > 60_000 || cache.doc['x-unavailable-services'].length > 0) cache = { at: Date.now(), doc: await mergeSpecs(config, version) };
    return cache.doc;
  };
  app.get('/api/docs/openapi.json', { schema: { hide: true }, config: { auth: 'none' } }, async () => document());
  await app.register(swaggerUi, {
    routePrefix: '/api/docs',
    uiConfig: { deepLinking: true },
    staticCSP: false,
    // The UI reads ./json: the merged document, refreshed just before.
    uiHooks: { onRequest: async (request) => { if (request.url.startsWith('/api/docs/json')) await document(); } },
    transformSpecification: (base) => (cache?.doc ?? base) as never,
    transformSpecificationClone: false,
  });
}
