import { isAbsolute, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The six service databases backed up by default. */
export const DEFAULT_DATABASES = ['aos_identity', 'aos_agents', 'aos_tasks', 'aos_billing', 'aos_notifications', 'aos_backups'];

/** A logical database name: also the first part of every dump filename. */
export const DB_NAME_RE = /^[a-z0-9_]{1,63}$/;

/** `<db>-<UTC timestamp>.dump`, e.g. `aos_tasks-2026-11-24T23-38-11-123Z.dump`; nothing else is ever served. */
export const FILENAME_RE = /^[a-z0-9_]{1,63}-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z\.dump$/;

export function backupFilename(database: string, at: Date): string {
  return `${database}-${at.toISOString().replace(/[:.]/g, '-')}.dump`;
}

/** Parses BACKUP_DATABASE_URLS (JSON object or `name=url,name=url`); unset derives the service databases from DATABASE_URL. */
export function parseDatabaseUrls(raw: string | undefined, databaseUrl: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!raw || raw.trim() === '') {
    for (const name of DEFAULT_DATABASES) {
      const u = new URL(databaseUrl);
      u.pathname = `/${name}`;
      out.set(name, u.toString());
    }
    return out;
  }
  let entries: [string, unknown][];
  const trimmed = raw.trim();
  if (trimmed.startsWith('{')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(trimmed);
    } catch {
      throw new Error('BACKUP_DATABASE_URLS: not valid JSON');
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('BACKUP_DATABASE_URLS: must be a JSON object');
    entries = Object.entries(parsed as Record<string, unknown>);
  } else {
    entries = trimmed.split(',').map((s) => s.trim()).filter(Boolean).map((pair) => {
      const i = pair.indexOf('=');
      if (i <= 0) throw new Error('BACKUP_DATABASE_URLS: each entry must be name=url');
      return [pair.slice(0, i).trim(), pair.slice(i + 1).trim()];
    });
  }
  for (const [name, url] of entries) {
    // Never echo the URL: it may carry a password.
    if (!DB_NAME_RE.test(name)) throw new Error(`BACKUP_DATABASE_URLS: name "${name.slice(0, 64)}" must match ${DB_NAME_RE.source}`);
    if (typeof url !== 'string') throw new Error(`BACKUP_DATABASE_URLS: ${name} must be a postgres:// URL`);
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw new Error(`BACKUP_DATABASE_URLS: ${name} must be a postgres:// URL`);
    }
    if (!['postgres:', 'postgresql:'].includes(u.protocol) || !u.hostname || u.pathname.length < 2) {
      throw new Error(`BACKUP_DATABASE_URLS: ${name} must be a postgres:// URL with a host and a database`);
    }
    out.set(name, url);
  }
  if (out.size === 0) throw new Error('BACKUP_DATABASE_URLS: no database given');
  return out;
}

/** BACKUP_DIR resolved: relative paths are relative to the repository root. */
export function resolveBackupDir(dir: string): string {
  if (isAbsolute(dir)) return resolve(dir);
  return resolve(fileURLToPath(new URL('../../../../', import.meta.url)), dir);
}

/** The path of a recorded backup file, or null when the name could escape BACKUP_DIR. */
export function safePath(dir: string, filename: string): string | null {
  if (!FILENAME_RE.test(filename)) return null;
  const full = resolve(dir, filename);
  if (!full.startsWith(dir.endsWith(sep) ? dir : dir + sep)) return null;
  return full;
}
