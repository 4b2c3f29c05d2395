import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage } from 'node:http';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { createNamespace, createTestDatabase, internalKeys, removeNamespace, tokenFor, userPrincipal, waitFor } from '@aos/testkit';
import { INTERNAL_TOKEN_HEADER } from '@aos/contracts';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

const received: { path: string; body: string }[] = [];
const collector = createServer((req: IncomingMessage, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => { received.push({ path: req.url ?? '', body }); res.writeHead(200, { 'content-type': 'application/json' }).end('{}'); });
});
let db: { url: string; drop: () => Promise<void> };
const ns = createNamespace();

beforeAll(async () => {
  await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
  db = await createTestDatabase('lifecycle');
});
afterAll(async () => {
  collector.close();
  await db.drop();
  await removeNamespace(ns);
});

describe('a service process', () => {
  it('boots, migrates, serves, exports spans over OTLP, and exits 0 on SIGTERM', async () => {
    const port = await freePort();
    const otlp = `http://127.0.0.1:${(collector.address() as net.AddressInfo).port}`;
    const child = spawn(process.execPath, ['--import', 'tsx', 'services/tasks/src/main.ts'], {
      cwd: root,
      env: {
        PATH: process.env.PATH, PORT: String(port), DATABASE_URL: db.url,
        NATS_URL: process.env.NATS_URL ?? 'nats://127.0.0.1:4222', REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
        INTERNAL_TOKEN_PUBLIC_JWK: (await internalKeys()).publicJwk, OTEL_EXPORTER_OTLP_ENDPOINT: otlp, LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c) => { stderr += c; });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/ready`).catch(() => null))?.ok, { timeoutMs: 20_000, message: 'service ready' });
      const version = (await (await fetch(`http://127.0.0.1:${port}/version`)).json()) as { data: { service: string } };
      expect(version.data.service).toBe('tasks');
      const tables = (await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.json())) as { data: { checks: Record<string, string> } };
      expect(tables.data.checks.db).toBe('connected');
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(stderr).toBe('');
    const traces = received.filter((r) => r.path === '/v1/traces');
    expect(traces.length).toBeGreaterThan(0);
    expect(traces.map((t) => t.body).join('')).toContain('tasks');
  });
});

describe('graceful shutdown on SIGTERM', () => {
  it('lets the request and the job in flight finish, closes in order with traces flushed last, and exits 0', async () => {
    const port = await freePort();
    const otlp = `http://127.0.0.1:${(collector.address() as net.AddressInfo).port}`;
    const own = await createTestDatabase('shutdown');
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/platform/fixtures/lifecycle/main.ts'], {
      cwd: root,
      env: {
        PATH: process.env.PATH, PORT: String(port), DATABASE_URL: own.url, LOG_LEVEL: 'debug',
        NATS_URL: process.env.NATS_URL ?? 'nats://127.0.0.1:4222', REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
        REDIS_PREFIX: ns.redisPrefix, BUS_SUBJECT_ROOT: ns.bus.subjectRoot, BUS_STREAM: ns.bus.stream, BUS_DLQ_STREAM: ns.bus.deadLetterStream,
        INTERNAL_TOKEN_PUBLIC_JWK: (await internalKeys()).publicJwk, OTEL_EXPORTER_OTLP_ENDPOINT: otlp,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => { stdout += c; });
    child.stderr.on('data', (c) => { stderr += c; });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const pool = new pg.Pool({ connectionString: own.url, max: 1 });
    const marks = async () => (await pool.query<{ what: string }>('SELECT what FROM lifecycle_marks ORDER BY at')).rows.map((r) => r.what);
    const base = `http://127.0.0.1:${port}`;
    const headers = { [INTERNAL_TOKEN_HEADER]: await tokenFor(userPrincipal()), 'content-type': 'application/json' };
    try {
      await waitFor(async () => (await fetch(`${base}/ready`).catch(() => null))?.ok, { timeoutMs: 20_000, message: 'service ready' });
      expect((await fetch(`${base}/jobs`, { method: 'POST', headers, body: JSON.stringify({ ms: 1_500 }) })).status).toBe(202);
      await waitFor(async () => (await marks()).includes('job started'), { message: 'job running' });
      const slow = fetch(`${base}/slow?ms=1500`, { headers });
      await waitFor(async () => (await marks()).includes('request started'), { message: 'request in flight' });

      child.kill('SIGTERM');
      // New connections are refused while the one in flight is still being answered.
      await waitFor(async () => (await fetch(`${base}/health`).then(() => false, () => true)), { timeoutMs: 5_000, message: 'listener closed' });
      const res = await slow;
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ data: { slept: 1_500 } });
      expect(await exited).toBe(0);
      expect(await marks()).toEqual(expect.arrayContaining(['request finished', 'job finished']));
    } finally {
      child.kill('SIGKILL');
      await pool.end();
      await own.drop();
    }
    expect(stderr).toBe('');
    const steps = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { msg: string; step?: string })
      .filter((l) => l.msg === 'shutdown step done').map((l) => l.step);
    expect(steps).toEqual(['http', 'event consumers', 'outbox relay', 'redis', 'nats', 'postgres pool', 'tracing']);
    // The job's span ended during the shutdown and still reached the collector.
    expect(received.filter((r) => r.path === '/v1/traces').map((t) => t.body).join('')).toContain('job factory:slow');
  });
});
