import { AppError, serviceUnavailable, unprocessable } from '@aos/core';
import Stripe from 'stripe';
import type { Ctx } from '../service.js';

export type { Stripe };

const clients = new WeakMap<object, Stripe>();

/** SDK options pointing at `STRIPE_API_BASE` (stripe-mock, a local stand-in) when set. */
export function stripeOptions(apiBase: string | undefined): Stripe.StripeConfig {
  const opts: Stripe.StripeConfig = { maxNetworkRetries: 1, timeout: 20_000, telemetry: false };
  if (apiBase) {
    const url = new URL(apiBase);
    opts.host = url.hostname;
    opts.protocol = url.protocol === 'http:' ? 'http' : 'https';
    opts.port = url.port ? Number(url.port) : url.protocol === 'http:' ? 80 : 443;
  }
  return opts;
}

/** The Stripe client, or 503 naming the missing setting. */
export function stripeClient(ctx: Pick<Ctx, 'config'>): Stripe {
  const key = ctx.config.STRIPE_SECRET_KEY;
  if (!key) throw paymentsNotConfigured('STRIPE_SECRET_KEY', 'Stripe is not configured');
  let client = clients.get(ctx.config);
  if (!client) {
    client = new Stripe(key, stripeOptions(ctx.config.STRIPE_API_BASE));
    clients.set(ctx.config, client);
  }
  return client;
}

/** 503 PAYMENTS_NOT_CONFIGURED naming the missing setting: unlike an outage, retrying will not help. */
export const paymentsNotConfigured = (setting: string, what: string) =>
  new AppError('PAYMENTS_NOT_CONFIGURED', `${what}: ${setting} is not set`, [{ setting }]);

export const stripeConfigured = (ctx: Pick<Ctx, 'config'>) => Boolean(ctx.config.STRIPE_SECRET_KEY);

/** Stripe API failures as envelope errors: rejections are 422, outages 503; never the raw response. */
export function stripeFailure(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (err instanceof Stripe.errors.StripeError) {
    if (err.type === 'StripeCardError' || err.type === 'StripeInvalidRequestError') return unprocessable(`Stripe rejected the request: ${err.message}`);
    return serviceUnavailable(`Stripe request failed (${err.type})`);
  }
  return serviceUnavailable('Stripe request failed');
}

export async function callStripe<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw stripeFailure(err);
  }
}
