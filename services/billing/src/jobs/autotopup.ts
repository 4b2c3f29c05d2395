import { systemMeta } from '@aos/bus';
import { Queues } from '@aos/contracts';
import { UnrecoverableError, type JobEnvelope } from '@aos/queue';
import type { Executor } from '@aos/db';
import { and, eq, inArray, isNull, or, sql } from 'drizzle-orm';
import Stripe from 'stripe';
import type { Ctx } from '../service.js';
import { autoTopupConfigs, autoTopupRuns, customers } from '../db/schema.js';
import { findPackage, type Ledger } from '../domain/catalog.js';
import { evaluateThreshold, lockAccount } from '../domain/ledger.js';
import { stripeClient, stripeConfigured } from '../domain/stripe.js';
import { creditPaymentIntent } from '../domain/webhook.js';

export interface TopupJob { crossingId: string }

const jobIdOf = (crossingId: string) => `topup.${crossingId}`;

export function enqueueTopup(ctx: Ctx, crossingId: string) {
  return ctx.queues.add<TopupJob>(Queues.autoTopup, 'charge', { crossingId }, {
    jobId: jobIdOf(crossingId), attempts: 5, backoff: { type: 'exponential', delay: 2_000 },
  });
}

/**
 * Queues the run's job again unless it is still waiting, delayed or running. A job that gave up
 * (failed: BullMQ keeps it for days under the same id, so a plain add would be ignored) or
 * finished is replaced. The Stripe idempotency key comes from the crossing, not the job.
 */
async function requeueTopup(ctx: Ctx, crossingId: string): Promise<boolean> {
  const job = await ctx.queues.queue(Queues.autoTopup).getJob(jobIdOf(crossingId));
  if (job) {
    const state = await job.getState();
    if (state !== 'failed' && state !== 'completed' && state !== 'unknown') return false;
    await job.remove();
  }
  await enqueueTopup(ctx, crossingId);
  return true;
}

type Run = typeof autoTopupRuns.$inferSelect;

/** Runs a job may still settle: a webhook that settled the run first (succeeded, failed) keeps its outcome. */
const OPEN = ['pending', 'processing'];

/** Settles the job's run unless a webhook did meanwhile; returns whether it did. */
async function finish(ctx: Ctx, run: Run, status: string, reason: string | null, paymentIntentId: string | null = null, tx: Executor = ctx.db): Promise<boolean> {
  const settled = await tx.update(autoTopupRuns).set({ status, reason, paymentIntentId: paymentIntentId ?? run.paymentIntentId, updatedAt: new Date() })
    .where(and(eq(autoTopupRuns.id, run.id), inArray(autoTopupRuns.status, OPEN))).returning({ id: autoTopupRuns.id });
  return settled.length > 0;
}

/** The off-session charge of one crossing: the same request (and key) on every attempt. */
export function topupIntent(ctx: Ctx, run: Run, cfg: { tenantId: string | null }, customerId: string, paymentMethod: string) {
  const pkg = findPackage(run.packageSlug, run.ledger as Ledger)!;
  const params: Stripe.PaymentIntentCreateParams = {
    amount: pkg.price_cents, currency: ctx.config.BILLING_CURRENCY, customer: customerId, payment_method: paymentMethod,
    off_session: true, confirm: true, description: `AOS auto top-up: ${pkg.name}`,
    metadata: {
      org_id: run.orgId, ...(cfg.tenantId ? { tenant_id: cfg.tenantId } : {}), kind: 'auto_topup', ledger: pkg.ledger,
      package_slug: pkg.slug, amount: String(pkg.amount), crossing_id: run.crossingId,
    },
  };
  return { params, idempotencyKey: `aos-topup-${run.crossingId}` };
}

/**
 * Charges the saved card once for one threshold crossing. The run row is claimed under the
 * config's lock (which serialises the monthly cap), and the PaymentIntent carries the
 * crossing id as its idempotency key: a retried job can never charge twice.
 */
export async function processTopup(ctx: Ctx, { crossingId }: TopupJob): Promise<string> {
  const claim = await ctx.db.transaction(async (tx) => {
    // Lock order config → run, the same as a posting (account → config → run): no deadlock.
    const [peek] = await tx.select().from(autoTopupRuns).where(eq(autoTopupRuns.crossingId, crossingId));
    if (!peek) return { done: 'missing' };
    const [cfg] = await tx.select().from(autoTopupConfigs)
      .where(and(eq(autoTopupConfigs.orgId, peek.orgId), eq(autoTopupConfigs.ledger, peek.ledger))).for('update');
    const [run] = await tx.select().from(autoTopupRuns).where(eq(autoTopupRuns.id, peek.id)).for('update');
    if (!run) return { done: 'missing' };
    if (run.status !== 'pending' && run.status !== 'processing') return { done: run.status };
    // Past Stripe's idempotency window a charge is never sent again: it is reconciled instead.
    if (run.status === 'processing' && Date.now() - (run.claimedAt ?? run.updatedAt).getTime() >= RESEND_WINDOW_MS) return { done: 'stale', run };
    if (!cfg || !cfg.enabled) {
      await tx.update(autoTopupRuns).set({ status: 'skipped', reason: 'auto top-up disabled', updatedAt: new Date() }).where(eq(autoTopupRuns.id, run.id));
      return { done: 'skipped' };
    }
    if (run.status === 'pending') {
      const [used] = await tx.select({ n: sql<string>`count(*)::text` }).from(autoTopupRuns).where(and(
        eq(autoTopupRuns.orgId, run.orgId), eq(autoTopupRuns.ledger, run.ledger), eq(autoTopupRuns.month, run.month),
        inArray(autoTopupRuns.status, ['processing', 'succeeded']),
      ));
      if (Number(used?.n ?? 0) >= cfg.maxMonthlyTopups) {
        await tx.update(autoTopupRuns).set({ status: 'capped', reason: `monthly limit of ${cfg.maxMonthlyTopups} top-ups reached`, updatedAt: new Date() }).where(eq(autoTopupRuns.id, run.id));
        return { done: 'capped' };
      }
      await tx.update(autoTopupRuns).set({ status: 'processing', claimedAt: new Date(), updatedAt: new Date() }).where(eq(autoTopupRuns.id, run.id));
    }
    const [customer] = await tx.select().from(customers).where(eq(customers.orgId, run.orgId));
    return { run, cfg, customer, done: null };
  });
  if (claim.done === 'stale') return reconcileInterrupted(ctx, claim.run!, claim.run!.claimedAt ?? claim.run!.updatedAt);
  if (claim.done !== null) return claim.done;
  const { run, cfg, customer } = claim;
  const pkg = findPackage(run.packageSlug, run.ledger as Ledger);
  if (!pkg) { await finish(ctx, run, 'failed', `unknown package ${run.packageSlug}`); return 'failed'; }
  if (!ctx.config.STRIPE_SECRET_KEY) { await finish(ctx, run, 'failed', 'STRIPE_SECRET_KEY is not set'); return 'failed'; }
  const paymentMethod = cfg.stripePaymentMethodId ?? customer?.defaultPaymentMethodId ?? null;
  if (!customer || !paymentMethod) { await finish(ctx, run, 'failed', 'no saved payment method'); return 'failed'; }

  const stripe = stripeClient(ctx);
  let intent: Stripe.PaymentIntent;
  try {
    const { params, idempotencyKey } = topupIntent(ctx, run, cfg, customer.stripeCustomerId, paymentMethod);
    intent = await stripe.paymentIntents.create(params, { idempotencyKey });
  } catch (err) {
    if (err instanceof Stripe.errors.StripeCardError || err instanceof Stripe.errors.StripeInvalidRequestError) {
      const piId = (err.raw as { payment_intent?: { id?: string } } | undefined)?.payment_intent?.id ?? null;
      await ctx.db.transaction(async (tx) => {
        // The payment_intent.payment_failed webhook may have recorded (and announced) this decline already.
        if (!await finish(ctx, run, 'failed', err.message, piId, tx)) return;
        await ctx.outbox.enqueue(tx, 'billing.payment.failed', {
          stripeObjectId: piId ?? run.crossingId, amountCents: pkg.price_cents, currency: ctx.config.BILLING_CURRENCY, reason: err.message, userId: null, email: null,
        }, systemMeta(cfg.tenantId, run.orgId));
      });
      throw new UnrecoverableError(`auto top-up declined: ${err.message}`);
    }
    throw err;
  }
  if (intent.status === 'succeeded') {
    await ctx.db.transaction((tx) => creditPaymentIntent(ctx, tx, intent, systemMeta(cfg.tenantId, run.orgId)));
    return 'succeeded';
  }
  // requires_action / processing: the payment_intent.succeeded webhook completes it.
  await finish(ctx, run, 'processing', `payment intent ${intent.status}`, intent.id);
  return intent.status;
}

/**
 * Stripe keeps an idempotency key for at least 24 h: within that window a run interrupted
 * mid-charge is simply charged again with the same key (Stripe answers with the first result
 * if the first request got through). An hour is kept as margin for the retry itself.
 */
export const RESEND_WINDOW_MS = 23 * 3_600_000;

const RECOVERY_SCHEDULER_ID = 'auto-topup-recovery';

type RecoveryOutcome = 'requeued' | 'running' | 'credited' | 'awaiting webhook' | 'failed' | 'interrupted' | 'skipped';

/** Reconciliation outcome per crossing id, for the log and the tests. */
export type RecoveryReport = Record<string, RecoveryOutcome>;

/**
 * Finds runs a crash or an outage left behind and finishes them: `pending` runs and runs left
 * `processing` without a PaymentIntent id (the worker stopped between the claim and Stripe's
 * answer, or the job gave up after its retries) are queued again while the idempotency key is
 * still honoured. Older interrupted runs are never re-sent (a second charge could slip through):
 * the PaymentIntent is looked up by its crossing id among the customer's recent ones and the run
 * settled by it; when Stripe has none, the run is `failed` ("interrupted…") and the crossing
 * re-armed, so a balance still below the threshold starts a fresh crossing with a new key.
 */
export async function recoverTopups(ctx: Ctx, now = new Date()): Promise<RecoveryReport> {
  const open = await ctx.db.select().from(autoTopupRuns).where(or(
    eq(autoTopupRuns.status, 'pending'),
    and(eq(autoTopupRuns.status, 'processing'), isNull(autoTopupRuns.paymentIntentId)),
  ));
  const report: RecoveryReport = {};
  for (const run of open) {
    const claimedAt = run.claimedAt ?? run.updatedAt;
    try {
      if (run.status === 'pending' || now.getTime() - claimedAt.getTime() < RESEND_WINDOW_MS) {
        report[run.crossingId] = (await requeueTopup(ctx, run.crossingId)) ? 'requeued' : 'running';
      } else {
        report[run.crossingId] = await reconcileInterrupted(ctx, run, claimedAt);
      }
    } catch (err) {
      ctx.log.warn({ err: (err as Error).message, crossingId: run.crossingId }, 'auto top-up recovery failed; next sweep retries');
    }
  }
  return report;
}

async function reconcileInterrupted(ctx: Ctx, run: Run, claimedAt: Date): Promise<RecoveryOutcome> {
  const [customer] = await ctx.db.select().from(customers).where(eq(customers.orgId, run.orgId));
  const meta = systemMeta(null, run.orgId);
  // Without a customer no charge can have been made; without a key it cannot be looked up yet.
  if (customer && !stripeConfigured(ctx)) return 'skipped';
  const intent = customer ? await findTopupIntent(ctx, customer.stripeCustomerId, run, claimedAt) : null;
  if (intent?.status === 'succeeded') {
    await ctx.db.transaction((tx) => creditPaymentIntent(ctx, tx, intent, meta));
    return 'credited';
  }
  if (intent && (intent.status === 'canceled' || intent.status === 'requires_payment_method')) {
    const reason = intent.last_payment_error?.message ?? `payment intent ${intent.status}`;
    await ctx.db.transaction(async (tx) => {
      const settled = await tx.update(autoTopupRuns).set({ status: 'failed', reason, paymentIntentId: intent.id, updatedAt: new Date() })
        .where(and(eq(autoTopupRuns.id, run.id), eq(autoTopupRuns.status, 'processing'))).returning({ id: autoTopupRuns.id });
      if (settled.length === 0) return;
      await ctx.outbox.enqueue(tx, 'billing.payment.failed', {
        stripeObjectId: intent.id, amountCents: intent.amount, currency: intent.currency, reason, userId: null, email: null,
      }, meta);
    });
    return 'failed';
  }
  if (intent) {
    // processing / requires_action: the payment_intent webhook settles it.
    await ctx.db.update(autoTopupRuns).set({ paymentIntentId: intent.id, reason: `payment intent ${intent.status}`, updatedAt: new Date() })
      .where(and(eq(autoTopupRuns.id, run.id), eq(autoTopupRuns.status, 'processing'), isNull(autoTopupRuns.paymentIntentId)));
    return 'awaiting webhook';
  }
  await ctx.db.transaction(async (tx) => {
    const ledger = run.ledger as Ledger;
    await lockAccount(tx, run.orgId, ledger); // lock order account → config → run
    const [cfg] = await tx.select().from(autoTopupConfigs)
      .where(and(eq(autoTopupConfigs.orgId, run.orgId), eq(autoTopupConfigs.ledger, ledger))).for('update');
    const failed = await tx.update(autoTopupRuns).set({
      status: 'failed', updatedAt: new Date(),
      reason: 'interrupted before Stripe confirmed the charge and not found at Stripe; not sent again after the 24 h idempotency window',
    }).where(and(eq(autoTopupRuns.id, run.id), eq(autoTopupRuns.status, 'processing'), isNull(autoTopupRuns.paymentIntentId))).returning({ id: autoTopupRuns.id });
    if (failed.length === 0 || !cfg) return;
    // Re-armed only if this is still the latest crossing (a newer one keeps its own state).
    if (!cfg.armed && `${run.orgId}.${ledger}.${cfg.crossings}` === run.crossingId) {
      await tx.update(autoTopupConfigs).set({ armed: true, updatedAt: new Date() })
        .where(and(eq(autoTopupConfigs.orgId, run.orgId), eq(autoTopupConfigs.ledger, ledger)));
      await evaluateThreshold(ctx, tx, run.orgId, ledger, systemMeta(cfg.tenantId, run.orgId));
    }
  });
  return 'interrupted';
}

/** The top-up's PaymentIntent among the customer's created since the claim (its metadata names the crossing). */
async function findTopupIntent(ctx: Ctx, customerId: string, run: Run, claimedAt: Date): Promise<Stripe.PaymentIntent | null> {
  const stripe = stripeClient(ctx);
  const since = Math.floor(claimedAt.getTime() / 1000) - 300;
  for await (const intent of stripe.paymentIntents.list({ customer: customerId, created: { gte: since }, limit: 100 })) {
    if (intent.metadata?.crossing_id === run.crossingId) return intent;
  }
  return null;
}

export async function startAutoTopupJobs(ctx: Ctx) {
  ctx.queues.worker<TopupJob | Record<string, never>>(Queues.autoTopup, async (payload, job) => {
    if (job.name !== 'recover') return processTopup(ctx, payload as TopupJob);
    const report = await recoverTopups(ctx);
    if (Object.keys(report).length > 0) ctx.log.info({ report }, 'auto top-up recovery');
    return report;
  }, { concurrency: 2 });
  // Crossings recorded while Redis was unreachable, and charges a crash interrupted, are picked
  // up now and then every interval (the scheduler is shared by all replicas).
  const report = await recoverTopups(ctx).catch((err: Error) => {
    ctx.log.warn({ err: err.message }, 'auto top-up recovery at start failed');
    return {};
  });
  if (Object.keys(report).length > 0) ctx.log.info({ report }, 'auto top-up recovery at start');
  await ctx.queues.queue(Queues.autoTopup).upsertJobScheduler(RECOVERY_SCHEDULER_ID, { every: ctx.config.BILLING_TOPUP_RECOVERY_INTERVAL_S * 1_000 }, {
    name: 'recover', data: { payload: {}, trace: {} } satisfies JobEnvelope<Record<string, never>>, opts: { attempts: 1 },
  }).catch((err: Error) => ctx.log.warn({ err: err.message }, 'could not schedule auto top-up recovery'));
}
