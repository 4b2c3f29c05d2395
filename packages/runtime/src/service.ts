import type { EventType, ServiceName } from '@aos/contracts';
import { conflict, createLogger, loadConfig, notFound, serviceUnavailable, Shutdown, unprocessable, type Logger } from '@aos/core';
import { connectBus, DeadLetterError, EventConsumers, Outbox, OutboxRelay, pageDeadLetters, redriveDeadLetter, withTimeout, type BusConnection, type BusNames, type EventHandler } from '@aos/bus';
import { createDb, createPool, pingDb, runMigrations, type Db, type Pool } from '@aos/db';
import { createHttpApp, importEd25519Jwk, list, ok, page, PaginationQuery, type App, type HealthCheck, type Key } from '@aos/http';
import { QueueKit } from '@aos/queue';
import { Type, type Static, type TObject, type TProperties } from '@sinclair/typebox';
import { baseServiceConfig, type BaseServiceConfig } from './config.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnySchema = Record<string, any>;

export type BaseConfigValues = Static<TObject<BaseServiceConfig>>;
export type ServiceConfig<P extends TProperties> = BaseConfigValues & Static<TObject<P>>;

/**
 * Everything a service's routes, handlers and jobs get. Built once per process (or per
 * test), so the same code runs against production and test dependencies.
 */
export interface ServiceContext<S extends AnySchema = AnySchema, P extends TProperties = TProperties> {
  name: string;
  version: string;
  config: ServiceConfig<P>;
  log: Logger;
  pool: Pool;
  db: Db<S>;
  outbox: Outbox;
  busNames: BusNames;
  /** Resolves once NATS is connected; the service serves (and queues events) before that. */
  bus: Promise<BusConnection>;
  relay: OutboxRelay;
  consumers: EventConsumers<S>;
  queues: QueueKit;
  internalKey: Key;
  shutdown: Shutdown;
}

/** A service, described once and started by `runService` (production) or the testkit. */
export interface ServiceDefinition<S extends AnySchema = AnySchema, P extends TProperties = TProperties> {
  /** One of the services of contracts' `Services`, or a test-only name. */
  name: ServiceName | (string & {});
  version: string;
  description?: string;
  /** Settings beyond the base ones. */
  config: P;
  schema: S;
  /** Folder of the service's drizzle-kit migrations. */
  migrationsFolder: string;
  routes: (app: App, ctx: ServiceContext<S, P>) => Promise<void> | void;
  handlers?: (ctx: ServiceContext<S, P>) => EventHandler<EventType, S>[];
  /** Starts BullMQ workers and schedules; returns nothing (workers are owned by ctx.queues). */
  jobs?: (ctx: ServiceContext<S, P>) => Promise<void> | void;
  /** Extra health checks (critical ones gate `/ready`). */
  checks?: (ctx: ServiceContext<S, P>) => Record<string, HealthCheck>;
}

export function defineService<S extends AnySchema, P extends TProperties>(def: ServiceDefinition<S, P>): ServiceDefinition<S, P> {
  return def;
}

export function loadServiceConfig<S extends AnySchema, P extends TProperties>(def: ServiceDefinition<S, P>, env: NodeJS.ProcessEnv = process.env): ServiceConfig<P> {
  return loadConfig(Type.Object({ ...baseServiceConfig(def.name), ...def.config }), env) as unknown as ServiceConfig<P>;
}

/** Opens pools and connections and migrates; nothing is started yet. */
export async function createContext<S extends AnySchema, P extends TProperties>(
  def: ServiceDefinition<S, P>, config: ServiceConfig<P>, log: Logger = createLogger(def.name, config.LOG_LEVEL),
): Promise<ServiceContext<S, P>> {
  const shutdown = new Shutdown(log);
  const { key: internalKey } = await importEd25519Jwk(config.INTERNAL_TOKEN_PUBLIC_JWK).catch((err: Error) => {
    throw new Error(`INTERNAL_TOKEN_PUBLIC_JWK: ${err.message}`);
  });
  const pool = createPool(config.DATABASE_URL, log, config.DATABASE_POOL_MAX);
  shutdown.add('postgres pool', () => pool.end());
  try {
    await runMigrations(pool, def.migrationsFolder);
  } catch (err) {
    await shutdown.run();
    throw databaseStartError(err, config.DATABASE_URL);
  }
  const db = createDb(pool, def.schema);
  const busNames: BusNames = { subjectRoot: config.BUS_SUBJECT_ROOT, stream: config.BUS_STREAM, deadLetterStream: config.BUS_DLQ_STREAM };
  const stopping = new AbortController();
  const bus = connectBus(config.NATS_URL, busNames, def.name, log, { signal: stopping.signal });
  bus.catch((err: Error) => { if (!stopping.signal.aborted) log.error({ err: err.message }, 'nats connection failed'); });
  shutdown.add('nats', async () => {
    // A connection still being made is abandoned (it never creates streams after this point).
    stopping.abort();
    const conn = await bus.catch(() => null);
    await conn?.nc.drain().catch(() => {});
  });
  const queues = new QueueKit(config.REDIS_URL, config.REDIS_PREFIX, log);
  shutdown.add('redis', () => queues.close());
  const relay = new OutboxRelay({
    databaseUrl: config.DATABASE_URL, pool, bus, log, lockName: def.name, pollIntervalMs: config.OUTBOX_POLL_MS,
  });
  shutdown.add('outbox relay', () => relay.stop());
  const consumers = new EventConsumers<S>({
    service: def.name, bus, db, log, maxDeliver: config.BUS_MAX_DELIVER, backoffBaseMs: config.BUS_BACKOFF_BASE_MS,
  });
  shutdown.add('event consumers', () => consumers.stop());
  return {
    name: def.name, version: def.version, config, log, pool, db, outbox: new Outbox(def.name, busNames),
    busNames, bus, relay, consumers, queues, internalKey, shutdown,
  };
}

/** Connection errors while migrating name the setting and the server (never the password). */
function databaseStartError(err: unknown, url: string): unknown {
  const code = (err as { code?: string })?.code;
  const connectionCodes = ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', '28P01', '28000', '3D000'];
  if (!code || !connectionCodes.includes(code)) return err;
  const u = new URL(url);
  const where = `${u.hostname}:${u.port || 5432}${u.pathname}`;
  return new Error(`DATABASE_URL: cannot use the database at ${where}: ${(err as Error).message}`);
}

export async function buildServiceApp<S extends AnySchema, P extends TProperties>(def: ServiceDefinition<S, P>, ctx: ServiceContext<S, P>): Promise<App> {
  const natsConnected = async () => {
    const conn = await Promise.race([ctx.bus, new Promise<null>((r) => setTimeout(() => r(null), 200))]).catch(() => null);
    return !!conn && !conn.nc.isClosed() && conn.nc.info !== undefined;
  };
  const app = await createHttpApp({
    service: def.name,
    version: def.version,
    description: def.description,
    logger: ctx.log,
    internalKey: ctx.internalKey,
    checks: {
      db: { critical: true, check: () => pingDb(ctx.pool) },
      nats: { critical: false, check: natsConnected },
      redis: { critical: false, check: () => ctx.queues.ping() },
      ...def.checks?.(ctx),
    },
  });
  deadLetterRoutes(app, ctx);
  await def.routes(app, ctx);
  ctx.shutdown.add('http', () => app.close());
  return app;
}

/**
 * Operator routes (platform admins): the dead letters of this service's consumers, and
 * re-driving one through its consumer now (idempotent through the inbox).
 */
function deadLetterRoutes<S extends AnySchema, P extends TProperties>(app: App, ctx: ServiceContext<S, P>) {
  const admin = { platformAdmin: true } as const;
  app.get('/internal/dead-letters', {
    schema: {
      hide: true,
      querystring: Type.Object({ ...PaginationQuery, service: Type.Optional(Type.String({ minLength: 1, maxLength: 100, description: 'Another service, or `all` (default: this one)' })) }),
    },
    config: admin,
  }, async (request) => {
    const p = page(request.query);
    const service = request.query.service === 'all' ? undefined : (request.query.service ?? ctx.name);
    const { items, total } = await pageDeadLetters(await connectedBus(ctx), { ...p, service });
    return list(items, total, p);
  });
  app.post('/internal/dead-letters/:seq/redrive', {
    schema: { hide: true, params: Type.Object({ seq: Type.Integer({ minimum: 1, maximum: 2 ** 53 - 1 }) }) },
    config: admin,
  }, async (request) => {
    try {
      return ok(await redriveDeadLetter(await connectedBus(ctx), ctx.consumers, ctx.name, request.params.seq, ctx.log));
    } catch (err) {
      if (!(err instanceof DeadLetterError)) throw err;
      if (err.reason === 'not_found') throw notFound(`Dead letter ${request.params.seq}`);
      if (err.reason === 'handler_failed' || err.reason === 'malformed') throw unprocessable(err.message);
      throw conflict(err.message);
    }
  });
}

async function connectedBus(ctx: { bus: Promise<BusConnection> }): Promise<BusConnection> {
  return withTimeout(ctx.bus, 2_000, 'nats not connected').catch(() => { throw serviceUnavailable('The event bus (NATS) is not connected'); });
}

/** Starts the background parts: the outbox relay, event consumers and job workers. */
export async function startBackground<S extends AnySchema, P extends TProperties>(def: ServiceDefinition<S, P>, ctx: ServiceContext<S, P>): Promise<void> {
  ctx.relay.start();
  const handlers = def.handlers?.(ctx) ?? [];
  if (handlers.length > 0) {
    // Consumers attach once NATS is reachable; until then the service still serves HTTP.
    void ctx.bus.then(() => ctx.consumers.start(handlers)).catch((err: Error) => ctx.log.error({ err: err.message }, 'event consumers failed to start'));
  }
  await def.jobs?.(ctx);
}
