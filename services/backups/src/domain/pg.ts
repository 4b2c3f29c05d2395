import { spawn } from 'node:child_process';
import pg from 'pg';

/** libpq environment for a URL: the password travels in PGPASSWORD, never on the command line. */
export function pgEnv(url: string): NodeJS.ProcessEnv {
  const u = new URL(url);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    LANG: 'C',
    PGHOST: decodeURIComponent(u.hostname),
    PGPORT: u.port || '5432',
    PGDATABASE: decodeURIComponent(u.pathname.slice(1)),
    PGUSER: decodeURIComponent(u.username) || 'postgres',
    PGCONNECT_TIMEOUT: '10',
    PGAPPNAME: 'aos-backups',
  };
  if (u.password) env.PGPASSWORD = decodeURIComponent(u.password);
  const sslmode = u.searchParams.get('sslmode');
  if (sslmode) env.PGSSLMODE = sslmode;
  return env;
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Removes anything that looks like the URL's password from a message. */
export function redact(message: string, url: string): string {
  let out = message;
  try {
    const pw = decodeURIComponent(new URL(url).password);
    if (pw) out = out.split(pw).join('***');
  } catch {
    // not a URL: nothing to redact
  }
  return out.replace(/postgres(?:ql)?:\/\/[^\s]*/g, 'postgres://***').slice(0, 2_000);
}

export interface RunResult { code: number | null; stderr: string }

/**
 * Runs a libpq tool; rejects on spawn errors, resolves with the exit code and stderr.
 * `stdin` is an open file descriptor handed to the tool (pg_restore reads an archive from it).
 */
export function runTool(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number, stdin?: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: [stdin ?? 'ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      if (stderr.length < 8_000) stderr += d.toString();
    });
    const timer = setTimeout(() => {
      stderr += `\n${cmd} timed out after ${timeoutMs} ms`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr: stderr.trim() });
    });
  });
}

const TABLES_SQL = `
  SELECT n.nspname AS schema, c.relname AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  ORDER BY 1, 2`;

const ident = (s: string) => `"${s.replace(/"/g, '""')}"`;

/** Exact row count of every user table, keyed `schema.table`. */
export async function countTables(client: pg.ClientBase): Promise<Record<string, number>> {
  const { rows } = await client.query<{ schema: string; name: string }>(TABLES_SQL);
  const counts: Record<string, number> = {};
  for (const r of rows) {
    const res = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${ident(r.schema)}.${ident(r.name)}`);
    counts[`${r.schema}.${r.name}`] = Number(res.rows[0]!.n);
  }
  return counts;
}

export async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000, application_name: 'aos-backups' });
  client.on('error', () => {});
  await client.connect();
  return client;
}

export async function countDatabase(url: string): Promise<Record<string, number>> {
  const client = await connect(url);
  try {
    return await countTables(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Runs `fn` on a connection to the server's maintenance database (create/drop databases). */
export async function onServer<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = await connect(withDatabase(url, 'postgres'));
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

export const quoteIdent = ident;

/**
 * Terminates the server sessions named `applicationName` (an orphaned pg_dump or pg_restore of a
 * dead process), waiting up to 5 s for each to be gone; returns how many were inside a transaction (those roll back).
 */
export async function terminateSessions(url: string, applicationName: string): Promise<number> {
  const client = await connect(url);
  try {
    const { rows } = await client.query<{ busy: boolean }>(
      `SELECT state IS DISTINCT FROM 'idle' AS busy, pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`,
      [applicationName]);
    return rows.filter((r) => r.busy).length;
  } finally {
    await client.end().catch(() => {});
  }
}
