import type { App } from '@aos/http';
import type { Ctx } from './service.js';

/** Registers this service's routes; each module under routes/ owns one resource. */
export async function routes(_app: App, _ctx: Ctx): Promise<void> {}
