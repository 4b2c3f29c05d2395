import { TierLimits, TierSlugs, type PlanLimits, type TierSlug } from '@aos/contracts';
import { Nullable } from '@aos/http';
import { Type, type Static } from '@sinclair/typebox';

export { limitsOf, TierSlugs, type TierSlug } from '@aos/contracts';
/** `null` means unlimited / negotiated (Enterprise). */
export type Limits = PlanLimits;
export const TierSlugSchema = Type.Union(TierSlugs.map((t) => Type.Literal(t)));

export type Ledger = 'tokens' | 'credits';

export interface Tier {
  slug: TierSlug;
  name: string;
  rank: number;
  /** Monthly price in cents; `null` = custom (contact sales). */
  price_cents: number | null;
  self_serve: boolean;
  limits: Limits;
  features: string[];
}

/** Prices and features; the limits are contracts' (`TierLimits`), which every enforcing service reads too. */
export const Tiers: Record<TierSlug, Tier> = {
  free: {
    slug: 'free', name: 'Free', rank: 0, price_cents: 0, self_serve: true,
    limits: TierLimits.free,
    features: ['Community support', `${TierLimits.free.agents} agents`],
  },
  pro: {
    slug: 'pro', name: 'Pro', rank: 1, price_cents: 2_900, self_serve: true,
    limits: TierLimits.pro,
    features: ['Email support', `${TierLimits.pro.agents} agents`, 'Auto top-up'],
  },
  teams: {
    slug: 'teams', name: 'Teams', rank: 2, price_cents: 9_900, self_serve: true,
    limits: TierLimits.teams,
    features: ['Priority support', `${TierLimits.teams.agents} agents`, 'Teams and roles'],
  },
  enterprise: {
    slug: 'enterprise', name: 'Enterprise', rank: 3, price_cents: null, self_serve: false,
    limits: TierLimits.enterprise,
    features: ['Custom limits', 'SSO', 'Dedicated support'],
  },
};

export interface Package {
  slug: string;
  ledger: Ledger;
  name: string;
  /** Tokens for token packages, cents of credit for credit packages. */
  amount: number;
  price_cents: number;
}

export const TokenPackages: Package[] = [
  { slug: 'tokens-10k', ledger: 'tokens', name: '10,000 tokens', amount: 10_000, price_cents: 1_000 },
  { slug: 'tokens-50k', ledger: 'tokens', name: '50,000 tokens', amount: 50_000, price_cents: 4_500 },
  { slug: 'tokens-200k', ledger: 'tokens', name: '200,000 tokens', amount: 200_000, price_cents: 16_000 },
];

export const CreditPackages: Package[] = [
  { slug: 'credits-10', ledger: 'credits', name: '$10 of credit', amount: 1_000, price_cents: 1_000 },
  { slug: 'credits-50', ledger: 'credits', name: '$50 of credit', amount: 5_000, price_cents: 5_000 },
  { slug: 'credits-100', ledger: 'credits', name: '$100 of credit', amount: 10_000, price_cents: 10_000 },
];

export function findPackage(slug: string, ledger?: Ledger): Package | undefined {
  return [...TokenPackages, ...CreditPackages].find((p) => p.slug === slug && (!ledger || p.ledger === ledger));
}

export const LimitsSchema = Type.Object({
  requests_per_minute: Nullable(Type.Integer()),
  requests_per_hour: Nullable(Type.Integer()),
  agents: Nullable(Type.Integer()),
  tasks_per_month: Nullable(Type.Integer()),
  seats: Nullable(Type.Integer()),
  included_tokens: Nullable(Type.Integer()),
});

export const TierSchema = Type.Object({
  slug: Type.String(), name: Type.String(), rank: Type.Integer(),
  price_cents: Nullable(Type.Integer()), currency: Type.String(), interval: Type.String(),
  self_serve: Type.Boolean(), limits: LimitsSchema, features: Type.Array(Type.String()),
});
export type TierView = Static<typeof TierSchema>;

export const PackageSchema = Type.Object({
  slug: Type.String(), ledger: Type.String(), name: Type.String(), amount: Type.Integer(), price_cents: Type.Integer(),
});

export const tierView = (t: Tier, currency: string): TierView => ({ ...t, currency, interval: 'month' });
