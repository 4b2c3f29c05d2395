import { ServiceNames, Services } from '@aos/contracts';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { describe, expect, it } from 'vitest';

/** `pnpm start` (infra/scripts/start.ts), run only up to the point where it would launch the processes. */
const root = fileURLToPath(new URL('../..', import.meta.url));
const pgBase = new URL(process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
pgBase.pathname = '';

function start(env: Record<string, string>, args: string[] = []) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'infra/scripts/start.ts', ...args], {
    cwd: root, encoding: 'utf8', timeout: 60_000,
    env: {
      PATH: process.env.PATH, AOS_START_DOCKER: '0', PGURL: pgBase.toString().replace(/\/$/, ''),
      NATS_URL: process.env.NATS_URL ?? 'nats://127.0.0.1:4222', REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', ...env,
    },
  });
}

describe('pnpm start', () => {
  it('refuses to start when NATS is not reachable, naming it, where it looked, and how to start it', () => {
    const res = start({ NATS_URL: 'nats://127.0.0.1:1' });
    expect(res.status).toBe(1);
    expect(res.stderr).toContain('[start] cannot start: nats not reachable (nats at nats://127.0.0.1:1)');
    expect(res.stderr).toContain('nats-server');
    expect(res.stderr).toContain('-js');
    expect(res.stderr).not.toMatch(/postgres:|redis:/);
    expect(res.stdout).not.toContain('ready');
  });

  it('names every missing dependency at once, hiding the database password', () => {
    const res = start({ PGURL: 'postgres://postgres:hunter2@127.0.0.1:1', NATS_URL: 'nats://127.0.0.1:2', REDIS_URL: 'redis://127.0.0.1:3' });
    expect(res.status).toBe(1);
    expect(res.stderr).toContain('postgres, nats, redis not reachable');
    expect(res.stderr).toMatch(/postgres: pg_ctlcluster .*\(or set PGURL\)/);
    expect(res.stderr).toMatch(/redis: redis-server .*\(or set REDIS_URL\)/);
    expect(res.stderr + res.stdout).not.toContain('hunter2');
  });

  it('--prepare creates the service databases and the dev keys once, then stops', async () => {
    const keysDir = join(mkdtempSync(join(tmpdir(), 'aos-start-')), 'keys');
    try {
      const first = start({ AOS_KEYS_DIR: keysDir }, ['--prepare']);
      expect(first.stderr).toBe('');
      expect(first.status).toBe(0);
      expect(first.stdout).toContain('[start] prepared');
      const privateKey = readFileSync(join(keysDir, 'internal.private.jwk.json'), 'utf8');
      expect(JSON.parse(privateKey)).toMatchObject({ kty: 'OKP', crv: 'Ed25519', d: expect.any(String) });
      expect(statSync(join(keysDir, 'internal.private.jwk.json')).mode & 0o777).toBe(0o600);
      expect(statSync(keysDir).mode & 0o777).toBe(0o700);
      for (const f of ['identity.private.jwk.json', 'identity.public.jwk.json', 'internal.public.jwk.json', 'api-key-pepper', 'credentials-key']) {
        expect(readFileSync(join(keysDir, f), 'utf8').length, f).toBeGreaterThan(20);
      }
      const again = start({ AOS_KEYS_DIR: keysDir }, ['--prepare']);
      expect(again.status).toBe(0);
      expect(readFileSync(join(keysDir, 'internal.private.jwk.json'), 'utf8')).toBe(privateKey);

      const admin = new pg.Client({ connectionString: process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres' });
      await admin.connect();
      try {
        const { rows } = await admin.query('SELECT datname FROM pg_database WHERE datname = ANY($1)', [ServiceNames.map((n) => Services[n].database)]);
        expect(rows.map((r) => r.datname).sort()).toEqual(ServiceNames.map((n) => Services[n].database).sort());
      } finally {
        await admin.end();
      }
    } finally {
      rmSync(join(keysDir, '..'), { recursive: true, force: true });
    }
  });
});
