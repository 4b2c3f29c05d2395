import { INTERNAL_TOKEN_HEADER } from '@aos/contracts';
import { createLogger, initTracing } from '@aos/core';
import { createHttpApp, importEd25519Jwk, type App } from '@aos/http';
import { internalKeys } from '@aos/testkit';
import type { FastifyRequest } from 'fastify';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildGateway } from '../src/app.js';
import { loadGatewayConfig } from '../src/config.js';

let upstream: App;
let gateway: App;
let upstreamUrl: string;
const upstreamBodies: string[] = [];
const seen: { path: string; kind: string; traceparent?: string; body?: string }[] = [];

beforeAll(async () => {
  initTracing('gateway-test');
  const { key } = await importEd25519Jwk((await internalKeys()).publicJwk);
  upstream = await createHttpApp({ service: 'tasks', version: 't', logger: createLogger('up', 'silent'), internalKey: key });
  upstream.addContentTypeParser('text/plain', { parseAs: 'string' }, (_r, body, done) => done(null, body));
  const echo = async (request: FastifyRequest) => {
    seen.push({ path: request.url, kind: request.principal.kind, traceparent: request.headers.traceparent as string, body: typeof request.body === 'string' ? request.body : undefined });
    return { data: { path: request.url, kind: request.principal.kind } };
  };
  upstream.route({ method: ['GET', 'POST'], url: '/tasks/echo', config: { auth: 'public' }, handler: echo });
  upstream.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'string' }, (_r, body, done) => done(null, body));
    scope.post('/tasks/raw', { config: { auth: 'public' } }, async (request) => {
      upstreamBodies.push(request.body as string);
      return { data: 'ok' };
    });
  });
  upstream.get('/v1/public/tasks', { config: { auth: 'public' } }, echo);
  upstream.get('/tasks/slow', { config: { auth: 'public' } }, async () => { await new Promise((r) => setTimeout(r, 1_000)); return { data: 'late' }; });
  await upstream.listen({ host: '127.0.0.1', port: 0 });
  upstreamUrl = `http://127.0.0.1:${(upstream.server.address() as AddressInfo).port}`;

  const config = loadGatewayConfig({
    INTERNAL_TOKEN_PRIVATE_JWK: (await internalKeys()).privateJwk,
    TASKS_URL: upstreamUrl,
    BILLING_URL: 'http://127.0.0.1:9', // nothing listens there
    UPSTREAM_TIMEOUT_MS: '300',
    REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  });
  gateway = await buildGateway({ config, version: 't', log: createLogger('gw', 'silent') });
  await gateway.ready();
});

afterAll(async () => {
  await gateway?.close();
  await upstream?.close();
});

describe('gateway routing', () => {
  it('routes /api/* to the owning service with a signed principal and the trace', async () => {
    const res = await gateway.inject({ method: 'GET', url: '/api/tasks/echo?x=1' });
    expect(res.statusCode).toBe(200);
    expect(res.json().data).toEqual({ path: '/tasks/echo?x=1', kind: 'anonymous' });
    const traceId = res.headers['x-trace-id'] as string;
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(seen.at(-1)?.traceparent).toContain(traceId);
  });

  it('serves the /api/v1 alias and keeps the public API path', async () => {
    expect((await gateway.inject({ method: 'GET', url: '/api/v1/tasks/echo' })).json().data.path).toBe('/tasks/echo');
    expect((await gateway.inject({ method: 'GET', url: '/api/v1/public/tasks' })).json().data.path).toBe('/v1/public/tasks');
  });

  it('forwards the body byte for byte', async () => {
    const body = 'raw  body\nwith spacing {"not":"json"}';
    const res = await gateway.inject({ method: 'POST', url: '/api/tasks/echo', headers: { 'content-type': 'text/plain' }, payload: body });
    expect(res.statusCode).toBe(200);
    expect(seen.at(-1)?.body).toBe(body);
  });

  it('forwards a JSON body unchanged', async () => {
    const body = '{"b": 2,  "a": [1, 2]}';
    upstreamBodies.length = 0;
    const res = await gateway.inject({ method: 'POST', url: '/api/tasks/raw', headers: { 'content-type': 'application/json' }, payload: body });
    expect(res.statusCode).toBe(200);
    expect(upstreamBodies).toEqual([body]);
  });

  it('never forwards an internal token sent by the client', async () => {
    const res = await gateway.inject({ method: 'GET', url: '/api/tasks/echo', headers: { [INTERNAL_TOKEN_HEADER]: 'forged' } });
    expect(res.statusCode).toBe(200);
  });

  it('answers 503 SERVICE_UNAVAILABLE in the envelope when the service is down', async () => {
    const res = await gateway.inject({ method: 'GET', url: '/api/billing/tiers' });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toEqual({ error: { code: 'SERVICE_UNAVAILABLE', message: 'The billing service is unavailable' } });
    expect(res.headers['x-trace-id']).toMatch(/^[0-9a-f]{32}$/);
  });

  it('answers 504 UPSTREAM_TIMEOUT when the service is too slow', async () => {
    const res = await gateway.inject({ method: 'GET', url: '/api/tasks/slow' });
    expect(res.statusCode).toBe(504);
    expect(res.json().error.code).toBe('UPSTREAM_TIMEOUT');
  });

  it('refuses a malformed percent-encoding or an over-long URL itself, in the envelope, before the service is asked', async () => {
    const before = seen.length;
    const cases: [string, number, string][] = [
      ['/api/tasks/echo?q=%E0%A4%A', 400, 'VALIDATION_ERROR'], ['/api/tasks/echo?q=%ED%A0%80', 400, 'VALIDATION_ERROR'],
      ['/api/tasks/%E0%A4%A', 400, 'VALIDATION_ERROR'], [`/api/tasks/echo?q=${'x'.repeat(20_000)}`, 414, 'URI_TOO_LONG'],
    ];
    for (const [url, status, code] of cases) {
      const res = await gateway.inject({ method: 'GET', url });
      expect(res.statusCode, url.slice(0, 60)).toBe(status);
      expect(res.json().error.code, url.slice(0, 60)).toBe(code);
      expect(res.headers['x-trace-id']).toMatch(/^[0-9a-f]{32}$/);
    }
    expect(seen.length).toBe(before);
    expect((await gateway.inject({ method: 'GET', url: '/api/tasks/echo?q=%C3%BC' })).statusCode).toBe(200);
  });

  it('404s paths no service owns', async () => {
    const res = await gateway.inject({ method: 'GET', url: '/api/nothing-here' });
    expect(res.statusCode).toBe(404);
    expect(res.json().error.code).toBe('NOT_FOUND');
  });

  it('reports readiness of the whole stack', async () => {
    const health = await gateway.inject({ method: 'GET', url: '/api/health' });
    expect(health.statusCode).toBe(200);
    expect(health.json().data.services.billing).toBe('unavailable');
    const ready = await gateway.inject({ method: 'GET', url: '/api/ready' });
    expect(ready.statusCode).toBe(503);
    expect(ready.json().error.details).toContainEqual({ dependency: 'billing' });
  });
});
