import type { EventMeta } from '@aos/bus';
import { sql } from 'drizzle-orm';
import { bigint, index, integer, jsonb, pgTable, serial, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

/**
 * One row per dump attempt. Backups are platform-wide (every service database), so there is
 * no org_id: only platform admins write, and reads need the backups:read scope.
 */
export const backups = pgTable('backups', {
  id: serial('id').primaryKey(),
  filename: text('filename').notNull(),
  database: text('database').notNull(),
  /** running | completed | failed | deleted */
  status: text('status').notNull(),
  trigger: text('trigger').notNull(),
  jobId: text('job_id'),
  sizeBytes: bigint('size_bytes', { mode: 'number' }),
  sha256: text('sha256'),
  error: text('error'),
  /** Row count per table, counted in the snapshot pg_dump used. */
  tableCounts: jsonb('table_counts').$type<Record<string, number>>(),
  verifyStatus: text('verify_status'),
  verifyDetails: jsonb('verify_details').$type<VerifyDetails>(),
  verifiedAt: timestamp('verified_at', { withTimezone: true }),
  offsiteStatus: text('offsite_status'),
  offsiteRef: text('offsite_ref'),
  offsiteError: text('offsite_error'),
  offsiteAt: timestamp('offsite_at', { withTimezone: true }),
  s3Status: text('s3_status'),
  s3Key: text('s3_key'),
  s3Error: text('s3_error'),
  s3At: timestamp('s3_at', { withTimezone: true }),
  restoredAt: timestamp('restored_at', { withTimezone: true }),
  deletedAt: timestamp('deleted_at', { withTimezone: true }),
  deletedReason: text('deleted_reason'),
  attempt: integer('attempt').notNull().default(1),
  startedAt: timestamp('started_at', { withTimezone: true }).notNull().defaultNow(),
  completedAt: timestamp('completed_at', { withTimezone: true }),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [
  uniqueIndex('backups_filename_uq').on(t.filename),
  index('backups_created_idx').on(t.createdAt, t.id),
  index('backups_database_idx').on(t.database, t.status, t.completedAt),
]);

/**
 * One row per restore request (POST /backups/{filename}/restore answers 202 with it); a BullMQ
 * job of the `backup-restores` queue (job id `restore-<id>`) runs it under the row's `restore` lease.
 */
export const restores = pgTable('backup_restores', {
  id: serial('id').primaryKey(),
  backupId: integer('backup_id').notNull().references(() => backups.id),
  filename: text('filename').notNull(),
  database: text('database').notNull(),
  /** queued | running | succeeded | failed */
  status: text('status').notNull(),
  error: text('error'),
  /** SHA-256 of the Idempotency-Key the request carried. */
  idempotencyKey: text('idempotency_key'),
  /** Event metadata (tenant, org, actor) of whoever asked for the restore. */
  requestedBy: jsonb('requested_by').$type<EventMeta>().notNull(),
  /** When pg_restore was started (null: the restore never reached the database). */
  pgRestoreAt: timestamp('pg_restore_at', { withTimezone: true }),
  /** The restore transaction's full (epoch-qualified) id once it wrote: recovery asks the server whether it committed. */
  xid: text('xid'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  startedAt: timestamp('started_at', { withTimezone: true }),
  completedAt: timestamp('completed_at', { withTimezone: true }),
}, (t) => [
  uniqueIndex('backup_restores_idempotency_uq').on(t.idempotencyKey),
  // One queued or running restore per database: a second request gets 409 at once.
  uniqueIndex('backup_restores_active_uq').on(t.database).where(sql`status IN ('queued', 'running')`),
  index('backup_restores_created_idx').on(t.createdAt, t.id),
  index('backup_restores_backup_idx').on(t.backupId),
]);

export interface VerifyDetails {
  scratchDatabase?: string;
  /** Whether the file still had the SHA-256 recorded at dump time (unset: not checked yet). */
  checksumOk?: boolean;
  tables: { table: string; expected: number | null; actual: number | null; ok: boolean }[];
  error?: string;
}
