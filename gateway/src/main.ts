import { createLogger, initTracing } from '@aos/core';
import { fail, onSignals, VERSION } from '@aos/runtime';
import { buildGateway } from './app.js';
import { loadGatewayConfig } from './config.js';

let config;
try {
  config = loadGatewayConfig();
} catch (err) {
  fail('gateway', err);
}
const stopTracing = initTracing('gateway', config.OTEL_EXPORTER_OTLP_ENDPOINT);
const log = createLogger('gateway', config.LOG_LEVEL);
try {
  const app = await buildGateway({ config, version: VERSION, log });
  await app.listen({ host: config.HOST, port: config.PORT });
  onSignals(async () => { await app.close(); await stopTracing(); }, log);
} catch (err) {
  fail('gateway', err);
}
