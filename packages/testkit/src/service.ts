import type { Principal } from '@aos/contracts';
import { createLogger, initTracing } from '@aos/core';
import type { App } from '@aos/http';
import { buildServiceApp, createContext, loadServiceConfig, startBackground, type ServiceContext, type ServiceDefinition } from '@aos/runtime';
import { INTERNAL_TOKEN_HEADER } from '@aos/contracts';
import type { TProperties } from '@sinclair/typebox';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { infraUrls } from './infra.js';
import { internalKeys, tokenFor } from './keys.js';
import { createNamespace, createTestDatabase, removeNamespace, type TestNamespace } from './namespace.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnySchema = Record<string, any>;

export interface TestService<S extends AnySchema, P extends TProperties> {
  app: App;
  ctx: ServiceContext<S, P>;
  namespace: TestNamespace;
  databaseUrl: string;
  /** `app.inject` as `principal` (signed like the gateway does). */
  inject: (principal: Principal | null, opts: InjectOptions) => Promise<LightMyRequestResponse>;
  close: () => Promise<void>;
}

export interface TestServiceOptions {
  /** Share a namespace between services of one test (cross-service flows). */
  namespace?: TestNamespace;
  env?: Record<string, string>;
  /** Start relay, consumers and workers (default true). */
  background?: boolean;
}

/**
 * Boots a service the way `runService` does, against a fresh database and its own
 * NATS/Redis namespace, without listening on a port. `close()` tears all of it down.
 */
export async function startTestService<S extends AnySchema, P extends TProperties>(
  def: ServiceDefinition<S, P>, opts: TestServiceOptions = {},
): Promise<TestService<S, P>> {
  initTracing('aos-test');
  const urls = infraUrls();
  const ownsNamespace = !opts.namespace;
  const namespace = opts.namespace ?? createNamespace();
  const database = await createTestDatabase(def.name);
  const env: NodeJS.ProcessEnv = {
    DATABASE_URL: database.url,
    NATS_URL: urls.natsUrl,
    REDIS_URL: urls.redisUrl,
    REDIS_PREFIX: namespace.redisPrefix,
    BUS_SUBJECT_ROOT: namespace.bus.subjectRoot,
    BUS_STREAM: namespace.bus.stream,
    BUS_DLQ_STREAM: namespace.bus.deadLetterStream,
    BUS_BACKOFF_BASE_MS: '50',
    OUTBOX_POLL_MS: '200',
    DATABASE_POOL_MAX: '5',
    INTERNAL_TOKEN_PUBLIC_JWK: (await internalKeys()).publicJwk,
    ...opts.env,
  };
  const log = createLogger(def.name, process.env.TEST_LOG_LEVEL ?? 'silent');
  let ctx: ServiceContext<S, P> | undefined;
  let app: App;
  try {
    const config = loadServiceConfig(def, env);
    ctx = await createContext(def, config, log);
    app = await buildServiceApp(def, ctx);
    await app.ready();
    if (opts.background !== false) await startBackground(def, ctx);
  } catch (err) {
    // A service that fails to start leaves nothing behind either.
    await ctx?.shutdown.run();
    await database.drop().catch(() => {});
    if (ownsNamespace) await removeNamespace(namespace);
    throw err;
  }
  return {
    app, ctx, namespace, databaseUrl: database.url,
    inject: async (principal, injectOpts) => {
      const headers = { ...(injectOpts.headers ?? {}) } as Record<string, string>;
      if (principal) headers[INTERNAL_TOKEN_HEADER] = await tokenFor(principal);
      return app.inject({ ...injectOpts, headers });
    },
    close: async () => {
      await ctx.shutdown.run();
      await database.drop().catch(() => {});
      if (ownsNamespace) await removeNamespace(namespace);
    },
  };
}
