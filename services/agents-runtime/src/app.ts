import type { App } from '@aos/http';
import { agentRoutes } from './routes/agents.js';
import { factoryFor } from './jobs/factory.js';
import { metricRoutes } from './routes/metrics.js';
import { bullQueueRoutes } from './routes/bull-queue.js';
import { discoveryRoutes } from './routes/discovery.js';
import { factoryRoutes } from './routes/factory.js';
import { publicAgentRoutes } from './routes/public-agents.js';
import { automationRoutes } from './routes/automations.js';
import { fileRoutes } from './routes/files.js';
import { logRoutes } from './routes/logs.js';
import { ruleRoutes } from './routes/rules.js';
import { templateRoutes } from './routes/templates.js';
import { runRoutes } from './routes/runs.js';
import type { Ctx } from './service.js';

/** Registers this service's routes; each module under routes/ owns one resource. */
export async function routes(app: App, ctx: Ctx): Promise<void> {
  await agentRoutes(app, ctx);
  await runRoutes(app, ctx);
  await metricRoutes(app, ctx);
  await publicAgentRoutes(app, ctx);
  await templateRoutes(app, ctx);
  await ruleRoutes(app, ctx);
  await logRoutes(app, ctx);
  await fileRoutes(app, ctx);
  await automationRoutes(app, ctx);
  await factoryRoutes(app, ctx, factoryFor(ctx));
  await discoveryRoutes(app, ctx);
  await bullQueueRoutes(app, ctx);
}
