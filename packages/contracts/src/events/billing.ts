import { Type } from '@sinclair/typebox';
import { defineEvent, Nullable } from './define.js';

export const billingEvents = {
  /**
   * Tier, status or limits changed; the gateway's rate-limit tier follows. `limits` are the ones
   * that now apply (null = unlimited), so a managed Enterprise plan's negotiated rate limits reach it.
   */
  'billing.subscription.changed': defineEvent('billing.subscription.changed', 1, Type.Object({
    subscriptionId: Nullable(Type.String()), tier: Type.String(), previousTier: Nullable(Type.String()),
    status: Type.String(), userId: Nullable(Type.String()), effectiveAt: Type.String(),
    limits: Type.Optional(Type.Object({
      requestsPerMinute: Nullable(Type.Integer()), requestsPerHour: Nullable(Type.Integer()), agents: Nullable(Type.Integer()),
      seats: Nullable(Type.Integer()), tasksPerMonth: Nullable(Type.Integer()), includedTokens: Nullable(Type.Integer()),
    })),
  })),
  'billing.tokens.consumed': defineEvent('billing.tokens.consumed', 1, Type.Object({
    amount: Type.Integer(), balance: Type.Integer(), action: Type.String(), referenceId: Nullable(Type.String()), userId: Nullable(Type.String()),
  })),
  /** `balance` is what is left to spend after `settled` paid what the organization owed. */
  'billing.tokens.credited': defineEvent('billing.tokens.credited', 1, Type.Object({
    amount: Type.Integer(), balance: Type.Integer(), kind: Type.String(), userId: Nullable(Type.String()),
    settled: Type.Optional(Type.Integer({ minimum: 1 })),
  })),
  /**
   * The balance crossed below the auto top-up threshold, or usage that already happened (a run)
   * exceeded it and the organization now owes `owed` (settled first by the next credit).
   */
  'billing.balance.low': defineEvent('billing.balance.low', 1, Type.Object({
    ledger: Type.Union([Type.Literal('tokens'), Type.Literal('credits')]), balance: Type.Integer(), threshold: Type.Integer(), userId: Nullable(Type.String()),
    owed: Type.Optional(Type.Integer({ minimum: 1 })),
  })),
  'billing.payment.succeeded': defineEvent('billing.payment.succeeded', 1, Type.Object({
    stripeObjectId: Type.String(), amountCents: Type.Integer(), currency: Type.String(), userId: Nullable(Type.String()),
  })),
  'billing.payment.failed': defineEvent('billing.payment.failed', 1, Type.Object({
    stripeObjectId: Type.String(), amountCents: Type.Integer(), currency: Type.String(), reason: Nullable(Type.String()), userId: Nullable(Type.String()), email: Nullable(Type.String()),
  })),
  'billing.topup.completed': defineEvent('billing.topup.completed', 1, Type.Object({
    ledger: Type.Union([Type.Literal('tokens'), Type.Literal('credits')]), amount: Type.Integer(), paymentIntentId: Nullable(Type.String()),
  })),
};
