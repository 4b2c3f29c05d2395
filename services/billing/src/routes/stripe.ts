import { badRequest } from '@aos/core';
import { Envelope, Nullable, ok, orgOf, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import type { FastifyBaseLogger, FastifyRequest } from 'fastify';
import Stripe from 'stripe';
import type { Ctx } from '../service.js';
import { stripeEvents } from '../db/schema.js';
import { TierSlugSchema, type TierSlug } from '../domain/catalog.js';
import { createCheckout, createPackageIntent, createPortal, findPackage } from '../domain/payments.js';
import { paymentsNotConfigured, stripeClient, stripeConfigured } from '../domain/stripe.js';
import { applyStripeEvent } from '../domain/webhook.js';
import { InvalidEventError } from '@aos/bus';
import { eq } from 'drizzle-orm';
import { pgErrorCode } from '@aos/db';

const Url = Type.String({ format: 'uri', maxLength: 2000 });
const account = (request: FastifyRequest) => ({ orgId: orgOf(request), tenantId: request.principal.tenantId });

export async function stripeRoutes(app: App, ctx: Ctx) {
  app.post('/billing/checkout', {
    config: { scope: 'billing:write', minRole: 'admin' },
    schema: {
      tags: ['Billing'], summary: 'Stripe Checkout session for a plan (503 when Stripe is not configured)',
      body: Type.Object({ tier: TierSlugSchema, success_url: Type.Optional(Url), cancel_url: Type.Optional(Url) }, { additionalProperties: false }),
      response: { 200: Envelope(Type.Object({ session_id: Type.String(), url: Nullable(Type.String()), tier: Type.String() })) },
    },
  }, async (request) => {
    stripeClient(ctx);
    return ok(await createCheckout(ctx, account(request), request.body.tier as TierSlug, request.body));
  });

  app.post('/billing/portal', {
    config: { scope: 'billing:write', minRole: 'admin' },
    schema: {
      tags: ['Billing'], summary: 'Stripe customer portal session',
      body: Type.Optional(Type.Object({ return_url: Type.Optional(Url) }, { additionalProperties: false })),
      response: { 200: Envelope(Type.Object({ url: Type.String() })) },
    },
  }, async (request) => {
    stripeClient(ctx);
    return ok(await createPortal(ctx, account(request), request.body?.return_url));
  });

  app.post('/billing/create-payment-intent', {
    config: { scope: 'billing:write', minRole: 'admin' },
    schema: {
      tags: ['Billing'], summary: 'Payment intent for a token (or credit) package; idempotency_key makes retries return the same intent',
      body: Type.Object({
        package_slug: Type.String({ minLength: 1, maxLength: 100 }),
        idempotency_key: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_.:-]+$' })),
      }, { additionalProperties: false }),
      response: {
        200: Envelope(Type.Object({
          payment_intent_id: Type.String(), client_secret: Nullable(Type.String()), status: Type.String(), amount_cents: Type.Integer(),
          currency: Type.String(), package_slug: Type.String(), ledger: Type.String(), amount: Type.Integer(),
        })),
      },
    },
  }, async (request) => {
    stripeClient(ctx);
    const pkg = findPackage(request.body.package_slug);
    if (!pkg) throw badRequest(`Unknown package "${request.body.package_slug}"`, [{ field: 'package_slug', message: 'see GET /billing/pricing' }]);
    return ok(await createPackageIntent(ctx, account(request), pkg, request.body.idempotency_key));
  });

  // The webhook lives in its own encapsulated plugin: only here is the body kept as raw bytes,
  // because Stripe signs exactly the bytes it sent.
  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: 1024 * 1024 }, (_req, body, done) => done(null, body));

    scope.post('/billing/webhook', {
      // The gateway forwards it with an anonymous principal; the Stripe signature is the authentication.
      config: { auth: 'public' },
      schema: { tags: ['Billing'], summary: 'Stripe webhook (signature verified over the raw body)', security: [], response: { 200: Envelope(Type.Object({ received: Type.Boolean(), duplicate: Type.Boolean(), event_id: Type.String(), outcome: Type.String() })) } },
    }, async (request) => {
      const secret = ctx.config.STRIPE_WEBHOOK_SECRET;
      if (!secret) throw paymentsNotConfigured('STRIPE_WEBHOOK_SECRET', 'Stripe webhooks are not configured');
      const signature = request.headers['stripe-signature'];
      if (typeof signature !== 'string' || !signature) throw badRequest('Missing Stripe-Signature header');
      const raw = request.body;
      if (!Buffer.isBuffer(raw) || raw.length === 0) throw badRequest('Empty webhook body');
      let event: Stripe.Event;
      try {
        event = verifier.webhooks.constructEvent(raw, signature, secret, ctx.config.STRIPE_WEBHOOK_TOLERANCE_S);
      } catch (err) {
        const reason = err instanceof Stripe.errors.StripeSignatureVerificationError ? err.message : 'malformed payload';
        throw badRequest(`Invalid Stripe signature: ${reason.split('\n')[0]}`);
      }
      if (typeof event?.id !== 'string' || typeof event.type !== 'string' || typeof event.created !== 'number') throw badRequest('Malformed Stripe event');
      // A replay is answered from the record without asking Stripe for the current state again.
      const [seen] = await ctx.db.select({ outcome: stripeEvents.outcome }).from(stripeEvents).where(eq(stripeEvents.id, event.id));
      if (seen) return ok({ received: true, event_id: event.id, duplicate: true, outcome: seen.outcome });
      await refreshSubscription(ctx, event, request.log);
      const result = await applyOnce(ctx, event).catch(async (err: unknown) => {
        // Signed, but holding data Postgres refuses (SQLSTATE class 22) or our event schemas reject:
        // retrying cannot help, so it is recorded as rejected and acknowledged, not redelivered for days.
        if (!(err instanceof InvalidEventError) && !pgErrorCode(err)?.startsWith('22')) throw err;
        request.log.warn({ stripeEventId: event.id, type: event.type, err: (err as Error).message }, 'stripe event with invalid data');
        await ctx.db.insert(stripeEvents).values({ id: event.id, type: event.type, created: event.created, outcome: 'rejected: invalid data' }).onConflictDoNothing();
        return { duplicate: false, outcome: 'rejected: invalid data' };
      });
      request.log.info({ stripeEventId: event.id, type: event.type, duplicate: result.duplicate, outcome: result.outcome }, 'stripe webhook');
      return ok({ received: true, event_id: event.id, ...result });
    });
  });
}

/** Applies a verified event once: its id is recorded in the transaction that applies it. */
function applyOnce(ctx: Ctx, event: Stripe.Event) {
  return ctx.db.transaction(async (tx) => {
    const inserted = await tx.insert(stripeEvents).values({ id: event.id, type: event.type, created: event.created, outcome: 'processing' })
      .onConflictDoNothing().returning({ id: stripeEvents.id });
    if (inserted.length === 0) {
      const [prior] = await tx.select().from(stripeEvents).where(eq(stripeEvents.id, event.id));
      return { duplicate: true, outcome: prior?.outcome ?? 'already processed' };
    }
    const { orgId, outcome } = await applyStripeEvent(ctx, tx, event);
    await tx.update(stripeEvents).set({ outcome, orgId }).where(eq(stripeEvents.id, event.id));
    return { duplicate: false, outcome };
  });
}

/**
 * Subscription events may arrive late or out of order; when the API is reachable the event's
 * snapshot is replaced by the subscription's current state (DESIGN.md: read the object).
 * Without keys, or when Stripe is down, the snapshot plus the `event.created` guard decide.
 */
async function refreshSubscription(ctx: Ctx, event: Stripe.Event, log: FastifyBaseLogger) {
  if (!event.type.startsWith('customer.subscription.') || !stripeConfigured(ctx)) return;
  const snapshot = event.data.object as Stripe.Subscription;
  if (typeof snapshot?.id !== 'string') return;
  try {
    const current = await stripeClient(ctx).subscriptions.retrieve(snapshot.id);
    (event.data as { object: unknown }).object = current;
  } catch (err) {
    log.warn({ err: (err as Error).message, subscription: snapshot.id }, 'could not read the current subscription; using the event snapshot');
  }
}

/** Signature checks need no API key. */
const verifier = new Stripe('sk_signature_verification_only');
