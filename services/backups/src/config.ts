import { Env } from '@aos/core';
import { Type, type TProperties } from '@sinclair/typebox';

/** Settings of this service beyond the base ones every service reads (see @aos/runtime). */
export const config = {
  /** Where dumps are written (created if missing). Relative paths resolve from the working directory. */
  BACKUP_DIR: Type.String({ default: '.aos/backups', minLength: 1 }),
  /** Databases to back up: JSON object `{ "name": "postgres://…" }` or `name=url,name=url`. Default: the six service databases on this service's server. */
  BACKUP_DATABASE_URLS: Type.String({ default: '' }),
  /** Cron expression for scheduled backups of every database (empty: no schedule). */
  BACKUP_CRON: Type.String({ default: '' }),
  BACKUP_KEEP_LAST: Env.int(7, { minimum: 1, maximum: 1_000 }),
  BACKUP_KEEP_DAILY_DAYS: Env.int(14, { minimum: 0, maximum: 3_650 }),
  /** Git remote for offsite copies (a local bare repository works). Empty: no offsite copy. */
  BACKUP_GIT_REMOTE: Type.String({ default: '' }),
  PG_DUMP: Type.String({ default: 'pg_dump' }),
  PG_RESTORE: Type.String({ default: 'pg_restore' }),
} satisfies TProperties;
