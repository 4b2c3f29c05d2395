import { ServiceNames, Services, type ServiceName } from '@aos/contracts';
import { createLogger } from '@aos/core';
import type { App } from '@aos/http';
import { createNamespace, internalKeys, removeNamespace } from '@aos/testkit';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildGateway } from '../../gateway/src/app.js';
import { loadGatewayConfig } from '../../gateway/src/config.js';
import { anonymous } from '../../gateway/src/routes/proxy.js';

/**
 * Every row of reference/endpoints.tsv, sent through the real gateway (authentication
 * replaced by `anonymous`) to six stand-in services that report what reached them.
 */
type Seen = { service: ServiceName; method: string; url: string; body: string };
const seen: Seen[] = [];
const upstreams: Server[] = [];
const ns = createNamespace();
let gateway: App;

const rows = readFileSync(new URL('../../../shared/reference/endpoints.tsv', import.meta.url), 'utf8').trim().split('\n').slice(1)
  .map((l) => l.split('\t')).map(([method, path, , owner]) => ({ method: method!, path: path!, owner: owner! }));
const concrete = (path: string) => path.replace(/\{[^}]+\}/g, '42').replace(/:[A-Za-z_]+/g, '42');

beforeAll(async () => {
  const urls: Record<string, string> = {};
  for (const service of ServiceNames) {
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => {
        seen.push({ service, method: req.method!, url: req.url!, body });
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ data: { service } }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    upstreams.push(server);
    urls[Services[service].urlEnv] = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }
  gateway = await buildGateway({
    config: loadGatewayConfig({
      INTERNAL_TOKEN_PRIVATE_JWK: (await internalKeys()).privateJwk, ...urls,
      REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', REDIS_PREFIX: `${ns.redisPrefix}:gw`,
    }),
    version: 'test', log: createLogger('gateway', 'silent'), admit: anonymous, events: false,
  });
});
afterAll(async () => {
  await gateway?.close();
  for (const s of upstreams) await new Promise((r) => s.close(r));
  await removeNamespace(ns);
});

describe('gateway routing per reference/endpoints.tsv', () => {
  it('has rows for every service and the gateway', () => {
    expect(rows.length).toBeGreaterThan(150);
    expect(new Set(rows.map((r) => r.owner))).toEqual(new Set([...ServiceNames, 'gateway']));
  });

  it('sends every service endpoint, under /api and /api/v1, to its owner with method, path, query and body intact', async () => {
    const wrong: string[] = [];
    for (const { method, path, owner } of rows.filter((r) => r.owner !== 'gateway')) {
      for (const prefix of ['/api', '/api/v1']) {
        const url = `${prefix}${concrete(path)}?probe=1`;
        const body = ['POST', 'PUT', 'PATCH'].includes(method) ? '{"probe":true}' : undefined;
        seen.length = 0;
        const res = await gateway.inject({ method: method as 'GET', url, payload: body, headers: body ? { 'content-type': 'application/json' } : {} });
        const hit = seen[0];
        const expected = `${concrete(path)}?probe=1`;
        if (res.statusCode !== 200 || seen.length !== 1 || hit?.service !== owner || hit.method !== method || hit.url !== expected || (body && hit.body !== body)) {
          wrong.push(`${method} ${url} (owner ${owner}) → ${res.statusCode} ${hit ? `${hit.service} ${hit.method} ${hit.url}` : 'not forwarded'}`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  it('answers the gateway\'s own endpoints itself, forwarding nothing', async () => {
    const wrong: string[] = [];
    for (const { method, path } of rows.filter((r) => r.owner === 'gateway')) {
      for (const prefix of ['/api', '/api/v1']) {
        // `/v1/public/health` is only served as /api/v1/public/health.
        if (path.startsWith('/v1/') && prefix === '/api/v1') continue;
        const res = await gateway.inject({ method: method as 'GET', url: `${prefix}${concrete(path)}` });
        // A forwarded call would carry a stand-in's answer ({ data: { service: <name> } }); probes of /ready are not forwarding.
        const forwarded = (ServiceNames as string[]).includes((res.json() as { data?: { service?: string } }).data?.service ?? '');
        if (res.statusCode === 404 || forwarded) wrong.push(`${method} ${prefix}${path} → ${res.statusCode}${forwarded ? ' (forwarded)' : ''}`);
      }
    }
    expect(wrong).toEqual([]);
  });
});
