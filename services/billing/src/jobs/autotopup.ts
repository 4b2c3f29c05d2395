import { systemMeta } from '@aos/bus';
import { Queues } from '@aos/contracts';
import { UnrecoverableError } from '@aos/queue';
import { and, eq, inArray, sql } from 'drizzle-orm';
import Stripe from 'stripe';
import type { Ctx } from '../service.js';
import { autoTopupConfigs, autoTopupRuns, customers } from '../db/schema.js';
import { findPackage, type Ledger } from '../domain/catalog.js';
import { stripeClient } from '../domain/stripe.js';
import { creditPaymentIntent } from '../domain/webhook.js';

export interface TopupJob { crossingId: string }

export function enqueueTopup(ctx: Ctx, crossingId: string) {
  return ctx.queues.add<TopupJob>(Queues.autoTopup, 'charge', { crossingId }, {
    jobId: `topup.${crossingId}`, attempts: 5, backoff: { type: 'exponential', delay: 2_000 },
  });
}

type Run = typeof autoTopupRuns.$inferSelect;

async function finish(ctx: Ctx, run: Run, status: string, reason: string | null, paymentIntentId: string | null = null) {
  await ctx.db.update(autoTopupRuns).set({ status, reason, paymentIntentId: paymentIntentId ?? run.paymentIntentId, updatedAt: new Date() })
    .where(eq(autoTopupRuns.id, run.id));
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
      await tx.update(autoTopupRuns).set({ status: 'processing', updatedAt: new Date() }).where(eq(autoTopupRuns.id, run.id));
    }
    const [customer] = await tx.select().from(customers).where(eq(customers.orgId, run.orgId));
    return { run, cfg, customer, done: null };
  });
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
    intent = await stripe.paymentIntents.create({
      amount: pkg.price_cents, currency: ctx.config.BILLING_CURRENCY, customer: customer.stripeCustomerId, payment_method: paymentMethod,
      off_session: true, confirm: true, description: `AOS auto top-up: ${pkg.name}`,
      metadata: {
        org_id: run.orgId, ...(cfg.tenantId ? { tenant_id: cfg.tenantId } : {}), kind: 'auto_topup', ledger: pkg.ledger,
        package_slug: pkg.slug, amount: String(pkg.amount), crossing_id: run.crossingId,
      },
    }, { idempotencyKey: `aos-topup-${run.crossingId}` });
  } catch (err) {
    if (err instanceof Stripe.errors.StripeCardError || err instanceof Stripe.errors.StripeInvalidRequestError) {
      const piId = (err.raw as { payment_intent?: { id?: string } } | undefined)?.payment_intent?.id ?? null;
      await ctx.db.transaction(async (tx) => {
        await tx.update(autoTopupRuns).set({ status: 'failed', reason: err.message, paymentIntentId: piId, updatedAt: new Date() }).where(eq(autoTopupRuns.id, run.id));
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

export async function startAutoTopupJobs(ctx: Ctx) {
  ctx.queues.worker<TopupJob>(Queues.autoTopup, (payload) => processTopup(ctx, payload), { concurrency: 2 });
  // Crossings recorded while Redis was unreachable are queued again (same job ids: no duplicates).
  const pending = await ctx.db.select({ crossingId: autoTopupRuns.crossingId }).from(autoTopupRuns).where(eq(autoTopupRuns.status, 'pending'));
  for (const run of pending) await enqueueTopup(ctx, run.crossingId).catch((err: Error) => ctx.log.warn({ err: err.message }, 'could not queue auto top-up'));
}
