import { readFileSync } from 'node:fs';
import { FormatRegistry, Type, type Static, type TObject, type TProperties } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

function urlWithProtocols(protocols: string[]) {
  return (value: string) => {
    try {
      const url = new URL(value);
      return protocols.includes(url.protocol) && url.hostname.length > 0;
    } catch {
      return false;
    }
  };
}

const formats: Record<string, (v: string) => boolean> = {
  'postgres-url': urlWithProtocols(['postgres:', 'postgresql:']),
  'nats-url': (v) => v.split(',').every(urlWithProtocols(['nats:', 'tls:', 'ws:', 'wss:'])),
  'redis-url': urlWithProtocols(['redis:', 'rediss:']),
  'http-url': urlWithProtocols(['http:', 'https:']),
  'smtp-url': urlWithProtocols(['smtp:', 'smtps:']),
};
for (const [name, check] of Object.entries(formats)) {
  if (!FormatRegistry.Has(name)) FormatRegistry.Set(name, check);
}

const FORMAT_HINTS: Record<string, string> = {
  'postgres-url': 'a postgres:// URL with a host, e.g. postgres://postgres@127.0.0.1:5432/aos_tasks',
  'nats-url': 'a nats:// URL, e.g. nats://127.0.0.1:4222',
  'redis-url': 'a redis:// URL, e.g. redis://127.0.0.1:6379',
  'http-url': 'an http(s):// URL',
  'smtp-url': 'an smtp(s):// URL, e.g. smtp://127.0.0.1:1025',
};

export const Env = {
  postgresUrl: (defaultValue?: string) => Type.String({ format: 'postgres-url', ...(defaultValue ? { default: defaultValue } : {}) }),
  natsUrl: () => Type.String({ format: 'nats-url', default: 'nats://127.0.0.1:4222' }),
  redisUrl: () => Type.String({ format: 'redis-url', default: 'redis://127.0.0.1:6379' }),
  httpUrl: (defaultValue?: string) => Type.String({ format: 'http-url', ...(defaultValue ? { default: defaultValue } : {}) }),
  port: (defaultValue: number) => Type.Integer({ minimum: 0, maximum: 65535, default: defaultValue }),
  bool: (defaultValue: boolean) => Type.Boolean({ default: defaultValue }),
  int: (defaultValue: number, opts: { minimum?: number; maximum?: number } = {}) => Type.Integer({ default: defaultValue, ...opts }),
  /** Comma-separated list. */
  list: (defaultValue = '') => Type.String({ default: defaultValue }),
};

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/**
 * Reads the schema's keys from `env` (a `<KEY>_FILE` variable is read from disk when
 * `<KEY>` is unset), applies defaults, converts strings, and fails with every problem at
 * once. Values are never echoed back: they may be secrets.
 */
export function loadConfig<P extends TProperties>(schema: TObject<P>, env: NodeJS.ProcessEnv = process.env): Static<TObject<P>> {
  const raw: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const key of Object.keys(schema.properties)) {
    let value = env[key];
    const fileVar = env[`${key}_FILE`];
    if ((value === undefined || value === '') && fileVar) {
      try {
        value = readFileSync(fileVar, 'utf8').trim();
      } catch (err) {
        problems.push(`${key}_FILE: cannot read ${fileVar} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
      }
    }
    if (value !== undefined && value !== '') raw[key] = value;
    // Value.Convert would truncate `1.5` (or `10k`'s digits) into an integer setting: refuse instead.
    const type = (schema.properties[key] as { type?: string }).type;
    if (typeof value === 'string' && value !== '' && type === 'integer' && !/^[+-]?\d+$/.test(value.trim())) {
      problems.push(`${key}: must be a whole number`);
      delete raw[key];
    }
  }
  const withDefaults = Value.Default(schema, raw);
  const converted = Value.Convert(schema, withDefaults);
  for (const error of Value.Errors(schema, converted)) {
    const key = error.path.replace(/^\//, '').split('/')[0] ?? error.path;
    const format = (error.schema as { format?: string }).format;
    const hint = format && FORMAT_HINTS[format] ? `must be ${FORMAT_HINTS[format]}` : error.message.toLowerCase();
    const message = !(key in raw) && error.path === `/${key}` ? `${key} is required` : `${key}: ${hint}`;
    if (!problems.includes(message) && !problems.some((p) => p.startsWith(`${key}: `))) problems.push(message);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return converted as Static<TObject<P>>;
}

export function splitList(value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter(Boolean);
}
