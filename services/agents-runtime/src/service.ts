import { fileURLToPath } from 'node:url';
import { defineService, VERSION, type ServiceContext } from '@aos/runtime';
import { routes } from './app.js';
import { handlers } from './events/index.js';
import { startWorkers } from './jobs/workers.js';
import { config } from './config.js';
import * as schema from './db/schema.js';

export type Ctx = ServiceContext<typeof schema, typeof config>;

export const service = defineService({
  name: 'agents-runtime',
  version: VERSION,
  description: 'Agents, runs, messages, templates, automations, factory workers, discovery engines, rules, logs, files, BullMQ admin',
  config,
  schema,
  migrationsFolder: fileURLToPath(new URL('../migrations', import.meta.url)),
  routes,
  handlers,
  jobs: startWorkers,
});
