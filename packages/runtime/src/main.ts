import { ConfigError, createLogger, initTracing } from '@aos/core';
import type { TProperties } from '@sinclair/typebox';
import { buildServiceApp, createContext, loadServiceConfig, startBackground, type ServiceDefinition } from './service.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnySchema = Record<string, any>;

/** Exits with a clear message: configuration problems are named, never echoed with their values. */
export function fail(name: string, err: unknown): never {
  if (err instanceof ConfigError) {
    process.stderr.write(`${name}: ${err.message}\n`);
  } else {
    process.stderr.write(`${name}: failed to start: ${(err as Error)?.message ?? String(err)}\n`);
  }
  process.exit(1);
}

/** Graceful stop on SIGTERM/SIGINT: stop accepting HTTP, let in-flight work finish, close pools. */
export function onSignals(stop: () => Promise<void>, log: { info: (msg: string) => void }): void {
  let stopping = false;
  const handler = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal} received; shutting down`);
    const force = setTimeout(() => process.exit(1), 30_000);
    force.unref();
    void stop().finally(() => process.exit(0));
  };
  process.on('SIGTERM', () => handler('SIGTERM'));
  process.on('SIGINT', () => handler('SIGINT'));
}

/** Process entry for a service: config → tracing → migrate → HTTP + relay + consumers + jobs. */
export async function runService<S extends AnySchema, P extends TProperties>(def: ServiceDefinition<S, P>): Promise<void> {
  let config;
  try {
    config = loadServiceConfig(def);
  } catch (err) {
    fail(def.name, err);
  }
  const stopTracing = initTracing(def.name, config.OTEL_EXPORTER_OTLP_ENDPOINT);
  const log = createLogger(def.name, config.LOG_LEVEL);
  try {
    const ctx = await createContext(def, config, log);
    // Last: spans of the other steps (in-flight requests, handlers and jobs finishing) are exported too.
    ctx.shutdown.addLast('tracing', stopTracing);
    const app = await buildServiceApp(def, ctx);
    await startBackground(def, ctx);
    await app.listen({ host: config.HOST, port: config.PORT });
    onSignals(() => ctx.shutdown.run(), log);
  } catch (err) {
    log.error({ err }, 'startup failed');
    fail(def.name, err);
  }
}
