import { Queues } from '@aos/contracts';
import { runSweeps, scheduleSweeps, type Sweep } from '@aos/runtime';
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
} satisfies Record<string, Sweep<Config>>;

export type CleanupResult = Record<keyof typeof SWEEPS, number>;

/**
 * Deletes what can no longer be used nor is worth keeping: API-key usage past its retention, ended
 * login-failure windows, client addresses no longer known (LOGIN_KNOWN_ADDRESS_DAYS), and reset links, invitations and refresh-token families that stopped being
 * usable more than AUTH_RECORD_RETENTION_DAYS ago. (Revoked `jti`s live in the gateway's Redis with
 * the token's remaining lifetime as TTL: nothing to clean here.)
 */
export const runCleanup = (ctx: Ctx): Promise<CleanupResult> => runSweeps(ctx, SWEEPS);

/** Runs the sweeps every CLEANUP_INTERVAL_SECONDS, once across all replicas. */
export const startCleanup = (ctx: Ctx): Promise<void> =>
  scheduleSweeps(ctx, Queues.identityCleanup, CLEANUP_SCHEDULER_ID, ctx.config.CLEANUP_INTERVAL_SECONDS, () => runCleanup(ctx));
