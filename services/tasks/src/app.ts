import type { App } from '@aos/http';
import { changelogRoutes } from './routes/changelog.js';
import { productRoutes } from './routes/products.js';
import { publicTaskRoutes } from './routes/public-tasks.js';
import { queueRoutes } from './routes/queue.js';
import { taskRoutes } from './routes/tasks.js';
import type { Ctx } from './service.js';

/** Registers this service's routes; each module under routes/ owns one resource. */
export async function routes(app: App, ctx: Ctx): Promise<void> {
  await taskRoutes(app, ctx);
  await publicTaskRoutes(app, ctx);
  await productRoutes(app, ctx);
  await changelogRoutes(app, ctx);
  await queueRoutes(app, ctx);
}
