import { metaFromPrincipal, type EventMeta } from '@aos/bus';
import { badRequest, conflict } from '@aos/core';
import { isUniqueViolation } from '@aos/db';
import { Envelope, ListEnvelope, list, Nullable, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, count, desc, eq, gte, lt, type SQL } from 'drizzle-orm';
import type { Ctx } from '../service.js';
import { ledgerEntries } from '../db/schema.js';
import { Accounts, balanceOf, EntryTypes, findByReference, journalSum, post, type Account, type Entry, type Posting, type PostResult } from '../domain/ledger.js';

export const EntrySchema = Type.Object({
  id: Type.Integer(), ledger: Type.String(), type: Type.String(), amount: Type.Integer(), balance_after: Type.Integer(),
  action: Nullable(Type.String()), reference_id: Nullable(Type.String()),
  user_id: Nullable(Type.String()), metadata: Type.Record(Type.String(), Type.Unknown()), created_at: Type.String(),
});

export const entryView = (e: Entry) => ({
  id: e.id, ledger: e.ledger, type: e.type, amount: e.amount, balance_after: e.balanceAfter, action: e.action,
  reference_id: e.referenceId, user_id: e.userId, metadata: e.metadata, created_at: e.createdAt.toISOString(),
});

/**
 * Posts once per reference. Of two first-time requests racing on one reference, the loser
 * returns the winner's entry; a reference reused for a different amount or action is 409.
 */
async function postOnce(ctx: Ctx, posting: Posting, meta: EventMeta): Promise<PostResult> {
  let res: PostResult;
  try {
    res = (await ctx.db.transaction((tx) => post(ctx, tx, posting, meta)))!;
  } catch (err) {
    const existing = posting.referenceId && isUniqueViolation(err)
      ? await findByReference(ctx.db, posting.orgId, posting.ledger, posting.type, posting.referenceId) : undefined;
    if (!existing) throw err;
    res = { entry: existing, replayed: true };
  }
  if (res.replayed && (Math.abs(res.entry.amount) !== posting.amount || res.entry.action !== (posting.action ?? null))) {
    throw conflict(`reference_id "${posting.referenceId}" was already used for another ${posting.type} (${Math.abs(res.entry.amount)} for "${res.entry.action}")`, [
      { field: 'reference_id', transaction_id: res.entry.id, amount: Math.abs(res.entry.amount), action: res.entry.action },
    ]);
  }
  return res;
}

const TypeQuery = Type.Union(EntryTypes.map((t) => Type.Literal(t)));

export async function tokenRoutes(app: App, ctx: Ctx) {
  app.get('/tokens/balance', {
    config: { scope: 'billing:read' },
    schema: {
      tags: ['Tokens'], summary: "The organization's token balance",
      response: {
        200: Envelope(Type.Object({
          org_id: Type.String(), balance: Type.Integer(), credit_balance_cents: Type.Integer(),
          owed: Type.Integer({ description: 'tokens used beyond the balance (runs), settled first by the next credit' }),
          credit_owed_cents: Type.Integer(), updated_at: Nullable(Type.String()),
        })),
      },
    },
  }, async (request) => {
    const orgId = orgOf(request);
    const [balance, credits, owed, creditsOwed] = await Promise.all((['tokens', 'credits', 'tokens_owed', 'credits_owed'] as const).map((a) => balanceOf(ctx.db, orgId, a)));
    const [last] = await ctx.db.select({ at: ledgerEntries.createdAt }).from(ledgerEntries)
      .where(and(eq(ledgerEntries.orgId, orgId), eq(ledgerEntries.ledger, 'tokens'))).orderBy(desc(ledgerEntries.id)).limit(1);
    return ok({ org_id: orgId, balance: balance!, credit_balance_cents: credits!, owed: owed!, credit_owed_cents: creditsOwed!, updated_at: last?.at.toISOString() ?? null });
  });

  app.get('/tokens/transactions', {
    config: { scope: 'billing:read' },
    schema: {
      tags: ['Tokens'], summary: 'Token ledger entries, newest first',
      querystring: Type.Object({ ...PaginationQuery, type: Type.Optional(TypeQuery), ledger: Type.Optional(Type.Union(Accounts.map((a) => Type.Literal(a)), { default: 'tokens', description: 'credits: the credit ledger (cents); tokens_owed / credits_owed: what is owed (overdrafts and settlements)' })), reference_id: Type.Optional(Type.String({ maxLength: 200 })),
        action: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
        from: Type.Optional(Type.String({ format: 'date-time', description: 'entries created at or after' })),
        to: Type.Optional(Type.String({ format: 'date-time', description: 'entries created before' })),
      }),
      response: { 200: ListEnvelope(EntrySchema) },
    },
  }, async (request) => {
    const orgId = orgOf(request);
    const p = page(request.query);
    const where: SQL[] = [eq(ledgerEntries.orgId, orgId), eq(ledgerEntries.ledger, (request.query.ledger ?? 'tokens') as Account)];
    if (request.query.type) where.push(eq(ledgerEntries.type, request.query.type));
    if (request.query.reference_id) where.push(eq(ledgerEntries.referenceId, request.query.reference_id));
    if (request.query.action) where.push(eq(ledgerEntries.action, request.query.action));
    if (request.query.from) where.push(gte(ledgerEntries.createdAt, new Date(request.query.from)));
    if (request.query.to) where.push(lt(ledgerEntries.createdAt, new Date(request.query.to)));
    const [rows, [total]] = await Promise.all([
      ctx.db.select().from(ledgerEntries).where(and(...where)).orderBy(desc(ledgerEntries.id)).limit(p.limit).offset(p.offset),
      ctx.db.select({ n: count() }).from(ledgerEntries).where(and(...where)),
    ]);
    return list(rows.map(entryView), Number(total?.n ?? 0), p);
  });

  app.post('/tokens/consume', {
    // Viewers are read-only: spending the organization's tokens takes at least a member.
    config: { scope: 'billing:write', minRole: 'member' },
    schema: {
      tags: ['Tokens'], summary: 'Consume tokens atomically (402 when the balance is short; reference_id makes it idempotent)',
      body: Type.Object({
        amount: Type.Integer({ minimum: 1, maximum: 1_000_000_000 }),
        action: Type.String({ minLength: 1, maxLength: 200 }),
        reference_id: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '^(?!aos:)', description: 'Idempotency reference; the aos: prefix is reserved' })),
        metadata: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
        company_id: Type.Optional(Type.Integer()),
      }, { additionalProperties: false }),
      response: { 200: Envelope(Type.Object({ transaction: EntrySchema, balance: Type.Integer(), replayed: Type.Boolean() })) },
    },
  }, async (request) => {
    const orgId = orgOf(request);
    const { amount, action, reference_id: referenceId, metadata } = request.body;
    if (metadata && JSON.stringify(metadata).length > 8_192) throw badRequest('metadata is too large (max 8 KiB of JSON)');
    const posting = { orgId, ledger: 'tokens' as const, type: 'consume' as const, amount, action, referenceId, userId: request.principal.userId, metadata };
    const res = await postOnce(ctx, posting, metaFromPrincipal(request.principal));
    return ok({ transaction: entryView(res.entry), balance: await balanceOf(ctx.db, orgId, 'tokens'), replayed: res.replayed });
  });

  // Not in the reference: operators grant, refund or bonus tokens/credits to an organization.
  app.post('/tokens/grant', {
    config: { platformAdmin: true },
    schema: {
      tags: ['Tokens'], summary: 'Credit an organization (platform admins): admin_grant, bonus or refund',
      body: Type.Object({
        org_id: Type.String({ format: 'uuid' }),
        amount: Type.Integer({ minimum: 1, maximum: 1_000_000_000 }),
        type: Type.Optional(Type.Union([Type.Literal('admin_grant'), Type.Literal('bonus'), Type.Literal('refund')], { default: 'admin_grant' })),
        ledger: Type.Optional(Type.Union([Type.Literal('tokens'), Type.Literal('credits')], { default: 'tokens' })),
        reference_id: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '^(?!aos:)' })),
        note: Type.Optional(Type.String({ maxLength: 500 })),
      }, { additionalProperties: false }),
      response: { 200: Envelope(Type.Object({ transaction: EntrySchema, balance: Type.Integer(), replayed: Type.Boolean() })) },
    },
  }, async (request) => {
    const { org_id: orgId, amount, type = 'admin_grant', ledger = 'tokens', reference_id: referenceId, note } = request.body;
    const meta = { ...metaFromPrincipal(request.principal), orgId };
    const posting = { orgId, ledger, type, amount, referenceId, action: 'grant', userId: request.principal.userId, metadata: note ? { note } : {} };
    const res = await postOnce(ctx, posting, meta);
    return ok({ transaction: entryView(res.entry), balance: await balanceOf(ctx.db, orgId, ledger), replayed: res.replayed });
  });

  // Not in the reference: a read-only proof that the balance equals the sum of the journal.
  app.get('/tokens/ledger-check', {
    config: { scope: 'billing:read' },
    schema: {
      tags: ['Tokens'], summary: 'Balance vs. sum of ledger entries (the token account and what is owed on it)',
      response: { 200: Envelope(Type.Object({ balance: Type.Integer(), ledger_sum: Type.Integer(), owed: Type.Integer(), owed_sum: Type.Integer(), consistent: Type.Boolean() })) },
    },
  }, async (request) => {
    const orgId = orgOf(request);
    const [balance, sum, owed, owedSum] = await Promise.all([
      balanceOf(ctx.db, orgId, 'tokens'), journalSum(ctx.db, orgId, 'tokens'), balanceOf(ctx.db, orgId, 'tokens_owed'), journalSum(ctx.db, orgId, 'tokens_owed'),
    ]);
    // Debt exists only once the balance is used up: a positive balance with something owed is inconsistent too.
    return ok({ balance, ledger_sum: sum, owed, owed_sum: owedSum, consistent: balance === sum && owed === owedSum && (balance === 0 || owed === 0) });
  });
}
