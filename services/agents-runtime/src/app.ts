import type { App } from '@aos/http';
import { agentRoutes } from './routes/agents.js';
import { factoryFor } from './jobs/factory.js';
import { metricRoutes } from './routes/metrics.js';
import { operationRoutes } from './routes/operations.js';
import { publicAgentRoutes } from './routes/public-agents.js';
import { resourceRoutes } from './routes/resources.js';
import { runRoutes } from './routes/runs.js';
import type { Ctx } from './service.js';

/** Registers this service's routes; each module under routes/ owns one resource. */
export async function routes(app: App, ctx: Ctx): Promise<void> {
  await agentRoutes(app, ctx);
  await runRoutes(app, ctx);
  await metricRoutes(app, ctx);
  await publicAgentRoutes(app, ctx);
  await resourceRoutes(app, ctx);
  await operationRoutes(app, ctx, factoryFor(ctx));
}
