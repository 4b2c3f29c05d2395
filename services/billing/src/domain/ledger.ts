import type { EventMeta } from '@aos/bus';
import { AppError } from '@aos/core';
import type { Executor } from '@aos/db';
import { and, eq, sql } from 'drizzle-orm';
import type { Ctx } from '../service.js';
import { autoTopupConfigs, autoTopupRuns, ledgerAccounts, ledgerEntries } from '../db/schema.js';
import { findPackage, type Ledger } from './catalog.js';

export const EntryTypes = ['consume', 'purchase', 'bonus', 'signup_bonus', 'admin_grant', 'refund'] as const;
export type EntryType = (typeof EntryTypes)[number];
export type Entry = typeof ledgerEntries.$inferSelect;

export interface Posting {
  orgId: string;
  ledger: Ledger;
  type: EntryType;
  /** Positive; the sign follows from the type. */
  amount: number;
  referenceId?: string | null;
  action?: string | null;
  userId?: string | null;
  metadata?: Record<string, unknown>;
}

type Deps = Pick<Ctx, 'outbox'>;

/** Creates the account row if needed and locks it: every posting of one account is serialised here. */
export async function lockAccount(tx: Executor, orgId: string, ledger: Ledger): Promise<number> {
  await tx.insert(ledgerAccounts).values({ orgId, ledger, balance: 0 }).onConflictDoNothing();
  const [row] = await tx.select({ balance: ledgerAccounts.balance }).from(ledgerAccounts)
    .where(and(eq(ledgerAccounts.orgId, orgId), eq(ledgerAccounts.ledger, ledger))).for('update');
  return row!.balance;
}

export async function balanceOf(tx: Executor, orgId: string, ledger: Ledger): Promise<number> {
  const [row] = await tx.select({ balance: ledgerAccounts.balance }).from(ledgerAccounts)
    .where(and(eq(ledgerAccounts.orgId, orgId), eq(ledgerAccounts.ledger, ledger)));
  return row?.balance ?? 0;
}

export async function findByReference(tx: Executor, orgId: string, ledger: Ledger, type: EntryType, referenceId: string): Promise<Entry | undefined> {
  const [row] = await tx.select().from(ledgerEntries).where(and(
    eq(ledgerEntries.orgId, orgId), eq(ledgerEntries.ledger, ledger), eq(ledgerEntries.type, type), eq(ledgerEntries.referenceId, referenceId),
  ));
  return row;
}

export interface PostResult { entry: Entry; replayed: boolean }

/**
 * Appends one entry (the trigger moves the balance). A posting whose reference was already
 * booked returns the first entry instead (`replayed`). Debits beyond the balance fail with
 * 402 unless `clamp` is set, which books what is available (a run that already happened).
 */
export async function post(deps: Deps, tx: Executor, p: Posting, meta: EventMeta, opts: { clamp?: boolean } = {}): Promise<PostResult | null> {
  if (!Number.isSafeInteger(p.amount) || p.amount <= 0) throw new AppError('VALIDATION_ERROR', 'amount must be a positive integer');
  const balance = await lockAccount(tx, p.orgId, p.ledger);
  if (p.referenceId) {
    const existing = await findByReference(tx, p.orgId, p.ledger, p.type, p.referenceId);
    if (existing) return { entry: existing, replayed: true };
  }
  const debit = p.type === 'consume';
  let amount = p.amount;
  const metadata = { ...(p.metadata ?? {}) };
  if (debit && amount > balance) {
    if (!opts.clamp) {
      throw new AppError('INSUFFICIENT_BALANCE', `Insufficient ${p.ledger} balance: ${balance} available, ${amount} required`, [{ balance, required: amount }]);
    }
    metadata.requested = amount;
    metadata.shortfall = amount - balance;
    amount = balance;
    if (amount === 0) return null;
  }
  const [entry] = await tx.insert(ledgerEntries).values({
    orgId: p.orgId, ledger: p.ledger, type: p.type, amount: debit ? -amount : amount,
    referenceId: p.referenceId ?? null, action: p.action ?? null, userId: p.userId ?? null, metadata,
  }).returning();
  const after = entry!.balanceAfter;
  if (p.ledger === 'tokens') {
    if (debit) {
      await deps.outbox.enqueue(tx, 'billing.tokens.consumed', { amount, balance: after, action: p.action ?? 'consume', referenceId: p.referenceId ?? null, userId: p.userId ?? null }, meta);
    } else {
      await deps.outbox.enqueue(tx, 'billing.tokens.credited', { amount, balance: after, kind: p.type, userId: p.userId ?? null }, meta);
    }
  }
  await afterBalanceChange(deps, tx, p.orgId, p.ledger, after, meta);
  return { entry: entry!, replayed: false };
}

const month = (d = new Date()) => d.toISOString().slice(0, 7);

/**
 * Detects a threshold crossing: the config is "armed" while the balance is at or above the
 * threshold; falling below while armed disarms it and records one crossing (one top-up run
 * and one `billing.balance.low`). Only a balance back at/above the threshold re-arms it, so
 * further debits below the line never trigger a second charge.
 */
async function afterBalanceChange(deps: Deps, tx: Executor, orgId: string, ledger: Ledger, balance: number, meta: EventMeta) {
  const [cfg] = await tx.select().from(autoTopupConfigs)
    .where(and(eq(autoTopupConfigs.orgId, orgId), eq(autoTopupConfigs.ledger, ledger))).for('update');
  if (!cfg) return;
  if (balance >= cfg.threshold) {
    if (!cfg.armed) await tx.update(autoTopupConfigs).set({ armed: true, updatedAt: new Date() }).where(and(eq(autoTopupConfigs.orgId, orgId), eq(autoTopupConfigs.ledger, ledger)));
    return;
  }
  if (!cfg.armed || !cfg.enabled) return;
  const crossings = cfg.crossings + 1;
  await tx.update(autoTopupConfigs).set({ armed: false, crossings, updatedAt: new Date() })
    .where(and(eq(autoTopupConfigs.orgId, orgId), eq(autoTopupConfigs.ledger, ledger)));
  const pkg = findPackage(cfg.packageSlug, ledger);
  await tx.insert(autoTopupRuns).values({
    orgId, ledger, crossingId: `${orgId}.${ledger}.${crossings}`, month: month(), status: 'pending',
    packageSlug: cfg.packageSlug, amount: pkg?.amount ?? 0, priceCents: pkg?.price_cents ?? 0,
  });
  await deps.outbox.enqueue(tx, 'billing.balance.low', { ledger, balance, threshold: cfg.threshold, userId: null }, meta);
}

/** Re-evaluates arming after a config change (a new threshold may already be crossed). */
export async function evaluateThreshold(deps: Deps, tx: Executor, orgId: string, ledger: Ledger, meta: EventMeta) {
  const balance = await lockAccount(tx, orgId, ledger);
  await afterBalanceChange(deps, tx, orgId, ledger, balance, meta);
}

/** Sum of the journal, for proofs and the balance endpoint's `ledger_sum`. */
export async function journalSum(tx: Executor, orgId: string, ledger: Ledger): Promise<number> {
  const res = await tx.execute<{ s: string | null }>(sql`SELECT COALESCE(sum(amount), 0)::text AS s FROM billing_ledger_entries WHERE org_id = ${orgId} AND ledger = ${ledger}`);
  return Number(res.rows[0]?.s ?? 0);
}
