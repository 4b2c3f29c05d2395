import { AppError, createLogger, initTracing } from '@aos/core';
import { createHttpApp, list, Nullable, page, PaginationQuery, type App } from '@aos/http';
import { apiKeyPrincipal, internalKeys, tokenFor, userPrincipal } from '@aos/testkit';
import { ANONYMOUS, INTERNAL_TOKEN_HEADER } from '@aos/contracts';
import { importEd25519Jwk, signInternalToken } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { generateKeyPair } from 'jose';
import { connect, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let app: App;
let healthy = true;
/** Every log line the app writes. */
const logLines: Array<Record<string, unknown>> = [];
const logSink = { write: (line: string) => { logLines.push(JSON.parse(line) as Record<string, unknown>); } };

beforeAll(async () => {
  initTracing('contract-test');
  const { key } = await importEd25519Jwk((await internalKeys()).publicJwk);
  app = await createHttpApp({
    service: 'contract-test', version: '1.2.3', logger: createLogger('contract-test', 'info', {}, logSink), internalKey: key,
    checks: { db: { critical: true, check: async () => healthy } }, bodyLimit: 1024,
  });
  app.get('/boom', async () => { throw new Error('secret detail: SELECT * FROM users'); });
  app.post('/items', { schema: { body: Type.Object({ name: Type.String({ minLength: 1 }) }) } }, async (req) => ({ data: req.body }));
  app.patch('/switches', {
    schema: { body: Type.Object({ active: Type.Optional(Type.Boolean()), count: Type.Optional(Type.Integer()), note: Type.Optional(Nullable(Type.String())), tags: Type.Optional(Type.Array(Type.String())), extra: Type.Optional(Type.Unknown()) }) },
  }, async (req) => ({ data: req.body }));
  app.get('/items', { schema: { querystring: Type.Object(PaginationQuery) } }, async (req) => {
    const p = page(req.query);
    return list([], 0, p);
  });
  app.get('/items/:id', async (req) => ({ data: req.params }));
  app.get('/scoped', { config: { scope: 'tasks:write' } }, async (req) => ({ data: { kind: req.principal.kind } }));
  app.get('/admins', { config: { minRole: 'admin' } }, async () => ({ data: 'ok' }));
  app.post('/scoped-items', { config: { scope: 'tasks:write', minRole: 'admin' }, schema: { body: Type.Object({ name: Type.String({ minLength: 1 }) }) } }, async (req) => ({ data: req.body }));
  app.get('/public', { config: { auth: 'public' } }, async (req) => ({ data: { kind: req.principal.kind } }));
  app.get('/conflict', async () => { throw new AppError('CONFLICT', 'Already there', [{ id: 7 }]); });
  await app.ready();
});
afterAll(() => app.close());

const as = async (principal = userPrincipal()) => ({ [INTERNAL_TOKEN_HEADER]: await tokenFor(principal) });

describe('error envelope and X-Trace-Id', () => {
  it('404 for an unknown route', async () => {
    const res = await app.inject({ method: 'GET', url: '/nope', headers: await as() });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toEqual({ error: { code: 'NOT_FOUND', message: expect.any(String) } });
    expect(res.headers['x-trace-id']).toMatch(/^[0-9a-f]{32}$/);
  });

  it('400 for a malformed JSON body', async () => {
    const res = await app.inject({ method: 'POST', url: '/items', headers: { ...(await as()), 'content-type': 'application/json' }, payload: '{"name": ' });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.code).toBe('VALIDATION_ERROR');
    expect(res.headers['x-trace-id']).toMatch(/^[0-9a-f]{32}$/);
  });

  it('4xx in the envelope for a malformed URL encoding or an over-long parameter', async () => {
    for (const url of ['/items/%', '/items/%ZZ']) {
      const res = await app.inject({ method: 'GET', url, headers: await as() });
      expect(res.statusCode, url).toBe(400);
      expect(res.json().error.code, url).toBe('VALIDATION_ERROR');
      expect(res.headers['x-trace-id'], url).toMatch(/^[0-9a-f]{32}$/);
    }
    const long = await app.inject({ method: 'GET', url: `/items/${'x'.repeat(600)}`, headers: await as() });
    expect(long.statusCode).toBe(414);
    expect(long.json().error.code).toBeTruthy();
  });

  it("requests Node's HTTP parser refuses (headers over 16 KB, garbage) get the envelope and a trace id too", async () => {
    await app.listen({ host: '127.0.0.1', port: 0 });
    const port = (app.server.address() as AddressInfo).port;
    const raw = (request: string) => new Promise<string>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => socket.write(request));
      let answer = '';
      socket.on('data', (c) => { answer += c.toString(); });
      socket.on('end', () => resolve(answer));
      socket.on('error', reject);
    });
    const cases: [string, number, string][] = [
      [`GET /items?q=${'x'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 431, 'HEADERS_TOO_LARGE'],
      [`GET /items HTTP/1.1\r\nHost: x\r\nX-Big: ${'y'.repeat(20_000)}\r\n\r\n`, 431, 'HEADERS_TOO_LARGE'],
      ['NOT HTTP AT ALL\r\n\r\n', 400, 'VALIDATION_ERROR'],
      ['GET /items HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n', 400, 'VALIDATION_ERROR'],
    ];
    for (const [request, status, code] of cases) {
      const answer = await raw(request);
      const [head, body] = answer.split('\r\n\r\n');
      expect(head, request.slice(0, 40)).toMatch(new RegExp(`^HTTP/1.1 ${status} `));
      expect(head).toMatch(/\r\nx-trace-id: [0-9a-f]{32}\r\n/);
      expect(JSON.parse(body!)).toEqual({ error: { code, message: expect.any(String) } });
    }
  });

  it('refuses null where the schema does not allow it (coercion would read it as false, 0 or ""), keeps it where it does', async () => {
    const patch = async (payload: unknown) => app.inject({ method: 'PATCH', url: '/switches', headers: await as(), payload: payload as object });
    for (const [body, field] of [[{ active: null }, 'active'], [{ count: null }, 'count'], [{ tags: ['a', null] }, 'tags.1']] as const) {
      const res = await patch(body);
      expect(res.statusCode, field).toBe(400);
      expect(res.json().error).toMatchObject({ code: 'VALIDATION_ERROR', details: [{ field }] });
    }
    expect((await patch({ note: null, extra: null, active: false })).json().data).toEqual({ note: null, extra: null, active: false });
  });

  it('400 with field details for a schema violation', async () => {
    const res = await app.inject({ method: 'POST', url: '/items', headers: await as(), payload: { name: '' } });
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatchObject({ code: 'VALIDATION_ERROR', details: [{ field: 'name' }] });
  });

  it('500 hides the error and its stack; the log line with them carries the same trace id', async () => {
    const res = await app.inject({ method: 'GET', url: '/boom', headers: await as() });
    expect(res.statusCode).toBe(500);
    expect(res.json()).toEqual({ error: { code: 'INTERNAL_ERROR', message: 'Internal server error' } });
    expect(res.body).not.toMatch(/secret|SELECT|at .*\.ts/);
    const traceId = res.headers['x-trace-id'];
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    const logged = logLines.find((l) => l.msg === 'unhandled error' && l.trace_id === traceId) as { err: { message: string; stack: string } } | undefined;
    expect(logged?.err.message).toContain('secret detail');
    expect(logged?.err.stack).toMatch(/at /);
    // Every line about this request carries its trace id.
    const lines = logLines.filter((l) => (l.req as { url?: string } | undefined)?.url === '/boom' || l.msg === 'unhandled error');
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.every((l) => l.trace_id === traceId)).toBe(true);
  });

  it('413 for a body over the limit and 415 for an unsupported content type, in the envelope', async () => {
    const big = await app.inject({ method: 'POST', url: '/items', headers: await as(), payload: { name: 'x'.repeat(5_000) } });
    expect(big.statusCode).toBe(413);
    expect(big.json()).toEqual({ error: { code: 'PAYLOAD_TOO_LARGE', message: expect.any(String) } });
    expect(big.headers['x-trace-id']).toMatch(/^[0-9a-f]{32}$/);
    const xml = await app.inject({ method: 'POST', url: '/items', headers: { ...(await as()), 'content-type': 'application/xml' }, payload: '<name>x</name>' });
    expect(xml.statusCode).toBe(415);
    expect(xml.json()).toEqual({ error: { code: 'UNSUPPORTED_MEDIA_TYPE', message: expect.any(String) } });
    expect(xml.headers['x-trace-id']).toMatch(/^[0-9a-f]{32}$/);
  });

  it('an unregistered method on a known path is 404 in the envelope', async () => {
    const res = await app.inject({ method: 'DELETE', url: '/items', headers: await as() });
    expect(res.statusCode).toBe(404);
    expect(res.json().error.code).toBe('NOT_FOUND');
  });

  it('continues the caller\'s trace from traceparent', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const res = await app.inject({ method: 'GET', url: '/public', headers: { ...(await as()), traceparent: `00-${traceId}-00f067aa0ba902b7-01` } });
    expect(res.headers['x-trace-id']).toBe(traceId);
  });

  it('AppError keeps its code and details', async () => {
    const res = await app.inject({ method: 'GET', url: '/conflict', headers: await as() });
    expect(res.statusCode).toBe(409);
    expect(res.json()).toEqual({ error: { code: 'CONFLICT', message: 'Already there', details: [{ id: 7 }] } });
  });
});

describe('pagination', () => {
  it('caps limit at 200 and reports it in meta', async () => {
    const res = await app.inject({ method: 'GET', url: '/items?limit=5000&offset=3', headers: await as() });
    expect(res.json().meta).toEqual({ total: 0, limit: 200, offset: 3 });
  });
  it('rejects a negative offset and a limit below 1 or not an integer', async () => {
    for (const query of ['offset=-1', 'limit=-5', 'limit=0', 'limit=abc', 'limit=1.5', 'offset=x']) {
      const res = await app.inject({ method: 'GET', url: `/items?${query}`, headers: await as() });
      expect(res.statusCode, query).toBe(400);
      expect(res.json().error.code, query).toBe('VALIDATION_ERROR');
    }
  });
  it('defaults to limit 50, offset 0', async () => {
    const res = await app.inject({ method: 'GET', url: '/items', headers: await as() });
    expect(res.json().meta).toEqual({ total: 0, limit: 50, offset: 0 });
  });
  it('rejects offsets that coerce to Infinity or past 2^53, in the envelope', async () => {
    for (const offset of ['1e309', '99999999999999999999']) {
      const res = await app.inject({ method: 'GET', url: `/items?offset=${offset}`, headers: await as() });
      expect(res.statusCode, offset).toBe(400);
      expect(res.json().error).toMatchObject({ code: 'VALIDATION_ERROR', details: [{ field: 'offset' }] });
    }
  });
  it('rejects a non-finite number anywhere in a JSON body', async () => {
    const res = await app.inject({
      method: 'POST', url: '/items', headers: { ...(await as()), 'content-type': 'application/json' },
      payload: '{"name":"x","nested":{"n":1e309}}',
    });
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatchObject({ code: 'VALIDATION_ERROR', details: [{ field: 'nested/n' }] });
  });
});

describe('principal from the gateway token', () => {
  it('rejects a direct call without the internal token', async () => {
    const res = await app.inject({ method: 'GET', url: '/public' });
    expect(res.statusCode).toBe(401);
    expect(res.json().error.code).toBe('UNAUTHORIZED');
  });

  it('rejects a token signed by another key', async () => {
    const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
    const forged = await signInternalToken(privateKey, userPrincipal());
    const res = await app.inject({ method: 'GET', url: '/public', headers: { [INTERNAL_TOKEN_HEADER]: forged } });
    expect(res.statusCode).toBe(401);
  });

  it('rejects an expired token', async () => {
    const { privateKey } = await internalKeys();
    const expired = await signInternalToken(privateKey, userPrincipal(), -10);
    const res = await app.inject({ method: 'GET', url: '/public', headers: { [INTERNAL_TOKEN_HEADER]: expired } });
    expect(res.statusCode).toBe(401);
  });

  it('answers 403 SCOPE_REQUIRED naming the scope an API key lacks', async () => {
    const res = await app.inject({ method: 'GET', url: '/scoped', headers: await as(apiKeyPrincipal(['tasks:read'])) });
    expect(res.statusCode).toBe(403);
    expect(res.json().error).toMatchObject({ code: 'SCOPE_REQUIRED', details: [{ scope: 'tasks:write' }] });
    const ok = await app.inject({ method: 'GET', url: '/scoped', headers: await as(apiKeyPrincipal(['tasks:write'])) });
    expect(ok.json().data.kind).toBe('api_key');
  });

  it('enforces the minimum organization role', async () => {
    expect((await app.inject({ method: 'GET', url: '/admins', headers: await as(userPrincipal({ orgRole: 'member' })) })).statusCode).toBe(403);
    expect((await app.inject({ method: 'GET', url: '/admins', headers: await as(userPrincipal({ orgRole: 'admin' })) })).statusCode).toBe(200);
  });

  it('refuses an anonymous caller, a key without the scope and a too-low role before looking at the body', async () => {
    const post = async (headers: Record<string, string>, payload: string) =>
      app.inject({ method: 'POST', url: '/scoped-items', headers: { ...headers, 'content-type': 'application/json' }, payload });
    const anonymous = await as(ANONYMOUS);
    for (const body of ['{}', '{"name": ', '[]']) {
      expect((await post(anonymous, body)).json().error.code, body).toBe('UNAUTHORIZED');
      expect((await post(await as(apiKeyPrincipal(['tasks:read'])), body)).json().error.code, body).toBe('SCOPE_REQUIRED');
      expect((await post(await as(userPrincipal({ orgRole: 'member' })), body)).json().error.code, body).toBe('FORBIDDEN');
    }
    expect((await post(await as(userPrincipal({ orgRole: 'admin' })), '{}')).json().error.code).toBe('VALIDATION_ERROR');
    expect((await post(await as(userPrincipal({ orgRole: 'admin' })), '{"name":"x"}')).statusCode).toBe(200);
  });

  it('needs no token for health, and /ready follows the critical checks', async () => {
    expect((await app.inject({ method: 'GET', url: '/health' })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/version' })).json().data.version).toBe('1.2.3');
    healthy = false;
    const res = await app.inject({ method: 'GET', url: '/ready' });
    healthy = true;
    expect(res.statusCode).toBe(503);
    expect(res.json().error.code).toBe('SERVICE_UNAVAILABLE');
    expect((await app.inject({ method: 'GET', url: '/ready' })).statusCode).toBe(200);
  });

  it('publishes an OpenAPI document', async () => {
    const res = await app.inject({ method: 'GET', url: '/openapi.json' });
    expect(res.json().paths['/items']).toBeDefined();
  });
});
