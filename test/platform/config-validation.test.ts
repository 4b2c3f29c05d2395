import { spawnSync } from 'node:child_process';
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
});
