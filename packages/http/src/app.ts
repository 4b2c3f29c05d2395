import { ANONYMOUS, codeForStatus, hasScope, INTERNAL_TOKEN_HEADER, roleAtLeast, type OrgRole, type Principal, type Scope } from '@aos/contracts';
import { AppError, badRequest, forbidden, tracer, unauthorized, type Logger } from '@aos/core';
import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { context, INVALID_TRACEID as INVALID_TRACE_ID, propagation, SpanKind, SpanStatusCode, trace, type Span } from '@opentelemetry/api';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, type RawServerDefault } from 'fastify';
import { randomBytes } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { verifyInternalToken, type Key } from './internal-token.js';

export type App = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, FastifyBaseLogger, TypeBoxTypeProvider>;

/** Who may call a route. Default: any authenticated principal. */
export interface RouteAuth {
  /** `public`: anonymous callers allowed (the gateway still signs the call). `none`: no internal token at all (health, specs, webhooks verified otherwise). */
  auth?: 'public' | 'none';
  /** Scope an API key needs; users act with their role instead. */
  scope?: Scope;
  /** Minimum organization role. */
  minRole?: OrgRole;
  /** Platform `admin` role required. */
  platformAdmin?: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal;
    span: Span | undefined;
  }
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type -- module augmentation merges RouteAuth in
  interface FastifyContextConfig extends RouteAuth {}
}

export interface HealthCheck {
  /** A failing critical check makes `/ready` answer 503. */
  critical: boolean;
  check: () => Promise<boolean>;
}

export interface HttpAppOptions {
  service: string;
  version: string;
  logger: Logger;
  /** Public key of the gateway's internal tokens; `null` only for the gateway itself. */
  internalKey: Key | null;
  checks?: Record<string, HealthCheck>;
  bodyLimit?: number;
  description?: string;
}

const SPAN = Symbol('aos.span');

/** A route as registered, with who may call it. */
export interface RouteInfo {
  method: string;
  url: string;
  auth: RouteAuth['auth'] | 'principal';
}

const registered = new WeakMap<object, RouteInfo[]>();

/** Every route registered on an app built by `createHttpApp` (for audits such as "every route needs a principal"). */
export function routesOf(app: App): RouteInfo[] {
  return [...(registered.get(app) ?? [])];
}
const started = Date.now();

/**
 * The one Fastify setup every process shares: TypeBox validation, the response envelope
 * and error codes, `X-Trace-Id`, a server span per request, the principal from the
 * gateway's signed token, route-level scope/role checks, health routes and an OpenAPI spec.
 */
export async function createHttpApp(opts: HttpAppOptions): Promise<App> {
  const app = Fastify({
    loggerInstance: opts.logger as FastifyBaseLogger,
    bodyLimit: opts.bodyLimit ?? 1024 * 1024,
    logController: new LogController({ requestIdLogLabel: 'trace_id' }),
    genReqId(req) {
      const parent = propagation.extract(context.active(), req.headers);
      const span = tracer().startSpan(`${req.method} request`, { kind: SpanKind.SERVER }, parent);
      (req as unknown as Record<symbol, Span>)[SPAN] = span;
      const { traceId } = span.spanContext();
      // Without a registered tracer provider spans are no-ops with an all-zero id.
      return traceId === INVALID_TRACE_ID ? randomBytes(16).toString('hex') : traceId;
    },
    ajv: { customOptions: { allErrors: true } },
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 500 },
    // Malformed URL encoding (`/x/%`) and over-long parameters: the same envelope as every other error.
    frameworkErrors: (err, request, reply) => sendError(err, request, reply),
    // Requests Node's parser refuses before Fastify sees them (headers over 16 KB, garbage): the envelope too.
    clientErrorHandler: sendClientError,
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as App;

  const routes: RouteInfo[] = [];
  registered.set(app, routes);
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) {
      routes.push({ method, url: route.url, auth: (route.config as RouteAuth | undefined)?.auth ?? 'principal' });
    }
  });

  app.decorateRequest('principal', null as unknown as Principal);
  app.decorateRequest('span', undefined);

  app.addHook('onRequest', async (request, reply) => {
    request.span = (request.raw as unknown as Record<symbol, Span>)[SPAN];
    reply.header('x-trace-id', request.id);
    request.principal = ANONYMOUS;
    const auth = request.routeOptions.config?.auth;
    if (auth === 'none' || !opts.internalKey || request.is404 || !request.routeOptions.url) return;
    const token = request.headers[INTERNAL_TOKEN_HEADER];
    if (typeof token !== 'string' || token.length === 0) {
      throw unauthorized('This service only accepts calls through the gateway');
    }
    try {
      request.principal = await verifyInternalToken(opts.internalKey, token);
    } catch {
      throw unauthorized('Invalid internal token');
    }
    // Before the body is parsed and validated: an anonymous caller or one lacking the scope or
    // role gets 401/403, not a 400 that describes the route's input.
    authorize(request.routeOptions.config, request.principal);
  });

  // Runs first among preHandlers: the handler and the hooks after it run inside the request span.
  app.addHook('preHandler', (request, _reply, done) => {
    if (!request.span) return done();
    context.with(trace.setSpan(context.active(), request.span), done);
  });

  // AJV's type coercion turns `?n=1e309` into Infinity and then skips the range keywords, and
  // JSON.parse reads 1e309 as Infinity: no field of this API takes a non-finite number.
  app.addHook('preHandler', async (request) => {
    const field = nonFiniteField({ query: request.query, params: request.params, body: request.body });
    if (field) throw badRequest(`${field} must be a finite number`, [{ field }]);
  });

  // With type coercion AJV reads `null` as "", 0 or false where the schema does not allow null:
  // `{"is_active": null}` would switch a key off. Refused before validation, naming the field.
  app.addHook('preValidation', async (request) => {
    const schema = (request.routeOptions.schema as { body?: JsonSchema } | undefined)?.body;
    const field = schema && request.body !== undefined ? nullWhereNotAllowed(schema, request.body) : null;
    if (field !== null) throw badRequest(`${field || 'The body'} must not be null`, [{ field: field || 'body' }]);
  });

  app.addHook('onResponse', async (request, reply) => {
    const span = request.span;
    if (!span) return;
    span.updateName(`${request.method} ${request.routeOptions.url ?? 'unmatched'}`);
    span.setAttribute('http.request.method', request.method);
    span.setAttribute('http.response.status_code', reply.statusCode);
    if (request.routeOptions.url) span.setAttribute('http.route', request.routeOptions.url);
    if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    span.end();
  });
  app.addHook('onRequestAbort', async (request) => { request.span?.end(); });

  // Draining on close: answers to requests still in flight end their keep-alive connection,
  // so `close()` returns when they are done instead of when the idle keep-alive times out.
  let closing = false;
  app.addHook('preClose', async () => { closing = true; });
  app.addHook('onSend', async (_request, reply, payload) => {
    if (closing) reply.header('connection', 'close');
    return payload;
  });

  app.setErrorHandler((err: FastifyError, request, reply) => sendError(err, request, reply));
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send({ error: { code: 'NOT_FOUND', message: `Route ${request.method} ${request.url.split('?')[0]} not found` } });
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: `AOS ${opts.service}`, version: opts.version, description: opts.description },
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', description: 'JWT access token or organization API key (osk_live_…)' },
          cookieAuth: { type: 'apiKey', in: 'cookie', name: 'assimetria_jwt' },
        },
      },
      security: [{ bearerAuth: [] }, { cookieAuth: [] }],
    },
    // What a route's config says about access, in the document: public routes need no credentials,
    // scoped ones name the API-key scope they need.
    transform: ({ schema, url, route }) => {
      const cfg = route.config as RouteAuth | undefined;
      const doc: Record<string, unknown> = { ...schema };
      if (cfg?.auth) doc.security = [];
      if (cfg?.scope) doc['x-required-scope'] = cfg.scope;
      if (cfg?.platformAdmin) doc['x-platform-admin'] = true;
      if (cfg?.minRole) doc['x-min-role'] = cfg.minRole;
      return { schema: doc as typeof schema, url };
    },
  });
  app.get('/openapi.json', { schema: { hide: true }, config: { auth: 'none' } }, async () => app.swagger());

  registerHealth(app, opts);
  return app;
}

function registerHealth(app: App, opts: HttpAppOptions) {
  const runChecks = async () => {
    const entries = await Promise.all(Object.entries(opts.checks ?? {}).map(async ([name, c]) => {
      const ok = await c.check().catch(() => false);
      return [name, { ok, critical: c.critical }] as const;
    }));
    return entries;
  };
  const base = () => ({ service: opts.service, version: opts.version, uptime: Math.round((Date.now() - started) / 1000) });
  const health = async (_req: FastifyRequest, reply: FastifyReply) => {
    const results = await runChecks();
    const ready = results.every(([, r]) => r.ok || !r.critical);
    const checks = Object.fromEntries(results.map(([n, r]) => [n, r.ok ? 'connected' : 'error']));
    return reply.status(ready ? 200 : 503).send({ data: { status: ready ? 'ok' : 'error', ...base(), checks } });
  };
  const hidden = { schema: { hide: true, tags: ['Health'] }, config: { auth: 'none' as const } };
  app.get('/health', hidden, health);
  app.get('/ready', hidden, async (req, reply) => {
    const results = await runChecks();
    const failed = results.filter(([, r]) => r.critical && !r.ok).map(([n]) => n);
    if (failed.length > 0) {
      return reply.status(503).send({ error: { code: 'SERVICE_UNAVAILABLE', message: `Not ready: ${failed.join(', ')} unavailable`, details: failed.map((dependency) => ({ dependency })) } });
    }
    return { data: { status: 'ready', ...base() } };
  });
  app.get('/version', hidden, async () => ({ data: { ...base(), node: process.version } }));
}

/** Postgres errors that mean "bad input" reaching SQL; mapped so they never surface as 500s. */
const PG_INPUT_ERRORS: Record<string, { status: number; code: 'VALIDATION_ERROR' | 'CONFLICT'; message: string }> = {
  '22P02': { status: 400, code: 'VALIDATION_ERROR', message: 'Invalid input value' },
  '22003': { status: 400, code: 'VALIDATION_ERROR', message: 'Numeric value out of range' },
  '22001': { status: 400, code: 'VALIDATION_ERROR', message: 'Value too long' },
  '22007': { status: 400, code: 'VALIDATION_ERROR', message: 'Invalid date/time value' },
  '22008': { status: 400, code: 'VALIDATION_ERROR', message: 'Date/time value out of range' },
  '22021': { status: 400, code: 'VALIDATION_ERROR', message: 'Invalid character in input' },
  '22P05': { status: 400, code: 'VALIDATION_ERROR', message: 'Invalid character in input' }, // e.g. \u0000 inside jsonb
  '23505': { status: 409, code: 'CONFLICT', message: 'A resource with these values already exists' },
};

/** SQLSTATE of a pg error, also when wrapped (drizzle puts the driver error in `cause`). */
function sqlStateOf(err: unknown): string | undefined {
  for (let e = err, i = 0; e && typeof e === 'object' && i < 3; e = (e as { cause?: unknown }).cause, i++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

/** Answers on the raw socket: there is no request (nor trace) yet, so the trace id is a fresh one. */
function sendClientError(err: Error & { code?: string }, socket: Socket) {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
  const messages: Record<number, string> = { 431: 'Request headers (or the URL) are too large', 408: 'The request took too long to arrive', 400: 'Malformed HTTP request' };
  const body = JSON.stringify({ error: { code: codeForStatus(status), message: messages[status] } });
  socket.end([
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}`, 'content-type: application/json; charset=utf-8', `content-length: ${Buffer.byteLength(body)}`,
    `x-trace-id: ${randomBytes(16).toString('hex')}`, 'connection: close', '', body,
  ].join('\r\n'));
}

function sendError(err: FastifyError, request: FastifyRequest, reply: FastifyReply) {
  // Framework errors (a malformed URL) come before the hook that sets it.
  if (!reply.hasHeader('x-trace-id')) reply.header('x-trace-id', request.id);
  if (err instanceof AppError) {
    if (err.status >= 500) request.log.error({ err }, err.message);
    return reply.status(err.status).send({ error: { code: err.code, message: err.message, ...(err.details ? { details: err.details } : {}) } });
  }
  if (err.validation) {
    const details = err.validation.map((v) => ({
      field: [v.instancePath?.replace(/^\//, '').replaceAll('/', '.'), (v.params as { missingProperty?: string })?.missingProperty].filter(Boolean).join('.') || err.validationContext,
      message: v.message,
    }));
    return reply.status(400).send({ error: { code: 'VALIDATION_ERROR', message: `Invalid request ${err.validationContext ?? 'input'}`, details } });
  }
  const pgCode = sqlStateOf(err);
  const pg = pgCode ? PG_INPUT_ERRORS[pgCode] : undefined;
  if (pg) {
    request.log.warn({ pgCode }, 'database rejected input');
    return reply.status(pg.status).send({ error: { code: pg.code, message: pg.message } });
  }
  const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
  if (status >= 500) {
    request.log.error({ err }, 'unhandled error');
    return reply.status(500).send({ error: { code: 'INTERNAL_ERROR', message: 'Internal server error' } });
  }
  return reply.status(status).send({ error: { code: codeForStatus(status), message: err.message } });
}

/** What a route's config demands of the caller (services only: the gateway authenticates and forwards). */
function authorize(cfg: RouteAuth | undefined, p: Principal) {
  if (!cfg || cfg.auth === 'none') return;
  if (cfg.auth !== 'public' && p.kind === 'anonymous') throw unauthorized();
  if (cfg.scope && p.kind === 'api_key' && !hasScope(p.scopes, cfg.scope)) {
    throw new AppError('SCOPE_REQUIRED', `This API key lacks the "${cfg.scope}" scope`, [{ scope: cfg.scope }]);
  }
  if (cfg.platformAdmin && !p.platformRoles.includes('admin')) throw forbidden('Platform admin role required');
  if (cfg.minRole && !p.platformRoles.includes('admin') && !roleAtLeast(p.orgRole, cfg.minRole)) {
    throw forbidden(`Requires the ${cfg.minRole} role in this organization`);
  }
}

/** The caller's organization, or 403 when the principal acts in none. */
export function orgOf(request: FastifyRequest): string {
  const orgId = request.principal.orgId;
  if (!orgId) throw forbidden('This action needs an organization context');
  return orgId;
}

interface JsonSchema {
  type?: string | string[];
  nullable?: boolean;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  const?: unknown;
  enum?: unknown[];
}

const allowsNull = (s: JsonSchema): boolean => {
  if (s.nullable || s.type === 'null' || (Array.isArray(s.type) && s.type.includes('null'))) return true;
  const branches = s.anyOf ?? s.oneOf;
  if (branches) return branches.some(allowsNull);
  if (s.enum) return s.enum.includes(null);
  if ('const' in s) return s.const === null;
  return s.type === undefined && !s.properties && !s.items; // any value
};

/** The dotted path of the first `null` where `schema` does not allow one ('' for the body itself), or null. */
function nullWhereNotAllowed(schema: JsonSchema, value: unknown, path = '', depth = 0): string | null {
  if (value === null) return allowsNull(schema) ? null : path;
  if (depth > 8 || typeof value !== 'object') return null;
  if (Array.isArray(value)) {
    if (!schema.items) return null;
    for (const [i, v] of value.entries()) {
      const found = nullWhereNotAllowed(schema.items, v, path ? `${path}.${i}` : String(i), depth + 1);
      if (found !== null) return found;
    }
    return null;
  }
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const inner = schema.properties?.[k];
    const found = inner ? nullWhereNotAllowed(inner, v, path ? `${path}.${k}` : k, depth + 1) : null;
    if (found !== null) return found;
  }
  return null;
}

/** The path (`body/a/b`, without the `body/` part) of the first non-finite number in a parsed request, if any. */
function nonFiniteField(value: unknown, path = '', depth = 0): string | null {
  if (typeof value === 'number') return Number.isFinite(value) ? null : path.replace(/^\w+\//, '');
  if (depth > 8 || value === null || typeof value !== 'object' || Buffer.isBuffer(value)) return null;
  for (const [k, v] of Object.entries(value)) {
    const found = nonFiniteField(v, path ? `${path}/${k}` : k, depth + 1);
    if (found) return found;
  }
  return null;
}
