import { metaFromPrincipal } from '@aos/bus';
import { badRequest, notFound, unprocessable } from '@aos/core';
import { Envelope, Nullable, ok, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import type { Ctx } from '../service.js';
import { TierSlugSchema, type Limits, type TierSlug } from '../domain/catalog.js';
import { releaseManagedPlan, setManagedPlan } from '../domain/managed-plans.js';
import { announceAllPlans, findSubscription } from '../domain/subscriptions.js';
import { SubscriptionSchema, subscriptionView } from './subscription.js';

const Limit = (minimum: number, maximum: number) => Type.Optional(Nullable(Type.Integer({ minimum, maximum })));

/** Negotiated limits; a limit left out keeps the catalogue's, null is unlimited. */
const CustomLimits = Type.Object({
  requests_per_minute: Limit(1, 10_000_000),
  requests_per_hour: Limit(1, 1_000_000_000),
  agents: Limit(0, 10_000_000),
  seats: Limit(0, 10_000_000),
  tasks_per_month: Limit(0, 1_000_000_000),
  included_tokens: Limit(0, 1_000_000_000),
}, { additionalProperties: false });

const Params = Type.Object({ orgId: Type.String({ format: 'uuid' }) });

const AdminPlanSchema = Type.Object({
  subscription: SubscriptionSchema, managed_by: Nullable(Type.String()), note: Nullable(Type.String()),
});

// Not in the reference: platform admins set the plan an organization cannot buy itself (Enterprise
// with negotiated limits, or a comped plan), and hand it back to self-serve.
export async function adminRoutes(app: App, ctx: Ctx) {
  const view = (orgId: string, row: Awaited<ReturnType<typeof findSubscription>>) =>
    ok({ subscription: subscriptionView(orgId, row), managed_by: row?.managedBy ?? null, note: row?.managedNote ?? null });

  app.get('/billing/admin/orgs/:orgId/plan', {
    config: { platformAdmin: true },
    schema: { tags: ['Billing'], summary: "An organization's plan (platform admins)", params: Params, response: { 200: Envelope(AdminPlanSchema) } },
  }, async (request) => view(request.params.orgId, await findSubscription(ctx.db, request.params.orgId)));

  app.put('/billing/admin/orgs/:orgId/plan', {
    config: { platformAdmin: true },
    schema: {
      tags: ['Billing'], summary: "Set an organization's plan (platform admins): Enterprise with custom limits, or a managed tier",
      params: Params,
      body: Type.Object({
        tier: TierSlugSchema,
        limits: Type.Optional(CustomLimits),
        mrr_cents: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000_000, description: 'monthly contract value, for the overview (default 0)' })),
        note: Type.Optional(Type.String({ maxLength: 500 })),
        cancel_stripe_subscription: Type.Optional(Type.Boolean({ description: 'cancel a live self-serve Stripe subscription now instead of answering 409' })),
      }, { additionalProperties: false }),
      response: { 200: Envelope(AdminPlanSchema) },
    },
  }, async (request) => {
    const { orgId } = request.params;
    const { tier, limits, mrr_cents: mrrCents, note, cancel_stripe_subscription: cancelStripeSubscription } = request.body;
    if (limits && tier !== 'enterprise') throw unprocessable('Custom limits are part of an Enterprise plan', [{ field: 'limits', tier }]);
    const perMinute = limits?.requests_per_minute;
    const perHour = limits?.requests_per_hour;
    if (typeof perMinute === 'number' && typeof perHour === 'number' && perHour < perMinute) {
      throw badRequest('requests_per_hour cannot be lower than requests_per_minute', [{ field: 'limits.requests_per_hour' }]);
    }
    const row = await setManagedPlan(ctx, orgId, {
      tier: tier as TierSlug, limits: limits as Partial<Limits> | undefined, mrrCents, note: note ?? null, cancelStripeSubscription,
    }, metaFromPrincipal(request.principal));
    return view(orgId, row);
  });

  app.delete('/billing/admin/orgs/:orgId/plan', {
    config: { platformAdmin: true },
    schema: {
      tags: ['Billing'], summary: 'Hand a managed plan back to self-serve (Free) (platform admins)', params: Params,
      response: { 200: Envelope(AdminPlanSchema) },
    },
  }, async (request) => {
    const { orgId } = request.params;
    const row = await releaseManagedPlan(ctx, orgId, metaFromPrincipal(request.principal));
    if (!row) throw notFound('Managed plan');
    return view(orgId, row);
  });

  app.post('/billing/admin/plans/announce', {
    config: { platformAdmin: true },
    schema: {
      tags: ['Billing'], summary: "Announce every organization's current plan again (platform admins)",
      description: 'Emits billing.subscription.changed with the current tier, status and limits of every organization that has a plan row,'
        + ' so the gateway and the services enforcing plan limits learn plans decided longer ago than the event stream keeps (7 days),'
        + ' e.g. when a service starts enforcing or lost its projection. Repeating it is harmless.',
      response: { 200: Envelope(Type.Object({ announced: Type.Integer() })) },
    },
  }, async (request) => ok({ announced: await ctx.db.transaction((tx) => announceAllPlans(ctx, tx, metaFromPrincipal(request.principal))) }));
}
