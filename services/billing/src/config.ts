import { Env } from '@aos/core';
import { Type, type TProperties } from '@sinclair/typebox';

/** Settings of this service beyond the base ones every service reads (see @aos/runtime). */
export const config = {
  /** Stripe secret key; without it checkout, portal, payment intents and off-session top-ups answer 503. */
  STRIPE_SECRET_KEY: Type.Optional(Type.String({ minLength: 1 })),
  /** Signing secret of the webhook endpoint (`whsec_…`); without it `POST /billing/webhook` answers 503. */
  STRIPE_WEBHOOK_SECRET: Type.Optional(Type.String({ minLength: 1 })),
  /** Base URL of the Stripe API (stripe-mock or a local stand-in); default the real API. */
  STRIPE_API_BASE: Type.Optional(Env.httpUrl()),
  /** Stripe price ids of the monthly plans; without them checkout sends inline `price_data`. */
  STRIPE_PRICE_PRO: Type.Optional(Type.String({ minLength: 1 })),
  STRIPE_PRICE_TEAMS: Type.Optional(Type.String({ minLength: 1 })),
  /** Seconds a webhook signature stays valid. */
  STRIPE_WEBHOOK_TOLERANCE_S: Env.int(300, { minimum: 1, maximum: 3600 }),
  /** Where checkout and the portal send the browser back. */
  BILLING_APP_URL: Env.httpUrl('http://localhost:3000'),
  BILLING_CURRENCY: Type.String({ default: 'usd', pattern: '^[a-z]{3}$' }),
  /** How often top-ups left pending or interrupted mid-charge are looked for (also once at start). */
  BILLING_TOPUP_RECOVERY_INTERVAL_S: Env.int(600, { minimum: 10, maximum: 86_400 }),
  /** Tokens granted to a new user's personal organization. */
  SIGNUP_BONUS_TOKENS: Env.int(1_000, { minimum: 0, maximum: 100_000_000 }),
} satisfies TProperties;
