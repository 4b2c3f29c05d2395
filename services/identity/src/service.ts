import { fileURLToPath } from 'node:url';
import { defineService, VERSION, type ServiceContext } from '@aos/runtime';
import { routes } from './app.js';
import { config } from './config.js';
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
});
