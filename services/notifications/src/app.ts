import type { App } from '@aos/http';
import { activityRoutes } from './routes/activity.js';
import { notificationRoutes } from './routes/notifications.js';
import { webhookRoutes } from './routes/webhooks.js';
import type { Ctx } from './service.js';

/** Registers this service's routes; each module under routes/ owns one resource. */
export async function routes(app: App, ctx: Ctx): Promise<void> {
  notificationRoutes(app, ctx);
  activityRoutes(app, ctx);
  webhookRoutes(app, ctx);
}
