import type { App } from '@aos/http';
import { backupRoutes } from './routes/backups.js';
import { restoreRoutes } from './routes/restores.js';
import type { Ctx } from './service.js';

/** Registers this service's routes; each module under routes/ owns one resource. */
export async function routes(app: App, ctx: Ctx): Promise<void> {
  await backupRoutes(app, ctx);
  await restoreRoutes(app, ctx);
}
