import { bigint, boolean, jsonb, pgTable, serial, text, timestamp } from 'drizzle-orm/pg-core';

export const backups = pgTable('backups', {
  id: serial('id').primaryKey(),
  filename: text('filename').notNull().unique(),
  database: text('database').notNull(),
  status: text('status').notNull(),
  sizeBytes: bigint('size_bytes', { mode: 'number' }),
  sha256: text('sha256'),
  /** Row counts per table, taken in the snapshot the dump was made from. */
  tableCounts: jsonb('table_counts').$type<Record<string, number>>(),
  error: text('error'),
  trigger: text('trigger').notNull().default('manual'),
  startedAt: timestamp('started_at', { withTimezone: true }).notNull().defaultNow(),
  completedAt: timestamp('completed_at', { withTimezone: true }),
  verifiedAt: timestamp('verified_at', { withTimezone: true }),
  verifyOk: boolean('verify_ok'),
  verifyDetails: jsonb('verify_details'),
  offsiteAt: timestamp('offsite_at', { withTimezone: true }),
  offsiteRef: text('offsite_ref'),
  offsiteError: text('offsite_error'),
  deletedAt: timestamp('deleted_at', { withTimezone: true }),
});
