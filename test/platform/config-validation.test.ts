import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { internalKeys } from '@aos/testkit';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));

function startTasks(env: Record<string, string>) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'services/tasks/src/main.ts'], {
    cwd: root, env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: 30_000,
  });
}

describe('config validated at start', () => {
  it('exits non-zero naming an invalid DATABASE_URL, without echoing it', async () => {
    const res = startTasks({ DATABASE_URL: 'mysql://user:hunter2@db/x', INTERNAL_TOKEN_PUBLIC_JWK: (await internalKeys()).publicJwk });
    expect(res.status).toBe(1);
    expect(res.stderr).toContain('DATABASE_URL: must be a postgres:// URL');
    expect(res.stderr).not.toContain('hunter2');
  });

  it('names every missing or invalid setting at once', () => {
    const res = startTasks({ PORT: 'eighty', DATABASE_URL: 'not a url' });
    expect(res.status).toBe(1);
    expect(res.stderr).toContain('PORT');
    expect(res.stderr).toContain('DATABASE_URL');
    expect(res.stderr).toContain('INTERNAL_TOKEN_PUBLIC_JWK is required');
  });

  it('names the database setting and server when the database cannot be used, never the password', async () => {
    const jwk = (await internalKeys()).publicJwk;
    for (const url of ['postgres://u:hunter2@127.0.0.1:1/aos_x', 'postgres://postgres:hunter2@127.0.0.1:5432/aos_missing_database_x']) {
      const res = startTasks({ DATABASE_URL: url, INTERNAL_TOKEN_PUBLIC_JWK: jwk, LOG_LEVEL: 'silent' });
      expect(res.status, url).toBe(1);
      expect(res.stderr, url).toMatch(/^tasks: failed to start: DATABASE_URL: cannot use the database at 127\.0\.0\.1:(1|5432)\/aos_/m);
      expect(res.stderr + res.stdout, url).not.toContain('hunter2');
    }
  });

  it('names a bad internal-token key, also when read from <NAME>_FILE, without echoing it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'aos-cfg-'));
    try {
      const file = join(dir, 'jwk.json');
      writeFileSync(file, '{"kty":"RSA","n":"hunter2"}');
      const res = startTasks({ INTERNAL_TOKEN_PUBLIC_JWK_FILE: file, LOG_LEVEL: 'silent' });
      expect(res.status).toBe(1);
      expect(res.stderr).toContain('INTERNAL_TOKEN_PUBLIC_JWK: key must be an Ed25519 JWK');
      expect(res.stderr).not.toContain('hunter2');
      const missing = startTasks({ INTERNAL_TOKEN_PUBLIC_JWK_FILE: join(dir, 'nope.json') });
      expect(missing.status).toBe(1);
      expect(missing.stderr).toMatch(/INTERNAL_TOKEN_PUBLIC_JWK_FILE: cannot read .*nope\.json \(ENOENT\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
