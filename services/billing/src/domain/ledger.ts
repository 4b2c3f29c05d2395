import type { EventMeta } from '@aos/bus';
import { AppError } from '@aos/core';
import type { Executor } from '@aos/db';
import { and, eq, sql } from 'drizzle-orm';
import type { Ctx } from '../service.js';
import { autoTopupConfigs, autoTopupRuns, ledgerAccounts, ledgerEntries } from '../db/schema.js';
import { findPackage, type Ledger } from './catalog.js';

export const EntryTypes = ['consume', 'purchase', 'bonus', 'signup_bonus', 'admin_grant', 'refund', 'overdraft', 'settlement', 'reversal'] as const;
export type EntryType = (typeof EntryTypes)[number];
export type Entry = typeof ledgerEntries.$inferSelect;

/** Accounts of an organization: what it can spend (`tokens`, `credits`) and what it owes on each. */
export const Accounts = ['tokens', 'credits', 'tokens_owed', 'credits_owed'] as const;
export type Account = (typeof Accounts)[number];
export const owedAccount = (ledger: Ledger): Account => (ledger === 'tokens' ? 'tokens_owed' : 'credits_owed');

export interface Posting {
  orgId: string;
  ledger: Ledger;
  type: Exclude<EntryType, 'overdraft' | 'settlement' | 'reversal'>;
  /** Positive; the sign follows from the type. */
  amount: number;
  referenceId?: string | null;
  action?: string | null;
  userId?: string | null;
  metadata?: Record<string, unknown>;
}

type Deps = Pick<Ctx, 'outbox'>;

/** Creates the account row if needed and locks it: every posting of one account is serialised here. */
export async function lockAccount(tx: Executor, orgId: string, ledger: Account): Promise<number> {
  await tx.insert(ledgerAccounts).values({ orgId, ledger, balance: 0 }).onConflictDoNothing();
  const [row] = await tx.select({ balance: ledgerAccounts.balance }).from(ledgerAccounts)
    .where(and(eq(ledgerAccounts.orgId, orgId), eq(ledgerAccounts.ledger, ledger))).for('update');
  return row!.balance;
}

export async function balanceOf(tx: Executor, orgId: string, ledger: Account): Promise<number> {
  const [row] = await tx.select({ balance: ledgerAccounts.balance }).from(ledgerAccounts)
    .where(and(eq(ledgerAccounts.orgId, orgId), eq(ledgerAccounts.ledger, ledger)));
  return row?.balance ?? 0;
}

export async function findByReference(tx: Executor, orgId: string, ledger: Account, type: EntryType, referenceId: string): Promise<Entry | undefined> {
  const [row] = await tx.select().from(ledgerEntries).where(and(
    eq(ledgerEntries.orgId, orgId), eq(ledgerEntries.ledger, ledger), eq(ledgerEntries.type, type), eq(ledgerEntries.referenceId, referenceId),
  ));
  return row;
}

async function append(tx: Executor, values: typeof ledgerEntries.$inferInsert): Promise<Entry> {
  const [entry] = await tx.insert(ledgerEntries).values(values).returning();
  return entry!;
}

export interface PostResult { entry: Entry; replayed: boolean }

/**
 * Appends one entry (the trigger moves the balance). A posting whose reference was already
 * booked returns the first entry instead (`replayed`). A debit beyond the balance fails with
 * 402: nothing asked for in advance may overdraw. A credit first settles what the organization
 * owes on that ledger (see `bookUsage`).
 */
export async function post(deps: Deps, tx: Executor, p: Posting, meta: EventMeta): Promise<PostResult> {
  if (!Number.isSafeInteger(p.amount) || p.amount <= 0) throw new AppError('VALIDATION_ERROR', 'amount must be a positive integer');
  const balance = await lockAccount(tx, p.orgId, p.ledger);
  if (p.referenceId) {
    const existing = await findByReference(tx, p.orgId, p.ledger, p.type, p.referenceId);
    if (existing) return { entry: existing, replayed: true };
  }
  const debit = p.type === 'consume';
  if (debit && p.amount > balance) {
    throw new AppError('INSUFFICIENT_BALANCE', `Insufficient ${p.ledger} balance: ${balance} available, ${p.amount} required`, [{ balance, required: p.amount }]);
  }
  const entry = await append(tx, {
    orgId: p.orgId, ledger: p.ledger, type: p.type, amount: debit ? -p.amount : p.amount,
    referenceId: p.referenceId ?? null, action: p.action ?? null, userId: p.userId ?? null, metadata: p.metadata ?? {},
  });
  let after = entry.balanceAfter;
  let settled = 0;
  if (!debit) ({ balance: after, settled } = await settleDebt(tx, p.orgId, p.ledger, entry));
  if (p.ledger === 'tokens') {
    if (debit) {
      await deps.outbox.enqueue(tx, 'billing.tokens.consumed', { amount: p.amount, balance: after, action: p.action ?? 'consume', referenceId: p.referenceId ?? null, userId: p.userId ?? null }, meta);
    } else {
      await deps.outbox.enqueue(tx, 'billing.tokens.credited', { amount: p.amount, balance: after, kind: p.type, userId: p.userId ?? null, ...(settled > 0 ? { settled } : {}) }, meta);
    }
  }
  await afterBalanceChange(deps, tx, p.orgId, p.ledger, after, meta);
  return { entry, replayed: false };
}

/**
 * A credit pays what is owed first: the same amount leaves the spendable account and the debt
 * account (`settlement` on both, reference `aos:settle:<credit entry id>`). Returns the
 * spendable balance left and the amount settled.
 */
async function settleDebt(tx: Executor, orgId: string, ledger: Ledger, credit: Entry): Promise<{ balance: number; settled: number }> {
  const debtAccount = owedAccount(ledger);
  const [debt] = await tx.select({ balance: ledgerAccounts.balance }).from(ledgerAccounts)
    .where(and(eq(ledgerAccounts.orgId, orgId), eq(ledgerAccounts.ledger, debtAccount))).for('update');
  const settled = Math.min(debt?.balance ?? 0, credit.balanceAfter);
  if (settled <= 0) return { balance: credit.balanceAfter, settled: 0 };
  const referenceId = `aos:settle:${credit.id}`;
  const metadata = { credit_entry_id: credit.id, owed_before: debt!.balance };
  const spent = await append(tx, { orgId, ledger, type: 'settlement', amount: -settled, referenceId, action: 'debt_settlement', metadata });
  await append(tx, { orgId, ledger: debtAccount, type: 'settlement', amount: -settled, referenceId, action: 'debt_settlement', metadata });
  return { balance: spent.balanceAfter, settled };
}

export interface UsageResult { consumed: number; shortfall: number; owed: number; replayed: boolean }

/** Action of the debit that takes back a refunded purchase (not usage: usage figures leave it out). */
export const REVERSAL_ACTION = 'refund_reversal';

/**
 * Books a debit that cannot be refused: usage that already happened (an agent run), or a
 * refunded purchase taken back (`type: 'reversal'`). It is never free: what the balance covers
 * is debited (down to 0); the rest is an `overdraft` on the ledger's debt account, which the
 * next credit settles first. The spendable balance never goes negative. Once per reference: a
 * redelivered run books nothing more. An organization that goes into debt gets one
 * `billing.balance.low` (with `owed`) so notifications and auto top-up react, unless this
 * posting already crossed its auto top-up threshold (same event).
 */
export async function bookUsage(deps: Deps, tx: Executor, p: Omit<Posting, 'type'> & { referenceId: string; type?: 'consume' | 'reversal' }, meta: EventMeta): Promise<UsageResult> {
  if (!Number.isSafeInteger(p.amount) || p.amount <= 0) throw new AppError('VALIDATION_ERROR', 'amount must be a positive integer');
  const type = p.type ?? 'consume';
  const debtAccount = owedAccount(p.ledger);
  const balance = await lockAccount(tx, p.orgId, p.ledger);
  const consumed = await findByReference(tx, p.orgId, p.ledger, type, p.referenceId);
  const overdraft = await findByReference(tx, p.orgId, debtAccount, 'overdraft', p.referenceId);
  if (consumed || overdraft) {
    return { consumed: -(consumed?.amount ?? 0), shortfall: overdraft?.amount ?? 0, owed: await balanceOf(tx, p.orgId, debtAccount), replayed: true };
  }
  const covered = Math.min(balance, p.amount);
  const shortfall = p.amount - covered;
  const metadata = { ...(p.metadata ?? {}), ...(shortfall > 0 ? { requested: p.amount, shortfall } : {}) };
  let after = balance;
  if (covered > 0) {
    const entry = await append(tx, {
      orgId: p.orgId, ledger: p.ledger, type, amount: -covered, referenceId: p.referenceId, action: p.action ?? null, userId: p.userId ?? null, metadata,
    });
    after = entry.balanceAfter;
    if (p.ledger === 'tokens') {
      await deps.outbox.enqueue(tx, 'billing.tokens.consumed', { amount: covered, balance: after, action: p.action ?? 'consume', referenceId: p.referenceId, userId: p.userId ?? null }, meta);
    }
  }
  if (shortfall === 0) {
    await afterBalanceChange(deps, tx, p.orgId, p.ledger, after, meta);
    return { consumed: covered, shortfall, owed: await balanceOf(tx, p.orgId, debtAccount), replayed: false };
  }
  const owedBefore = await lockAccount(tx, p.orgId, debtAccount);
  const debt = await append(tx, {
    orgId: p.orgId, ledger: debtAccount, type: 'overdraft', amount: shortfall, referenceId: p.referenceId, action: p.action ?? null, userId: p.userId ?? null, metadata,
  });
  const owed = debt.balanceAfter;
  await afterBalanceChange(deps, tx, p.orgId, p.ledger, after, meta, owedBefore === 0 ? owed : null);
  return { consumed: covered, shortfall, owed, replayed: false };
}

const month = (d = new Date()) => d.toISOString().slice(0, 7);

/**
 * Detects a threshold crossing: the config is "armed" while the balance is at or above the
 * threshold; falling below while armed disarms it and records one crossing (one top-up run
 * and one `billing.balance.low`). Only a balance back at/above the threshold re-arms it, so
 * further debits below the line never trigger a second charge. `enteredDebt` is what is owed
 * when this posting put the organization into debt: announced with the crossing, or alone.
 */
async function afterBalanceChange(deps: Deps, tx: Executor, orgId: string, ledger: Ledger, balance: number, meta: EventMeta, enteredDebt: number | null = null) {
  const [cfg] = await tx.select().from(autoTopupConfigs)
    .where(and(eq(autoTopupConfigs.orgId, orgId), eq(autoTopupConfigs.ledger, ledger))).for('update');
  const debtEvent = () => enteredDebt === null ? undefined
    // Without a configured threshold, 1 is the least a consume needs.
    : deps.outbox.enqueue(tx, 'billing.balance.low', { ledger, balance, threshold: cfg?.threshold ?? 1, userId: null, owed: enteredDebt }, meta);
  if (!cfg) return debtEvent();
  if (balance >= cfg.threshold) {
    if (!cfg.armed) await tx.update(autoTopupConfigs).set({ armed: true, updatedAt: new Date() }).where(and(eq(autoTopupConfigs.orgId, orgId), eq(autoTopupConfigs.ledger, ledger)));
    return;
  }
  if (!cfg.armed || !cfg.enabled) return debtEvent();
  const crossings = cfg.crossings + 1;
  await tx.update(autoTopupConfigs).set({ armed: false, crossings, updatedAt: new Date() })
    .where(and(eq(autoTopupConfigs.orgId, orgId), eq(autoTopupConfigs.ledger, ledger)));
  const pkg = findPackage(cfg.packageSlug, ledger);
  await tx.insert(autoTopupRuns).values({
    orgId, ledger, crossingId: `${orgId}.${ledger}.${crossings}`, month: month(), status: 'pending',
    packageSlug: cfg.packageSlug, amount: pkg?.amount ?? 0, priceCents: pkg?.price_cents ?? 0,
  });
  await deps.outbox.enqueue(tx, 'billing.balance.low', { ledger, balance, threshold: cfg.threshold, userId: null, ...(enteredDebt !== null ? { owed: enteredDebt } : {}) }, meta);
}

/** Re-evaluates arming after a config change (a new threshold may already be crossed). */
export async function evaluateThreshold(deps: Deps, tx: Executor, orgId: string, ledger: Ledger, meta: EventMeta) {
  const balance = await lockAccount(tx, orgId, ledger);
  await afterBalanceChange(deps, tx, orgId, ledger, balance, meta);
}

/** Entries that are token usage: consumption the balance covered, and overdrafts (usage beyond it). */
export const usedTokens = sql`((${ledgerEntries.ledger} = 'tokens' AND ${ledgerEntries.type} = 'consume')
  OR (${ledgerEntries.ledger} = 'tokens_owed' AND ${ledgerEntries.type} = 'overdraft' AND ${ledgerEntries.action} IS DISTINCT FROM ${REVERSAL_ACTION}))`;

/** Sum of the journal, for proofs and the balance endpoint's `ledger_sum`. */
export async function journalSum(tx: Executor, orgId: string, ledger: Account): Promise<number> {
  const res = await tx.execute<{ s: string | null }>(sql`SELECT COALESCE(sum(amount), 0)::text AS s FROM billing_ledger_entries WHERE org_id = ${orgId} AND ledger = ${ledger}`);
  return Number(res.rows[0]?.s ?? 0);
}
