import { execFile } from 'node:child_process';
import { copyFile, mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/** Git identity and no prompts: a remote asking for credentials fails instead of hanging. */
const GIT_ENV = {
  ...process.env,
  GIT_TERMINAL_PROMPT: '0',
  GIT_AUTHOR_NAME: 'aos-backups', GIT_AUTHOR_EMAIL: 'backups@aos.local',
  GIT_COMMITTER_NAME: 'aos-backups', GIT_COMMITTER_EMAIL: 'backups@aos.local',
};

/** Pushes of one backup before giving up when other replicas keep pushing first. */
export const PUSH_ATTEMPTS = 8;

/**
 * The push lost a race with another pusher: the remote moved after our fetch (non-fast-forward,
 * "fetch first") or while the remote updated the ref (lock / stale old value).
 */
function isRaceRejection(err: unknown): boolean {
  const text = `${(err as { stderr?: string }).stderr ?? ''} ${(err as Error).message ?? ''}`;
  return /fetch first|non-fast-forward|cannot lock ref|failed to update ref|incorrect old value|stale info/i.test(text);
}

export interface OffsiteFile { path: string; filename: string; sha256: string }

export interface OffsiteCommit { ref: string; filename: string | null; sha256: string | null; committedAt: string }

/**
 * Offsite copies in a git remote: each dump is committed into a working clone under
 * BACKUP_DIR/.offsite and pushed. Git calls of one process are serialized.
 */
export class GitOffsite {
  private chain: Promise<unknown> = Promise.resolve();
  readonly dir: string;

  constructor(backupDir: string, private readonly remote: string, private readonly branch: string, private readonly timeoutMs = 10 * 60_000) {
    this.dir = join(backupDir, '.offsite');
  }

  private git(args: string[]): Promise<string> {
    return exec('git', ['-C', this.dir, ...args], { env: GIT_ENV, timeout: this.timeoutMs, maxBuffer: 16 * 1024 * 1024 }).then((r) => r.stdout.trim());
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => {});
    return next;
  }

  private async ensureClone(): Promise<void> {
    const exists = await stat(join(this.dir, '.git')).then(() => true, () => false);
    if (!exists) {
      await mkdir(this.dir, { recursive: true });
      await this.git(['init', '-q', '-b', this.branch]);
      await this.git(['remote', 'add', 'origin', this.remote]);
    } else {
      await this.git(['remote', 'set-url', 'origin', this.remote]);
    }
    await this.git(['fetch', '-q', 'origin']);
    const remoteHead = await this.git(['rev-parse', '--verify', '-q', `refs/remotes/origin/${this.branch}`]).catch(() => '');
    // Forced: a commit of an earlier rejected push (or any local leftover) is dropped for the remote tip.
    if (remoteHead) await this.git(['checkout', '-q', '-f', '-B', this.branch, `origin/${this.branch}`]);
    else await this.git(['checkout', '-q', '-f', '-B', this.branch]).catch(() => {});
    await this.git(['clean', '-q', '-f', '-d']);
  }

  /**
   * Commits `file` (the subject carries its checksum) and the `also` files (earlier backups whose
   * push failed; one `backup <name> sha256=<hex>` line each in the body) on the remote tip,
   * removes from the tree the files `prune` picks among those on the branch (backups deleted
   * locally; history keeps them), and pushes. A push rejected because another replica pushed
   * first (non-fast-forward) is redone on the new tip, up to PUSH_ATTEMPTS times.
   */
  push(file: OffsiteFile, opts: { also?: OffsiteFile[]; prune?: (onBranch: string[]) => Promise<string[]> } = {}): Promise<{ ref: string; removed: string[]; attempts: number }> {
    const files = [file, ...(opts.also ?? []).filter((f) => f.filename !== file.filename)];
    const adding = new Set(files.map((f) => f.filename));
    return this.serial(async () => {
      for (let attempt = 1; ; attempt++) {
        await this.ensureClone();
        const onBranch = (await this.git(['ls-files', '-z'])).split('\0').filter((f) => f.length > 0);
        const removed = opts.prune ? [...new Set(await opts.prune(onBranch))].filter((f) => !adding.has(f) && onBranch.includes(f)).sort() : [];
        for (const f of files) await copyFile(f.path, join(this.dir, f.filename));
        await this.git(['add', '--', ...adding]);
        if (removed.length > 0) await this.git(['rm', '-q', '--', ...removed]);
        const also = files.slice(1).map((f) => `backup ${f.filename} sha256=${f.sha256}`);
        const body = [
          ...(also.length > 0 ? [`Also (earlier pushes failed):\n${also.join('\n')}`] : []),
          ...(removed.length > 0 ? [`Removed (deleted locally; kept in history):\n${removed.join('\n')}`] : []),
        ].map((p) => `\n\n${p}`).join('');
        // --allow-empty: pushing a file the branch already has (a retry) still records the push.
        await this.git(['commit', '-q', '--allow-empty', '-m', `backup ${file.filename} sha256=${file.sha256}${body}`]);
        try {
          await this.git(['push', '-q', 'origin', `HEAD:refs/heads/${this.branch}`]);
        } catch (err) {
          if (attempt >= PUSH_ATTEMPTS || !isRaceRejection(err)) throw err;
          await new Promise((r) => setTimeout(r, 50 * attempt + Math.floor(Math.random() * 100 * attempt)));
          continue;
        }
        return { ref: await this.git(['rev-parse', 'HEAD']), removed, attempts: attempt };
      }
    });
  }

  /**
   * After a fetch: the newest commit of the remote branch (null when nothing was pushed yet)
   * and, for `wanted`, the commit that pushed exactly that file with that checksum (null when absent).
   */
  status(wanted: { filename: string; sha256: string } | null): Promise<{ latest: OffsiteCommit | null; wanted: string | null }> {
    return this.serial(async () => {
      await this.ensureClone();
      const branch = `refs/remotes/origin/${this.branch}`;
      const out = await this.git(['log', '-1', '--format=%H%x09%cI%x09%s', branch]).catch(() => '');
      if (!out) return { latest: null, wanted: null };
      const [ref, committedAt, subject] = out.split('\t') as [string, string, string];
      const m = /^backup (\S+) sha256=([0-9a-f]{64})$/.exec(subject ?? '');
      const latest = { ref, committedAt, filename: m?.[1] ?? null, sha256: m?.[2] ?? null };
      if (!wanted) return { latest, wanted: null };
      if (latest.filename === wanted.filename && latest.sha256 === wanted.sha256) return { latest, wanted: ref };
      // Pushes of concurrent jobs can land in any order: look the file up, not only the head.
      const found = await this.git(['log', '-1', '--format=%H', '--fixed-strings', `--grep=backup ${wanted.filename} sha256=${wanted.sha256}`, branch]).catch(() => '');
      return { latest, wanted: found || null };
    });
  }
}
