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

export interface VerifyDetails {
  scratchDatabase?: string;
  /** Whether the file still had the SHA-256 recorded at dump time (unset: not checked yet). */
  checksumOk?: boolean;
  tables: { table: string; expected: number | null; actual: number | null; ok: boolean }[];
  error?: string;
}
