import { fileURLToPath } from 'node:url';
import { planLimitsHandler } from '@aos/bus';
import { defineService, VERSION, type ServiceContext } from '@aos/runtime';
import { routes } from './app.js';
import { resealCredentials, vaultOf } from './domain/credentials.js';
import { config } from './config.js';
import { startCleanup } from './jobs/cleanup.js';
import * as schema from './db/schema.js';

export type Ctx = ServiceContext<typeof schema, typeof config>;

export const service = defineService({
  name: 'identity',
  version: VERSION,
  description: 'Users, auth, organizations, members, invites, teams, API keys, credentials, integrations',
  config,
  schema,
  migrationsFolder: fileURLToPath(new URL('../migrations', import.meta.url)),
  routes,
  // The plans billing announces: seats are enforced here.
  handlers: () => [planLimitsHandler<typeof schema>()],
  jobs: async (ctx) => {
    // Not awaited: identity serves (the gateway depends on it) while Redis is away; the schedule follows once it is back.
    void startCleanup(ctx).catch((err: Error) => ctx.log.error({ err: err.message }, 'identity cleanup not scheduled'));
    const vault = vaultOf(ctx);
    if (!vault) return;
    // In the background: a value is readable under either key meanwhile.
    void resealCredentials(ctx, vault)
      .then((n) => { if (n > 0) ctx.log.info({ resealed: n, keyId: vault.keyId }, 'credentials re-sealed with the current key'); })
      .catch((err: Error) => ctx.log.error({ err: err.message }, 'credential re-sealing failed'));
  },
});
