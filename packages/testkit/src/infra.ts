import { execFileSync } from 'node:child_process';
import net from 'node:net';
import pg from 'pg';
import { Redis } from 'ioredis';

export interface InfraUrls {
  /** Admin connection; test databases are created beside it. */
  databaseUrl: string;
  natsUrl: string;
  redisUrl: string;
}

export function infraUrls(env: NodeJS.ProcessEnv = process.env): InfraUrls {
  return {
    databaseUrl: env.TEST_DATABASE_URL ?? env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    natsUrl: env.NATS_URL ?? 'nats://127.0.0.1:4222',
    redisUrl: env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  };
}

async function postgresUp(url: string): Promise<boolean> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  try {
    await c.connect();
    await c.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => {});
  }
}

function tcpUp(url: string): Promise<boolean> {
  const u = new URL(url.split(',')[0]!);
  return new Promise((resolve) => {
    const socket = net.connect({ host: u.hostname, port: Number(u.port || 4222), timeout: 2_000 });
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => { socket.destroy(); resolve(false); });
  });
}

async function redisUp(url: string): Promise<boolean> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 2_000, retryStrategy: () => null });
  r.on('error', () => {}); // the failed connect below says it
  try {
    await r.connect();
    return (await r.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

export function dockerEngineAvailable(): boolean {
  try {
    execFileSync('docker', ['info'], { stdio: 'ignore', timeout: 5_000 });
    return true;
  } catch {
    return false;
  }
}

const HOW_TO_START: Record<Dependency, string> = {
  postgres: 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start',
  nats: 'start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server   (JetStream enabled)',
  redis: 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
};
const URL_VARS: Record<Dependency, string> = { postgres: 'TEST_DATABASE_URL', nats: 'NATS_URL', redis: 'REDIS_URL' };

/** Which of Postgres, NATS and Redis do not answer at `urls`. */
export async function unreachable(urls: InfraUrls): Promise<Dependency[]> {
  const [pgOk, natsOk, redisOk] = await Promise.all([postgresUp(urls.databaseUrl), tcpUp(urls.natsUrl), redisUp(urls.redisUrl)]);
  return ([!pgOk && 'postgres', !natsOk && 'nats', !redisOk && 'redis'] as const).filter((d): d is Dependency => !!d);
}

export type Dependency = 'postgres' | 'nats' | 'redis';

function urlOf(urls: InfraUrls, d: Dependency): string {
  return d === 'postgres' ? urls.databaseUrl : d === 'nats' ? urls.natsUrl : urls.redisUrl;
}

/** A URL without its password, for messages. */
export function redacted(url: string): string {
  try {
    const u = new URL(url.split(',')[0]!);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}

/** One line per missing dependency: the command that starts it here, and the variable that points elsewhere. */
export function howToStart(missing: Dependency[], urlVars: Partial<Record<Dependency, string>> = {}): string {
  return missing.map((m) => `  ${m}: ${HOW_TO_START[m]}   (or set ${urlVars[m] ?? URL_VARS[m]})`).join('\n');
}

/** `postgres at postgres://…, nats at nats://…` for the missing ones, passwords hidden. */
export function whereMissing(urls: InfraUrls, missing: Dependency[]): string {
  return missing.map((m) => `${m} at ${redacted(urlOf(urls, m))}`).join(', ');
}

/**
 * Makes sure Postgres, NATS and Redis are reachable: the servers named by the env (default
 * localhost) when they answer, else containers via testcontainers when a Docker engine
 * exists (`containers: false` skips that), else an error that says exactly what to start.
 * Returns the URLs to use and a stop function.
 */
export async function ensureInfra(
  env: NodeJS.ProcessEnv = process.env, opts: { containers?: boolean } = {},
): Promise<{ urls: InfraUrls; stop: () => Promise<void> }> {
  const urls = infraUrls(env);
  const missing = await unreachable(urls);
  if (missing.length === 0) return { urls, stop: async () => {} };
  const pgOk = !missing.includes('postgres');
  const natsOk = !missing.includes('nats');
  const redisOk = !missing.includes('redis');
  if (opts.containers === false || !dockerEngineAvailable()) {
    throw new Error(`Test dependencies not reachable: ${missing.join(', ')} (${whereMissing(urls, missing)}). `
      + `${opts.containers === false ? '' : 'No Docker engine for testcontainers either. '}Start ${missing.length > 1 ? 'them' : 'it'}:\n${howToStart(missing)}`);
  }
  const { GenericContainer, Wait } = await import('testcontainers');
  const stops: Array<() => Promise<unknown>> = [];
  if (!pgOk) {
    const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
    const c = await new PostgreSqlContainer('postgres:16-alpine').withUsername('postgres').withPassword('postgres').withDatabase('postgres').start();
    urls.databaseUrl = c.getConnectionUri();
    stops.push(() => c.stop());
  }
  if (!natsOk) {
    const c = await new GenericContainer('nats:2.10-alpine').withCommand(['-js']).withExposedPorts(4222)
      .withWaitStrategy(Wait.forLogMessage(/Server is ready/)).start();
    urls.natsUrl = `nats://${c.getHost()}:${c.getMappedPort(4222)}`;
    stops.push(() => c.stop());
  }
  if (!redisOk) {
    const c = await new GenericContainer('redis:7-alpine').withCommand(['redis-server', '--maxmemory-policy', 'noeviction']).withExposedPorts(6379).start();
    urls.redisUrl = `redis://${c.getHost()}:${c.getMappedPort(6379)}`;
    stops.push(() => c.stop());
  }
  return { urls, stop: async () => { await Promise.allSettled(stops.map((s) => s())); } };
}
