import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage } from 'node:http';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { createTestDatabase, internalKeys, waitFor } from '@aos/testkit';
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

beforeAll(async () => {
  await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
  db = await createTestDatabase('lifecycle');
});
afterAll(async () => {
  collector.close();
  await db.drop();
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
