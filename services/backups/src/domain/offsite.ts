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
    if (remoteHead) await this.git(['checkout', '-q', '-B', this.branch, `origin/${this.branch}`]);
    else await this.git(['checkout', '-q', '-B', this.branch]).catch(() => {});
  }

  /** Commits the file (message carries its checksum) and pushes; returns the commit id. */
  push(file: string, filename: string, sha256: string): Promise<string> {
    return this.serial(async () => {
      await this.ensureClone();
      await copyFile(file, join(this.dir, filename));
      await this.git(['add', '--', filename]);
      // --allow-empty: pushing a file the branch already has (a retry) still records the push.
      await this.git(['commit', '-q', '--allow-empty', '-m', `backup ${filename} sha256=${sha256}`]);
      await this.git(['push', '-q', 'origin', `HEAD:refs/heads/${this.branch}`]);
      return this.git(['rev-parse', 'HEAD']);
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
