import type { App } from '@aos/http';
import type { Ctx } from './service.js';
import { adminRoutes } from './routes/admin.js';
import { autoTopupRoutes } from './routes/autotopup.js';
import { catalogRoutes } from './routes/catalog.js';
import { costRoutes } from './routes/costs.js';
import { overviewRoutes } from './routes/overview.js';
import { stripeRoutes } from './routes/stripe.js';
import { subscriptionRoutes } from './routes/subscription.js';
import { tokenRoutes } from './routes/tokens.js';

/** Registers this service's routes; each module under routes/ owns one resource. */
export async function routes(app: App, ctx: Ctx): Promise<void> {
  await catalogRoutes(app, ctx);
  await subscriptionRoutes(app, ctx);
  await stripeRoutes(app, ctx);
  await tokenRoutes(app, ctx);
  await autoTopupRoutes(app, ctx);
  await costRoutes(app, ctx);
  await overviewRoutes(app, ctx);
  await adminRoutes(app, ctx);
}
