import { forbidden } from '@aos/core';
import { Envelope, Nullable, ok, orgOf, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, eq, gte, sql } from 'drizzle-orm';
import type { Ctx } from '../service.js';
import { costRecords } from '../db/schema.js';
import { monthStart } from '../domain/subscriptions.js';
import { costProduct } from '../domain/costs.js';
import { usedTokens } from '../domain/ledger.js';

const Spend = Type.Object({ total_usd: Type.Number(), this_month_usd: Type.Number() });

export async function overviewRoutes(app: App, ctx: Ctx) {
  app.get('/billing/overview', {
    config: { scope: 'billing:read' },
    schema: {
      tags: ['Billing'], summary: 'Billing dashboard: MRR by product, infrastructure and AI spend (scope=platform: all organizations, platform admins only)',
      querystring: Type.Object({ scope: Type.Optional(Type.Union([Type.Literal('org'), Type.Literal('platform')])) }),
      response: {
        200: Envelope(Type.Object({
          scope: Type.String(), currency: Type.String(), mrr_cents: Type.Integer(), active_subscriptions: Type.Integer(),
          mrr_by_product: Type.Array(Type.Object({ product: Type.String(), mrr_cents: Type.Integer(), subscriptions: Type.Integer() })),
          ai_spend: Type.Intersect([Spend, Type.Object({ by_model: Type.Array(Type.Object({ model: Type.String(), usd: Type.Number(), tokens: Type.Integer(), runs: Type.Integer() })) })]),
          infra_spend: Type.Intersect([Spend, Type.Object({ by_source: Type.Array(Type.Object({ source: Type.String(), usd: Type.Number() })) })]),
          spend_by_product: Type.Array(Type.Object({ product: Nullable(Type.String()), ai_usd: Type.Number(), infra_usd: Type.Number() })),
          total_spend_usd: Type.Number(),
          tokens: Type.Object({ consumed_this_month: Type.Integer(), purchased_this_month: Type.Integer(), owed: Type.Integer({ description: 'outstanding: run usage beyond the balance, not yet settled' }) }),
          credits: Type.Object({ owed_cents: Type.Integer() }),
        })),
      },
    },
  }, async (request) => {
    const platform = request.query.scope === 'platform';
    if (platform && !request.principal.platformRoles.includes('admin')) throw forbidden('Platform admin role required for scope=platform');
    const orgId = platform ? null : orgOf(request);
    const orgFilter = (col: string) => (orgId ? sql`${sql.raw(col)} = ${orgId}` : sql`TRUE`);
    const since = monthStart();

    const mrr = await ctx.db.execute<{ product: string; mrr: string; n: string }>(sql`
      SELECT tier AS product, sum(mrr_cents)::text AS mrr, count(*)::text AS n FROM billing_subscriptions
      WHERE ${orgFilter('org_id')} AND mrr_cents > 0 GROUP BY tier ORDER BY tier`);
    const spend = await ctx.db.execute<{ kind: string; total: string; month: string }>(sql`
      SELECT kind, COALESCE(sum(amount_usd), 0)::text AS total, COALESCE(sum(amount_usd) FILTER (WHERE occurred_at >= ${since}), 0)::text AS month
      FROM billing_cost_records WHERE ${orgFilter('org_id')} GROUP BY kind`);
    const byModel = await ctx.db.execute<{ model: string; usd: string; tokens: string; runs: string }>(sql`
      SELECT COALESCE(model, 'unknown') AS model, sum(amount_usd)::text AS usd, sum(tokens)::text AS tokens, count(*)::text AS runs
      FROM billing_cost_records WHERE ${orgFilter('org_id')} AND kind = 'ai' AND occurred_at >= ${since} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 50`);
    const bySource = await ctx.db.execute<{ source: string; usd: string }>(sql`
      SELECT source, sum(amount_usd)::text AS usd FROM billing_cost_records
      WHERE ${orgFilter('org_id')} AND kind = 'infra' AND occurred_at >= ${since} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 50`);
    const byProduct = await ctx.db.select({
      product: costProduct,
      ai: sql<string>`COALESCE(sum(${costRecords.amountUsd}) FILTER (WHERE ${costRecords.kind} = 'ai'), 0)::text`,
      infra: sql<string>`COALESCE(sum(${costRecords.amountUsd}) FILTER (WHERE ${costRecords.kind} = 'infra'), 0)::text`,
    }).from(costRecords).where(and(orgId ? eq(costRecords.orgId, orgId) : undefined, gte(costRecords.occurredAt, since)))
      .groupBy(sql`1`).orderBy(sql`1 NULLS LAST`).limit(100);
    const tokens = await ctx.db.execute<{ consumed: string; purchased: string }>(sql`
      SELECT COALESCE(sum(abs(amount)) FILTER (WHERE ${usedTokens}), 0)::text AS consumed, COALESCE(sum(amount) FILTER (WHERE ledger = 'tokens' AND type = 'purchase'), 0)::text AS purchased
      FROM billing_ledger_entries WHERE ${orgFilter('org_id')} AND ledger IN ('tokens', 'tokens_owed') AND created_at >= ${since}`);
    const owed = await ctx.db.execute<{ tokens: string; credits: string }>(sql`
      SELECT COALESCE(sum(balance) FILTER (WHERE ledger = 'tokens_owed'), 0)::text AS tokens, COALESCE(sum(balance) FILTER (WHERE ledger = 'credits_owed'), 0)::text AS credits
      FROM billing_ledger_accounts WHERE ${orgFilter('org_id')} AND ledger IN ('tokens_owed', 'credits_owed')`);

    const kind = (k: string) => spend.rows.find((r) => r.kind === k);
    const usd = (v: string | undefined) => Math.round(Number(v ?? 0) * 1e6) / 1e6;
    const ai = { total_usd: usd(kind('ai')?.total), this_month_usd: usd(kind('ai')?.month) };
    const infra = { total_usd: usd(kind('infra')?.total), this_month_usd: usd(kind('infra')?.month) };
    const mrrByProduct = mrr.rows.map((r) => ({ product: r.product, mrr_cents: Number(r.mrr), subscriptions: Number(r.n) }));
    return ok({
      scope: platform ? 'platform' : 'org', currency: ctx.config.BILLING_CURRENCY,
      mrr_cents: mrrByProduct.reduce((s, r) => s + r.mrr_cents, 0), active_subscriptions: mrrByProduct.reduce((s, r) => s + r.subscriptions, 0),
      mrr_by_product: mrrByProduct,
      ai_spend: { ...ai, by_model: byModel.rows.map((r) => ({ model: r.model, usd: usd(r.usd), tokens: Number(r.tokens), runs: Number(r.runs) })) },
      infra_spend: { ...infra, by_source: bySource.rows.map((r) => ({ source: r.source, usd: usd(r.usd) })) },
      spend_by_product: byProduct.map((r) => ({ product: r.product, ai_usd: usd(r.ai), infra_usd: usd(r.infra) })),
      total_spend_usd: usd(String(ai.total_usd + infra.total_usd)),
      tokens: { consumed_this_month: Number(tokens.rows[0]?.consumed ?? 0), purchased_this_month: Number(tokens.rows[0]?.purchased ?? 0), owed: Number(owed.rows[0]?.tokens ?? 0) },
      credits: { owed_cents: Number(owed.rows[0]?.credits ?? 0) },
    });
  });
}
