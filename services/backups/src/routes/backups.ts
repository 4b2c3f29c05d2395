import { Queues } from '@aos/contracts';
import { AppError, badRequest, conflict, notFound, serviceUnavailable } from '@aos/core';
import { Envelope, list, ListEnvelope, Nullable, ok, page, PaginationQuery, type App } from '@aos/http';
import { Type, type Static } from '@sinclair/typebox';
import { and, count, desc, eq, ne, sql, type SQL } from 'drizzle-orm';
import { createHash, randomUUID } from 'node:crypto';
import { backups } from '../db/schema.js';
import { backupEnv, deleteBackup, tailLog, type BackupRow } from '../domain/backup.js';
import { MissingFileError, openBackupFile } from '../domain/files.js';
import { BusyError, startVerify } from '../domain/restore.js';
import { activeRestore } from '../domain/restores.js';
import { redactS3, s3Head, type S3Settings } from '../domain/s3.js';
import { FILENAME_RE, safePath } from '../domain/targets.js';
import type { BackupJob } from '../jobs/backups.js';
import type { Ctx } from '../service.js';

const Ts = Type.String({ format: 'date-time' });

const Backup = Type.Object({
  id: Type.Integer(),
  filename: Type.String(),
  database: Type.String(),
  status: Type.String({ description: 'running | completed | failed | deleted' }),
  trigger: Type.String({ description: 'manual | schedule' }),
  job_id: Nullable(Type.String()),
  size_bytes: Nullable(Type.Integer()),
  sha256: Nullable(Type.String()),
  error: Nullable(Type.String()),
  table_counts: Nullable(Type.Record(Type.String(), Type.Integer())),
  verification: Nullable(Type.Object({
    status: Type.String({ description: 'running | ok | mismatch | error' }),
    verified_at: Ts,
    checksum_ok: Nullable(Type.Boolean({ description: 'the file still had the SHA-256 recorded at dump time' })),
    error: Nullable(Type.String()),
    tables: Type.Array(Type.Object({ table: Type.String(), expected: Nullable(Type.Integer()), actual: Nullable(Type.Integer()), ok: Type.Boolean() })),
  })),
  offsite: Nullable(Type.Object({ status: Type.String(), ref: Nullable(Type.String()), error: Nullable(Type.String()), at: Nullable(Ts) })),
  s3: Nullable(Type.Object({ status: Type.String(), key: Nullable(Type.String()), error: Nullable(Type.String()), at: Nullable(Ts) })),
  restored_at: Nullable(Ts),
  deleted_at: Nullable(Ts),
  deleted_reason: Nullable(Type.String()),
  started_at: Ts,
  completed_at: Nullable(Ts),
  created_at: Ts,
});

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function toBackup(r: BackupRow): Static<typeof Backup> {
  return {
    id: r.id, filename: r.filename, database: r.database, status: r.status, trigger: r.trigger, job_id: r.jobId,
    size_bytes: r.sizeBytes, sha256: r.sha256, error: r.error, table_counts: r.tableCounts,
    verification: r.verifyStatus && r.verifiedAt ? {
      status: r.verifyStatus, verified_at: r.verifiedAt.toISOString(), checksum_ok: r.verifyDetails?.checksumOk ?? null, error: r.verifyDetails?.error ?? null, tables: r.verifyDetails?.tables ?? [],
    } : null,
    offsite: r.offsiteStatus ? { status: r.offsiteStatus, ref: r.offsiteRef, error: r.offsiteError, at: iso(r.offsiteAt) } : null,
    s3: r.s3Status ? { status: r.s3Status, key: r.s3Key, error: r.s3Error, at: iso(r.s3At) } : null,
    restored_at: iso(r.restoredAt), deleted_at: iso(r.deletedAt), deleted_reason: r.deletedReason,
    started_at: r.startedAt.toISOString(), completed_at: iso(r.completedAt), created_at: r.createdAt.toISOString(),
  };
}

/** What a replayed trigger reports for its job. */
const JOB_STATES: Record<string, string> = { active: 'running', completed: 'completed', failed: 'failed' };

export const FilenameParam = Type.Object({ filename: Type.String({ minLength: 1, maxLength: 255 }) });

/**
 * The recorded, completed backup named `filename`. The name must match the strict pattern
 * (no separators, dots or NUL can pass) before the database is even asked.
 */
export async function recorded(ctx: Ctx, filename: string): Promise<BackupRow> {
  if (!FILENAME_RE.test(filename) || !safePath(backupEnv(ctx).dir, filename)) {
    throw badRequest('Invalid backup filename', [{ field: 'filename', pattern: FILENAME_RE.source }]);
  }
  const [row] = await ctx.db.select().from(backups).where(and(eq(backups.filename, filename), eq(backups.status, 'completed')));
  if (!row) throw notFound('Backup');
  return row;
}

/** The Idempotency-Key header, if any: one header of 1 to 200 characters, else 400. */
export function idempotencyKeyOf(headers: Record<string, string | string[] | undefined>): string | undefined {
  const key = headers['idempotency-key'];
  if (key !== undefined && (typeof key !== 'string' || key.length === 0 || key.length > 200)) {
    throw badRequest('Idempotency-Key must be one header of 1 to 200 characters', [{ field: 'Idempotency-Key' }]);
  }
  return key;
}

export async function backupRoutes(app: App, ctx: Ctx): Promise<void> {
  backupEnv(ctx); // a bad BACKUP_DATABASE_URLS stops the start, naming the entry
  app.get('/backups', {
    schema: {
      summary: 'List backups (newest first)',
      querystring: Type.Object({
        ...PaginationQuery,
        database: Type.Optional(Type.String({ pattern: '^[a-z0-9_]{1,63}$' })),
        status: Type.Optional(Type.Union(['running', 'completed', 'failed', 'deleted', 'all'].map((s) => Type.Literal(s)))),
      }),
      response: { 200: ListEnvelope(Backup) },
    },
    config: { scope: 'backups:read' },
  }, async (request) => {
    const p = page(request.query);
    const conds: SQL[] = [];
    if (request.query.database) conds.push(eq(backups.database, request.query.database));
    const status = request.query.status;
    if (!status) conds.push(ne(backups.status, 'deleted'));
    else if (status !== 'all') conds.push(eq(backups.status, status));
    const where = conds.length ? and(...conds) : undefined;
    const [rows, [total]] = await Promise.all([
      ctx.db.select().from(backups).where(where).orderBy(desc(backups.createdAt), desc(backups.id)).limit(p.limit).offset(p.offset),
      ctx.db.select({ n: count() }).from(backups).where(where),
    ]);
    return list(rows.map(toBackup), total?.n ?? 0, p);
  });

  app.get('/backups/stats', {
    schema: {
      summary: 'Backup stats: count, total size, last backup per database, age of the newest',
      response: {
        200: Envelope(Type.Object({
          count: Type.Integer(),
          total_size_bytes: Type.Integer(),
          failed_count: Type.Integer(),
          newest_at: Nullable(Ts),
          newest_age_seconds: Nullable(Type.Integer()),
          databases: Type.Array(Type.Object({
            database: Type.String(),
            configured: Type.Boolean(),
            count: Type.Integer(),
            last_backup: Nullable(Type.Object({ filename: Type.String(), completed_at: Nullable(Ts), size_bytes: Nullable(Type.Integer()), sha256: Nullable(Type.String()) })),
            last_failure_at: Nullable(Ts),
          })),
        })),
      },
    },
    config: { scope: 'backups:read' },
  }, async () => {
    const { databases } = backupEnv(ctx);
    const totals = await ctx.pool.query<{ count: number; total: string; failed: number; newest: Date | null }>(
      `SELECT count(*) FILTER (WHERE status = 'completed')::int AS count,
              coalesce(sum(size_bytes) FILTER (WHERE status = 'completed'), 0)::text AS total,
              count(*) FILTER (WHERE status = 'failed')::int AS failed,
              max(completed_at) FILTER (WHERE status = 'completed') AS newest
       FROM backups`);
    const perDb = await ctx.pool.query<{ database: string; n: number; filename: string | null; completed_at: Date | null; size_bytes: string | null; sha256: string | null; last_failure: Date | null }>(
      `SELECT d.database, d.n, l.filename, l.completed_at, l.size_bytes::text, l.sha256, d.last_failure
       FROM (SELECT database, count(*) FILTER (WHERE status = 'completed')::int AS n,
                    max(completed_at) FILTER (WHERE status = 'failed') AS last_failure
             FROM backups GROUP BY database) d
       LEFT JOIN LATERAL (SELECT filename, completed_at, size_bytes, sha256 FROM backups b
                          WHERE b.database = d.database AND b.status = 'completed'
                          ORDER BY completed_at DESC, id DESC LIMIT 1) l ON true`);
    const byName = new Map(perDb.rows.map((r) => [r.database, r]));
    const names = [...new Set([...databases.keys(), ...byName.keys()])].sort();
    const t = totals.rows[0]!;
    return ok({
      count: t.count,
      total_size_bytes: Number(t.total),
      failed_count: t.failed,
      newest_at: iso(t.newest),
      newest_age_seconds: t.newest ? Math.max(0, Math.floor((Date.now() - t.newest.getTime()) / 1000)) : null,
      databases: names.map((name) => {
        const r = byName.get(name);
        return {
          database: name,
          configured: databases.has(name),
          count: r?.n ?? 0,
          last_backup: r?.filename ? { filename: r.filename, completed_at: iso(r.completed_at), size_bytes: r.size_bytes === null ? null : Number(r.size_bytes), sha256: r.sha256 } : null,
          last_failure_at: iso(r?.last_failure ?? null),
        };
      }),
    });
  });

  app.get('/backups/logs', {
    schema: {
      summary: 'Last 100 lines of the backup log',
      response: { 200: Envelope(Type.Object({ lines: Type.Array(Type.String()) })) },
    },
    config: { scope: 'backups:read' },
  }, async () => ok({ lines: await tailLog(ctx, 100) }));

  app.get('/backups/github-status', {
    schema: {
      summary: 'Latest offsite backup (git remote, S3 bucket) and whether the newest local backup is there',
      response: {
        200: Envelope(Type.Object({
          configured: Type.Boolean({ description: 'a git remote is configured' }),
          branch: Nullable(Type.String()),
          latest_offsite: Nullable(Type.Object({ commit: Type.String(), filename: Nullable(Type.String()), sha256: Nullable(Type.String()), committed_at: Type.String() })),
          newest_local: Nullable(Type.Object({ filename: Type.String(), sha256: Nullable(Type.String()), completed_at: Nullable(Ts) })),
          newest_local_commit: Nullable(Type.String({ description: 'the commit on the remote branch holding the newest local backup' })),
          in_sync: Type.Boolean({ description: 'the newest local backup is on the remote branch with the same SHA-256' }),
          s3: Nullable(Type.Object({
            bucket: Type.String(),
            prefix: Type.String(),
            latest_uploaded: Nullable(Type.Object({ filename: Type.String(), key: Nullable(Type.String()), uploaded_at: Nullable(Ts) })),
            newest_local_present: Nullable(Type.Boolean({ description: 'HEAD of the newest local backup\'s object succeeded' })),
            in_sync: Type.Boolean({ description: 'the object exists and its x-amz-meta-sha256 equals the local SHA-256' }),
            error: Nullable(Type.String()),
          })),
        })),
      },
    },
    config: { scope: 'backups:read' },
  }, async () => {
    const { offsite, s3 } = backupEnv(ctx);
    const [newest] = await ctx.db.select().from(backups).where(eq(backups.status, 'completed'))
      .orderBy(sql`${backups.completedAt} DESC NULLS LAST`, desc(backups.id)).limit(1);
    const newestLocal = newest ? { filename: newest.filename, sha256: newest.sha256, completed_at: iso(newest.completedAt) } : null;
    const wanted = newest?.sha256 ? { filename: newest.filename, sha256: newest.sha256 } : null;
    let git: Awaited<ReturnType<NonNullable<typeof offsite>['status']>> | null = null;
    if (offsite) {
      try {
        git = await offsite.status(wanted);
      } catch {
        throw serviceUnavailable('The offsite git remote cannot be read');
      }
    }
    return ok({
      configured: !!offsite,
      branch: offsite ? ctx.config.BACKUP_GIT_BRANCH : null,
      latest_offsite: git?.latest ? { commit: git.latest.ref, filename: git.latest.filename, sha256: git.latest.sha256, committed_at: git.latest.committedAt } : null,
      newest_local: newestLocal,
      newest_local_commit: git?.wanted ?? null,
      in_sync: !!git?.wanted,
      s3: s3 ? await s3Status(s3, wanted) : null,
    });
  });

  async function s3Status(s3: S3Settings, wanted: { filename: string; sha256: string } | null) {
    const [uploaded] = await ctx.db.select().from(backups).where(eq(backups.s3Status, 'uploaded'))
      .orderBy(sql`${backups.s3At} DESC NULLS LAST`, desc(backups.id)).limit(1);
    const base = {
      bucket: s3.bucket, prefix: s3.prefix,
      latest_uploaded: uploaded ? { filename: uploaded.filename, key: uploaded.s3Key, uploaded_at: iso(uploaded.s3At) } : null,
    };
    if (!wanted) return { ...base, newest_local_present: null, in_sync: false, error: null };
    try {
      const head = await s3Head(s3, wanted.filename);
      return { ...base, newest_local_present: !!head, in_sync: head?.sha256 === wanted.sha256, error: null };
    } catch (err) {
      return { ...base, newest_local_present: null, in_sync: false, error: redactS3((err as Error).message || 'S3 unreachable', s3) };
    }
  }

  app.post('/backups/trigger', {
    schema: {
      summary: 'Queue a pg_dump of every configured database, or of the chosen ones',
      body: Type.Optional(Type.Object({
        database: Type.Optional(Type.String({ minLength: 1, maxLength: 63 })),
        databases: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 63 }), { minItems: 1, maxItems: 50, uniqueItems: true })),
      }, { additionalProperties: false })),
      response: { 200: Envelope(Type.Object({ job_id: Type.String(), databases: Type.Array(Type.String()), status: Type.String({ description: 'queued; for a replayed Idempotency-Key also running | completed | failed' }) })) },
    },
    config: { platformAdmin: true, scope: 'backups:write' },
  }, async (request) => {
    const { databases } = backupEnv(ctx);
    const asked = [...(request.body?.databases ?? []), ...(request.body?.database ? [request.body.database] : [])];
    const unknown = asked.filter((d) => !databases.has(d));
    if (unknown.length > 0) {
      throw badRequest('Unknown database', [{ field: 'database', unknown, allowed: [...databases.keys()] }]);
    }
    const chosen = asked.length > 0 ? [...new Set(asked)] : [...databases.keys()];
    // A retried request with the same Idempotency-Key queues one job (job id derived from the key).
    const key = idempotencyKeyOf(request.headers);
    const jobId = key ? `manual-${createHash('sha256').update(key).digest('hex').slice(0, 32)}` : `manual-${randomUUID()}`;
    let replay: { databases: string[]; status: string } | null = null;
    try {
      const queue = ctx.queues.queue(Queues.backups);
      const existing = key ? await queue.getJob(jobId) : undefined;
      if (existing) {
        const before = (existing.data as { payload: BackupJob }).payload.databases;
        if (before.length !== chosen.length || !chosen.every((d) => before.includes(d))) {
          throw conflict('This Idempotency-Key was already used to trigger a backup of other databases');
        }
        replay = { databases: before, status: JOB_STATES[await existing.getState()] ?? 'queued' };
      } else {
        await ctx.queues.add<BackupJob>(Queues.backups, 'backup', { databases: chosen, trigger: 'manual' }, { jobId, attempts: 1 });
      }
    } catch (err) {
      if (err instanceof AppError) throw err;
      throw serviceUnavailable('The job queue is unavailable; try again');
    }
    if (replay) return ok({ job_id: jobId, ...replay });
    return ok({ job_id: jobId, databases: chosen, status: 'queued' });
  });

  app.get('/backups/:filename/download', {
    schema: {
      summary: 'Download a backup file (streamed; X-Checksum-SHA256 header)',
      params: FilenameParam,
      produces: ['application/octet-stream'],
    },
    config: { platformAdmin: true, scope: 'backups:read' },
  }, async (request, reply) => {
    const row = await recorded(ctx, request.params.filename);
    // The descriptor opened without following links is what is streamed: a symlink swapped in
    // under a recorded name is never followed, not even between a check and the read.
    const file = await openBackupFile(backupEnv(ctx).dir, row.filename).catch((err: unknown) => {
      if (err instanceof MissingFileError) throw notFound('Backup file');
      throw err;
    });
    void reply
      .header('content-type', 'application/octet-stream')
      .header('content-length', String(file.size))
      .header('content-disposition', `attachment; filename="${row.filename}"`)
      .header('x-checksum-sha256', row.sha256 ?? '')
      .header('cache-control', 'no-store');
    return reply.send(file.fh.createReadStream({ start: 0 }));
  });

  app.delete('/backups/:filename', {
    schema: {
      summary: 'Delete a backup file',
      params: FilenameParam,
      response: { 200: Envelope(Backup) },
    },
    config: { platformAdmin: true, scope: 'backups:write' },
  }, async (request) => {
    const row = await recorded(ctx, request.params.filename);
    const restoring = await activeRestore(ctx, { backupId: row.id });
    if (restoring) throw conflict(`Backup ${row.filename} is being restored (restore ${restoring.id}); delete it once the restore has finished`);
    await deleteBackup(ctx, row, 'manual');
    const [after] = await ctx.db.select().from(backups).where(eq(backups.id, row.id));
    return ok(toBackup(after!));
  });

  app.post('/backups/:filename/verify', {
    schema: {
      summary: 'Restore into a scratch database and compare row counts with the dump-time counts',
      params: FilenameParam,
      response: { 200: Envelope(Backup), 202: Envelope(Backup) },
    },
    config: { platformAdmin: true, scope: 'backups:write' },
  }, async (request, reply) => {
    const row = await recorded(ctx, request.params.filename);
    const startedAt = new Date();
    const { done: running } = await startVerify(ctx, row).catch((err: unknown) => {
      if (err instanceof BusyError) throw conflict(err.message);
      throw err;
    });
    running.catch((err: Error) => ctx.log.warn({ err: err.message, backupId: row.id }, 'verify failed'));
    let timer: NodeJS.Timeout | undefined;
    const waited = await Promise.race([running, new Promise<null>((r) => { timer = setTimeout(() => r(null), ctx.config.BACKUP_VERIFY_WAIT_MS); })]);
    clearTimeout(timer);
    if (waited) return ok(toBackup(waited));
    // Still restoring: the result is stored when done and shown by GET /backups.
    void reply.status(202);
    const [now] = await ctx.db.select().from(backups).where(eq(backups.id, row.id));
    const current = now?.verifiedAt && now.verifiedAt >= startedAt ? now : { ...(now ?? row), verifyStatus: 'running', verifiedAt: startedAt, verifyDetails: null };
    return ok(toBackup(current));
  });
}
