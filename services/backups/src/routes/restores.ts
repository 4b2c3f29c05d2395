import { metaFromPrincipal } from '@aos/bus';
import { badRequest, conflict, notFound, serviceUnavailable, unprocessable } from '@aos/core';
import { Envelope, list, ListEnvelope, Nullable, ok, page, PaginationQuery, type App } from '@aos/http';
import { Type, type Static } from '@sinclair/typebox';
import { and, count, desc, eq, type SQL } from 'drizzle-orm';
import { restores } from '../db/schema.js';
import { MissingFileError } from '../domain/files.js';
import { RestoreError, restoreTarget, TargetError } from '../domain/restore.js';
import {
  ActiveRestoreError, activeRestore, checkBeforeRestore, hashIdempotencyKey, QueueUnavailableError, queueRestore, restoreByKey, type RestoreRow,
} from '../domain/restores.js';
import { FILENAME_RE } from '../domain/targets.js';
import type { Ctx } from '../service.js';
import { FilenameParam, idempotencyKeyOf, recorded } from './backups.js';

const Ts = Type.String({ format: 'date-time' });
const STATUSES = ['queued', 'running', 'succeeded', 'failed'] as const;

const Restore = Type.Object({
  id: Type.Integer(),
  backup_id: Type.Integer(),
  filename: Type.String(),
  database: Type.String(),
  status: Type.String({ description: STATUSES.join(' | ') }),
  error: Nullable(Type.String({ description: 'why it failed, and whether the database was left unchanged' })),
  requested_by: Type.Object({ type: Type.String(), id: Nullable(Type.String()) }),
  created_at: Ts,
  started_at: Nullable(Ts),
  completed_at: Nullable(Ts),
  duration_ms: Nullable(Type.Integer({ description: 'from started_at to completed_at' })),
});

const iso = (d: Date | null) => (d ? d.toISOString() : null);

function toRestore(r: RestoreRow): Static<typeof Restore> {
  return {
    id: r.id, backup_id: r.backupId, filename: r.filename, database: r.database, status: r.status, error: r.error,
    requested_by: r.requestedBy.actor, created_at: r.createdAt.toISOString(), started_at: iso(r.startedAt), completed_at: iso(r.completedAt),
    duration_ms: r.startedAt && r.completedAt ? Math.max(0, r.completedAt.getTime() - r.startedAt.getTime()) : null,
  };
}

export async function restoreRoutes(app: App, ctx: Ctx): Promise<void> {
  app.post('/backups/:filename/restore', {
    schema: {
      summary: 'Queue a restore of a backup over its service database (confirm must repeat the filename); poll GET /backups/restores/{id}',
      params: FilenameParam,
      body: Type.Object({ confirm: Type.String({ minLength: 1, maxLength: 255 }) }, { additionalProperties: false }),
      response: { 202: Envelope(Restore) },
    },
    config: { platformAdmin: true, scope: 'backups:write' },
  }, async (request, reply) => {
    const row = await recorded(ctx, request.params.filename);
    if (request.body.confirm !== row.filename) {
      throw badRequest('confirm must equal the backup filename', [{ field: 'confirm' }]);
    }
    const key = idempotencyKeyOf(request.headers);
    const keyHash = key ? hashIdempotencyKey(key) : null;
    const replayOf = (first: RestoreRow) => {
      if (first.backupId !== row.id) throw conflict('This Idempotency-Key was already used to restore another backup');
      void reply.status(202);
      return ok(toRestore(first));
    };
    if (keyHash) {
      const first = await restoreByKey(ctx, keyHash);
      if (first) return replayOf(first);
    }
    try {
      restoreTarget(ctx, row.database);
    } catch (err) {
      if (err instanceof TargetError) throw conflict(err.message);
      throw err;
    }
    const active = await activeRestore(ctx, { database: row.database });
    if (active) throw conflict(new ActiveRestoreError(active, row.database).message, [{ restore_id: active.id, status: active.status }]);
    try {
      await checkBeforeRestore(ctx, row);
      const { restore, replay } = await queueRestore(ctx, row, metaFromPrincipal(request.principal), keyHash);
      if (replay) return replayOf(restore);
      void reply.status(202);
      return ok(toRestore(restore));
    } catch (err) {
      if (err instanceof MissingFileError) throw notFound('Backup file');
      if (err instanceof RestoreError) throw unprocessable('The backup file no longer matches its record; nothing was restored', [{ error: err.message }]);
      if (err instanceof ActiveRestoreError) throw conflict(err.message, err.active ? [{ restore_id: err.active.id, status: err.active.status }] : undefined);
      if (err instanceof QueueUnavailableError) throw serviceUnavailable(err.message);
      throw err;
    }
  });

  app.get('/backups/restores', {
    schema: {
      summary: 'Restores, newest first',
      querystring: Type.Object({
        ...PaginationQuery,
        status: Type.Optional(Type.Union(STATUSES.map((s) => Type.Literal(s)))),
        database: Type.Optional(Type.String({ pattern: '^[a-z0-9_]{1,63}$' })),
        filename: Type.Optional(Type.String({ pattern: FILENAME_RE.source, maxLength: 255 })),
      }),
      response: { 200: ListEnvelope(Restore) },
    },
    config: { platformAdmin: true, scope: 'backups:read' },
  }, async (request) => {
    const p = page(request.query);
    const q = request.query;
    const conds: SQL[] = [];
    if (q.status) conds.push(eq(restores.status, q.status));
    if (q.database) conds.push(eq(restores.database, q.database));
    if (q.filename) conds.push(eq(restores.filename, q.filename));
    const where = conds.length ? and(...conds) : undefined;
    const [rows, [total]] = await Promise.all([
      ctx.db.select().from(restores).where(where).orderBy(desc(restores.createdAt), desc(restores.id)).limit(p.limit).offset(p.offset),
      ctx.db.select({ n: count() }).from(restores).where(where),
    ]);
    return list(rows.map(toRestore), total?.n ?? 0, p);
  });

  app.get('/backups/restores/:id', {
    schema: {
      summary: 'One restore: queued, running, succeeded or failed (with the reason)',
      params: Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2_147_483_647 }) }),
      response: { 200: Envelope(Restore) },
    },
    config: { platformAdmin: true, scope: 'backups:read' },
  }, async (request) => {
    const [r] = await ctx.db.select().from(restores).where(eq(restores.id, request.params.id));
    if (!r) throw notFound('Restore');
    return ok(toRestore(r));
  });
}
