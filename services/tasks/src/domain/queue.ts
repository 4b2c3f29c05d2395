/**
 * The two statements of a claim, run in this order: expired leases on their last attempt become
 * dead, then up to `$4` claimable jobs (pending and available, or claimed with an expired lease and
 * attempts left) are taken, highest priority first, each by exactly one worker (FOR UPDATE SKIP LOCKED).
 * Parameters: $1 org, $2 queue, then for the claim $3 task type (or null), $4 batch size, $5 worker id.
 */
export const EXPIRE_LAST_LEASES_SQL = `
  WITH expired AS (
    SELECT id FROM queue_jobs
     WHERE org_id = $1 AND queue_name = $2 AND status = 'claimed' AND lease_expires_at < now() AND attempts >= max_attempts
     FOR UPDATE SKIP LOCKED)
  UPDATE queue_jobs j SET status = 'dead', last_error = coalesce(j.last_error, 'lease expired'), worker_id = NULL,
         lease_expires_at = NULL, updated_at = now()
    FROM expired WHERE j.id = expired.id`;

/** Matches queue_jobs_claimable_idx (same predicate, same order incl. NULLS LAST), so it never sorts the queue. */
export const CLAIM_SQL = `
  WITH next AS (
    SELECT id FROM queue_jobs
     WHERE org_id = $1 AND queue_name = $2 AND ($3::text IS NULL OR task_type = $3) AND status IN ('pending', 'claimed')
       AND ((status = 'pending' AND available_at <= now())
         OR (status = 'claimed' AND lease_expires_at < now() AND attempts < max_attempts))
     ORDER BY priority DESC NULLS LAST, id
     LIMIT $4
     FOR UPDATE SKIP LOCKED)
  UPDATE queue_jobs j SET status = 'claimed', worker_id = $5, attempts = j.attempts + 1,
         lease_expires_at = now() + make_interval(secs => j.timeout_seconds), updated_at = now()
    FROM next WHERE j.id = next.id
  RETURNING j.*`;
