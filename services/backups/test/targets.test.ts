import { describe, expect, it } from 'vitest';
import { pgEnv, redact } from '../src/domain/pg.js';
import { fullXid } from '../src/domain/restore.js';
import { backupFilename, FILENAME_RE, parseDatabaseUrls, resolveBackupDir, safePath } from '../src/domain/targets.js';

describe('BACKUP_DATABASE_URLS', () => {
  it('defaults to the six service databases on the server of DATABASE_URL', () => {
    const m = parseDatabaseUrls(undefined, 'postgres://bk:pw@db.internal:6543/aos_backups?sslmode=require');
    expect([...m.keys()]).toEqual(['aos_identity', 'aos_agents', 'aos_tasks', 'aos_billing', 'aos_notifications', 'aos_backups']);
    expect(m.get('aos_tasks')).toBe('postgres://bk:pw@db.internal:6543/aos_tasks?sslmode=require');
  });

  it('accepts a JSON map or a comma list and rejects bad names and URLs without echoing them', () => {
    expect([...parseDatabaseUrls('{"a":"postgres://h/a"}', 'postgres://h/x').keys()]).toEqual(['a']);
    expect([...parseDatabaseUrls('a=postgres://h/a, b_2=postgres://u:p@h:5433/b', 'postgres://h/x').entries()])
      .toEqual([['a', 'postgres://h/a'], ['b_2', 'postgres://u:p@h:5433/b']]);
    expect(() => parseDatabaseUrls('../x=postgres://h/a', 'postgres://h/x')).toThrow(/name/);
    expect(() => parseDatabaseUrls('a=mysql://u:topsecret@h/a', 'postgres://h/x')).toThrow(/postgres/);
    try {
      parseDatabaseUrls('a=mysql://u:topsecret@h/a', 'postgres://h/x');
    } catch (err) {
      expect((err as Error).message).not.toContain('topsecret');
    }
    expect(() => parseDatabaseUrls('{bad json', 'postgres://h/x')).toThrow(/JSON/);
  });
});

describe('filenames and paths', () => {
  it('generated names match the strict pattern; anything with separators, dots or NUL does not', () => {
    const name = backupFilename('aos_tasks', new Date('2026-11-24T23:38:11.123Z'));
    expect(name).toBe('aos_tasks-2026-11-24T23-38-11-123Z.dump');
    expect(FILENAME_RE.test(name)).toBe(true);
    for (const bad of ['../' + name, name + '\0', `/tmp/${name}`, `a/${name}`, '..', `${name}/..`, `${name}\\x`]) {
      expect(FILENAME_RE.test(bad), bad).toBe(false);
      expect(safePath('/srv/backups', bad)).toBeNull();
    }
    expect(safePath('/srv/backups', name)).toBe(`/srv/backups/${name}`);
  });

  it('relative BACKUP_DIR resolves against the repository root', () => {
    expect(resolveBackupDir('/abs/dir/')).toBe('/abs/dir');
    expect(resolveBackupDir('.aos/backups')).toMatch(/\/\.aos\/backups$/);
    expect(resolveBackupDir('.aos/backups')).not.toContain('/services/');
  });
});

describe('pg helpers', () => {
  it('passes the password through PGPASSWORD and redacts it from messages', () => {
    const env = pgEnv('postgres://u%40x:p%3Ass@h:5433/db?sslmode=require');
    expect(env).toMatchObject({ PGHOST: 'h', PGPORT: '5433', PGUSER: 'u@x', PGPASSWORD: 'p:ss', PGDATABASE: 'db', PGSSLMODE: 'require' });
    expect(redact('auth failed p:ss at postgres://u:p@h/db', 'postgres://u%40x:p%3Ass@h:5433/db')).toBe('auth failed *** at postgres://***');
  });
});

describe('fullXid', () => {
  it('qualifies a 32-bit xid with the epoch of the nearest xmax, behind or slightly ahead, across epochs', () => {
    const e = (epoch: bigint, low: bigint) => (epoch << 32n) | low;
    expect(fullXid(100n, e(0n, 150n))).toBe('100');
    expect(fullXid(160n, e(0n, 150n))).toBe('160'); // assigned after the snapshot
    expect(fullXid(100n, e(3n, 150n))).toBe(String(e(3n, 100n)));
    expect(fullXid(0xfffffff0n, e(3n, 5n))).toBe(String(e(2n, 0xfffffff0n))); // previous epoch
    expect(fullXid(3n, e(2n, 0xfffffffen))).toBe(String(e(3n, 3n))); // next epoch, just ahead
  });
});
