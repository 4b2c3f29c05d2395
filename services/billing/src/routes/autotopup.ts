import { metaFromPrincipal } from '@aos/bus';
import { badRequest, conflict, notFound } from '@aos/core';
import { isUniqueViolation } from '@aos/db';
import { Envelope, Nullable, ok, orgOf, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, desc, eq, inArray, sql } from 'drizzle-orm';
import type { Ctx } from '../service.js';
import { autoTopupConfigs, autoTopupRuns } from '../db/schema.js';
import { CreditPackages, findPackage, PackageSchema, TokenPackages, type Ledger } from '../domain/catalog.js';
import { balanceOf, evaluateThreshold, lockAccount } from '../domain/ledger.js';

const PM = Type.String({ minLength: 3, maxLength: 255, pattern: '^pm_[A-Za-z0-9_]+$' });
const Slug = Type.String({ minLength: 1, maxLength: 100 });
const Max = Type.Integer({ minimum: 1, maximum: 100 });
const Threshold = Type.Integer({ minimum: 1, maximum: 1_000_000_000 });

const RunSchema = Type.Object({ crossing_id: Type.String(), status: Type.String(), amount: Type.Integer(), price_cents: Type.Integer(), payment_intent_id: Nullable(Type.String()), reason: Nullable(Type.String()), created_at: Type.String() });

/** `ledger` decides the wire names: tokens use `threshold_tokens`, credits `threshold_cents`. */
function configSchema(thresholdField: string) {
  return Type.Object({
    configured: Type.Boolean(), enabled: Type.Boolean(), [thresholdField]: Nullable(Type.Integer()), package_slug: Nullable(Type.String()), package_id: Nullable(Type.String()),
    max_monthly_topups: Nullable(Type.Integer()), stripe_payment_method_id: Nullable(Type.String()), topups_this_month: Type.Integer(), balance: Type.Integer(),
    available_packages: Type.Array(PackageSchema), recent_topups: Type.Array(RunSchema),
  });
}

export async function autoTopupRoutes(app: App, ctx: Ctx) {
  register(app, ctx, '/billing/auto-topup', 'tokens', 'threshold_tokens', TokenPackages);
  register(app, ctx, '/billing/credit-auto-topup', 'credits', 'threshold_cents', CreditPackages);
}

function register(app: App, ctx: Ctx, path: string, ledger: Ledger, thresholdField: 'threshold_tokens' | 'threshold_cents', packages: typeof TokenPackages) {
  const Schema = configSchema(thresholdField);
  const month = () => new Date().toISOString().slice(0, 7);

  const view = async (orgId: string) => {
    const [cfg] = await ctx.db.select().from(autoTopupConfigs).where(and(eq(autoTopupConfigs.orgId, orgId), eq(autoTopupConfigs.ledger, ledger)));
    const [used] = await ctx.db.select({ n: sql<string>`count(*)::text` }).from(autoTopupRuns)
      .where(and(eq(autoTopupRuns.orgId, orgId), eq(autoTopupRuns.ledger, ledger), eq(autoTopupRuns.month, month()), inArray(autoTopupRuns.status, ['processing', 'succeeded'])));
    const runs = await ctx.db.select().from(autoTopupRuns).where(and(eq(autoTopupRuns.orgId, orgId), eq(autoTopupRuns.ledger, ledger))).orderBy(desc(autoTopupRuns.id)).limit(10);
    return {
      configured: !!cfg, enabled: cfg?.enabled ?? false, [thresholdField]: cfg?.threshold ?? null, package_slug: cfg?.packageSlug ?? null, package_id: cfg?.packageSlug ?? null,
      max_monthly_topups: cfg?.maxMonthlyTopups ?? null, stripe_payment_method_id: cfg?.stripePaymentMethodId ?? null,
      topups_this_month: Number(used?.n ?? 0), balance: await balanceOf(ctx.db, orgId, ledger), available_packages: packages,
      recent_topups: runs.map((r) => ({ crossing_id: r.crossingId, status: r.status, amount: r.amount, price_cents: r.priceCents, payment_intent_id: r.paymentIntentId, reason: r.reason, created_at: r.createdAt.toISOString() })),
    };
  };

  const checkPackage = (slug: string | undefined) => {
    if (slug === undefined) return;
    if (!findPackage(slug, ledger)) throw badRequest(`Unknown ${ledger} package "${slug}"`, [{ field: 'package_slug', allowed: packages.map((p) => p.slug) }]);
  };

  app.get(path, {
    config: { scope: 'billing:read' },
    schema: { tags: ['Billing'], summary: `Auto top-up configuration (${ledger})`, response: { 200: Envelope(Schema) } },
  }, async (request) => ok(await view(orgOf(request))));

  app.post(path, {
    config: { scope: 'billing:write', minRole: 'admin' },
    schema: {
      tags: ['Billing'], summary: `Configure auto top-up (${ledger}); 409 when already configured`,
      body: Type.Object({
        [thresholdField]: Threshold, package_slug: Type.Optional(Slug), package_id: Type.Optional(Slug),
        enabled: Type.Optional(Type.Boolean()), max_monthly_topups: Type.Optional(Max), stripe_payment_method_id: Type.Optional(PM),
      }, { additionalProperties: false }),
      response: { 201: Envelope(Schema) },
    },
  }, async (request, reply) => {
    const orgId = orgOf(request);
    const body = request.body as Record<string, unknown>;
    const slug = (body.package_slug ?? body.package_id) as string | undefined;
    if (!slug) throw badRequest('package_slug is required', [{ field: 'package_slug', message: 'required' }]);
    checkPackage(slug);
    try {
      await ctx.db.transaction(async (tx) => {
        await lockAccount(tx, orgId, ledger); // lock order account → config, as in every posting
        await tx.insert(autoTopupConfigs).values({
          orgId, ledger, tenantId: request.principal.tenantId, threshold: body[thresholdField] as number, packageSlug: slug,
          enabled: (body.enabled as boolean | undefined) ?? true, maxMonthlyTopups: (body.max_monthly_topups as number | undefined) ?? 3,
          stripePaymentMethodId: (body.stripe_payment_method_id as string | undefined) ?? null,
        });
        await evaluateThreshold(ctx, tx, orgId, ledger, metaFromPrincipal(request.principal));
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`Auto top-up (${ledger}) is already configured for this organization; use PUT to change it`);
      throw err;
    }
    return reply.status(201).send(ok(await view(orgId)));
  });

  app.put(path, {
    config: { scope: 'billing:write', minRole: 'admin' },
    schema: {
      tags: ['Billing'], summary: `Update auto top-up (${ledger})`,
      body: Type.Object({
        [thresholdField]: Type.Optional(Threshold), package_slug: Type.Optional(Slug), package_id: Type.Optional(Slug),
        enabled: Type.Optional(Type.Boolean()), max_monthly_topups: Type.Optional(Max), stripe_payment_method_id: Type.Optional(Nullable(PM)),
      }, { additionalProperties: false, minProperties: 1 }),
      response: { 200: Envelope(Schema) },
    },
  }, async (request) => {
    const orgId = orgOf(request);
    const body = request.body as Record<string, unknown>;
    const slug = (body.package_slug ?? body.package_id) as string | undefined;
    checkPackage(slug);
    await ctx.db.transaction(async (tx) => {
      await lockAccount(tx, orgId, ledger);
      const set: Partial<typeof autoTopupConfigs.$inferInsert> = { updatedAt: new Date() };
      if (body[thresholdField] !== undefined) set.threshold = body[thresholdField] as number;
      if (slug !== undefined) set.packageSlug = slug;
      if (body.enabled !== undefined) set.enabled = body.enabled as boolean;
      if (body.max_monthly_topups !== undefined) set.maxMonthlyTopups = body.max_monthly_topups as number;
      if (body.stripe_payment_method_id !== undefined) set.stripePaymentMethodId = body.stripe_payment_method_id as string | null;
      const updated = await tx.update(autoTopupConfigs).set(set).where(and(eq(autoTopupConfigs.orgId, orgId), eq(autoTopupConfigs.ledger, ledger))).returning();
      if (updated.length === 0) throw notFound('Auto top-up configuration');
      await evaluateThreshold(ctx, tx, orgId, ledger, metaFromPrincipal(request.principal));
    });
    return ok(await view(orgId));
  });
}
