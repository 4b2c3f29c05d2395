import { copyFile, mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { backups } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { backupDir, logLine } from './backup.js';
import { run } from './process.js';

const GIT_ENV = { GIT_AUTHOR_NAME: 'AOS backups', GIT_AUTHOR_EMAIL: 'backups@aos.local', GIT_COMMITTER_NAME: 'AOS backups', GIT_COMMITTER_EMAIL: 'backups@aos.local', GIT_TERMINAL_PROMPT: '0' };

async function git(cwd: string, args: string[]) {
  const res = await run('git', ['-C', cwd, ...args], GIT_ENV, 5 * 60_000);
  if (res.code !== 0) throw new Error(`git ${args[0]} failed: ${res.stderr.trim().slice(0, 500)}`);
  return res.stdout.trim();
}

/** A working clone of the offsite remote under BACKUP_DIR/.offsite. */
async function workingClone(ctx: Ctx): Promise<string> {
  const dir = join(backupDir(ctx), '.offsite');
  try {
    await stat(join(dir, '.git'));
    await git(dir, ['pull', '--ff-only', '--quiet']).catch(() => {});
  } catch {
    await mkdir(backupDir(ctx), { recursive: true });
    const res = await run('git', ['clone', '--quiet', ctx.config.BACKUP_GIT_REMOTE, dir], GIT_ENV, 5 * 60_000);
    if (res.code !== 0) throw new Error(`git clone failed: ${res.stderr.trim().slice(0, 500)}`);
  }
  return dir;
}

/** Commits the backup into the offsite repository and pushes it; the result is stored on the backup. */
export async function pushOffsite(ctx: Ctx, row: typeof backups.$inferSelect): Promise<void> {
  if (!ctx.config.BACKUP_GIT_REMOTE) return;
  try {
    const dir = await workingClone(ctx);
    await mkdir(join(dir, row.database), { recursive: true });
    await copyFile(join(backupDir(ctx), row.filename), join(dir, row.database, row.filename));
    await git(dir, ['add', '--', join(row.database, row.filename)]);
    await git(dir, ['commit', '--quiet', '-m', `backup ${row.filename} sha256=${row.sha256}`]);
    const branch = (await git(dir, ['rev-parse', '--abbrev-ref', 'HEAD'])) || 'main';
    await git(dir, ['push', '--quiet', 'origin', `HEAD:${branch === 'HEAD' ? 'main' : branch}`]);
    const ref = await git(dir, ['rev-parse', 'HEAD']);
    await ctx.db.update(backups).set({ offsiteAt: new Date(), offsiteRef: ref, offsiteError: null }).where(eq(backups.id, row.id));
    await logLine(ctx, `OFFSITE ${row.filename} ${ref}`);
  } catch (err) {
    await ctx.db.update(backups).set({ offsiteError: (err as Error).message.slice(0, 1_000) }).where(eq(backups.id, row.id));
    await logLine(ctx, `OFFSITE FAILED ${row.filename}: ${(err as Error).message}`);
  }
}

/** The newest backup in the offsite remote (from its commit messages), read from the remote itself. */
export async function offsiteStatus(ctx: Ctx) {
  if (!ctx.config.BACKUP_GIT_REMOTE) return { configured: false, latest: null as null | { filename: string; sha256: string; commit: string; at: string } };
  const dir = await workingClone(ctx);
  await git(dir, ['fetch', '--quiet', 'origin']).catch(() => {});
  const log = await git(dir, ['log', 'origin/HEAD', '-1', '--format=%H%x09%cI%x09%s']).catch(() => git(dir, ['log', '-1', '--format=%H%x09%cI%x09%s']).catch(() => ''));
  const [commit, at, subject] = log.split('\t');
  const m = /^backup (\S+) sha256=([0-9a-f]{64})$/.exec(subject ?? '');
  return { configured: true, latest: m && commit && at ? { filename: m[1]!, sha256: m[2]!, commit, at } : null };
}
