import { fileURLToPath } from 'node:url';
import { defineService, VERSION, type ServiceContext } from '@aos/runtime';
import { routes } from './app.js';
import { handlers } from './events/cascades.js';
import { config } from './config.js';
import * as schema from './db/schema.js';

export type Ctx = ServiceContext<typeof schema, typeof config>;

export const service = defineService({
  name: 'tasks',
  version: VERSION,
  description: 'Tasks, products, dependencies, derivation, changelog (+RSS), SKIP LOCKED task queue',
  config,
  schema,
  migrationsFolder: fileURLToPath(new URL('../migrations', import.meta.url)),
  routes,
  handlers,
});
