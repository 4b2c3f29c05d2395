import { fileURLToPath } from 'node:url';
import { defineService, VERSION, type ServiceContext } from '@aos/runtime';
import { routes } from './app.js';
import { handlers } from './events/handlers.js';
import { startWorkers } from './jobs/workers.js';
import { config } from './config.js';
import * as schema from './db/schema.js';

export type Ctx = ServiceContext<typeof schema, typeof config>;

export const service = defineService({
  name: 'notifications',
  version: VERSION,
  description: 'Notifications, activity log, outbound webhooks, e-mail',
  config,
  schema,
  migrationsFolder: fileURLToPath(new URL('../migrations', import.meta.url)),
  routes,
  handlers,
  jobs: startWorkers,
});
