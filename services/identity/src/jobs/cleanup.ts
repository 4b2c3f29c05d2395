import { Queues } from '@aos/contracts';
import type { JobEnvelope } from '@aos/queue';
import type { Ctx } from '../service.js';

export const CLEANUP_SCHEDULER_ID = 'identity-cleanup';
const BATCH = 5_000;

/** The moment a refresh token stopped being usable: expired, used (rotated) or revoked, whichever came first. */
const REFRESH_ENDED = `LEAST(expires_at, COALESCE(used_at, 'infinity'), COALESCE(revoked_at, 'infinity'))`;

type Config = Ctx['config'];

/**
 * Statements of one cleanup run with their parameter, each deleting at most one batch (repeated
 * until nothing is left, so a backlog never holds long locks).
 */
const SWEEPS = {
  api_key_usage: [`DELETE FROM api_key_usage WHERE id IN (
    SELECT id FROM api_key_usage WHERE $1::int > 0 AND at < now() - make_interval(days => $1) LIMIT ${BATCH})`, (c: Config) => c.API_KEY_USAGE_RETENTION_DAYS],
  // A window that has ended no longer throttles anything.
  login_failures: [`DELETE FROM login_failures WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM login_failures WHERE window_start < now() - make_interval(mins => $1) LIMIT ${BATCH}))`, (c: Config) => c.LOGIN_FAILURE_WINDOW_MINUTES],
  login_known_addresses: [`DELETE FROM login_known_addresses WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM login_known_addresses WHERE last_success_at < now() - make_interval(days => $1) LIMIT ${BATCH}))`, (c: Config) => c.LOGIN_KNOWN_ADDRESS_DAYS],
  password_resets: [`DELETE FROM password_resets WHERE id IN (
    SELECT id FROM password_resets WHERE LEAST(expires_at, COALESCE(used_at, 'infinity')) < now() - make_interval(days => $1) LIMIT ${BATCH})`, (c: Config) => c.AUTH_RECORD_RETENTION_DAYS],
  // Accepted invitations stay: they record who invited whom.
  invites: [`DELETE FROM invites WHERE id IN (
    SELECT id FROM invites WHERE accepted_at IS NULL AND expires_at < now() - make_interval(days => $1) LIMIT ${BATCH})`, (c: Config) => c.AUTH_RECORD_RETENTION_DAYS],
  // Whole families only: a used token of a live family must stay to detect its reuse.
  refresh_tokens: [`DELETE FROM refresh_tokens WHERE family_id IN (
    SELECT family_id FROM refresh_tokens GROUP BY family_id HAVING max(${REFRESH_ENDED}) < now() - make_interval(days => $1) LIMIT ${BATCH})`, (c: Config) => c.AUTH_RECORD_RETENTION_DAYS],
} satisfies Record<string, [string, (c: Config) => number]>;

export type CleanupResult = Record<keyof typeof SWEEPS, number>;

/**
 * Deletes what can no longer be used nor is worth keeping: API-key usage past its retention, ended
 * login-failure windows, client addresses no longer known (LOGIN_KNOWN_ADDRESS_DAYS), and reset links, invitations and refresh-token families that stopped being
 * usable more than AUTH_RECORD_RETENTION_DAYS ago. (Revoked `jti`s live in the gateway's Redis with
 * the token's remaining lifetime as TTL: nothing to clean here.)
 */
export async function runCleanup(ctx: Ctx): Promise<CleanupResult> {
  const result = {} as CleanupResult;
  for (const [name, [statement, param]] of Object.entries(SWEEPS) as [keyof typeof SWEEPS, [string, (c: Config) => number]][]) {
    let total = 0;
    for (;;) {
      const { rowCount } = await ctx.pool.query(statement, [param(ctx.config)]);
      total += rowCount ?? 0;
      if (!rowCount) break;
    }
    result[name] = total;
  }
  return result;
}

/** A worker plus one job scheduler (shared by every replica: one run per interval in all). */
export async function startCleanup(ctx: Ctx): Promise<void> {
  ctx.queues.worker(Queues.identityCleanup, async () => {
    const removed = await runCleanup(ctx);
    if (Object.values(removed).some((n) => n > 0)) ctx.log.info(removed, 'identity cleanup');
    return removed;
  });
  await ctx.queues.queue(Queues.identityCleanup).upsertJobScheduler(CLEANUP_SCHEDULER_ID, { every: ctx.config.CLEANUP_INTERVAL_SECONDS * 1_000 }, {
    name: 'cleanup',
    data: { payload: {}, trace: {} } satisfies JobEnvelope<Record<string, never>>,
    // The next interval is the retry.
    opts: { attempts: 1 },
  });
}
