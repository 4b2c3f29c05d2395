import { Queues } from '@aos/contracts';
import { badRequest, notFound } from '@aos/core';
import { Envelope, ListEnvelope, list, ok, page, PaginationQuery, type App } from '@aos/http';
import { Type, type TSchema } from '@sinclair/typebox';
import { desc, eq, isNull, ne, and, sql } from 'drizzle-orm';
import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { backups } from './db/schema.js';
import { databases, logLine, resolveBackup, tailLog } from './domain/backup.js';
import { offsiteStatus } from './domain/offsite.js';
import { restoreBackup, verifyBackup } from './domain/verify.js';
import type { Ctx } from './service.js';

const Nullable = <T extends TSchema>(s: T) => Type.Union([s, Type.Null()]);
const BackupSchema = Type.Object({
  id: Type.Integer(), filename: Type.String(), database: Type.String(), status: Type.String(), size_bytes: Nullable(Type.Integer()),
  sha256: Nullable(Type.String()), error: Nullable(Type.String()), trigger: Type.String(), started_at: Type.String(), completed_at: Nullable(Type.String()),
  verified_at: Nullable(Type.String()), verify_ok: Nullable(Type.Boolean()), offsite_at: Nullable(Type.String()), offsite_ref: Nullable(Type.String()),
});
type Row = typeof backups.$inferSelect;
const view = (b: Row) => ({
  id: b.id, filename: b.filename, database: b.database, status: b.status, size_bytes: b.sizeBytes, sha256: b.sha256, error: b.error, trigger: b.trigger,
  started_at: b.startedAt.toISOString(), completed_at: b.completedAt?.toISOString() ?? null, verified_at: b.verifiedAt?.toISOString() ?? null,
  verify_ok: b.verifyOk, offsite_at: b.offsiteAt?.toISOString() ?? null, offsite_ref: b.offsiteRef,
});
const FileParam = Type.Object({ filename: Type.String({ maxLength: 200 }) });
const read = { platformAdmin: true, scope: 'backups:read' as const };
const write = { platformAdmin: true, scope: 'backups:write' as const };

async function existing(ctx: Ctx, filename: string) {
  if (filename.length === 0 || /[/\\\0]|\.\./.test(filename)) throw badRequest('Invalid backup filename', [{ field: 'filename' }]);
  const found = await resolveBackup(ctx, filename);
  if (!found) throw notFound('Backup');
  return found;
}

/** Backups are platform-wide (every service database), so every route needs the platform admin role. */
export async function routes(app: App, ctx: Ctx): Promise<void> {
  app.post('/backups/trigger', {
    config: write,
    schema: {
      tags: ['Backups'], summary: 'Queue a pg_dump of every service database (or one)',
      body: Type.Object({ database: Type.Optional(Type.String({ maxLength: 63, pattern: '^[a-z0-9_]+$' })) }, { additionalProperties: false }),
      response: { 202: Envelope(Type.Object({ job_id: Type.String(), databases: Type.Array(Type.String()) })) },
    },
    preValidation: async (request) => { request.body ??= {}; },
  }, async (request, reply) => {
    const all = Object.keys(databases(ctx));
    const database = request.body.database ?? null;
    if (database && !all.includes(database)) throw badRequest(`Unknown database ${database}`, [{ allowed: all }]);
    const job = await ctx.queues.add(Queues.backups, 'manual', { database, trigger: 'manual' }, { jobId: `backup-${randomUUID()}`, attempts: 1 });
    await logLine(ctx, `QUEUED ${database ?? 'all databases'} by ${request.principal.userId ?? 'unknown'}`);
    return reply.status(202).send(ok({ job_id: job.id!, databases: database ? [database] : all }));
  });

  app.get('/backups', {
    config: read,
    schema: { tags: ['Backups'], summary: 'Backups, newest first', querystring: Type.Object({ ...PaginationQuery, database: Type.Optional(Type.String({ maxLength: 63 })), status: Type.Optional(Type.String({ maxLength: 20 })) }), response: { 200: ListEnvelope(BackupSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const cond = and(ne(backups.status, 'deleted'), request.query.database ? eq(backups.database, request.query.database) : undefined, request.query.status ? eq(backups.status, request.query.status) : undefined);
    const rows = await ctx.db.select().from(backups).where(cond).orderBy(desc(backups.startedAt), desc(backups.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(backups).where(cond)) as [{ n: number }];
    return list(rows.map(view), n, p);
  });

  app.get('/backups/stats', {
    config: read,
    schema: {
      tags: ['Backups'], summary: 'Count, total size, last backup per database, age of the newest',
      response: { 200: Envelope(Type.Object({ count: Type.Integer(), total_size_bytes: Type.Integer(), failed_last_24h: Type.Integer(), newest_age_seconds: Nullable(Type.Integer()), last_per_database: Type.Record(Type.String(), Nullable(BackupSchema)) })) },
    },
  }, async () => {
    const rows = await ctx.db.select().from(backups).where(and(eq(backups.status, 'completed'), isNull(backups.deletedAt))).orderBy(desc(backups.startedAt));
    const failed = (await ctx.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM backups WHERE status = 'failed' AND started_at > now() - interval '1 day'")).rows[0]!.n;
    const last = Object.fromEntries(Object.keys(databases(ctx)).map((db) => [db, rows.find((r) => r.database === db) ?? null]));
    return ok({
      count: rows.length, total_size_bytes: rows.reduce((s, r) => s + (r.sizeBytes ?? 0), 0), failed_last_24h: failed,
      newest_age_seconds: rows[0] ? Math.round((Date.now() - rows[0].startedAt.getTime()) / 1000) : null,
      last_per_database: Object.fromEntries(Object.entries(last).map(([k, v]) => [k, v ? view(v) : null])),
    });
  });

  app.get('/backups/logs', {
    config: read,
    schema: { tags: ['Backups'], summary: 'Last 100 lines of the backup log', response: { 200: Envelope(Type.Object({ lines: Type.Array(Type.String()) })) } },
  }, async () => ok({ lines: await tailLog(ctx) }));

  app.get('/backups/github-status', {
    config: read,
    schema: {
      tags: ['Backups'], summary: 'Newest offsite backup and whether it matches the newest local one',
      response: { 200: Envelope(Type.Object({ configured: Type.Boolean(), latest: Nullable(Type.Object({ filename: Type.String(), sha256: Type.String(), commit: Type.String(), at: Type.String() })), newest_local: Nullable(Type.String()), in_sync: Type.Boolean() })) },
    },
  }, async () => {
    const status = await offsiteStatus(ctx);
    const [newest] = await ctx.db.select().from(backups).where(and(eq(backups.status, 'completed'), isNull(backups.deletedAt))).orderBy(desc(backups.startedAt), desc(backups.id)).limit(1);
    return ok({ ...status, newest_local: newest?.filename ?? null, in_sync: !!newest && status.latest?.sha256 === newest.sha256 });
  });

  app.get('/backups/:filename/download', {
    config: write,
    schema: { tags: ['Backups'], summary: 'Download a backup (streamed, with its SHA-256)', params: FileParam },
  }, async (request, reply) => {
    const { row, path } = await existing(ctx, request.params.filename);
    reply.header('content-type', 'application/octet-stream');
    reply.header('content-disposition', `attachment; filename="${row.filename}"`);
    reply.header('x-checksum-sha256', row.sha256 ?? '');
    if (row.sizeBytes) reply.header('content-length', String(row.sizeBytes));
    return reply.send(createReadStream(path));
  });

  app.delete('/backups/:filename', {
    config: write,
    schema: { tags: ['Backups'], summary: 'Delete a backup file', params: FileParam, response: { 200: Envelope(Type.Object({ filename: Type.String(), deleted: Type.Boolean() })) } },
  }, async (request) => {
    const { row, path } = await existing(ctx, request.params.filename);
    await rm(path, { force: true });
    await ctx.db.update(backups).set({ status: 'deleted', deletedAt: new Date() }).where(eq(backups.id, row.id));
    await logLine(ctx, `DELETED ${row.filename}`);
    return ok({ filename: row.filename, deleted: true });
  });

  app.post('/backups/:filename/verify', {
    config: write,
    schema: { tags: ['Backups'], summary: 'Restore into a scratch database and compare row counts', params: FileParam, response: { 200: Envelope(Type.Object({ ok: Type.Boolean(), tables: Type.Integer(), mismatches: Type.Array(Type.Object({ table: Type.String(), expected: Type.Integer(), actual: Nullable(Type.Integer()) })), error: Type.Optional(Type.String()) })) } },
  }, async (request) => {
    const { row, path } = await existing(ctx, request.params.filename);
    return ok(await verifyBackup(ctx, row, path));
  });

  app.post('/backups/:filename/restore', {
    config: write,
    schema: {
      tags: ['Backups'], summary: 'Restore a service database from this backup (type the filename in `confirm`)', params: FileParam,
      body: Type.Object({ confirm: Type.String({ maxLength: 200 }) }, { additionalProperties: false }),
      response: { 200: Envelope(Type.Object({ filename: Type.String(), database: Type.String(), restored: Type.Boolean() })) },
    },
  }, async (request) => {
    const { row, path } = await existing(ctx, request.params.filename);
    if (request.body.confirm !== row.filename) throw badRequest('confirm must equal the backup filename', [{ field: 'confirm' }]);
    await restoreBackup(ctx, row, path);
    return ok({ filename: row.filename, database: row.database, restored: true });
  });
}
