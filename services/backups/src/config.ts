import { Env } from '@aos/core';
import { Type, type TProperties } from '@sinclair/typebox';

/** Settings of this service beyond the base ones every service reads (see @aos/runtime). */
export const config = {
  /** Where dumps, the backup log and the offsite working clone live (absolute recommended). */
  BACKUP_DIR: Type.String({ default: '.aos/backups', minLength: 1 }),
  /**
   * Databases to back up: a JSON object `{"name":"postgres://..."}` or a comma list `name=url`.
   * Unset: the six service databases on the server of DATABASE_URL.
   */
  BACKUP_DATABASE_URLS: Type.Optional(Type.String()),
  /** Cron pattern of the repeatable backup (UTC); unset = no schedule. */
  BACKUP_CRON: Type.Optional(Type.String({ minLength: 1 })),
  /** Retention: the newest N backups of each database are always kept… */
  BACKUP_KEEP_LAST: Env.int(7, { minimum: 1, maximum: 10_000 }),
  /** …plus the newest backup of each of the last D UTC days. */
  BACKUP_KEEP_DAILY_DAYS: Env.int(7, { minimum: 0, maximum: 3650 }),
  /** pg_dump / pg_restore are killed after this long. */
  BACKUP_TIMEOUT_MS: Env.int(30 * 60_000, { minimum: 1_000, maximum: 24 * 3600_000 }),
  /**
   * A restore waiting this long for one lock (a session of the service still using a table) is
   * cancelled and rolls back, instead of holding the locks it already took until BACKUP_TIMEOUT_MS.
   */
  BACKUP_RESTORE_LOCK_TIMEOUT_MS: Env.int(10_000, { minimum: 100, maximum: 3600_000 }),
  /**
   * POST restore checks the file's SHA-256 for up to this long before queueing (a changed file →
   * 422 at once); a file too large to hash in time is checked by the job instead. 0 = always the job.
   */
  BACKUP_RESTORE_CHECK_WAIT_MS: Env.int(10_000, { minimum: 0, maximum: 600_000 }),
  /** POST verify answers with the result when done within this time, else 202 and the result appears in the listing. */
  BACKUP_VERIFY_WAIT_MS: Env.int(20_000, { minimum: 0, maximum: 600_000 }),
  /** Concurrent backup jobs in this process. */
  BACKUP_CONCURRENCY: Env.int(2, { minimum: 1, maximum: 16 }),
  /** Offsite git remote (URL or path of a bare repository); unset = no git offsite copy. */
  BACKUP_GIT_REMOTE: Type.Optional(Type.String({ minLength: 1 })),
  BACKUP_GIT_BRANCH: Type.String({ default: 'main', pattern: '^[A-Za-z0-9._/-]{1,100}$' }),
  /** Optional S3-compatible offsite copy (path-style PUT, SigV4); all of endpoint, bucket and keys are needed. */
  BACKUP_S3_ENDPOINT: Type.Optional(Env.httpUrl()),
  BACKUP_S3_BUCKET: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$' })),
  BACKUP_S3_REGION: Type.String({ default: 'us-east-1', pattern: '^[a-z0-9-]{1,40}$' }),
  BACKUP_S3_ACCESS_KEY_ID: Type.Optional(Type.String({ minLength: 1 })),
  BACKUP_S3_SECRET_ACCESS_KEY: Type.Optional(Type.String({ minLength: 1 })),
  BACKUP_S3_PREFIX: Type.String({ default: '', pattern: '^([A-Za-z0-9._-]+/)*$' }),
} satisfies TProperties;
