import { ServiceNames, Services } from '@aos/contracts';
import { loadServiceConfig } from '@aos/runtime';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { loadGatewayConfig } from '../../gateway/src/config.js';
import { ensureDevKeys } from '../../infra/scripts/keys.js';
import { service as agents } from '../../services/agents-runtime/src/service.js';
import { service as backups } from '../../services/backups/src/service.js';
import { service as billing } from '../../services/billing/src/service.js';
import { service as identity } from '../../services/identity/src/service.js';
import { service as notifications } from '../../services/notifications/src/service.js';
import { service as tasks } from '../../services/tasks/src/service.js';

/**
 * docker-compose.yml, checked without a Docker engine: Compose itself validates and
 * normalises the file (v2 `docker compose` or v1 `docker-compose`), then the tests check the
 * ordering, health checks and that every process would pass its own config validation.
 */
const root = fileURLToPath(new URL('../..', import.meta.url));
type Env = Record<string, string>;
const loadConfigOf: Record<string, (env: Env) => unknown> = {
  identity: (env) => loadServiceConfig(identity, env),
  'agents-runtime': (env) => loadServiceConfig(agents, env),
  tasks: (env) => loadServiceConfig(tasks, env),
  billing: (env) => loadServiceConfig(billing, env),
  notifications: (env) => loadServiceConfig(notifications, env),
  backups: (env) => loadServiceConfig(backups, env),
};

type ComposeService = {
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  command?: string[];
  volumes?: Array<string | { source: string; target: string }>;
};
type Compose = { services: Record<string, ComposeService> };

function normalizedCompose(): Compose | null {
  const v2 = spawnSync('docker', ['compose', 'config', '--format', 'json'], { cwd: root, encoding: 'utf8' });
  if (v2.status === 0) return JSON.parse(v2.stdout) as Compose;
  const v1 = spawnSync('docker-compose', ['config'], { cwd: root, encoding: 'utf8' });
  if (v1.status !== 0) return null;
  // Compose v1 is Python with PyYAML; use it to turn its YAML into JSON.
  const json = execFileSync('python3', ['-c', 'import sys, yaml, json; print(json.dumps(yaml.safe_load(sys.stdin)))'], { input: v1.stdout, encoding: 'utf8' });
  return JSON.parse(json) as Compose;
}

const compose = normalizedCompose();
const keysDir = mkdtempSync(join(tmpdir(), 'aos-compose-'));
afterAll(() => rmSync(keysDir, { recursive: true, force: true }));

describe.skipIf(!compose)('docker-compose.yml', () => {
  const services = compose?.services ?? {};
  const processes = [...ServiceNames, 'gateway'] as const;

  it('is valid for Compose (`config -q`)', () => {
    const v2 = spawnSync('docker', ['compose', 'config', '-q'], { cwd: root });
    const ok = v2.status === 0 || spawnSync('docker-compose', ['config', '-q'], { cwd: root }).status === 0;
    expect(ok).toBe(true);
  });

  it('runs the infrastructure with health checks and every process behind them', () => {
    for (const infra of ['postgres', 'nats', 'redis', 'mailpit']) expect(services[infra]?.healthcheck?.test, infra).toBeDefined();
    for (const extra of ['jaeger', 'stripe-mock', 'keygen']) expect(services[extra], extra).toBeDefined();
    for (const name of processes) {
      const svc = services[name]!;
      expect(svc, name).toBeDefined();
      expect(svc.healthcheck?.test.join(' '), name).toContain('/ready');
      for (const dep of ['postgres', 'nats', 'redis']) expect(svc.depends_on?.[dep]?.condition, `${name} → ${dep}`).toBe('service_healthy');
      expect(svc.depends_on?.keygen?.condition, `${name} → keygen`).toBe('service_completed_successfully');
    }
    for (const name of ServiceNames) expect(services.gateway!.depends_on?.[name]?.condition, `gateway → ${name}`).toBe('service_healthy');
    expect(services.notifications!.depends_on?.mailpit).toBeDefined();
    expect(services.billing!.depends_on?.['stripe-mock']).toBeDefined();
  });

  it('gives each service its port and its own database, created by the Postgres init script', () => {
    const init = readFileSync(join(root, 'infra/postgres/init.sql'), 'utf8');
    for (const name of ServiceNames) {
      const env = services[name]!.environment!;
      expect(env.PORT, name).toBe(String(Services[name].port));
      expect(new URL(env.DATABASE_URL!).pathname, name).toBe(`/${Services[name].database}`);
      expect(init, name).toContain(`CREATE DATABASE ${Services[name].database};`);
      expect(services.gateway!.environment![Services[name].urlEnv], name).toBe(`http://${name}:${Services[name].port}`);
    }
  });

  it('runs NATS with the repository config that fsyncs every write', () => {
    const nats = services.nats!;
    expect(JSON.stringify(nats.volumes)).toContain('infra/nats/nats.conf');
    expect(readFileSync(join(root, 'infra/nats/nats.conf'), 'utf8')).toMatch(/^\s*sync_interval:\s*always\s*$/m);
  });

  it('hands the keys to the user the services run as', () => {
    expect(services.keygen!.command!.join(' ')).toMatch(/keys\.ts \/keys && chown -R node:node \/keys/);
    expect(readFileSync(join(root, 'infra/Dockerfile'), 'utf8')).toMatch(/^USER node$/m);
  });

  it('sets everything each process requires: its config validates with the compose environment', async () => {
    await ensureDevKeys(keysDir);
    const local = (env: Env) => Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v.replace(/^\/keys\//, `${keysDir}/`)]));
    for (const name of ServiceNames) {
      expect(() => loadConfigOf[name]!(local(services[name]!.environment!)), name).not.toThrow();
    }
    expect(() => loadGatewayConfig(local(services.gateway!.environment!))).not.toThrow();
  });
});
