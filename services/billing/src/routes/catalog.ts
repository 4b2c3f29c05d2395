import { Envelope, ListEnvelope, list, ok, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import type { Ctx } from '../service.js';
import { CreditPackages, PackageSchema, TierSchema, Tiers, tierView, TokenPackages } from '../domain/catalog.js';

export async function catalogRoutes(app: App, ctx: Ctx) {
  const tiers = () => Object.values(Tiers).map((t) => tierView(t, ctx.config.BILLING_CURRENCY));

  app.get('/billing/tiers', {
    config: { auth: 'public' },
    schema: {
      tags: ['Billing'], summary: 'Subscription tiers and their limits', security: [],
      querystring: Type.Object({ ...PaginationQuery, self_serve: Type.Optional(Type.Boolean({ description: 'only tiers bought through checkout' })) }),
      response: { 200: ListEnvelope(TierSchema) },
    },
  }, async (request) => {
    const p = page(request.query);
    const all = tiers().filter((t) => request.query.self_serve === undefined || t.self_serve === request.query.self_serve);
    return list(all.slice(p.offset, p.offset + p.limit), all.length, p);
  });

  app.get('/billing/pricing', {
    config: { auth: 'public' },
    schema: {
      tags: ['Billing'], summary: 'Public pricing: tiers, token and credit packages, economics', security: [],
      response: {
        200: Envelope(Type.Object({
          currency: Type.String(), tiers: Type.Array(TierSchema), token_packages: Type.Array(PackageSchema), credit_packages: Type.Array(PackageSchema),
          economics: Type.Object({ signup_bonus_tokens: Type.Integer(), cents_per_1k_tokens: Type.Array(Type.Object({ package_slug: Type.String(), cents: Type.Number() })), auto_topup_available: Type.Boolean() }),
        })),
      },
    },
  }, async () => ok({
    currency: ctx.config.BILLING_CURRENCY,
    tiers: tiers(),
    token_packages: TokenPackages,
    credit_packages: CreditPackages,
    economics: {
      signup_bonus_tokens: ctx.config.SIGNUP_BONUS_TOKENS,
      cents_per_1k_tokens: TokenPackages.map((p) => ({ package_slug: p.slug, cents: Math.round((p.price_cents / p.amount) * 1000 * 100) / 100 })),
      auto_topup_available: true,
    },
  }));
}
