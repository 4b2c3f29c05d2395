import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Type } from '@sinclair/typebox';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, Env, loadConfig } from '../src/config.js';

const SECRET = 'hunter2-s3cr3t';
const schema = Type.Object({
  DATABASE_URL: Env.postgresUrl(),
  NATS_URL: Env.natsUrl(),
  PORT: Env.port(4003),
  POOL_MAX: Env.int(10, { minimum: 1, maximum: 200 }),
  DEBUG: Env.bool(false),
  LEVEL: Type.Union([Type.Literal('info'), Type.Literal('debug')], { default: 'info' }),
  PREFIX: Type.String({ default: 'aos', pattern: '^[a-z]+$' }),
  API_TOKEN: Type.String({ minLength: 20 }),
});

const dir = mkdtempSync(join(tmpdir(), 'aos-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(schema, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error('expected a ConfigError');
}

const valid = { DATABASE_URL: 'postgres://u@db/x', API_TOKEN: 'a'.repeat(20) };

describe('loadConfig', () => {
  it('applies defaults and converts strings', () => {
    expect(loadConfig(schema, { ...valid, PORT: '8080', DEBUG: 'true', POOL_MAX: '3' })).toEqual({
      ...valid, NATS_URL: 'nats://127.0.0.1:4222', PORT: 8080, POOL_MAX: 3, DEBUG: true, LEVEL: 'info', PREFIX: 'aos',
    });
  });

  it('names every bad setting at once and never echoes a value', () => {
    const env = {
      DATABASE_URL: `mysql://root:${SECRET}@db/x`, NATS_URL: `http://${SECRET}`, PORT: `${SECRET}`, POOL_MAX: '1000',
      DEBUG: SECRET, LEVEL: SECRET, PREFIX: SECRET, API_TOKEN: 'short',
    };
    const found = problems(env);
    for (const key of Object.keys(env)) expect(found.some((p) => p.startsWith(`${key}`)), key).toBe(true);
    expect(found.join('\n')).not.toContain(SECRET);
    expect(found.join('\n')).not.toContain('short');
    expect(found).toContain('DATABASE_URL: must be a postgres:// URL with a host, e.g. postgres://postgres@127.0.0.1:5432/aos_tasks');
  });

  it('refuses a fractional or suffixed integer instead of truncating it', () => {
    for (const bad of ['1.5', '10k', '0x10', '1e3']) {
      expect(problems({ ...valid, POOL_MAX: bad }), bad).toEqual(['POOL_MAX: must be a whole number']);
    }
    expect(loadConfig(schema, { ...valid, POOL_MAX: '+7' }).POOL_MAX).toBe(7);
  });

  it('says which required settings are missing', () => {
    expect(problems({})).toEqual(expect.arrayContaining(['DATABASE_URL is required', 'API_TOKEN is required']));
  });

  it('reads <NAME>_FILE when <NAME> is unset, trimmed; the variable itself wins', () => {
    const file = join(dir, 'token');
    writeFileSync(file, `${'b'.repeat(24)}\n`);
    expect(loadConfig(schema, { DATABASE_URL: valid.DATABASE_URL, API_TOKEN_FILE: file }).API_TOKEN).toBe('b'.repeat(24));
    expect(loadConfig(schema, { ...valid, API_TOKEN_FILE: file }).API_TOKEN).toBe(valid.API_TOKEN);
  });

  it('names an unreadable <NAME>_FILE and validates what a file holds without echoing it', () => {
    expect(problems({ DATABASE_URL: valid.DATABASE_URL, API_TOKEN_FILE: join(dir, 'missing') }))
      .toEqual(expect.arrayContaining([expect.stringMatching(/^API_TOKEN_FILE: cannot read .*missing \(ENOENT\)$/)]));
    const file = join(dir, 'db-url');
    writeFileSync(file, `mysql://root:${SECRET}@db/x`);
    const found = problems({ ...valid, DATABASE_URL: '', DATABASE_URL_FILE: file });
    expect(found).toEqual([expect.stringMatching(/^DATABASE_URL: must be a postgres:\/\/ URL/)]);
    expect(found.join()).not.toContain(SECRET);
  });
});
