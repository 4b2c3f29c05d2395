import { fileURLToPath } from 'node:url';
import { defineService, VERSION, type ServiceContext } from '@aos/runtime';
import { routes } from './app.js';
import { config } from './config.js';
import * as schema from './db/schema.js';
import { handlers } from './events/handlers.js';
import { startAutoTopupJobs } from './jobs/autotopup.js';
import { startPlanChangeJobs } from './jobs/plan-changes.js';

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
  jobs: async (ctx) => {
    await startAutoTopupJobs(ctx as Ctx);
    await startPlanChangeJobs(ctx as Ctx);
  },
});
