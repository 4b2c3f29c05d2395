import { ANONYMOUS, INTERNAL_TOKEN_HEADER, serviceForPath, type Principal } from '@aos/contracts';
import { AppError, badRequest, currentTraceCarrier } from '@aos/core';
import { signInternalToken, type App, type Key } from '@aos/http';
import replyFrom from '@fastify/reply-from';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { serviceUrl, type GatewayConfig } from '../config.js';

/** Resolves the caller of a request; the platform default treats everyone as anonymous. */
export type Authenticate = (request: FastifyRequest) => Promise<Principal>;

/** Runs before forwarding: decides the principal (and may refuse: 401/429). */
export type Admit = (request: FastifyRequest, reply: FastifyReply, path: string) => Promise<Principal>;

const API_PREFIXES = ['/api/v1', '/api'];
const MAX_URL_LENGTH = 8_192;

/** `/api/v1/tasks?x=1` → `/tasks?x=1` (the public API lives under `/api/v1/public/*` and keeps `/v1`). */
export function stripApiPrefix(url: string): string | null {
  for (const prefix of API_PREFIXES) {
    if (url === prefix || url.startsWith(`${prefix}/`) || url.startsWith(`${prefix}?`)) {
      const rest = url.slice(prefix.length) || '/';
      if (prefix === '/api/v1' && rest.startsWith('/public')) return `/v1${rest}`;
      return rest.startsWith('/') ? rest : `/${rest}`;
    }
  }
  return null;
}

/**
 * Routes `/api/*` and `/api/v1/*` to the owning service by path prefix. Each forwarded
 * request carries a freshly signed internal token for the caller and the trace context;
 * a token a client sent itself is dropped.
 */
export async function proxyRoutes(app: App, config: GatewayConfig, privateKey: Key, admit: Admit): Promise<void> {
  await app.register(replyFrom, {
    undici: { connections: 128, pipelining: 1, headersTimeout: config.UPSTREAM_TIMEOUT_MS, bodyTimeout: config.UPSTREAM_TIMEOUT_MS, connectTimeout: 2_000 },
    disableRequestLogging: true,
  });

  // Bodies pass through byte for byte (Stripe signs the raw webhook body).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: config.BODY_LIMIT_BYTES }, (_req, body, done) => done(null, body));

  const handler = async (request: FastifyRequest, reply: FastifyReply) => {
    const path = stripApiPrefix(request.url);
    const service = path ? serviceForPath(path.split('?')[0]!) : null;
    if (!path || !service) {
      return reply.status(404).send({ error: { code: 'NOT_FOUND', message: `Route ${request.method} ${request.url.split('?')[0]} not found` } });
    }
    // A service answers a URL over Node's 16 KB header limit with a bare 431, and the proxy cannot
    // forward one it cannot decode: both are refused here, in the envelope.
    if (request.url.length > MAX_URL_LENGTH) throw new AppError('URI_TOO_LONG', `The URL is longer than ${MAX_URL_LENGTH} characters`);
    try {
      decodeURIComponent(path);
    } catch {
      throw badRequest('The URL has a malformed percent-encoding');
    }
    const principal = await admit(request, reply, path.split('?')[0]!);
    const token = await signInternalToken(privateKey, principal);
    const trace = currentTraceCarrier();
    // Given explicitly: reply-from would JSON.stringify a Buffer body sent as application/json.
    const raw = Buffer.isBuffer(request.body) ? request.body : undefined;
    return reply.from(`${serviceUrl(config, service)}${path}`, {
      ...(raw ? { body: raw, contentType: request.headers['content-type'] ?? 'application/octet-stream' } : {}),
      rewriteRequestHeaders: (_req, headers) => {
        const out: Record<string, string | string[] | undefined> = { ...headers, ...trace, [INTERNAL_TOKEN_HEADER]: token };
        out['x-forwarded-for'] = request.ip;
        out['x-trace-id'] = request.id;
        return out;
      },
      rewriteHeaders: (headers) => {
        const out = { ...headers };
        delete out['x-trace-id']; // the gateway's own header (same trace) is already set
        return out;
      },
      onError: (rep, { error }) => {
        const status = (error as { statusCode?: number }).statusCode;
        if (status === 504) {
          return rep.status(504).send({ error: { code: 'UPSTREAM_TIMEOUT', message: `The ${service} service did not answer in time` } });
        }
        request.log.warn({ err: (error as Error).message, service }, 'upstream unavailable');
        return rep.status(503).send({ error: { code: 'SERVICE_UNAVAILABLE', message: `The ${service} service is unavailable` } });
      },
    });
  };

  for (const prefix of API_PREFIXES) {
    app.all(`${prefix}/*`, { schema: { hide: true }, config: { auth: 'none' } }, handler);
  }
}

export const anonymous: Admit = async () => ANONYMOUS;
