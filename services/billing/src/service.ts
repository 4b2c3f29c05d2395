import { fileURLToPath } from 'node:url';
import { defineService, VERSION, type ServiceContext } from '@aos/runtime';
import { routes } from './app.js';
import { config } from './config.js';
import * as schema from './db/schema.js';
import { handlers } from './events/handlers.js';
import { startJobs } from './jobs/autotopup.js';

export type Ctx = ServiceContext<typeof schema, typeof config>;

export const service = defineService({
  name: 'billing',
  version: VERSION,
  description: 'Tiers, pricing, Stripe checkout/portal/webhooks, subscriptions, token and credit ledgers, auto top-up, usage',
  config,
  schema,
  migrationsFolder: fileURLToPath(new URL('../migrations', import.meta.url)),
  routes,
  handlers: (ctx) => handlers(ctx as Ctx),
  jobs: (ctx) => startJobs(ctx as Ctx),
});
