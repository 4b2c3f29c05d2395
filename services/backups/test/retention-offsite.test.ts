import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Queues } from '@aos/contracts';
import { adminPrincipal, apiKeyPrincipal, startTestService, waitFor, type TestService } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backups } from '../src/db/schema.js';
import { applyRetention, backupEnv } from '../src/domain/backup.js';
import { GitOffsite } from '../src/domain/offsite.js';
import { backupFilename } from '../src/domain/targets.js';
import { service } from '../src/service.js';
import { seededDatabase, sql, tempDir } from './helpers.js';

type Svc = TestService<typeof service.schema, typeof service.config>;
const admin = adminPrincipal();
let svc: Svc;
let seed: Awaited<ReturnType<typeof seededDatabase>>;
let dir: string;
let remote: string;

async function backupOnce(): Promise<{ id: number; filename: string; sha256: string; status: string }> {
  const res = await svc.inject(admin, { method: 'POST', url: '/backups/trigger', payload: { database: 'seed' } });
  expect(res.statusCode, res.body).toBe(200);
  const jobId = res.json().data.job_id as string;
  // Finished means dumped, pushed offsite and retention applied (the job is done).
  return waitFor(async () => {
    const job = await svc.ctx.queues.queue(Queues.backups).getJob(jobId);
    if (!job || !(await job.isCompleted())) return null;
    const [row] = await sql<{ id: number; filename: string; sha256: string; status: string }>(svc.databaseUrl, `SELECT id, filename, sha256, status FROM backups WHERE job_id = '${jobId}'`);
    return row;
  }, { timeoutMs: 60_000 });
}

beforeAll(async () => {
  seed = await seededDatabase('bkret');
  dir = tempDir('backups-ret');
  remote = join(tempDir('remote'), 'db-backups.git');
  execFileSync('git', ['init', '-q', '--bare', remote]);
  svc = await startTestService(service, {
    env: {
      BACKUP_DIR: dir,
      BACKUP_DATABASE_URLS: `seed=${seed.url}`,
      BACKUP_KEEP_LAST: '2',
      BACKUP_KEEP_DAILY_DAYS: '0',
      BACKUP_GIT_REMOTE: remote,
      BACKUP_GIT_BRANCH: 'main',
    },
  });
}, 60_000);

afterAll(async () => {
  await svc?.close();
  await seed?.drop().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
  rmSync(dirname(remote), { recursive: true, force: true });
});

describe('offsite git copy', () => {
  it('github-status before any backup: configured, nothing pushed, not in sync', async () => {
    const res = await svc.inject(apiKeyPrincipal(['backups:read']), { method: 'GET', url: '/backups/github-status' });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().data).toMatchObject({ configured: true, branch: 'main', latest_offsite: null, in_sync: false });
  });

  it('pushes each backup to the bare remote and reports it in sync by checksum', async () => {
    const b = await backupOnce();
    expect(b.status).toBe('completed');
    const tree = execFileSync('git', ['--git-dir', remote, 'ls-tree', '--name-only', 'main'], { encoding: 'utf8' });
    expect(tree.split('\n')).toContain(b.filename);
    const blob = execFileSync('git', ['--git-dir', remote, 'show', `main:${b.filename}`]);
    expect(createHash('sha256').update(blob).digest('hex')).toBe(b.sha256);
    const status = (await svc.inject(admin, { method: 'GET', url: '/backups/github-status' })).json().data;
    expect(status.latest_offsite).toMatchObject({ filename: b.filename, sha256: b.sha256 });
    expect(status.newest_local).toMatchObject({ filename: b.filename, sha256: b.sha256 });
    expect(status.in_sync).toBe(true);
    const listed = (await svc.inject(admin, { method: 'GET', url: '/backups' })).json().data.find((x: { id: number }) => x.id === b.id);
    expect(listed.offsite.status).toBe('pushed');
  });

  it('reports out of sync when the newest local backup is not offsite', async () => {
    // A newer local backup the remote does not have (the push is simulated as missing).
    const [last] = await sql<{ id: number }>(svc.databaseUrl, `SELECT id FROM backups ORDER BY id DESC LIMIT 1`);
    const filename = backupFilename('seed', new Date(Date.now() + 60_000));
    writeFileSync(join(dir, filename), 'x');
    await svc.ctx.db.insert(backups).values({ filename, database: 'seed', status: 'completed', trigger: 'manual', sizeBytes: 1, sha256: 'f'.repeat(64), completedAt: new Date(Date.now() + 60_000) });
    const status = (await svc.inject(admin, { method: 'GET', url: '/backups/github-status' })).json().data;
    expect(status.newest_local.filename).toBe(filename);
    expect(status.in_sync).toBe(false);
    expect(status.newest_local_commit).toBeNull();
    await sql(svc.databaseUrl, `DELETE FROM backups WHERE id > ${last!.id}`);
    rmSync(join(dir, filename));
  });
});

describe('offsite order', () => {
  it('in sync when the newest local backup is on the remote branch even if another push landed after it', async () => {
    const older = await backupOnce();
    const newest = await backupOnce();
    // An older dump pushed last (concurrent jobs can finish their pushes in any order).
    await backupEnv(svc.ctx).offsite!.push({ path: join(dir, older.filename), filename: older.filename, sha256: older.sha256 });
    const status = (await svc.inject(admin, { method: 'GET', url: '/backups/github-status' })).json().data;
    expect(status.latest_offsite.filename).toBe(older.filename);
    expect(status.newest_local.filename).toBe(newest.filename);
    expect(status.newest_local_commit).toMatch(/^[0-9a-f]{40}$/);
    expect(status.in_sync).toBe(true);
  });
});

/** A one-shot git hook in the service's working clone that makes another replica push first, at that very moment. */
function competeOnce(hook: 'post-commit' | 'pre-push', name: string): string {
  const other = join(dirname(remote), `replica-${name}`);
  execFileSync('git', ['clone', '-q', remote, other]);
  const script = `#!/bin/sh
[ -e "${other}/.fired" ] && exit 0
touch "${other}/.fired"
env -u GIT_DIR -u GIT_INDEX_FILE -u GIT_WORK_TREE -u GIT_PREFIX sh -c 'cd "${other}" && git fetch -q origin && git checkout -q -B main origin/main && echo other > ${name}.txt && git add ${name}.txt && git -c user.name=r -c user.email=r@r commit -q -m "other replica ${name}" && git push -q origin HEAD:refs/heads/main'
`;
  writeFileSync(join(dir, '.offsite', '.git', 'hooks', hook), script, { mode: 0o755 });
  return other;
}

const remoteGit = (...args: string[]) => execFileSync('git', ['--git-dir', remote, ...args], { encoding: 'utf8' }).trim();

describe('offsite races between replicas', () => {
  for (const [hook, label] of [['post-commit', 'the remote moved after our fetch (non-fast-forward)'], ['pre-push', 'the remote moved during our push (ref lock)']] as const) {
    it(`a push rejected because ${label} is redone on the new tip`, async () => {
      const name = hook.replace('-', '');
      competeOnce(hook, name);
      try {
        const b = await backupOnce();
        const [row] = await sql<{ offsite_status: string; offsite_ref: string; offsite_error: string | null }>(svc.databaseUrl, `SELECT offsite_status, offsite_ref, offsite_error FROM backups WHERE id = ${b.id}`);
        expect(row!.offsite_error).toBeNull();
        expect(row!.offsite_status).toBe('pushed');
        // Both landed: ours on top of the other replica's commit.
        expect(remoteGit('rev-parse', 'main')).toBe(row!.offsite_ref);
        expect(remoteGit('log', '-1', '--format=%s', 'main~1')).toBe(`other replica ${name}`);
        expect(remoteGit('ls-tree', '--name-only', 'main').split('\n')).toEqual(expect.arrayContaining([`${name}.txt`, b.filename]));
      } finally {
        rmSync(join(dir, '.offsite', '.git', 'hooks', hook), { force: true });
      }
    });
  }

  it('two replicas pushing at once to the same branch: every push lands', async () => {
    const files = Array.from({ length: 6 }, (_, i) => {
      const filename = backupFilename('race', new Date(Date.UTC(2026, 0, 1, 0, 0, 0, i)));
      const path = join(tempDir('race'), filename);
      writeFileSync(path, `dump ${i}`);
      return { path, filename, sha256: createHash('sha256').update(`dump ${i}`).digest('hex') };
    });
    const replicas = [new GitOffsite(tempDir('replica-a'), remote, 'main'), new GitOffsite(tempDir('replica-b'), remote, 'main')];
    const results = await Promise.all(files.map((f, i) => replicas[i % 2]!.push(f)));
    expect(results.every((r) => /^[0-9a-f]{40}$/.test(r.ref))).toBe(true);
    const tree = remoteGit('ls-tree', '--name-only', 'main').split('\n');
    for (const f of files) {
      expect(tree).toContain(f.filename);
      expect(remoteGit('log', '--format=%s', 'main')).toContain(`backup ${f.filename} sha256=${f.sha256}`);
    }
    for (const r of replicas) rmSync(dirname(r.dir), { recursive: true, force: true });
    for (const f of files) rmSync(dirname(f.path), { recursive: true, force: true });
  });
});

describe('offsite failures', () => {
  it('an unreachable remote marks the offsite copy failed (token redacted), keeps the backup, and github-status answers 503', async () => {
    const env = backupEnv(svc.ctx);
    const good = env.offsite;
    env.offsite = new GitOffsite(dir, 'http://user:tok3n@127.0.0.1:9/nope.git', 'main');
    try {
      const b = await backupOnce();
      expect(b.status).toBe('completed');
      const [row] = await sql<{ offsite_status: string; offsite_error: string }>(svc.databaseUrl, `SELECT offsite_status, offsite_error FROM backups WHERE id = ${b.id}`);
      expect(row!.offsite_status).toBe('failed');
      expect(row!.offsite_error).not.toContain('tok3n');
      const status = await svc.inject(admin, { method: 'GET', url: '/backups/github-status' });
      expect(status.statusCode).toBe(503);
      expect(status.body).not.toContain('tok3n');
    } finally {
      env.offsite = good;
    }
  });
});

describe('retention', () => {
  it('keeps only the newest BACKUP_KEEP_LAST backups after each backup, deleting older files', async () => {
    const made = [];
    for (let i = 0; i < 3; i++) made.push(await backupOnce());
    const rows = await sql<{ filename: string; status: string; deleted_reason: string | null }>(svc.databaseUrl, `SELECT filename, status, deleted_reason FROM backups ORDER BY id`);
    const completed = rows.filter((r) => r.status === 'completed').map((r) => r.filename);
    expect(completed).toEqual(made.slice(-2).map((m) => m.filename));
    const deleted = rows.filter((r) => r.status === 'deleted');
    expect(deleted.length).toBe(rows.length - 2);
    expect(deleted.length).toBeGreaterThanOrEqual(2);
    expect(deleted.every((r) => r.deleted_reason === 'retention')).toBe(true);
    for (const r of deleted) expect(existsSync(join(dir, r.filename))).toBe(false);
    const dumps = readdirSync(dir).filter((f) => f.endsWith('.dump'));
    expect(dumps.sort()).toEqual([...completed].sort());
    // The offsite branch holds the same backups; what retention deleted stays in its history.
    const tree = remoteGit('ls-tree', '--name-only', 'main').split('\n');
    expect(tree.filter((f) => f.startsWith('seed-')).sort()).toEqual([...completed].sort());
    expect(tree.filter((f) => f.startsWith('race-')).length).toBe(6); // never recorded here: left alone
    const pushedThenDeleted = await sql<{ filename: string; sha256: string; offsite_ref: string }>(svc.databaseUrl,
      `SELECT filename, sha256, offsite_ref FROM backups WHERE status = 'deleted' AND offsite_status = 'pushed'`);
    expect(pushedThenDeleted.length).toBeGreaterThanOrEqual(2);
    for (const d of pushedThenDeleted) {
      const blob = execFileSync('git', ['--git-dir', remote, 'show', `${d.offsite_ref}:${d.filename}`]);
      expect(createHash('sha256').update(blob).digest('hex')).toBe(d.sha256);
      expect(remoteGit('log', '--format=%B', 'main')).toMatch(new RegExp(`Removed \\(deleted locally; kept in history\\):[^]*${d.filename.replace(/\./g, '\\.')}`));
    }
  });

  it('a backup and a removal that could not be pushed, and a manual delete, reach the branch with the next successful push', async () => {
    const env = backupEnv(svc.ctx);
    const good = env.offsite;
    const [oldest] = await sql<{ filename: string }>(svc.databaseUrl, `SELECT filename FROM backups WHERE status = 'completed' ORDER BY id LIMIT 1`);
    env.offsite = new GitOffsite(dir, join(dirname(remote), 'missing.git'), 'main');
    let unpushed: Awaited<ReturnType<typeof backupOnce>>;
    try {
      unpushed = await backupOnce(); // retention deletes `oldest`, the push fails
      expect(unpushed.status).toBe('completed');
    } finally {
      env.offsite = good;
    }
    expect(remoteGit('ls-tree', '--name-only', 'main').split('\n')).toContain(oldest!.filename);
    const [manual] = await sql<{ filename: string }>(svc.databaseUrl, `SELECT filename FROM backups WHERE status = 'completed' AND offsite_status = 'pushed' ORDER BY id LIMIT 1`);
    expect((await svc.inject(admin, { method: 'DELETE', url: `/backups/${manual!.filename}` })).statusCode).toBe(200);
    const next = await backupOnce();
    const tree = remoteGit('ls-tree', '--name-only', 'main').split('\n');
    expect(tree).not.toContain(oldest!.filename);
    expect(tree).not.toContain(manual!.filename);
    expect(tree).toContain(next.filename);
    // The backup whose push failed went along with the next push.
    expect(tree).toContain(unpushed.filename);
    const [retried] = await sql<{ offsite_status: string; offsite_ref: string }>(svc.databaseUrl, `SELECT offsite_status, offsite_ref FROM backups WHERE id = ${unpushed.id}`);
    expect(retried).toEqual({ offsite_status: 'pushed', offsite_ref: remoteGit('rev-parse', 'main') });
    expect(createHash('sha256').update(execFileSync('git', ['--git-dir', remote, 'show', `main:${unpushed.filename}`])).digest('hex')).toBe(unpushed.sha256);
    const completed = (await sql<{ filename: string }>(svc.databaseUrl, `SELECT filename FROM backups WHERE status = 'completed'`)).map((r) => r.filename);
    expect(tree.filter((f) => f.startsWith('seed-')).sort()).toEqual(completed.filter((f) => f.startsWith('seed-')).sort());
  });

  it('keeps the newest backup of each of the last D days beyond the last N', async () => {
    Object.assign(svc.ctx.config, { BACKUP_KEEP_LAST: 1, BACKUP_KEEP_DAILY_DAYS: 3 });
    try {
      await sql(svc.databaseUrl, `DELETE FROM backups`);
      const now = new Date('2026-06-10T12:00:00Z');
      const at = (days: number, hour: number) => new Date(Date.UTC(2026, 5, 10 - days, hour));
      const plan = [at(0, 11), at(0, 9), at(1, 20), at(1, 8), at(2, 5), at(3, 23), at(5, 1)];
      const names: string[] = [];
      for (const t of plan) {
        const filename = backupFilename('daily', t);
        writeFileSync(join(dir, filename), 'x');
        await svc.ctx.db.insert(backups).values({ filename, database: 'daily', status: 'completed', trigger: 'schedule', sizeBytes: 1, sha256: 'a'.repeat(64), completedAt: t, createdAt: t });
        names.push(filename);
      }
      const removed = await applyRetention(svc.ctx, 'daily', now);
      // Kept: newest overall (day 0 11h), newest of day -1 (20h), newest of day -2 (5h).
      expect(removed.sort()).toEqual([names[1], names[3], names[5], names[6]].sort());
      for (const n of removed) expect(existsSync(join(dir, n))).toBe(false);
      for (const n of [names[0], names[2], names[4]]) expect(existsSync(join(dir, n!))).toBe(true);
    } finally {
      Object.assign(svc.ctx.config, { BACKUP_KEEP_LAST: 2, BACKUP_KEEP_DAILY_DAYS: 0 });
    }
  });
});
