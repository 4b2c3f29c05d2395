import { fileURLToPath } from 'node:url';
import { defineService, VERSION, type ServiceContext } from '@aos/runtime';
import { routes } from './app.js';
import { config } from './config.js';
import * as schema from './db/schema.js';
import { startBackupJobs } from './jobs/backups.js';

export type Ctx = ServiceContext<typeof schema, typeof config>;

export const service = defineService({
  name: 'backups',
  version: VERSION,
  description: 'pg_dump backups of every service database, schedule, retention, download, verify, offsite',
  config,
  schema,
  migrationsFolder: fileURLToPath(new URL('../migrations', import.meta.url)),
  routes,
  jobs: startBackupJobs,
});
