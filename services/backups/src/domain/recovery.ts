import { and, eq, inArray } from 'drizzle-orm';
import { readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { backups } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { backupEnv, dumpSessionName, logLine, removeDumpFile, systemEventMeta } from './backup.js';
import { ifAbandoned } from './lease.js';
import { onServer, quoteIdent, terminateSessions } from './pg.js';
import { recoverRestores } from './restores.js';
import { scratchPrefix } from './restore.js';
import { FILENAME_RE } from './targets.js';

const TEMP_RE = /^\.tmp-(\d+)-[0-9a-f]+\.dump$/;

export interface Recovered {
  /** `running` dumps whose process is gone, now failed (with their event). */
  dumps: number;
  /** Verifications whose process is gone, now `error`. */
  verifications: number;
  tempFiles: number;
  /** Dump files of backups already marked deleted (the process stopped between the two steps). */
  deletedFiles: number;
  scratchDatabases: number;
  /** Restores whose process is gone (settled as failed, or succeeded when their transaction had committed). */
  restores: number;
}

/**
 * Cleans up after a crashed or killed process (runs at start and before each backup job):
 * a `running` row whose lease nobody holds is dead, so it becomes failed, its orphaned pg_dump
 * session is terminated and its temp file removed; scratch databases and `running`
 * verifications of dead verifications are dropped / marked; restores of dead processes are
 * settled (see recoverRestores). Work of live processes (their
 * lease is held) is never touched.
 */
export async function recoverInterrupted(ctx: Ctx): Promise<Recovered> {
  const env = backupEnv(ctx);
  const out: Recovered = { dumps: 0, verifications: 0, tempFiles: 0, deletedFiles: 0, scratchDatabases: 0, restores: 0 };

  const running = await ctx.db.select().from(backups).where(eq(backups.status, 'running'));
  for (const row of running) {
    await ifAbandoned(ctx, 'dump', row.id, async () => {
      const failed = await ctx.db.transaction(async (tx) => {
        const [r] = await tx.update(backups).set({ status: 'failed', error: 'interrupted (the process stopped during the dump)', completedAt: new Date() })
          .where(and(eq(backups.id, row.id), eq(backups.status, 'running'))).returning();
        if (r) await ctx.outbox.enqueue(tx, 'backups.backup.failed', { backupId: row.id, database: row.database, error: r.error! }, systemEventMeta());
        return r;
      });
      if (!failed) return;
      out.dumps++;
      await logLine(ctx, `FAILED ${row.filename}: interrupted`);
      const url = env.databases.get(row.database);
      if (url) await terminateSessions(url, dumpSessionName(env, row.id)).catch((err: Error) => ctx.log.warn({ err: err.message, backupId: row.id }, 'orphaned pg_dump not stopped'));
    });
  }

  const files = await readdir(env.dir).catch(() => [] as string[]);
  const dumps = files.filter((f) => FILENAME_RE.test(f));
  if (dumps.length > 0) {
    const deleted = await ctx.db.select({ filename: backups.filename }).from(backups).where(and(eq(backups.status, 'deleted'), inArray(backups.filename, dumps)));
    for (const d of deleted) if (await removeDumpFile(ctx, d.filename)) out.deletedFiles++;
  }

  const temps = files.flatMap((f) => {
    const m = TEMP_RE.exec(f);
    return m ? [{ file: f, id: Number(m[1]) }] : [];
  });
  if (temps.length > 0) {
    const live = new Set((await ctx.db.select({ id: backups.id }).from(backups)
      .where(and(eq(backups.status, 'running'), inArray(backups.id, temps.map((t) => t.id))))).map((r) => r.id));
    for (const t of temps) {
      const remove = async () => {
        await unlink(join(env.dir, t.file)).catch(() => {});
        out.tempFiles++;
      };
      // A running row may still be writing its temp file: only when its lease is free.
      if (live.has(t.id)) await ifAbandoned(ctx, 'dump', t.id, remove);
      else await remove();
    }
  }

  const verifying = await ctx.db.select().from(backups).where(eq(backups.verifyStatus, 'running'));
  for (const row of verifying) {
    await ifAbandoned(ctx, 'verify', row.id, async () => {
      const [r] = await ctx.db.update(backups)
        .set({ verifyStatus: 'error', verifyDetails: { ...(row.verifyDetails ?? { tables: [] }), error: 'interrupted (the process stopped during the verification)' }, verifiedAt: new Date() })
        .where(and(eq(backups.id, row.id), eq(backups.verifyStatus, 'running'))).returning();
      if (r) out.verifications++;
    });
  }

  out.restores = await recoverRestores(ctx);

  // Scratch databases live on the server of the backed-up database; any working login there can list and drop them.
  const servers = new Map<string, string[]>();
  for (const url of [ctx.config.DATABASE_URL, ...env.databases.values()]) {
    const u = new URL(url);
    const key = `${u.hostname}:${u.port || '5432'}`;
    servers.set(key, [...(servers.get(key) ?? []), url]);
  }
  const prefix = scratchPrefix(env);
  for (const urls of servers.values()) {
    for (const url of urls) {
      const names = await onServer(url, async (c) => (await c.query<{ datname: string }>(
        `SELECT datname FROM pg_database WHERE starts_with(datname, $1)`, [prefix])).rows.map((r) => r.datname)).catch(() => null);
      if (!names) continue;
      for (const name of names) {
        const id = Number(/^(\d+)_[0-9a-f]+$/.exec(name.slice(prefix.length))?.[1]);
        if (!Number.isSafeInteger(id)) continue;
        await ifAbandoned(ctx, 'verify', id, async () => {
          await onServer(url, (c) => c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`));
          out.scratchDatabases++;
        }).catch((err: Error) => ctx.log.warn({ err: err.message, database: name }, 'scratch database not dropped'));
      }
      break;
    }
  }
  return out;
}
