import { ACCESS_TOKEN } from '@aos/contracts';
import { AppError, badRequest, conflict, unauthorized } from '@aos/core';
import { metaFromPrincipal, systemMeta } from '@aos/bus';
import { Envelope, Nullable, ok, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, eq, gt, inArray, isNull, or, sql } from 'drizzle-orm';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { loginFailures, loginKnownAddresses, memberships, organizations, passwordResets, refreshTokens, tenants, users } from '../db/schema.js';
import { acceptInvite } from '../domain/invites.js';
import { addressHash, hashPassword, opaqueToken, sha256, verifyPassword } from '../domain/crypto.js';
import type { Signer } from '../domain/tokens.js';
import { revocationInstant, verifyAccessToken } from '../domain/tokens.js';
import { issueSession, NIL_UUID, userView, type UserRow } from '../domain/users.js';
import type { Ctx } from '../service.js';
import { splitList } from '@aos/core';

export const UserSchema = Type.Object({
  id: Type.String(), username: Type.String(), email: Type.String(), role: Type.String(), platform_roles: Type.Array(Type.String()),
  avatar_url: Nullable(Type.String()), tenant_id: Type.String(), created_at: Type.String(),
});
const SessionSchema = Type.Object({
  success: Type.Boolean(), token: Type.String(), access_token: Type.String(), refresh_token: Type.String(),
  token_type: Type.String(), expires_in: Type.Integer(), org_id: Nullable(Type.String()), user: UserSchema,
});
export const Email = Type.String({ format: 'email', maxLength: 254 });
const Password = Type.String({ minLength: 10, maxLength: 200 });
export const Username = Type.String({ minLength: 3, maxLength: 32, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$' });

/** Client IP as the gateway saw it (only the gateway can reach this service). */
const clientIp = (request: FastifyRequest) => String(request.headers['x-forwarded-for'] ?? request.ip).split(',')[0]!.trim();

const RESET_TTL_MS = 30 * 60_000;
const MAX_RESETS_PER_WINDOW = 3;

/** A dummy hash verified when the e-mail is unknown, so both failures take the same time. */
let dummyHash: Promise<string> | undefined;

export async function authRoutes(app: App, ctx: Ctx, signer: Signer) {
  const cfg = ctx.config;
  dummyHash ??= hashPassword('not-a-real-password', cfg.PASSWORD_SCRYPT_LOG_N);

  const setCookie = (reply: FastifyReply, token: string | null) => {
    const parts = [`${ACCESS_TOKEN.cookie}=${token ?? ''}`, 'Path=/', 'HttpOnly', 'SameSite=Lax', `Max-Age=${token ? ACCESS_TOKEN.ttlSeconds : 0}`];
    if (cfg.COOKIE_SECURE) parts.push('Secure');
    reply.header('set-cookie', parts.join('; '));
  };
  /** A successful sign-in (login, registration, password reset) makes the client address known to the account. */
  const rememberAddress = async (userId: string, ip: string) => {
    if (cfg.LOGIN_KNOWN_ADDRESS_DAYS === 0) return;
    await ctx.db.insert(loginKnownAddresses).values({ userId, addressHash: addressHash(cfg.API_KEY_PEPPER, ip) })
      .onConflictDoUpdate({ target: [loginKnownAddresses.userId, loginKnownAddresses.addressHash], set: { lastSuccessAt: sql`now()` } });
  };
  const session = async (reply: FastifyReply, user: UserRow, familyId?: string) => {
    const s = await issueSession(ctx.db, signer, user, cfg.REFRESH_TOKEN_TTL_DAYS, familyId);
    setCookie(reply, s.access.token);
    return {
      success: true, token: s.access.token, access_token: s.access.token, refresh_token: s.refresh, token_type: 'Bearer',
      expires_in: ACCESS_TOKEN.ttlSeconds, org_id: s.orgId, user: userView(user),
    };
  };

  app.post('/auth/register', {
    config: { auth: 'public' },
    schema: {
      tags: ['Auth'], summary: 'Register: creates the user, their tenant and personal organization',
      body: Type.Object({
        username: Username, email: Email, password: Password, invite_code: Type.Optional(Type.String({ maxLength: 200 })),
        terms_accepted: Type.Boolean(), privacy_accepted: Type.Boolean(),
      }, { additionalProperties: false }),
      response: { 201: Envelope(SessionSchema) },
    },
  }, async (request, reply) => {
    const b = request.body;
    if (b.terms_accepted !== true || b.privacy_accepted !== true) {
      throw badRequest('The terms and the privacy policy must be accepted', [{ field: b.terms_accepted ? 'privacy_accepted' : 'terms_accepted' }]);
    }
    const passwordHash = await hashPassword(b.password, cfg.PASSWORD_SCRYPT_LOG_N);
    const admins = splitList(cfg.ADMIN_EMAILS).map((e) => e.toLowerCase());
    const user = await ctx.db.transaction(async (tx) => {
      await tx.execute(sql`SELECT pg_advisory_xact_lock(hashtext('identity:register'))`);
      const [clash] = await tx.select({ id: users.id }).from(users)
        .where(or(eq(sql`lower(${users.email})`, b.email.toLowerCase()), eq(sql`lower(${users.username})`, b.username.toLowerCase()))).limit(1);
      if (clash) throw conflict('A user with this e-mail or username already exists');
      const [{ n }] = (await tx.select({ n: sql<number>`count(*)::int` }).from(users)) as [{ n: number }];
      const platformRoles = n === 0 || admins.includes(b.email.toLowerCase()) ? ['admin'] : [];
      const [tenant] = await tx.insert(tenants).values({ name: b.username }).returning();
      const [u] = await tx.insert(users).values({ tenantId: tenant!.id, username: b.username, email: b.email, passwordHash, platformRoles }).returning();
      const slug = `${b.username.toLowerCase().replace(/[^a-z0-9]+/g, '-')}-${opaqueToken().slice(0, 6).toLowerCase().replace(/[^a-z0-9]/g, 'x')}`;
      const [org] = await tx.insert(organizations).values({ tenantId: tenant!.id, name: `${b.username}'s workspace`, slug, personal: true, createdBy: u!.id }).returning();
      await tx.insert(memberships).values({ orgId: org!.id, userId: u!.id, role: 'owner' });
      const meta = { tenantId: tenant!.id, orgId: org!.id, actor: { type: 'user' as const, id: u!.id } };
      await ctx.outbox.enqueue(tx, 'identity.user.registered', { userId: u!.id, email: u!.email, username: u!.username, tenantId: tenant!.id, personalOrgId: org!.id, platformRoles }, meta);
      await ctx.outbox.enqueue(tx, 'identity.org.created', { orgId: org!.id, tenantId: tenant!.id, name: org!.name, slug: org!.slug }, meta);
      // An invitation for this address joins its org (and team) at once; any other code is ignored. The
      // account is created even when the org has no seat left: the invitation stays pending for later.
      if (b.invite_code) {
        await acceptInvite(ctx, tx, b.invite_code, u!, meta).catch((err: unknown) => {
          if (!(err instanceof AppError && err.code === 'PLAN_LIMIT_REACHED')) throw err;
          request.log.info({ userId: u!.id }, 'invitation not accepted at registration: the organization has no seat left');
        });
      }
      return u!;
    });
    await rememberAddress(user.id, clientIp(request));
    return reply.status(201).send(ok(await session(reply, user)));
  });

  app.post('/auth/login', {
    config: { auth: 'public' },
    schema: {
      tags: ['Auth'], summary: 'Log in; sets the httpOnly assimetria_jwt cookie',
      body: Type.Object({ email: Type.String({ minLength: 1, maxLength: 254 }), password: Type.String({ minLength: 1, maxLength: 200 }) }),
      response: { 200: Envelope(SessionSchema) },
    },
  }, async (request, reply) => {
    const email = request.body.email.trim().toLowerCase();
    const ip = clientIp(request);
    const windowMs = cfg.LOGIN_FAILURE_WINDOW_MINUTES * 60_000;
    const window = new Date(Math.floor(Date.now() / windowMs) * windowMs);
    // One account from one address is throttled tightly; the account as a whole only at a higher ceiling,
    // which addresses it logged in from recently skip: failures elsewhere cannot lock its owner out.
    const keys = { pair: `email-ip:${email}|${ip}`, account: `email:${email}`, ip: `ip:${ip}` };
    const [user] = await ctx.db.select().from(users).where(eq(sql`lower(${users.email})`, email));
    // Asked for unknown e-mails too (with no user), so both take the same path.
    const [known] = await ctx.db.select({ at: loginKnownAddresses.lastSuccessAt }).from(loginKnownAddresses).where(and(
      eq(loginKnownAddresses.userId, user?.id ?? NIL_UUID), eq(loginKnownAddresses.addressHash, addressHash(cfg.API_KEY_PEPPER, ip)),
      gt(loginKnownAddresses.lastSuccessAt, new Date(Date.now() - cfg.LOGIN_KNOWN_ADDRESS_DAYS * 86_400_000)),
    ));
    // Each attempt is counted as a failure before the password is checked, and refused (the count undone) past a
    // limit: concurrent attempts cannot all pass the check before any of them is counted.
    await ctx.db.transaction(async (tx) => {
      const counts = await tx.insert(loginFailures).values(Object.values(keys).map((key) => ({ key, windowStart: window, count: 1 })))
        .onConflictDoUpdate({ target: [loginFailures.key, loginFailures.windowStart], set: { count: sql`${loginFailures.count} + 1` } })
        .returning({ key: loginFailures.key, count: loginFailures.count });
      const attempts = (k: string) => counts.find((c) => c.key === k)?.count ?? 0;
      if (attempts(keys.pair) > cfg.LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_IP || attempts(keys.ip) > cfg.LOGIN_MAX_FAILURES_PER_IP
        || (!known && attempts(keys.account) > cfg.LOGIN_MAX_FAILURES_PER_ACCOUNT)) {
        const retry = Math.ceil((window.getTime() + windowMs - Date.now()) / 1000);
        reply.header('retry-after', String(Math.max(retry, 1)));
        throw new AppError('RATE_LIMITED', 'Too many failed logins; try again later'); // rolls the counts back
      }
    });
    const valid = user ? await verifyPassword(request.body.password, user.passwordHash) : (await verifyPassword(request.body.password, await dummyHash!), false);
    if (!user || !valid) throw unauthorized('Invalid email or password');
    // Not a failure after all: this address starts afresh, and the other counts drop the attempt again (the
    // account-wide count is not cleared: the owner signing in must not hand an attacker a fresh budget).
    await ctx.db.delete(loginFailures).where(eq(loginFailures.key, keys.pair));
    await ctx.db.update(loginFailures).set({ count: sql`GREATEST(${loginFailures.count} - 1, 0)` })
      .where(and(inArray(loginFailures.key, [keys.account, keys.ip]), eq(loginFailures.windowStart, window)));
    await rememberAddress(user.id, ip);
    return ok(await session(reply, user));
  });

  app.post('/auth/refresh', {
    config: { auth: 'public' },
    schema: {
      tags: ['Auth'], summary: 'Exchange a refresh token (rotated; reusing an old one revokes the whole family)',
      body: Type.Object({ refresh_token: Type.String({ minLength: 1, maxLength: 200 }) }), response: { 200: Envelope(SessionSchema) },
    },
  }, async (request, reply) => {
    const hash = sha256(request.body.refresh_token);
    const outcome = await ctx.db.transaction(async (tx) => {
      const [token] = await tx.select().from(refreshTokens).where(eq(refreshTokens.tokenHash, hash)).for('update');
      if (!token) return { error: 'Invalid refresh token' } as const;
      if (token.usedAt || token.revokedAt) {
        await tx.update(refreshTokens).set({ revokedAt: new Date() }).where(and(eq(refreshTokens.familyId, token.familyId), isNull(refreshTokens.revokedAt)));
        return { error: 'Refresh token reuse detected; the session was revoked' } as const;
      }
      if (token.expiresAt < new Date()) return { error: 'Refresh token expired' } as const;
      await tx.update(refreshTokens).set({ usedAt: new Date() }).where(eq(refreshTokens.id, token.id));
      const [user] = await tx.select().from(users).where(eq(users.id, token.userId));
      if (!user) return { error: 'Invalid refresh token' } as const;
      return { user, familyId: token.familyId } as const;
    });
    if ('error' in outcome) throw unauthorized(outcome.error);
    return ok(await session(reply, outcome.user, outcome.familyId));
  });

  const bearerOf = (request: FastifyRequest) => {
    const auth = request.headers.authorization;
    if (auth?.startsWith('Bearer ') && !auth.includes('osk_')) return auth.slice(7).trim();
    const cookie = request.headers.cookie?.split(';').map((c) => c.trim()).find((c) => c.startsWith(`${ACCESS_TOKEN.cookie}=`));
    return cookie ? cookie.slice(ACCESS_TOKEN.cookie.length + 1) : null;
  };

  app.post('/auth/logout', {
    schema: {
      tags: ['Auth'], summary: 'Revoke this session (or every session with all_devices)',
      body: Type.Object({ all_devices: Type.Optional(Type.Boolean()), refresh_token: Type.Optional(Type.String({ maxLength: 200 })) }),
      response: { 200: Envelope(Type.Object({ success: Type.Boolean(), all_devices: Type.Boolean() })) },
    },
    preValidation: async (request) => { request.body ??= {}; },
  }, async (request, reply) => {
    const userId = request.principal.userId;
    if (request.principal.kind !== 'user' || !userId) throw unauthorized('Log out needs a user session');
    const raw = bearerOf(request);
    const current = raw ? await verifyAccessToken(signer, raw).catch(() => null) : null;
    const all = request.body?.all_devices === true;
    await ctx.db.transaction(async (tx) => {
      const meta = metaFromPrincipal(request.principal);
      if (current && current.userId === userId) {
        await ctx.outbox.enqueue(tx, 'identity.session.revoked', { userId, jti: current.jti, expiresAt: current.exp.toISOString() }, meta);
      }
      // This session's refresh family ends too: the token's `sid`, or the family of a refresh token given.
      const families = new Set<string>();
      if (current?.userId === userId && current.sessionId) families.add(current.sessionId);
      if (request.body?.refresh_token) {
        const [t] = await tx.select().from(refreshTokens).where(and(eq(refreshTokens.tokenHash, sha256(request.body.refresh_token)), eq(refreshTokens.userId, userId)));
        if (t) families.add(t.familyId);
      }
      for (const familyId of families) {
        await tx.update(refreshTokens).set({ revokedAt: new Date() }).where(and(eq(refreshTokens.familyId, familyId), eq(refreshTokens.userId, userId), isNull(refreshTokens.revokedAt)));
      }
      if (all) {
        const now = revocationInstant();
        await tx.update(users).set({ tokensNotBefore: now }).where(eq(users.id, userId));
        await tx.update(refreshTokens).set({ revokedAt: now }).where(and(eq(refreshTokens.userId, userId), isNull(refreshTokens.revokedAt)));
        await ctx.outbox.enqueue(tx, 'identity.user.tokens_revoked', { userId, notBefore: now.toISOString() }, meta);
      }
    });
    setCookie(reply, null);
    return ok({ success: true, all_devices: all });
  });

  app.get('/auth/me', {
    schema: {
      tags: ['Auth'], summary: 'The current user and the organization they act in',
      response: { 200: Envelope(Type.Object({ user: UserSchema, org_id: Nullable(Type.String()), org_role: Nullable(Type.String()), kind: Type.String(), scopes: Type.Array(Type.String()) })) },
    },
  }, async (request) => {
    const p = request.principal;
    if (!p.userId) throw unauthorized();
    const [user] = await ctx.db.select().from(users).where(eq(users.id, p.userId));
    if (!user) throw unauthorized('User no longer exists');
    return ok({ user: userView(user), org_id: p.orgId, org_role: p.orgRole, kind: p.kind, scopes: p.scopes });
  });

  app.post('/auth/forgot-password', {
    config: { auth: 'public' },
    schema: {
      tags: ['Auth'], summary: 'E-mail a one-time reset link (always answers 200)',
      body: Type.Object({ email: Type.String({ minLength: 1, maxLength: 254 }) }), response: { 200: Envelope(Type.Object({ success: Type.Boolean(), message: Type.String() })) },
    },
  }, async (request) => {
    const [user] = await ctx.db.select().from(users).where(eq(sql`lower(${users.email})`, request.body.email.trim().toLowerCase()));
    if (user) {
      const token = opaqueToken();
      const expiresAt = new Date(Date.now() + RESET_TTL_MS);
      await ctx.db.transaction(async (tx) => {
        // A few links per account per half hour: more would only flood the mailbox (the answer stays the same).
        await tx.execute(sql`SELECT pg_advisory_xact_lock(hashtext(${`identity:reset:${user.id}`}))`);
        const [{ n }] = (await tx.select({ n: sql<number>`count(*)::int` }).from(passwordResets)
          .where(and(eq(passwordResets.userId, user.id), gt(passwordResets.createdAt, new Date(Date.now() - RESET_TTL_MS))))) as [{ n: number }];
        if (n >= MAX_RESETS_PER_WINDOW) return;
        await tx.insert(passwordResets).values({ userId: user.id, tokenHash: sha256(token), expiresAt });
        await ctx.outbox.enqueue(tx, 'identity.password_reset.requested', {
          userId: user.id, email: user.email, resetUrl: `${cfg.APP_URL.replace(/\/$/, '')}/reset-password?token=${token}`, expiresAt: expiresAt.toISOString(),
        }, systemMeta(user.tenantId, null));
      });
    }
    return ok({ success: true, message: 'If an account exists for this e-mail, a reset link has been sent' });
  });

  app.post('/auth/reset-password', {
    config: { auth: 'public' },
    schema: {
      tags: ['Auth'], summary: 'Set a new password with a reset token (single use); every session ends',
      body: Type.Object({ token: Type.String({ minLength: 10, maxLength: 200 }), password: Password }), response: { 200: Envelope(Type.Object({ success: Type.Boolean() })) },
    },
  }, async (request) => {
    const passwordHash = await hashPassword(request.body.password, cfg.PASSWORD_SCRYPT_LOG_N);
    const done = await ctx.db.transaction(async (tx) => {
      const [reset] = await tx.update(passwordResets).set({ usedAt: new Date() })
        .where(and(eq(passwordResets.tokenHash, sha256(request.body.token)), isNull(passwordResets.usedAt), gt(passwordResets.expiresAt, new Date()))).returning();
      if (!reset) return null;
      const now = revocationInstant();
      await tx.update(users).set({ passwordHash, tokensNotBefore: now, updatedAt: now }).where(eq(users.id, reset.userId));
      await tx.update(passwordResets).set({ usedAt: new Date() }).where(and(eq(passwordResets.userId, reset.userId), isNull(passwordResets.usedAt)));
      await tx.update(refreshTokens).set({ revokedAt: now }).where(and(eq(refreshTokens.userId, reset.userId), isNull(refreshTokens.revokedAt)));
      await ctx.outbox.enqueue(tx, 'identity.user.tokens_revoked', { userId: reset.userId, notBefore: now.toISOString() }, systemMeta(null, null));
      return reset.userId;
    });
    if (!done) throw badRequest('The reset link is invalid, used or expired');
    // Whoever opened the e-mailed link may sign in from here even while the account is under attack.
    await rememberAddress(done, clientIp(request));
    return ok({ success: true });
  });
}
